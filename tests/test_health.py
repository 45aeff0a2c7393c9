"""The health API: rolling figures, classification, reset and probe, on real pipelines."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest

import buttress
from buttress._health import (
    HealthReport,
    HealthRules,
    ProbeResult,
    TargetHealth,
    health,
    probe,
    reset,
)
from buttress.policies import CircuitState
from buttress.testing import FakeClock


def call(
    guard: buttress.Pipeline, clock: FakeClock, takes: float = 0.0, error: Exception | None = None
) -> None:
    """Run one call through *guard* that takes *takes* fake seconds and raises *error* if given."""

    def fn() -> str:
        clock.advance(takes)
        if error is not None:
            raise error
        return "ok"

    with contextlib.suppress(Exception):
        guard.call(fn)


def only(report: HealthReport) -> TargetHealth:
    """The single target of *report*."""
    (entry,) = report.targets
    return entry


def tripped_breaker(**kwargs: object) -> buttress.CircuitBreaker:
    """A breaker that opens after two failures in two calls."""
    return buttress.CircuitBreaker(window_size=2, minimum_calls=2, **kwargs)  # type: ignore[arg-type]


def test_no_targets_is_healthy() -> None:
    """With nothing registered the service is healthy and lists no target."""
    report = health()

    assert ("healthy", ()) == (report.status, report.targets)
    assert {"status": "healthy", "window": 60.0, "targets": []} == report.to_dict()


def test_successful_target_is_healthy(clock: FakeClock) -> None:
    """A target whose calls succeed is healthy, with its figures filled in."""
    guard = buttress.protect(
        "payments", kind="http", breaker=buttress.CircuitBreaker(), clock=clock
    )
    for _ in range(5):
        call(guard, clock, takes=0.02)

    entry = only(health())

    assert ("payments", "http", "healthy", (), "closed") == (
        entry.target,
        entry.kind,
        entry.status,
        entry.reasons,
        entry.state,
    )
    assert (5, 0.0, 0.0, 0.0, 0.0) == (
        entry.calls,
        entry.failure_rate,
        entry.rejection_rate,
        entry.fallback_rate,
        entry.slow_call_rate,
    )
    assert 5 == entry.calls_by_outcome["success"]
    assert entry.breaker is not None
    assert 5 == entry.breaker.calls


def test_target_without_calls_has_no_rates(clock: FakeClock) -> None:
    """Rates and percentiles are None, not zero, when there is nothing to rate."""
    buttress.protect("idle", clock=clock)

    entry = only(health())

    assert ("healthy", 0, None, None, None, None, None, None) == (
        entry.status,
        entry.calls,
        entry.failure_rate,
        entry.rejection_rate,
        entry.slow_call_rate,
        entry.p50,
        entry.p95,
        entry.state,
    )
    assert (None, None, None) == (
        entry.bulkhead_active,
        entry.bulkhead_queued,
        entry.bulkhead_limit,
    )


def test_failure_rate_at_degraded_threshold_degrades(clock: FakeClock) -> None:
    """One failure in ten calls (10 %) degrades a target but does not make it unhealthy."""
    guard = buttress.protect("db", clock=clock)
    for _ in range(9):
        call(guard, clock)
    call(guard, clock, error=ConnectionError("refused"))

    report = health()

    assert ("degraded", "degraded") == (report.status, only(report).status)
    assert 0.1 == only(report).failure_rate
    assert ("failure rate 10% >= 10%",) == only(report).reasons


def test_failure_rate_under_degraded_threshold_is_healthy(clock: FakeClock) -> None:
    """One failure in eleven calls (9 %) stays healthy."""
    guard = buttress.protect("db", clock=clock)
    for _ in range(10):
        call(guard, clock)
    call(guard, clock, error=ConnectionError("refused"))

    assert "healthy" == only(health()).status


@pytest.mark.parametrize(
    ("successes", "failures", "expected"),
    [
        (5, 5, "unhealthy"),  # 50 % over 10 calls
        (1, 4, "degraded"),  # 80 %, but only 5 calls: below min_calls
        (6, 4, "degraded"),  # 40 % over 10 calls
    ],
)
def test_failure_rate_makes_unhealthy_only_past_min_calls(
    clock: FakeClock, successes: int, failures: int, expected: str
) -> None:
    """A high failure rate makes a target unhealthy only over at least min_calls calls."""
    guard = buttress.protect("db", clock=clock, critical=True)
    for _ in range(successes):
        call(guard, clock)
    for _ in range(failures):
        call(guard, clock, error=TimeoutError())

    report = health()

    assert (expected, expected) == (only(report).status, report.status)


def test_open_breaker_is_unhealthy(clock: FakeClock) -> None:
    """An open breaker makes its target unhealthy, whatever the rates."""
    guard = buttress.protect("api", breaker=tripped_breaker(), clock=clock, critical=True)
    call(guard, clock, error=ConnectionError())
    call(guard, clock, error=ConnectionError())

    report = health()
    entry = only(report)

    assert ("unhealthy", "unhealthy", "open") == (report.status, entry.status, entry.state)
    assert "breaker is open" in entry.reasons
    assert entry.breaker is not None
    assert (CircuitState.OPEN, 2, 2, 1.0) == (
        entry.breaker.state,
        entry.breaker.calls,
        entry.breaker.failures,
        entry.breaker.failure_rate,
    )


def test_forced_open_breaker_is_unhealthy(clock: FakeClock) -> None:
    """A breaker forced open by an operator makes its target unhealthy."""
    guard = buttress.protect("api", breaker=buttress.CircuitBreaker(), clock=clock)
    assert guard.breaker is not None
    guard.breaker.force_open()

    entry = only(health())

    assert ("unhealthy", ("breaker is forced_open",)) == (entry.status, entry.reasons)


def test_half_open_breaker_is_degraded(clock: FakeClock) -> None:
    """A breaker probing its dependency makes its target degraded."""
    breaker = tripped_breaker(open_duration=100.0, half_open_calls=2)
    guard = buttress.protect("api", breaker=breaker, clock=clock)
    call(guard, clock, error=ConnectionError())
    call(guard, clock, error=ConnectionError())
    clock.advance(100)  # past the open duration, and the failures leave the 60 s window
    call(guard, clock)  # the first of two probes

    entry = only(health())

    assert ("degraded", "half_open", ("breaker is half_open",)) == (
        entry.status,
        entry.state,
        entry.reasons,
    )


@pytest.mark.parametrize(("critical", "expected"), [(True, "unhealthy"), (False, "degraded")])
def test_only_critical_targets_make_the_service_unhealthy(
    clock: FakeClock, critical: bool, expected: str
) -> None:
    """An unhealthy target makes the service unhealthy if critical, else only degraded."""
    sick = buttress.protect("search", breaker=tripped_breaker(), clock=clock, critical=critical)
    well = buttress.protect("payments", clock=clock, critical=True)
    call(sick, clock, error=ConnectionError())
    call(sick, clock, error=ConnectionError())
    call(well, clock)

    report = health()

    assert expected == report.status
    assert ["healthy", "unhealthy"] == [t.status for t in report.targets]  # payments, search


def test_rejections_degrade(clock: FakeClock) -> None:
    """Calls refused by a rate limit degrade the target; they are not failures."""
    guard = buttress.protect(
        "llm", rate_limit=buttress.RateLimit(rate=1, burst=1, max_wait=0), clock=clock
    )
    call(guard, clock)
    call(guard, clock)  # no token left at the same instant: rejected

    entry = only(health())

    assert ("degraded", 0.5, 0.0) == (entry.status, entry.rejection_rate, entry.failure_rate)
    assert ("rejection rate 50% >= 10%",) == entry.reasons
    assert 1 == entry.calls_by_outcome["rejected"]


def test_fallbacks_degrade_and_are_not_rated_as_failures(clock: FakeClock) -> None:
    """Calls answered by the fallback degrade the target and stay out of the failure rate."""
    guard = buttress.protect("recs", fallback=buttress.Fallback(value=[]), clock=clock)
    call(guard, clock)
    call(guard, clock, error=ConnectionError())

    entry = only(health())

    assert ("degraded", 0.5, 0.0) == (entry.status, entry.fallback_rate, entry.failure_rate)
    assert ("fallback rate 50% >= 10%",) == entry.reasons


def test_slow_calls_use_the_breakers_duration(clock: FakeClock) -> None:
    """With a breaker, a call is slow from the breaker's slow_call_duration."""
    guard = buttress.protect(
        "api", breaker=buttress.CircuitBreaker(slow_call_duration=1.0), clock=clock
    )
    call(guard, clock, takes=1.0)  # slow: >= 1 s
    call(guard, clock, takes=0.5)

    entry = only(health())

    assert ("degraded", 0.5) == (entry.status, entry.slow_call_rate)
    assert ("slow-call rate 50% >= 50%",) == entry.reasons


