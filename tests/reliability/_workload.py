"""Callers for the combination tests: scripted dependencies, threads, tasks and cancellations.

A dependency's behaviour is a script of steps, picked per call and attempt, so that retries
meet different answers: ``ok``, ``conn`` (a retryable ConnectionError), ``value`` (a
non-retryable ValueError), ``again`` (a result the retry's predicate rejects), ``slow`` (past
the attempt timeout: fake time advances, and asyncio attempts also take real time, long enough
for the watchdog to cancel them) and ``nested`` (a buttress TimeoutError, as a pipeline called
inside the dependency raises it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tests.reliability._pipelines import CALL_ID, Ledger

import buttress
from buttress.testing import FakeClock

STEPS = ("ok", "conn", "value", "again", "slow", "nested")
SLOW_FAKE = 0.03
"""Fake seconds a slow attempt takes: past every attempt timeout the specs use."""


def _step(script: Sequence[str], call: int, attempt: int) -> str:
    return script[(call * 7 + attempt) % len(script)]


def nested_timeout(call: int) -> buttress.TimeoutError:
    """The timeout a pipeline called inside the dependency would raise."""
    return buttress.TimeoutError(
        f"inner pipeline ran out (call {call})", target="inner", timeout=0.01, scope="total"
    )


class YieldingClock(FakeClock):
    """A fake clock whose async sleeps also let the other tasks run, as a real back-off does."""

    async def asleep(self, seconds: float) -> None:
        """Advance the fake time, then yield to the event loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)


def sync_dependency(
    script: Sequence[str], ledger: Ledger, clock: FakeClock
) -> Callable[[int], tuple[str, int]]:
    """The scripted dependency, for sync calls."""

    def dependency(call: int) -> tuple[str, int]:
        step = _step(script, call, ledger.attempt(call))
        if step == "conn":
            raise ConnectionError(f"refused (call {call})")
        if step == "value":
            raise ValueError(f"bad request (call {call})")
        if step == "nested":
            raise nested_timeout(call)
        if step == "again":
            return ("again", call)
        if step == "slow":
            clock.advance(SLOW_FAKE)
            time.sleep(0.001)
        return ("ok", call)

    return dependency


def async_dependency(
    script: Sequence[str], ledger: Ledger, clock: FakeClock, real_slow: float
) -> Callable[[int], Awaitable[tuple[str, int]]]:
    """The scripted dependency, for async calls; a slow attempt takes *real_slow* seconds."""

    async def dependency(call: int) -> tuple[str, int]:
        step = _step(script, call, ledger.attempt(call))
        if step == "conn":
            raise ConnectionError(f"refused (call {call})")
        if step == "value":
            raise ValueError(f"bad request (call {call})")
        if step == "nested":
            raise nested_timeout(call)
        if step == "again":
            return ("again", call)
        if step == "slow":
            clock.advance(SLOW_FAKE)
            await asyncio.sleep(real_slow)
        else:
            await asyncio.sleep(0)
        return ("ok", call)

    return dependency


def one_sync_call(
    pipeline: buttress.Pipeline,
    fn: Callable[..., Any],
    call: int,
    ledger: Ledger,
    gave_up: Callable[[object], bool] | None,
    priorities: int = 1,
) -> None:
    """Call *fn(call)* through *pipeline* (at priority ``call % priorities``) and book what the
    caller saw."""
    token = CALL_ID.set(call)
    ledger.start()
    try:
        result = pipeline.options(priority=call % priorities).call(fn, call)
    except Exception as exc:  # every outcome is booked; the invariants judge them
        ledger.raised(exc)
    else:
        ledger.returned(result, gave_up)
    finally:
        CALL_ID.reset(token)


async def one_async_call(
    pipeline: buttress.Pipeline,
    fn: Callable[..., Awaitable[Any]],
    call: int,
    ledger: Ledger,
    gave_up: Callable[[object], bool] | None,
    priorities: int = 1,
) -> None:
    """Await *fn(call)* through *pipeline* (at priority ``call % priorities``) and book what
    the caller saw (cancelled included)."""
    CALL_ID.set(call)  # the task runs in a copy of the context: nothing to reset
    ledger.start()
    try:
        result = await pipeline.options(priority=call % priorities).acall(fn, call)
    except asyncio.CancelledError:
        ledger.end("cancelled")
        raise
    except Exception as exc:  # every outcome is booked; the invariants judge them
        ledger.raised(exc)
    else:
        ledger.returned(result, gave_up)


def in_threads(
    threads: int, calls: int, body: Callable[[int], None], first: int = 0, bound: float = 60.0
) -> list[str]:
    """Run *body(call)* for *calls* calls in each of *threads* threads released together.

    Returns the names of threads still running after *bound* seconds (a deadlock: goal none).
    """
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(10)
            for i in range(calls):
                body(first + index * calls + i)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    pool = [
        threading.Thread(target=work, args=(i,), name=f"caller-{i}", daemon=True)
        for i in range(threads)
    ]
    for t in pool:
        t.start()
    deadline = time.monotonic() + bound
    for t in pool:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    return [t.name for t in pool if t.is_alive()]


async def in_tasks(
    tasks: int,
    body: Callable[[int], Awaitable[None]],
    cancel: Sequence[int] = (),
    first: int = 0,
    bound: float = 60.0,
) -> int:
    """Run *body(call)* in *tasks* tasks at once, cancelling those numbered in *cancel* at
    staggered moments (before they start, at once, a little later); returns how many tasks
    were still pending after *bound* seconds (a deadlock: goal 0)."""
    running = [asyncio.create_task(body(first + i)) for i in range(tasks)]
    for k, index in enumerate(cancel):
        if k % 3 == 1:
            await asyncio.sleep(0)
        elif k % 3 == 2:  # noqa: PLR2004
            await asyncio.sleep(0.001 * (k % 4))
        running[index % tasks].cancel()
    _, pending = await asyncio.wait(running, timeout=bound)
    for task in pending:
        task.cancel()
    return len(pending)
