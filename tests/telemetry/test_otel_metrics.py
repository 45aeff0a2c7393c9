"""OpenTelemetry metrics: exact names, attributes and values, through the sync and the async driver."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import buttress
from buttress import telemetry
from buttress._registry import REGISTRY
from buttress.telemetry import _otel
from buttress.telemetry import semconv as sc
from buttress.testing import FakeClock

ZERO_OUTCOMES = dict.fromkeys(sc.OUTCOMES, 0)


def outcomes(**counts: int) -> dict[str, int]:
    """Every outcome's count: zero unless given."""
    return {**ZERO_OUTCOMES, **counts}


def no_budget_retry(attempts: int = 3, **kw: Any) -> buttress.Retry:
    """A retry on ConnectionError without jitter or budget, so counts are exact."""
    kw.setdefault("backoff", buttress.constant(0.5))
    return buttress.Retry(on=ConnectionError, attempts=attempts, budget=None, **kw)


def fail() -> None:
    raise ValueError("bug")


def conn_fail() -> None:
    raise ConnectionError("refused")


def trip(run: Any, guard: buttress.Pipeline) -> None:
    """Open a breaker configured with window_size=minimum_calls=2."""
    for _ in range(2):
        with pytest.raises(ConnectionError):
            run.call(guard, conn_fail)
    assert buttress.CircuitState.OPEN == guard.breaker.state  # type: ignore[union-attr]


# -- outcomes ------------------------------------------------------------------------------------


def test_successes_and_failures_are_counted_by_target_kind_and_outcome(run, otel, clock) -> None:
    """Three successes and two failures are five points of buttress.calls with exact attributes."""
    guard = buttress.protect("db1", kind="db", clock=clock)
    for _ in range(3):
        run.call(guard, lambda: 1)
    for _ in range(2):
        run.outcome(guard, fail)

    points = otel.series(otel.metrics(), sc.CALLS, {sc.ATTR_TARGET: "db1"})

    assert {
        frozenset({sc.ATTR_TARGET: "db1", sc.ATTR_KIND: "db", sc.ATTR_OUTCOME: o}.items()): n
        for o, n in outcomes(success=3, failure=2).items()
    } == points


def test_a_retried_then_successful_call_counts_once_as_success(run, otel, clock, flaky) -> None:
    """Two failed attempts and a success are one success call and two retries."""
    guard = buttress.protect("r", retry=no_budget_retry(), clock=clock)

    assert "ok" == run.call(guard, flaky(2))

    assert outcomes(success=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "r")
    assert {"ConnectionError": 2} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "r")
    assert {} == otel.values(sc.RETRIES_EXHAUSTED, sc.ATTR_EXHAUSTED_REASON, "r")


def test_an_open_breaker_counts_rejected_calls(run, otel, clock) -> None:
    """Calls refused by an open breaker are outcome rejected and reason circuit_open."""
    guard = buttress.protect(
        "br", breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2), clock=clock
    )
    trip(run, guard)
    for _ in range(3):
        assert isinstance(run.outcome(guard, lambda: 1), buttress.CircuitOpenError)

    assert outcomes(failure=2, rejected=3) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "br")
    assert {"circuit_open": 3} == otel.values(sc.REJECTIONS, sc.ATTR_REASON, "br")


@pytest.mark.parametrize(
    ("bulkhead", "reason"),
    [
        # The only slot taken and no queue: bulkhead_full.
        (buttress.Bulkhead(max_concurrent=1, max_queue=0), "bulkhead_full"),
        # A queue, but max_wait=0: queue_timeout.
        (buttress.Bulkhead(max_concurrent=1, max_queue=5, max_wait=0), "queue_timeout"),
    ],
)
def test_a_full_bulkhead_counts_rejected_calls(run, otel, clock, bulkhead, reason) -> None:
    """With the only slot taken, a call is rejected, counted with the bulkhead's reason."""
    guard = buttress.protect("bh", bulkhead=bulkhead, clock=clock)
    guard.bulkhead.acquire()  # type: ignore[union-attr]
    try:
        error = run.outcome(guard, lambda: 1)
    finally:
        guard.bulkhead.release()  # type: ignore[union-attr]

    assert isinstance(error, buttress.BulkheadFullError)
    assert outcomes(rejected=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "bh")
    assert {reason: 1} == otel.values(sc.REJECTIONS, sc.ATTR_REASON, "bh")