@pytest.mark.parametrize(
    ("rules", "expected"),
    [(None, 0.0), (HealthRules(slow_call_duration=2.0), 1.0)],
)
def test_slow_calls_without_breaker_use_the_rules_duration(
    clock: FakeClock, rules: HealthRules | None, expected: float
) -> None:
    """Without a breaker a call is slow from 5 s, or from the rules' slow_call_duration."""
    guard = buttress.protect("api", clock=clock)
    call(guard, clock, takes=3.0)

    assert expected == only(health(rules=rules)).slow_call_rate


def test_percentiles_are_nearest_rank(clock: FakeClock) -> None:
    """p50 and p95 are the nearest-rank durations of the calls that ran, rejections left out."""
    guard = buttress.protect("api", clock=clock)
    for i in range(1, 21):  # 0.1 s .. 2.0 s, in a shuffled order
        call(guard, clock, takes=((i * 7) % 20 + 1) / 10)

    entry = only(health())

    assert pytest.approx(1.0) == entry.p50  # rank ceil(0.50 * 20) = 10
    assert pytest.approx(1.9) == entry.p95  # rank ceil(0.95 * 20) = 19


def test_percentiles_leave_rejections_out(clock: FakeClock) -> None:
    """A rejected call's zero duration does not pull the percentiles down."""
    guard = buttress.protect(
        "api", rate_limit=buttress.RateLimit(rate=1, burst=1, max_wait=0), clock=clock
    )
    call(guard, clock, takes=0.3)
    call(guard, clock)  # rejected: the bucket refilled only 0.3 tokens
    call(guard, clock)

    entry = only(health())

    assert (3, 1) == (entry.calls, entry.calls_by_outcome["success"])
    assert pytest.approx(0.3) == entry.p50
    assert pytest.approx(0.3) == entry.p95


