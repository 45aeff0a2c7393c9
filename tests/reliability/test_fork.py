"""
fork() with buttress in use: every child starts clean and makes protected calls (issue 14).

A preforking server (gunicorn) activates buttress in its master and forks the workers, maybe
while a thread of the master is inside a protected call. Each test runs a scenario of
``fork_scenarios.py`` in an interpreter of its own, which really forks: the child must make
protected calls within a bound and exit 0, and the parent's own calls in flight must finish
normally. pytest itself never forks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.reliability.figures import record
from tests.support.fault_server import FaultServer, delay, ok, status
from tests.support.fixtures import fault_server  # noqa: F401

from buttress import CircuitBreaker, CircuitOpenError, CircuitState
from buttress._context import PolicyContext
from buttress.policies._bulkhead_core import BulkheadCore, Waiter
from buttress.testing import FakeClock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")

SCENARIOS = Path(__file__).with_name("fork_scenarios.py")
SLOTS = 1
"""Every scenario's bulkheads hold one call: a slot the parent keeps is the child's only one."""


def run(scenario: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run *scenario*; returns the facts reported by the parent (``parent``) and the child."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(SCENARIOS), scenario, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    facts: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        who, _, payload = line.partition(": ")
        if who in ("parent", "child"):
            facts[who] = json.loads(payload)
    assert done.returncode == 0, f"the scenario failed:\n{done.stdout}\n{done.stderr}"
    assert "parent" in facts, f"the parent did not report:\n{done.stdout}\n{done.stderr}"
    assert "child" in facts, f"the child did not report:\n{done.stdout}\n{done.stderr}"
    facts["stderr"] = done.stderr
    return facts


def why(facts: dict[str, Any]) -> str:
    """What the child reported, and the end of what it printed on stderr."""
    return f"child: {facts['child']}\n{facts['stderr'][-3000:]}"


def assert_child_worked(child: dict[str, Any], case: str) -> None:
    """Every protected call of the child went through: nothing of the parent's was in the way."""
    calls = child.get("sync_ok", 0) + child.get("contended_ok", 0) + child.get("async_ok", 0)
    record(
        "fork",
        f"{case}: child's protected calls that went through",
        f"{calls}/102",
        "102/102",
        calls == 102 and "error" not in child,
    )
    assert "error" not in child, child["error"]
    assert child["slot_active_at_start"] == 0
    assert child["slot_queued_at_start"] == 0
    assert child["sync_ok"] == 50
    assert child["contended_ok"] == 2
    assert child["retried"] == "done"
    assert child["probe_call"] == "done"
    assert child["probe_state_after"] == "closed"
    assert child["flight_call"] == "same-key"
    assert child["async_ok"] == 50
    # The attempt timeout fired through the child's own event loop (0.2 s asked).
    assert 0.15 < child["timeout_seconds"] < 5.0
    assert child["slot_active_at_end"] == 0


def test_idle_parent() -> None:
    """
    A parent with nothing in flight: the child and the parent go on calling.

    A reset that fails in the child (a fault of buttress's own) is logged once, with the
    object's type, and the child goes on.
    """
    facts = run("idle")

    assert facts["parent"]["child_exit"] == 0, why(facts)
    assert_child_worked(facts["child"], "idle parent")
    assert facts["parent"]["after"] == "done"
    warnings = [line for line in facts["stderr"].splitlines() if "after fork" in line]
    assert len(warnings) == 1
    assert "could not reset: _BrokenReset (RuntimeError)" in warnings[0]


def test_parent_with_calls_in_flight_on_other_threads() -> None:
    """
    At the fork, other threads hold the only bulkhead slot, wait in its queue, hold a breaker's
    half-open probe, lead a cache flight, and hold every lock a call may take.

    The child starts with a free slot, an empty queue, a probe of its own, no flight and free
    locks; the breaker stays half-open there (it describes the dependency) and closes on the
    child's successful probe. In the parent every call in flight finishes normally.
    """
    facts = run("busy_sync")
    child, parent = facts["child"], facts["parent"]

    assert parent["child_exit"] == 0, why(facts)
    assert child["free_locks"] == [
        "registry",
        "config",
        "activation",
        "hooks",
        "telemetry_install",
        "telemetry",
        "bulkhead",
        "breaker",
        "breaker_events",
        "retry_budget",
        "rate_limit",
        "cache",
    ]
    assert child["probe_state_before"] == "half_open"
    assert_child_worked(child, "call in flight on another thread")
    # The parent's calls: the holder and the waiter after it, the probe, the flight's leader.
    assert parent["holder"] == "holder"
    assert parent["waiter"] == "waiter"
    assert parent["probe"] == "probe"
    assert parent["leader"] == "same-key"
    assert (parent["slot_active"], parent["slot_queued"]) == (0, 0)
    assert parent["probe_state"] == "closed"