def test_rate_limited_calls_are_counted_rejected(run, otel, clock) -> None:
    """With one token and no wait allowed, the second and third calls are rate_limited."""
    guard = buttress.protect(
        "rl", rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0), clock=clock
    )
    results = [run.outcome(guard, lambda: 1) for _ in range(3)]

    assert [1, buttress.RateLimitedError, buttress.RateLimitedError] == [
        r if r == 1 else type(r) for r in results
    ]
    assert outcomes(success=1, rejected=2) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "rl")
    assert {"rate_limited": 2} == otel.values(sc.REJECTIONS, sc.ATTR_REASON, "rl")


def test_a_spent_retry_budget_rejects_and_exhausts(run, otel, clock, flaky) -> None:
    """A zero budget refuses the first retry: reason retry_budget, exhausted reason budget."""
    guard = buttress.protect(
        "bud",
        retry=buttress.Retry(
            on=ConnectionError,
            attempts=3,
            backoff=buttress.constant(0.1),
            budget=buttress.RetryBudget(ratio=0.0, min_per_second=0.0),
            budget_exhausted="raise",
        ),
        clock=clock,
    )

    assert isinstance(run.outcome(guard, flaky(5)), buttress.RetryBudgetExhaustedError)
    assert outcomes(rejected=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "bud")
    assert {"retry_budget": 1} == otel.values(sc.REJECTIONS, sc.ATTR_REASON, "bud")
    assert {"budget": 1} == otel.values(sc.RETRIES_EXHAUSTED, sc.ATTR_EXHAUSTED_REASON, "bud")
    assert {} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "bud")


def test_total_deadline_reached_during_an_inner_rate_limit_wait_is_a_timeout(
    run, otel, clock
) -> None:
    """A retry that waits for a token until the total deadline ends as timeout, scope total."""
    guard = buttress.protect(
        "tot",
        retry=no_budget_retry(backoff=buttress.constant(0.0)),
        rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=10.0),
        timeout=buttress.Timeout(attempt=None, total=1.0),
        order=(
            "fallback",
            "cache",
            "bulkhead",
            "timeout",
            "retry",
            "rate_limit",
            "breaker",
            "attempt_timeout",
        ),
        clock=clock,
    )

    error = run.outcome(guard, conn_fail)

    assert isinstance(error, buttress.TimeoutError)
    assert "total" == error.scope
    assert outcomes(timeout=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "tot")
    assert {"total": 1} == otel.values(sc.TIMEOUTS, sc.ATTR_SCOPE, "tot")
    assert {"ConnectionError": 1} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "tot")
    assert {sc.ATTR_TARGET: "tot", sc.ATTR_KIND: "function"}.items() <= dict(
        next(iter(otel.series(otel.metrics(), sc.RATE_LIMIT_WAIT, {sc.ATTR_TARGET: "tot"})))
    ).items()


def test_an_async_attempt_timeout_cancels_and_counts_timeout_scope_attempt(otel) -> None:
    """A hung coroutine past a 20 ms attempt timeout is outcome timeout and scope attempt."""

    async def hang() -> None:
        await asyncio.Event().wait()

    guard = buttress.protect("hang", timeout=buttress.Timeout(attempt=0.02, total=None))

    with pytest.raises(buttress.TimeoutError):
        asyncio.run(guard.acall(hang))

    assert outcomes(timeout=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "hang")
    assert {"attempt": 1} == otel.values(sc.TIMEOUTS, sc.ATTR_SCOPE, "hang")


def test_a_sync_attempt_overrun_counts_a_timeout_but_the_call_succeeds(otel, clock) -> None:
    """A synchronous overrun cannot be cancelled: buttress.timeouts counts it, the call succeeds."""
    guard = buttress.protect("late", timeout=buttress.Timeout(attempt=1.0, total=None), clock=clock)

    def slow() -> str:
        clock.advance(3.0)
        return "late"

    assert "late" == guard.call(slow)
    assert outcomes(success=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "late")
    assert {"attempt": 1} == otel.values(sc.TIMEOUTS, sc.ATTR_SCOPE, "late")