def test_window_leaves_old_calls_out(clock: FakeClock) -> None:
    """Calls older than the window are out of the rolling figures but in the lifetime counts."""
    guard = buttress.protect("db", clock=clock)
    for _ in range(10):
        call(guard, clock, takes=4.0, error=ConnectionError())
    clock.advance(61)
    call(guard, clock, takes=0.1)

    entry = only(health())

    assert ("healthy", 1, 0.0) == (entry.status, entry.calls, entry.failure_rate)
    assert pytest.approx(0.1) == entry.p95
    assert {"success": 1, "failure": 10} == {k: v for k, v in entry.calls_by_outcome.items() if v}


def test_window_is_configurable(clock: FakeClock) -> None:
    """A longer window takes older calls in."""
    guard = buttress.protect("db", clock=clock)
    call(guard, clock, error=ConnectionError())
    clock.advance(100)
    call(guard, clock)

    assert [1, 2] == [only(health(window=w)).calls for w in (60, 120)]
    assert 120.0 == health(window=120).window


def test_full_bulkhead_with_queue_degrades(clock: FakeClock) -> None:
    """A bulkhead with every slot taken and calls waiting degrades its target."""
    guard = buttress.protect(
        "pool", bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=5, max_wait=60), clock=clock
    )
    bulkhead = guard.bulkhead
    assert bulkhead is not None
    bulkhead.acquire()  # hold the only slot
    waiter = threading.Thread(target=call, args=(guard, clock))
    waiter.start()
    deadline = time.monotonic() + 10
    while bulkhead.queued == 0 and time.monotonic() < deadline:
        threading.Event().wait(0.001)  # poll: the waiter enqueues on its own thread

    entry = only(health())
    bulkhead.release()
    waiter.join(10)

    assert (1, 1, 1) == (entry.bulkhead_active, entry.bulkhead_queued, entry.bulkhead_limit)
    assert ("degraded", ("bulkhead is full and calls are queued",)) == (entry.status, entry.reasons)
    assert ("healthy", 0, 0) == (
        only(health()).status,
        only(health()).bulkhead_active,
        only(health()).bulkhead_queued,
    )


def test_full_bulkhead_without_queue_is_healthy(clock: FakeClock) -> None:
    """Every slot taken but nobody waiting is a busy target, not a degraded one."""
    guard = buttress.protect("pool", bulkhead=buttress.Bulkhead(max_concurrent=1), clock=clock)
    assert guard.bulkhead is not None
    guard.bulkhead.acquire()

    entry = only(health())
    guard.bulkhead.release()

    assert ("healthy", 1, 0, 1) == (
        entry.status,
        entry.bulkhead_active,
        entry.bulkhead_queued,
        entry.bulkhead_limit,
    )


def test_custom_rules_change_the_verdict(clock: FakeClock) -> None:
    """Thresholds come from the rules passed in."""
    guard = buttress.protect("db", clock=clock)
    call(guard, clock)
    call(guard, clock, error=ConnectionError())

    strict = HealthRules(min_calls=2, unhealthy_failure_rate=0.5)
    lenient = HealthRules(degraded_failure_rate=0.6)

    assert ["unhealthy", "healthy"] == [only(health(rules=r)).status for r in (strict, lenient)]


@pytest.mark.parametrize(
    "kwargs",
    [{"min_calls": 0}, {"degraded_failure_rate": 1.5}, {"slow_call_duration": 0}],
)
def test_bad_rules_are_refused(kwargs: dict[str, float]) -> None:
    """HealthRules validates its thresholds at construction, naming the parameter."""
    (name,) = kwargs

    with pytest.raises(buttress.ConfigurationError, match=name):
        HealthRules(**kwargs)  # type: ignore[arg-type]