def test_parent_with_a_call_in_flight_inside_an_event_loop() -> None:
    """
    At the fork, a loop run by another thread has a call holding the only slot (under an attempt
    timeout, so that loop's watchdog is armed) and a call queued behind it.

    That loop does not exist in the child: the child runs its own loops, with a free slot and
    a working attempt timeout. In the parent both calls finish normally.
    """
    facts = run("busy_async")
    child, parent = facts["child"], facts["parent"]

    assert parent["child_exit"] == 0, why(facts)
    assert child["watchdogs_at_start"] == 0
    assert_child_worked(child, "call in flight inside an event loop")
    assert parent["results"] == ["in-flight", "queued"]
    assert parent["slot_active"] == 0


def test_zero_code_worker_forked_during_a_request_is_protected(
    fault_server: FaultServer,  # noqa: F811
) -> None:
    """
    ``BUTTRESS_ENABLED=true``: the master forks a worker while one of its threads is inside a
    ``requests`` call that holds the only slot of the target's bulkhead. The worker's request
    is protected: the 503 is retried into a 200, and the server saw both attempts.
    """
    fault_server.script("/slow", delay(1.0, ok(b"slow")))
    fault_server.script("/flaky", status(503), ok(b"fine"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUTTRESS_", "OTEL_"))}
    env.update(
        BUTTRESS_ENABLED="true",
        BUTTRESS_BULKHEAD_MAX_CONCURRENT=str(SLOTS),
        OTEL_METRICS_EXPORTER="none",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    facts = run("zero_code", f"http://{fault_server.authority}", env=env)
    child, parent = facts["child"], facts["parent"]

    record(
        "fork",
        "zero-code worker forked mid-request: its 503 retried into",
        child.get("status"),
        "200",
        child.get("status") == 200,
    )
    assert parent["active"] is True
    assert parent["child_exit"] == 0, why(facts)
    assert (child["status"], child["body"]) == (200, "fine")
    assert fault_server.count("/flaky") == 2
    assert parent["slow"] == 200


# -- the resets themselves, in this process (no fork: each object is reset alone) ---------------


def test_bulkhead_core_reset_frees_every_permit_in_place() -> None:
    """
    Permits held, waiters, a lowered limit's debt and observe-mode extras are all forgotten; the
    permit deque stays the same object (the compiled drivers hold it) and serves the limit.
    """
    core = BulkheadCore(limit=3, max_queue=2)
    free = core.free
    for _ in range(3):
        assert core.try_enter()
    core.admit_extra()
    assert core.enqueue(Waiter(priority=0))[0]
    core.set_limit(1)  # two permits owed once calls release
    assert (core.active, core.queued, core.debt, core.extra) == (4, 1, 2, 1)

    core.reset()

    assert core.free is free
    assert (core.active, core.queued, core.debt, core.extra, core.slow) == (0, 0, 0, 0, False)
    assert core.pending() == []
    assert core.try_enter()
    assert not core.try_enter()  # the limit is the lowered one


def test_bulkhead_core_reset_drops_permits_a_lowered_limit_still_owes() -> None:
    """Free permits above a lowered limit (not yet paid off) do not survive the reset."""
    core = BulkheadCore(limit=4, max_queue=0)
    core.set_limit(2)
    core.free.append(None)  # a permit in the deque beyond the limit, as in mid-release

    core.reset()

    assert (len(core.free), core.active) == (2, 0)


def test_breaker_reset_frees_the_half_open_probes_and_keeps_the_state() -> None:
    """
    A breaker half-open with its only probe taken (by a call that will never end in the child)
    admits a new probe after the reset; its state, and what it learnt, are kept.
    """
    clock = FakeClock()
    events: list[object] = []
    ctx = PolicyContext(target="svc", kind="http", clock=clock, emit=events.append)
    breaker = CircuitBreaker(consecutive_failures=1, open_duration=1.0, half_open_calls=1)
    state = breaker.bind(ctx)
    state.acquire(clock.monotonic())
    state.on_exception(clock.monotonic(), 0.01, ConnectionError("down"))
    clock.advance(2.0)
    state.acquire(clock.monotonic())  # the probe, taken by a thread left in the parent
    with pytest.raises(CircuitOpenError):
        state.acquire(clock.monotonic())

    state._after_fork_in_child()

    assert state.state is CircuitState.HALF_OPEN
    state.acquire(clock.monotonic())  # the child's own probe
    state.on_result(clock.monotonic(), 0.01, None)
    assert state.state is CircuitState.CLOSED


HEALTH_AFTER_FORK = """
import json, os, urllib.request
import buttress

server = buttress.start_health_server(0)
pid = os.fork()
if pid == 0:  # the child lets go of its copy of the listening socket; the parent keeps serving
    os._exit(0 if server._loop.listener.fileno() == -1 else 3)
_, status = os.waitpid(pid, 0)
with urllib.request.urlopen(server.url + "/health", timeout=10) as reply:
    served = reply.status
server.stop()
print(json.dumps({"child": os.waitstatus_to_exitcode(status), "parent": served}))
"""


def test_a_forked_child_lets_go_of_the_health_endpoint() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HEALTH_AFTER_FORK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert {"child": 0, "parent": 200} == json.loads(done.stdout.strip().splitlines()[-1])