def test_a_fallback_counts_fallback_and_not_the_failure_it_replaced(run, otel, clock) -> None:
    """Outcome fallback, buttress.fallbacks by the replaced error, and no failure counted."""
    guard = buttress.protect(
        "fb",
        retry=no_budget_retry(attempts=2),
        fallback=buttress.Fallback(value="cached"),
        clock=clock,
    )

    assert "cached" == run.call(guard, conn_fail)

    assert outcomes(fallback=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "fb")
    assert {"ConnectionError": 1} == otel.values(sc.FALLBACKS, sc.ATTR_ERROR_TYPE, "fb")
    assert {"attempts": 1} == otel.values(sc.RETRIES_EXHAUSTED, sc.ATTR_EXHAUSTED_REASON, "fb")


# -- retries ---------------------------------------------------------------------------------


def test_retries_are_counted_per_retry_by_error_type(run, otel, clock) -> None:
    """Each scheduled retry counts once under its exception class."""
    errors = iter([ConnectionRefusedError, ConnectionResetError, ConnectionResetError])

    def fn() -> str:
        error = next(errors, None)
        if error is not None:
            raise error("x")
        return "ok"

    guard = buttress.protect("re", retry=no_budget_retry(attempts=4), clock=clock)

    assert "ok" == run.call(guard, fn)
    assert {"ConnectionRefusedError": 1, "ConnectionResetError": 2} == otel.values(
        sc.RETRIES, sc.ATTR_ERROR_TYPE, "re"
    )


@pytest.mark.parametrize(
    ("reason", "retry", "total"),
    [
        ("attempts", no_budget_retry(attempts=2), None),
        ("deadline", no_budget_retry(attempts=10, backoff=buttress.constant(2.0)), 3.0),
        ("vetoed", no_budget_retry(veto=lambda outcome, attempt: True), None),
        (
            "budget",
            buttress.Retry(
                on=ConnectionError, budget=buttress.RetryBudget(ratio=0.0, min_per_second=0.0)
            ),
            None,
        ),
    ],
)
def test_exhausted_retries_are_counted_by_reason(run, otel, clock, reason, retry, total) -> None:
    """buttress.retries.exhausted carries why retrying stopped."""
    timeout = buttress.Timeout(attempt=None, total=total) if total is not None else None
    guard = buttress.protect("ex", retry=retry, timeout=timeout, clock=clock)

    assert isinstance(run.outcome(guard, conn_fail), ConnectionError)
    assert {reason: 1} == otel.values(sc.RETRIES_EXHAUSTED, sc.ATTR_EXHAUSTED_REASON, "ex")
    assert outcomes(failure=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "ex")


def test_retry_delays_are_recorded_by_source(run, otel, clock, flaky) -> None:
    """Back-off delays are source backoff; Retry-After delays are source server."""
    backoff = buttress.protect("bo", retry=no_budget_retry(attempts=3), clock=clock)
    server = buttress.protect(
        "sv", retry=no_budget_retry(attempts=3, retry_after=lambda outcome: 2.0), clock=clock
    )

    run.call(backoff, flaky(2))
    run.call(server, flaky(1))

    assert {"backoff": (2, 1.0)} == otel.values(sc.RETRY_DELAY, sc.ATTR_SOURCE, "bo")
    assert {"server": (1, 2.0)} == otel.values(sc.RETRY_DELAY, sc.ATTR_SOURCE, "sv")
    assert [0.5, 0.5, 2.0] == clock.sleeps


# -- observe mode -----------------------------------------------------------------------------


def test_observe_mode_counts_observed_metrics_and_never_the_enforcing_ones(
    run, otel, clock
) -> None:
    """A would-be rate-limit rejection and a would-be retry go to the observed.* counters only."""
    guard = buttress.protect(
        "obs",
        retry=no_budget_retry(),
        rate_limit=buttress.RateLimit(rate=1.0, burst=1, max_wait=0),
        observe=True,
        clock=clock,
    )

    run.call(guard, lambda: 1)
    assert isinstance(run.outcome(guard, conn_fail), ConnectionError)

    assert {"rate_limited": 1} == otel.values(sc.OBSERVED_REJECTIONS, sc.ATTR_REASON, "obs")
    assert {"ConnectionError": 1} == otel.values(sc.OBSERVED_RETRIES, sc.ATTR_ERROR_TYPE, "obs")
    assert {} == otel.values(sc.REJECTIONS, sc.ATTR_REASON, "obs")
    assert {} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "obs")
    assert outcomes(success=1, failure=1) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "obs")