def test_bad_window_is_refused() -> None:
    """health() refuses a window that is not positive."""
    with pytest.raises(buttress.ConfigurationError, match="window=0"):
        health(window=0)


def test_report_is_json_ready(clock: FakeClock) -> None:
    """to_dict() gives plain JSON types, with the breaker's figures nested."""
    guard = buttress.protect(
        "api",
        breaker=buttress.CircuitBreaker(),
        bulkhead=buttress.Bulkhead(max_concurrent=3),
        clock=clock,
        critical=True,
    )
    call(guard, clock, takes=0.5)

    data = json.loads(json.dumps(health().to_dict()))
    (entry,) = data["targets"]

    assert "healthy" == data["status"]
    assert {
        "state": "closed",
        "calls": 1,
        "failures": 0,
        "slow_calls": 0,
        "failure_rate": None,
        "slow_call_rate": None,
    } == entry["breaker"]
    assert (True, 0, 0, 3, 0.5) == (
        entry["critical"],
        entry["bulkhead_active"],
        entry["bulkhead_queued"],
        entry["bulkhead_limit"],
        entry["p50"],
    )


def test_reset_closes_the_breaker_and_keeps_the_counts(clock: FakeClock) -> None:
    """reset() closes an open breaker and leaves the call counts alone."""
    guard = buttress.protect("api", breaker=tripped_breaker(), clock=clock)
    call(guard, clock, error=ConnectionError())
    call(guard, clock, error=ConnectionError())
    before = only(health()).calls_by_outcome

    reset("api")
    entry = only(health())

    assert ("closed", before) == (entry.state, entry.calls_by_outcome)
    assert entry.breaker is not None
    assert 0 == entry.breaker.calls


def test_reset_without_breaker_does_nothing(clock: FakeClock) -> None:
    """A target without a breaker has nothing to reset."""
    buttress.protect("plain", clock=clock)

    reset("plain")

    assert None is only(health()).state


def test_reset_unknown_target_lists_known_ones(clock: FakeClock) -> None:
    """An unknown target raises KeyError naming at most ten known targets."""
    for i in range(12):
        buttress.protect(f"t{i:02}", clock=clock)

    with pytest.raises(KeyError) as info:
        reset("nope")

    message = info.value.args[0]
    assert "'nope'" in message
    assert "'t00'" in message
    assert "'t09'" in message
    assert "'t10'" not in message
    assert "and 2 more" in message


def test_probe_ok_runs_through_the_pipeline(clock: FakeClock) -> None:
    """A probe that returns is ok, timed on the pipeline's clock, and counted as a call."""
    guard = buttress.protect("db", clock=clock, probe=lambda: clock.advance(0.25))

    result = probe("db")

    assert ProbeResult(target="db", ok=True, error=None, duration=0.25) == result
    assert 1 == guard.stats.by_outcome()["success"]


def test_failing_probe_reports_the_type_not_the_message(clock: FakeClock) -> None:
    """A failing probe reports its exception's type only: the message may hold a secret."""

    def check() -> None:
        raise ConnectionError("postgresql://admin:hunter2@db/app")

    buttress.protect("db", clock=clock, probe=check)

    result = probe("db")

    assert (False, "ConnectionError") == (result.ok, result.error)
    assert "hunter2" not in repr(result)
    assert "hunter2" not in json.dumps(result.to_dict())


def test_probe_rejected_by_open_breaker(clock: FakeClock) -> None:
    """A probe goes through the breaker: an open one rejects it."""
    guard = buttress.protect("db", breaker=tripped_breaker(), clock=clock, probe=lambda: None)
    call(guard, clock, error=ConnectionError())
    call(guard, clock, error=ConnectionError())

    assert (False, "buttress.CircuitOpenError") == (probe("db").ok, probe("db").error)


def test_async_probe_runs(clock: FakeClock) -> None:
    """A coroutine probe runs on its own event loop."""
    ran: list[bool] = []

    async def check() -> None:
        ran.append(True)

    buttress.protect("db", clock=clock, probe=check)

    assert (True, [True]) == (probe("db").ok, ran)


def test_probe_without_probe_names_the_target(clock: FakeClock) -> None:
    """Probing a target registered without a probe explains how to add one."""
    buttress.protect("db", clock=clock)

    with pytest.raises(buttress.ConfigurationError, match=r"target 'db' has no probe"):
        probe("db")


def test_probe_unknown_target() -> None:
    """Probing an unknown target raises KeyError."""
    with pytest.raises(KeyError, match="no target is registered"):
        probe("db")
