"""
The scenarios of ``test_fork.py``, each run in an interpreter of its own (pytest never forks).

``python fork_scenarios.py NAME [URL]`` plays the master of a preforking server: it sets up
pipelines, may leave other threads inside protected calls, then calls ``os.fork()``. The child
makes protected calls under a bound (``signal.alarm``: a child that hangs is killed) and prints
``child: {json}``; the parent lets its own calls finish and prints ``parent: {json}``, with the
child's exit code. The test reads both lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

CHILD_BOUND = 10
"""Seconds a child may take before SIGALRM stops it (it needs well under one)."""
WAIT = 30.0
"""The queue wait and timeouts of the calls held across the fork: longer than any child."""


def report(who: str, facts: dict[str, Any]) -> None:
    print(f"{who}: {json.dumps(facts, sort_keys=True)}", flush=True)


def _hung(signum: int, frame: object) -> None:
    raise AssertionError(f"the child took more than {CHILD_BOUND}s: it hangs")


def fork(child: Callable[[dict[str, Any]], None]) -> int:
    """
    Fork; the child runs *child*, which fills in its facts, and reports them (with the error
    that stopped it, if any). Returns the child's exit code.
    """
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        code = 1
        facts: dict[str, Any] = {}
        try:
            # A blocked lock or wait is interrupted: the traceback shows where the child hung.
            signal.signal(signal.SIGALRM, _hung)
            signal.alarm(CHILD_BOUND)
            child(facts)
            code = 0
        except BaseException as error:  # noqa: BLE001 - everything is reported, then the child exits
            traceback.print_exc()
            facts["error"] = repr(error)
        finally:
            report("child", facts)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + CHILD_BOUND + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.01)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


def wait_until(condition: Callable[[], bool], what: str, bound: float = 10.0) -> None:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.002)


# -- plain functions through buttress.protect ---------------------------------------------------


def _pipelines() -> dict[str, Any]:
    import buttress  # noqa: PLC0415 - imported in the scenario, after the warnings filter
    from buttress import (  # noqa: PLC0415
        Bulkhead,
        Cache,
        CircuitBreaker,
        RateLimit,
        Retry,
        Timeout,
        constant,
    )

    retry = Retry(on=ValueError, attempts=2, backoff=constant(0.001))
    return {
        # A single slot, with a queue: one call in flight and one waiting fill it.
        "slot": buttress.protect(
            "fork-slot",
            bulkhead=Bulkhead(max_concurrent=1, max_queue=64, max_wait=WAIT),
            breaker=CircuitBreaker(),
            retry=retry,
            timeout=Timeout(attempt=WAIT, total=WAIT),
        ),
        # Trips on one failure; half-open lets one probe through.
        "probe": buttress.protect(
            "fork-probe",
            breaker=CircuitBreaker(
                consecutive_failures=1, open_duration=0.05, half_open_calls=1, minimum_calls=100
            ),
            retry=None,
            bulkhead=None,
            timeout=None,
        ),
        # Dedup only: concurrent calls of one key share one call in flight.
        "flight": buttress.protect(
            "fork-flight",
            cache=Cache(ttl=0, key=lambda key: key),
            rate_limit=RateLimit(rate=1000, burst=1000),
            retry=retry,
            bulkhead=None,
            breaker=None,
            timeout=None,
        ),
    }


def _work(value: str = "done") -> str:
    return value


def _calls(pipelines: dict[str, Any], n: int, facts: dict[str, Any]) -> dict[str, Any]:
    """Protected calls every child makes: sync, contended, failing, cached, async, timed out."""
    from buttress import TimeoutError as PolicyTimeout  # noqa: PLC0415

    slot, probe, flight = pipelines["slot"], pipelines["probe"], pipelines["flight"]
    facts["slot_active_at_start"] = slot.bulkhead.active
    facts["slot_queued_at_start"] = slot.bulkhead.queued
    ok, facts["sync_seconds"] = timed(lambda: [slot.call(_work) for _ in range(n)])
    facts["sync_ok"] = ok.count("done")
    # Two threads of the child contend for the single slot: the queue and its lock work.
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(slot.call(time.sleep, 0.05) or "done"))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CHILD_BOUND)
    facts["contended_ok"] = results.count("done")
    # A failure recorded under the breaker's lock, retried under the budget's lock.
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("transient")
        return "done"

    facts["retried"] = slot.call(flaky)
    facts["probe_state_before"] = probe.breaker.state.value
    facts["probe_call"] = probe.call(_work)
    facts["probe_state_after"] = probe.breaker.state.value
    facts["flight_call"] = flight.call(_work, "same-key")

    async def main() -> dict[str, Any]:
        done = await asyncio.gather(*(slot.acall(asyncio.sleep, 0, "done") for _ in range(n)))
        start = time.monotonic()
        try:
            await pipelines["timed"].acall(asyncio.sleep, 30)
        except PolicyTimeout:
            expired = time.monotonic() - start
        else:
            expired = -1.0
        return {"async_ok": done.count("done"), "timeout_seconds": expired}

    facts.update(asyncio.run(main()))
    facts["slot_active_at_end"] = slot.bulkhead.active
    return facts


def _timed_pipeline() -> Any:
    import buttress  # noqa: PLC0415
    from buttress import Timeout  # noqa: PLC0415

    return buttress.protect(
        "fork-timed", timeout=Timeout(attempt=0.2, total=5.0), retry=None, bulkhead=None
    )


class _BrokenReset:
    """A runtime object whose reset fails: the child logs it and goes on."""

    def _after_fork_in_child(self) -> None:
        raise RuntimeError("a fault in buttress's own reset")


def idle() -> None:
    """Nothing in flight at the fork: the baseline (and a reset that fails is only logged)."""
    from buttress import _fork  # noqa: PLC0415

    pipelines = _pipelines()
    pipelines["timed"] = _timed_pipeline()
    before = _calls(pipelines, 5, {})  # the parent has used every pipeline, sync and async
    broken = _BrokenReset()
    _fork.track(broken)
    code = fork(lambda facts: _calls(pipelines, 50, facts))
    after = pipelines["slot"].call(_work)
    report("parent", {"child_exit": code, "before": before, "after": after})


def _held_locks(pipelines: dict[str, Any]) -> dict[str, Any]:
    """Every lock a call may take, by name: the ones a thread of the parent holds at the fork."""
    from buttress import _activation, _config, _registry  # noqa: PLC0415
    from buttress.telemetry import _hooks, _otel  # noqa: PLC0415

    slot, probe, flight = pipelines["slot"], pipelines["probe"], pipelines["flight"]
    installed = _otel._installed
    assert installed is not None
    return {
        "registry": _registry.REGISTRY._lock,
        "config": _config.CONFIG.lock,
        "activation": _activation._lock,
        "hooks": _hooks._lock,
        "telemetry_install": _otel._install_lock,
        "telemetry": installed[0]._lock,
        "bulkhead": slot.bulkhead._lock,
        "breaker": probe.breaker._lock,
        "breaker_events": probe.breaker._emit_lock,
        "retry_budget": slot.retry.budget._lock,
        "rate_limit": flight.rate_limiter._lock,
        "cache": flight.cache._lock,
    }


def busy_sync() -> None:
    """
    Threads of the parent inside protected calls at the fork, and another holding every lock.

    One call holds the only slot of a bulkhead and another waits in its queue; one holds the
    half-open probe of a breaker; one leads a cache flight others would join; one thread holds
    the locks of the registry, the switches, the telemetry and every policy.
    """
    from buttress import telemetry  # noqa: PLC0415

    telemetry.instrument()
    pipelines = _pipelines()
    pipelines["timed"] = _timed_pipeline()
    slot, probe, flight = pipelines["slot"], pipelines["probe"], pipelines["flight"]
    release = threading.Event()
    parent: dict[str, Any] = {}

    def blocked(name: str) -> str:
        release.wait(CHILD_BOUND)
        return name

    def run(name: str, pipeline: Any, *args: Any) -> threading.Thread:
        def target() -> None:
            try:
                parent[name] = pipeline.call(blocked, *args)
            except Exception as error:  # noqa: BLE001 - reported to the test
                parent[name] = repr(error)

        thread = threading.Thread(target=target, name=name)
        thread.start()
        return thread

    threads = [run("holder", slot, "holder")]
    wait_until(lambda: slot.bulkhead.active == 1, "the holder has the slot")
    threads.append(run("waiter", slot, "waiter"))
    wait_until(lambda: slot.bulkhead.queued == 1, "the waiter is queued")
    with contextlib.suppress(ValueError):
        probe.call(_fail)
    assert probe.breaker.state.value == "open"
    time.sleep(0.1)  # past open_duration: the next call is the half-open probe
    threads.append(run("probe", probe, "probe"))
    wait_until(lambda: probe.breaker.state.value == "half_open", "the probe is in flight")
    threads.append(run("leader", flight, "same-key"))
    wait_until(lambda: len(flight.cache._threads) == 1, "the leader's flight is registered")

    locks = _held_locks(pipelines)
    held, let_go = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks.values():
            lock.acquire()
        held.set()
        let_go.wait(CHILD_BOUND)
        for lock in locks.values():
            lock.release()

    holder = threading.Thread(target=hold, name="lock-holder")
    holder.start()
    held.wait(CHILD_BOUND)

    def child(facts: dict[str, Any]) -> None:
        facts["free_locks"] = [name for name, lock in locks.items() if _try(lock)]
        _calls(pipelines, 50, facts)

    code = fork(child)
    let_go.set()
    holder.join(CHILD_BOUND)
    release.set()
    for thread in threads:
        thread.join(CHILD_BOUND)
    parent.update(
        child_exit=code,
        slot_active=slot.bulkhead.active,
        slot_queued=slot.bulkhead.queued,
        probe_state=probe.breaker.state.value,
        locks=len(locks),
    )
    report("parent", parent)


def _fail() -> None:
    raise ValueError("down")


def _try(lock: Any) -> bool:
    if not lock.acquire(timeout=0.2):
        return False
    lock.release()
    return True


def busy_async() -> None:
    """A call in flight inside an event loop run by another thread, and one queued behind it."""
    import buttress  # noqa: PLC0415
    from buttress import Bulkhead, Retry, Timeout, constant  # noqa: PLC0415

    pipelines = _pipelines()
    pipelines["timed"] = _timed_pipeline()
    aslot = buttress.protect(
        "fork-async-slot",
        bulkhead=Bulkhead(max_concurrent=1, max_queue=64, max_wait=WAIT),
        timeout=Timeout(attempt=WAIT, total=WAIT),
        retry=Retry(on=ValueError, attempts=2, backoff=constant(0.001)),
    )
    pipelines["slot"] = aslot  # the child's calls go through the bulkhead held in the loop
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="loop", daemon=True)
    runner.start()
    release = asyncio.Event()

    async def blocked(name: str) -> str:
        await release.wait()
        return name

    in_flight = asyncio.run_coroutine_threadsafe(aslot.acall(blocked, "in-flight"), loop)
    wait_until(lambda: aslot.bulkhead.active == 1, "the loop's call has the slot")
    queued = asyncio.run_coroutine_threadsafe(aslot.acall(blocked, "queued"), loop)
    wait_until(lambda: aslot.bulkhead.queued == 1, "the loop's second call is queued")

    def child(facts: dict[str, Any]) -> None:
        from buttress import _watchdog  # noqa: PLC0415

        facts["watchdogs_at_start"] = len(_watchdog._watchdogs)
        _calls(pipelines, 50, facts)

    code = fork(child)
    loop.call_soon_threadsafe(release.set)
    try:
        results = [in_flight.result(CHILD_BOUND), queued.result(CHILD_BOUND)]
    except Exception as error:  # noqa: BLE001 - reported to the test
        results = [repr(error)]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(CHILD_BOUND)
    loop.close()
    report(
        "parent",
        {"child_exit": code, "results": results, "slot_active": aslot.bulkhead.active},
    )


def zero_code(url: str) -> None:
    """
    ``BUTTRESS_ENABLED=true``: a thread is inside a requests call (holding the only slot of the
    target's bulkhead) when the master forks; the worker's requests must still be protected.
    """
    import requests  # noqa: PLC0415

    from buttress import _activation, _registry  # noqa: PLC0415

    parent: dict[str, Any] = {"active": _activation.is_active()}

    def slow() -> None:
        parent["slow"] = requests.get(url + "/slow", timeout=30).status_code

    def busy() -> bool:
        return any(
            p.bulkhead is not None and p.bulkhead.active == 1
            for p in _registry.REGISTRY.pipelines()
        )

    def waiting_for_the_reply() -> bool:
        frame = sys._current_frames().get(thread.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == "readinto":  # socket.SocketIO.readinto
                return True
            frame = frame.f_back
        return False

    # The first request imports modules lazily (requests imports netrc inside the call): a fork
    # while another thread holds a module's import lock hangs any child, buttress or not. So a
    # first request warms up, and the fork waits until the in-flight request reads its reply.
    parent["warm"] = requests.get(url + "/warm", timeout=30).status_code
    thread = threading.Thread(target=slow, name="in-flight")
    thread.start()
    wait_until(lambda: busy() and waiting_for_the_reply(), "the request waits with the slot")

    def child(facts: dict[str, Any]) -> None:
        response, facts["seconds"] = timed(lambda: requests.get(url + "/flaky", timeout=30))
        facts.update(status=response.status_code, body=response.text)

    parent["child_exit"] = fork(child)
    thread.join(CHILD_BOUND)
    report("parent", parent)


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "zero_code":
        zero_code(sys.argv[2])
    else:
        {"idle": idle, "busy_sync": busy_sync, "busy_async": busy_async}[scenario]()