def test_an_observing_breaker_reports_observed_rejections_only(run, otel, clock) -> None:
    """An open breaker in observe mode admits the call and counts an observed circuit_open."""
    guard = buttress.protect(
        "obr",
        breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2, observe=True),
        clock=clock,
    )
    trip(run, guard)

    assert 1 == run.call(guard, lambda: 1)
    assert {"circuit_open": 1} == otel.values(sc.OBSERVED_REJECTIONS, sc.ATTR_REASON, "obr")
    assert {} == otel.values(sc.REJECTIONS, sc.ATTR_REASON, "obr")


# -- circuit breaker ------------------------------------------------------------------------


def test_circuit_state_is_one_series_per_state_with_exactly_one_set(run, otel, clock) -> None:
    """Closed, then open after tripping: one series per state, a single 1."""
    guard = buttress.protect(
        "cs", breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2), clock=clock
    )

    closed = otel.values(sc.CIRCUIT_STATE, sc.ATTR_STATE, "cs")
    trip(run, guard)
    opened = otel.values(sc.CIRCUIT_STATE, sc.ATTR_STATE, "cs")

    assert {**dict.fromkeys(sc.CIRCUIT_STATES, 0), "closed": 1} == closed
    assert {**dict.fromkeys(sc.CIRCUIT_STATES, 0), "open": 1} == opened


def test_targets_past_the_bound_are_counted_per_state_under_other(run, otel, clock) -> None:
    """Three integration targets past the bound, one tripped: 'other' reads 2 closed, 1 open,
    and their bulkheads' limits add up."""
    saved = REGISTRY.max_targets
    buttress.configure(max_targets=1)
    try:
        buttress.protect("named", clock=clock)

        def build(label: str) -> buttress.Pipeline:
            return buttress.Pipeline(
                label,
                breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2),
                bulkhead=buttress.Bulkhead(max_concurrent=5),
                clock=clock,
                kind="http",
                label=label,
            )

        pipelines = [REGISTRY.get_or_create(f"host-{i}:443", build) for i in range(3)]
        trip(run, pipelines[0])

        states = otel.values(sc.CIRCUIT_STATE, sc.ATTR_STATE, sc.OVERFLOW_TARGET)
        limits = otel.values(sc.BULKHEAD_LIMIT, sc.ATTR_KIND, sc.OVERFLOW_TARGET)
    finally:
        REGISTRY.set_max_targets(saved)

    assert {sc.OVERFLOW_TARGET} == {p.target for p in pipelines}
    assert {**dict.fromkeys(sc.CIRCUIT_STATES, 0), "closed": 2, "open": 1} == states
    assert {"http": 15} == limits


def test_circuit_transitions_are_counted_from_and_to(run, otel, clock) -> None:
    """closed -> open -> half_open -> closed is three transition series of one each."""
    guard = buttress.protect(
        "ct",
        breaker=buttress.CircuitBreaker(
            window_size=2, minimum_calls=2, open_duration=10.0, half_open_calls=1
        ),
        clock=clock,
    )
    trip(run, guard)
    clock.advance(10.0)
    assert 1 == run.call(guard, lambda: 1)

    points = otel.series(otel.metrics(), sc.CIRCUIT_TRANSITIONS, {sc.ATTR_TARGET: "ct"})

    assert {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1} == {
        (dict(a)[sc.ATTR_FROM_STATE], dict(a)[sc.ATTR_TO_STATE]): v for a, v in points.items()
    }
    assert {**dict.fromkeys(sc.CIRCUIT_STATES, 0), "closed": 1} == otel.values(
        sc.CIRCUIT_STATE, sc.ATTR_STATE, "ct"
    )


# -- bulkhead -------------------------------------------------------------------------------


def bulkhead_gauges(otel: Any, target: str) -> tuple[Any, Any, Any]:
    collected = otel.metrics()
    return tuple(  # type: ignore[return-value]
        [v for _, v in otel.series(collected, m, {sc.ATTR_TARGET: target}).items()]
        for m in (sc.BULKHEAD_ACTIVE, sc.BULKHEAD_QUEUED, sc.BULKHEAD_LIMIT)
    )


class QueueWatch:
    """A hook that signals when a call joins a bulkhead queue."""

    def __init__(self) -> None:
        self.queued = threading.Event()

    def __call__(self, event: telemetry.Event) -> None:
        if isinstance(event, telemetry.BulkheadQueued):
            self.queued.set()


@pytest.fixture
def queue_watch() -> Iterator[QueueWatch]:
    watch = QueueWatch()
    remove = telemetry.add_hook(watch)
    yield watch
    remove()


def test_bulkhead_gauges_while_a_slot_is_held_sync(otel, clock, queue_watch) -> None:
    """Active, queued and limit read live while one thread holds the slot and one waits."""
    guard = buttress.protect(
        "bg",
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=5, max_wait=30.0),
        clock=clock,
    )
    entered, release = threading.Event(), threading.Event()

    def hold() -> str:
        entered.set()
        assert release.wait(30)
        return "held"

    results: list[object] = []
    holder = threading.Thread(target=lambda: results.append(guard.call(hold)))
    holder.start()
    assert entered.wait(30)
    held = bulkhead_gauges(otel, "bg")
    waiter = threading.Thread(target=lambda: results.append(guard.call(lambda: "queued")))
    waiter.start()
    assert queue_watch.queued.wait(30)
    queued = bulkhead_gauges(otel, "bg")
    guard.bulkhead.set_limit(4)  # type: ignore[union-attr]
    waiter.join(30)
    raised = bulkhead_gauges(otel, "bg")
    clock.advance(0.25)
    release.set()
    holder.join(30)

    assert ([1], [0], [1]) == held
    assert ([1], [1], [1]) == queued
    assert ([1], [0], [4]) == raised
    assert ([0], [0], [4]) == bulkhead_gauges(otel, "bg")
    assert ["queued", "held"] == results


def test_bulkhead_gauges_while_a_slot_is_held_async(otel, clock) -> None:
    """The same readings with tasks on one event loop."""
    guard = buttress.protect(
        "bga",
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=5, max_wait=30.0),
        clock=clock,
    )
    readings: dict[str, Any] = {}

    async def scenario() -> list[str]:
        entered, release, queued = asyncio.Event(), asyncio.Event(), asyncio.Event()
        remove = telemetry.add_hook(
            lambda e: queued.set() if isinstance(e, telemetry.BulkheadQueued) else None
        )

        async def hold() -> str:
            entered.set()
            await release.wait()
            return "held"

        async def quick() -> str:
            return "queued"

        holder = asyncio.create_task(guard.acall(hold))
        await entered.wait()
        readings["held"] = bulkhead_gauges(otel, "bga")
        waiter = asyncio.create_task(guard.acall(quick))
        await queued.wait()
        remove()
        readings["queued"] = bulkhead_gauges(otel, "bga")
        guard.bulkhead.set_limit(4)  # type: ignore[union-attr]
        first = await waiter
        readings["raised"] = bulkhead_gauges(otel, "bga")
        release.set()
        return [first, await holder]

    assert ["queued", "held"] == asyncio.run(scenario())
    assert ([1], [0], [1]) == readings["held"]
    assert ([1], [1], [1]) == readings["queued"]
    assert ([1], [0], [4]) == readings["raised"]
    assert ([0], [0], [4]) == bulkhead_gauges(otel, "bga")


def test_a_queued_call_records_its_queue_wait_sync(otel, clock, queue_watch) -> None:
    """A call queued for 0.25 s of the pipeline's clock records one 0.25 s queue wait."""
    guard = buttress.protect(
        "qw",
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=5, max_wait=30.0),
        clock=clock,
    )
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        assert release.wait(30)

    holder = threading.Thread(target=guard.call, args=(hold,))
    holder.start()
    assert entered.wait(30)
    waiter = threading.Thread(target=guard.call, args=(lambda: None,))
    waiter.start()
    assert queue_watch.queued.wait(30)
    clock.advance(0.25)
    release.set()
    holder.join(30)
    waiter.join(30)

    points = otel.series(otel.metrics(), sc.BULKHEAD_QUEUE_WAIT, {sc.ATTR_TARGET: "qw"})
    assert {
        frozenset({sc.ATTR_TARGET: "qw", sc.ATTR_KIND: "function"}.items()): (1, 0.25)
    } == points


def test_a_queued_call_records_its_queue_wait_async(otel, clock) -> None:
    """The same with tasks: one 0.25 s queue wait."""
    guard = buttress.protect(
        "qwa",
        bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=5, max_wait=30.0),
        clock=clock,
    )

    async def scenario() -> None:
        entered, release, queued = asyncio.Event(), asyncio.Event(), asyncio.Event()
        remove = telemetry.add_hook(
            lambda e: queued.set() if isinstance(e, telemetry.BulkheadQueued) else None
        )

        async def hold() -> None:
            entered.set()
            await release.wait()

        async def nothing() -> None:
            return None

        holder = asyncio.create_task(guard.acall(hold))
        await entered.wait()
        waiter = asyncio.create_task(guard.acall(nothing))
        await queued.wait()
        remove()
        clock.advance(0.25)
        release.set()
        await asyncio.gather(holder, waiter)

    asyncio.run(scenario())

    assert {"function": (1, 0.25)} == otel.values(sc.BULKHEAD_QUEUE_WAIT, sc.ATTR_KIND, "qwa")


# -- cache, rate-limit waits ------------------------------------------------------------------


def test_cache_hits_and_misses_are_counted(run, otel, clock) -> None:
    """The first call misses, the next two hit."""
    guard = buttress.protect("ca", cache=buttress.Cache(key=lambda: "k"), clock=clock)
    fn = lambda: "v"  # noqa: E731 - one function object: the async runner wraps it once

    assert ["v", "v", "v"] == [run.call(guard, fn) for _ in range(3)]
    assert {"miss": 1, "hit": 2} == otel.values(sc.CACHE_REQUESTS, sc.ATTR_RESULT, "ca")
    assert outcomes(success=3) == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "ca")


def test_a_call_joining_one_in_flight_counts_coalesced_sync(otel, clock) -> None:
    """A second thread with the same key while the first computes is coalesced."""
    joined = threading.Event()
    remove = telemetry.add_hook(
        lambda e: joined.set() if getattr(e, "result", None) == "coalesced" else None
    )
    guard = buttress.protect("co", cache=buttress.Cache(key=lambda: "k"), clock=clock)
    entered = threading.Event()

    def slow() -> str:
        entered.set()
        assert joined.wait(30)
        return "v"

    results: list[str] = []
    try:
        leader = threading.Thread(target=lambda: results.append(guard.call(slow)))
        leader.start()
        assert entered.wait(30)
        results.append(guard.call(slow))
        leader.join(30)
    finally:
        remove()

    assert ["v", "v"] == results
    assert {"miss": 1, "coalesced": 1} == otel.values(sc.CACHE_REQUESTS, sc.ATTR_RESULT, "co")


def test_a_call_joining_one_in_flight_counts_coalesced_async(otel, clock) -> None:
    """A second task with the same key while the first computes is coalesced."""
    guard = buttress.protect("coa", cache=buttress.Cache(key=lambda: "k"), clock=clock)

    async def scenario() -> list[str]:
        release = asyncio.Event()

        async def slow() -> str:
            await release.wait()
            return "v"

        leader = asyncio.create_task(guard.acall(slow))
        await asyncio.sleep(0)
        follower = asyncio.create_task(guard.acall(slow))
        await asyncio.sleep(0)
        release.set()
        return list(await asyncio.gather(leader, follower))

    assert ["v", "v"] == asyncio.run(scenario())
    assert {"miss": 1, "coalesced": 1} == otel.values(sc.CACHE_REQUESTS, sc.ATTR_RESULT, "coa")


def test_rate_limit_waits_are_recorded(run, otel, clock) -> None:
    """At 2 tokens/s with a burst of 1, the second call waits 0.5 s for its token."""
    guard = buttress.protect(
        "rw", rate_limit=buttress.RateLimit(rate=2.0, burst=1, max_wait=5.0), clock=clock
    )

    run.call(guard, lambda: 1)
    run.call(guard, lambda: 1)

    assert {"function": (1, 0.5)} == otel.values(sc.RATE_LIMIT_WAIT, sc.ATTR_KIND, "rw")
    assert [0.5] == clock.sleeps


# -- rate-limited histograms ------------------------------------------------------------------


def test_durations_are_sampled_per_second_while_calls_count_every_call(
    run, otel_factory, clock
) -> None:
    """At 5 samples/s, 100 calls in one second record 5 durations; the next second 5 more."""
    otel = otel_factory(5)
    guard = buttress.protect("hot", clock=clock)
    fn = lambda: None  # noqa: E731

    for _ in range(100):
        run.call(guard, fn)
    first = otel.values(sc.CALL_DURATION, sc.ATTR_OUTCOME, "hot")
    calls_first = otel.values(sc.CALLS, sc.ATTR_OUTCOME, "hot")["success"]
    clock.advance(1.0)
    for _ in range(100):
        run.call(guard, fn)

    assert ({"success": (5, 0.0)}, 100) == (first, calls_first)
    assert {"success": (10, 0.0)} == otel.values(sc.CALL_DURATION, sc.ATTR_OUTCOME, "hot")
    assert 200 == otel.values(sc.CALLS, sc.ATTR_OUTCOME, "hot")["success"]


def test_durations_are_sampled_per_outcome(otel_factory, clock) -> None:
    """The per-second budget is kept per outcome: failures do not use up the successes' budget."""
    otel = otel_factory(2)
    guard = buttress.protect("mix", clock=clock)
    for _ in range(10):
        guard.call(lambda: None)
        with pytest.raises(ValueError):
            guard.call(fail)

    assert {"success": (2, 0.0), "failure": (2, 0.0)} == otel.values(
        sc.CALL_DURATION, sc.ATTR_OUTCOME, "mix"
    )


# -- cardinality ----------------------------------------------------------------------------


@pytest.fixture
def max_targets_50() -> Iterator[None]:
    saved = REGISTRY.max_targets
    gc.collect()  # pipelines of earlier tests must not report under "other" here
    buttress.configure(max_targets=50)
    yield
    buttress.configure(max_targets=saved)


def many_targets(mode: str, clock: FakeClock, n: int, keep: list[buttress.Pipeline] | None) -> None:
    """*n* distinct target names, one call each, through one driver."""
    if mode == "sync":
        for i in range(n):
            guard = buttress.protect(f"{mode}-{i}", clock=clock)
            guard.call(lambda: None)
            if keep is not None:
                keep.append(guard)
        return

    async def nothing() -> None:
        return None

    async def scenario() -> None:
        for i in range(n):
            guard = buttress.protect(f"{mode}-{i}", clock=clock)
            await guard.acall(nothing)
            if keep is not None:
                keep.append(guard)

    asyncio.run(scenario())


def calls_by_target(otel: Any) -> dict[str, int]:
    totals: dict[str, int] = {}
    for attrs, value in otel.series(otel.metrics(), sc.CALLS).items():
        target = dict(attrs)[sc.ATTR_TARGET]
        totals[target] = totals.get(target, 0) + value
    return totals


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_ten_thousand_target_names_export_at_most_max_targets_plus_other(
    otel, clock, max_targets_50, mode, caplog
) -> None:
    """10,000 names, max_targets=50: 50 names plus other, and every call is counted."""
    keep: list[buttress.Pipeline] = []
    with caplog.at_level(logging.WARNING, logger="buttress"):
        many_targets(mode, clock, 10_000, keep)

    totals = calls_by_target(otel)

    assert {f"{mode}-{i}" for i in range(50)} | {sc.OVERFLOW_TARGET} == set(totals)
    assert 10_000 - 50 == totals[sc.OVERFLOW_TARGET]
    assert 10_000 == sum(totals.values())
    assert 1 == sum("more than 50 targets" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_overflow_counts_survive_their_pipelines(otel, clock, max_targets_50, mode) -> None:
    """Calls of unregistered overflow pipelines stay counted after those pipelines are dropped."""
    many_targets(mode, clock, 200, keep=None)
    gc.collect()

    totals = calls_by_target(otel)

    assert 150 == totals.get(sc.OVERFLOW_TARGET)
    assert 200 == sum(totals.values())


def test_error_types_are_capped_per_metric_and_target(otel, clock) -> None:
    """200 exception classes retried once each: at most MAX_ERROR_TYPES + other, all counted."""
    classes = [type(f"Err{i}", (ConnectionError,), {}) for i in range(200)]
    guard = buttress.protect(
        "errs", retry=no_budget_retry(attempts=2, backoff=buttress.constant(0.0)), clock=clock
    )
    for cls in classes:
        raised: list[bool] = []

        def fn(cls: type[Exception] = cls, raised: list[bool] = raised) -> None:
            if not raised:
                raised.append(True)
                raise cls("x")

        guard.call(fn)

    retries = otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "errs")

    assert _otel.MAX_ERROR_TYPES + 1 == len(retries)
    assert 200 - _otel.MAX_ERROR_TYPES == retries["other"]
    assert 200 == sum(retries.values())


# -- never raise into the host ---------------------------------------------------------------


class _BrokenHistogram:
    def __init__(self, real: Any) -> None:
        self._real = real

    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("exporter exploded")


class _BrokenMeter:
    """Delegates to an SDK meter, but every histogram it creates raises on record."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def create_histogram(self, *args: Any, **kwargs: Any) -> _BrokenHistogram:
        return _BrokenHistogram(self._real.create_histogram(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class BrokenMeterProvider(otel_metrics.MeterProvider):
    """An API MeterProvider wrapping the SDK one, with histograms that raise."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.sdk = MeterProvider(metric_readers=[self.reader])

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> Any:
        return _BrokenMeter(self.sdk.get_meter(name, version, schema_url, attributes))


@pytest.fixture
def broken() -> Iterator[BrokenMeterProvider]:
    provider = BrokenMeterProvider()
    telemetry.instrument(meter_provider=provider, samples_per_second=1000)
    yield provider
    telemetry.uninstrument()
    provider.sdk.shutdown()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_failing_histogram_never_breaks_calls_and_logs_once(run, broken, clock, caplog) -> None:
    """Twenty calls succeed and fail as usual, counters still count, one error is logged."""
    guard = buttress.protect("brk", clock=clock)
    with caplog.at_level(logging.ERROR, logger="buttress"):
        results = [run.call(guard, lambda: 7) for _ in range(10)]
        errors = [run.outcome(guard, fail) for _ in range(10)]

    assert [7] * 10 == results
    assert [ValueError] * 10 == [type(e) for e in errors]
    assert 1 == len(errors_logged(caplog))
    totals = {
        dict(point.attributes)[sc.ATTR_OUTCOME]: point.value
        for rm in broken.reader.get_metrics_data().resource_metrics
        for scope in rm.scope_metrics
        for metric in scope.metrics
        if metric.name == sc.CALLS.name
        for point in metric.data.data_points
        if dict(point.attributes)[sc.ATTR_TARGET] == "brk"
    }
    assert outcomes(success=10, failure=10) == totals


def test_a_failing_wait_histogram_never_breaks_retries_nor_logs_per_call(
    run, broken, clock, caplog, flaky
) -> None:
    """Retries record delays into a broken histogram: calls succeed, errors are not repeated."""
    guard = buttress.protect("brk2", retry=no_budget_retry(), clock=clock)
    with caplog.at_level(logging.ERROR, logger="buttress"):
        results = [run.call(guard, flaky(1)) for _ in range(5)]

    errors = errors_logged(caplog)
    assert ["ok"] * 5 == results
    # At most one record per broken instrument (duration, retry delay), never one per call.
    assert 1 <= len(errors) <= 2, errors
    assert len(set(errors)) == len(errors), errors


def test_a_failing_wait_histogram_still_counts_and_traces_the_retry(otel, clock, flaky) -> None:
    """A broken retry.delay histogram must not cost the retry its span."""
    otel.instance._histograms[sc.RETRY_DELAY.name] = _BrokenHistogram(None)
    guard = buttress.protect("brk3", retry=no_budget_retry(), clock=clock)

    with otel.tracer.start_as_current_span("app"):
        assert "ok" == guard.call(flaky(1))

    assert {"ConnectionError": 1} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "brk3")
    assert [sc.SPAN_EVENT_RETRY, "app"] == [s.name for s in otel.spans()]


def test_instrument_then_uninstrument_stops_recording_durations(otel_factory, clock) -> None:
    """After uninstrument() the pipeline's sampler is gone and no new event is counted."""
    otel = otel_factory(50)
    guard = buttress.protect("un", retry=no_budget_retry(), clock=clock)
    guard.call(lambda: None)
    telemetry.uninstrument()
    flaky_calls: Callable[[], None] = conn_fail
    with pytest.raises(ConnectionError):
        guard.call(flaky_calls)

    assert {"success": (1, 0.0)} == otel.values(sc.CALL_DURATION, sc.ATTR_OUTCOME, "un")
    assert {} == otel.values(sc.RETRIES, sc.ATTR_ERROR_TYPE, "un")
    assert guard.stats.sampler is None
