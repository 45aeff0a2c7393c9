"""The pipeline end to end: every scenario runs through the sync and the async driver."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

import buttress
from buttress.policies import CircuitBreakerState
from buttress.telemetry import (
    CallRejected,
    CircuitStateChanged,
    FallbackUsed,
    RetriesExhausted,
    RetryScheduled,
    TimedOut,
)
from buttress.testing import FakeClock, capture_events, set_active, set_testing


class Runner:
    """Runs a plain callable through a pipeline, either directly or wrapped in a coroutine."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._wrapped: dict[int, Callable[[], Any]] = {}

    def call(self, guard: buttress.Pipeline | buttress.CallOptions, fn: Callable[[], Any]) -> Any:
        if self.mode == "sync":
            return guard.call(fn)
        # One coroutine function per plain function: caches key on the function called.
        afn = self._wrapped.get(id(fn))
        if afn is None:

            async def afn() -> Any:
                return fn()

            self._wrapped[id(fn)] = afn
        return asyncio.run(guard.acall(afn))


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Both drivers."""
    return Runner(request.param)


class Flaky:
    """Fails with *error* the first *failures* times, then returns *value*."""

    def __init__(
        self,
        failures: int,
        error: BaseException | None = None,
        value: object = "ok",
        clock: FakeClock | None = None,
        takes: float = 0.0,
    ) -> None:
        self.failures = failures
        self.error = error or ConnectionError("refused")
        self.value = value
        self.calls = 0
        self.clock = clock
        self.takes = takes

    def __call__(self) -> object:
        self.calls += 1
        if self.clock is not None and self.takes:
            self.clock.advance(self.takes)
        if self.calls <= self.failures:
            raise self.error
        return self.value


def test_success_passes_through_without_events(run: Runner, clock: FakeClock) -> None:
    """A successful first attempt returns its value and emits nothing."""
    guard = buttress.protect(
        "ok",
        retry=buttress.Retry(on=ConnectionError),
        breaker=buttress.CircuitBreaker(),
        timeout=buttress.Timeout(),
        bulkhead=buttress.Bulkhead(),
        clock=clock,
    )
    with capture_events() as events:
        result = run.call(guard, lambda: 42)

    assert (42, []) == (result, events)


def test_retry_reaches_the_function_attempts_times_then_reraises_the_same_exception(
    run: Runner, clock: FakeClock
) -> None:
    """When retries run out the caller gets its own last exception object, unchanged."""
    error = ConnectionError("down")
    flaky = Flaky(failures=10, error=error)
    guard = buttress.protect("r", retry=buttress.Retry(on=ConnectionError, attempts=3), clock=clock)

    with capture_events() as events, pytest.raises(ConnectionError) as info:
        run.call(guard, flaky)

    assert info.value is error
    assert 3 == flaky.calls
    assert 2 == len(clock.sleeps)
    assert ["RetryScheduled", "RetryScheduled", "RetriesExhausted"] == [
        type(e).__name__ for e in events
    ]
    assert "attempts" == events[-1].reason  # type: ignore[attr-defined]


def test_retry_succeeds_after_transient_failures(run: Runner, clock: FakeClock) -> None:
    """Two failures then a success return the success."""
    flaky = Flaky(failures=2)
    guard = buttress.protect("r", retry=buttress.Retry(on=ConnectionError, attempts=3), clock=clock)

    assert "ok" == run.call(guard, flaky)
    assert 3 == flaky.calls


def test_exceptions_not_named_by_on_are_not_retried(run: Runner, clock: FakeClock) -> None:
    """A ValueError passes straight through a retry on ConnectionError."""
    flaky = Flaky(failures=5, error=ValueError("bug"))
    guard = buttress.protect("r", retry=buttress.Retry(on=ConnectionError, attempts=5), clock=clock)

    with pytest.raises(ValueError, match="bug"):
        run.call(guard, flaky)
    assert 1 == flaky.calls


def test_server_suggested_delay_replaces_backoff_and_is_capped(
    run: Runner, clock: FakeClock
) -> None:
    """Retry-After style delays are honoured up to max_retry_after."""

    class Throttled(Exception):
        def __init__(self, after: float) -> None:
            super().__init__("429")
            self.after = after

    delays = iter([3.0, 500.0])

    def fn() -> str:
        after = next(delays, None)
        if after is None:
            return "done"
        raise Throttled(after)

    guard = buttress.protect(
        "throttled",
        retry=buttress.Retry(
            on=Throttled,
            attempts=5,
            retry_after=lambda e: e.after,
            max_retry_after=20.0,
        ),
        clock=clock,
    )

    assert "done" == run.call(guard, fn)
    assert [3.0, 20.0] == clock.sleeps


def test_total_timeout_stops_retrying_at_the_deadline(run: Runner, clock: FakeClock) -> None:
    """No attempt is scheduled past the total timeout; the last error is re-raised."""
    flaky = Flaky(failures=10, clock=clock, takes=8.0)
    guard = buttress.protect(
        "slow",
        retry=buttress.Retry(on=ConnectionError, attempts=10, backoff=buttress.constant(1.0)),
        timeout=buttress.Timeout(attempt=None, total=20.0),
        clock=clock,
    )

    with capture_events() as events, pytest.raises(ConnectionError):
        run.call(guard, flaky)

    assert 3 == flaky.calls
    exhausted = [e for e in events if isinstance(e, RetriesExhausted)]
    assert ["deadline"] == [e.reason for e in exhausted]


def test_breaker_opens_and_rejects_without_calling_the_function(
    run: Runner, clock: FakeClock
) -> None:
    """After the failure threshold the function is no longer called until the breaker half-opens."""
    flaky = Flaky(failures=4)
    guard = buttress.protect(
        "b",
        breaker=buttress.CircuitBreaker(
            window_size=4, minimum_calls=4, open_duration=10.0, half_open_calls=1
        ),
        clock=clock,
    )
    for _ in range(4):
        with pytest.raises(ConnectionError):
            run.call(guard, flaky)

    with capture_events() as events, pytest.raises(buttress.CircuitOpenError) as info:
        run.call(guard, flaky)

    assert 4 == flaky.calls
    assert "b" == info.value.target
    assert [CallRejected] == [type(e) for e in events]
    clock.advance(10.0)
    assert "ok" == run.call(guard, flaky)
    assert buttress.CircuitState.CLOSED == guard.breaker.state  # type: ignore[union-attr]


def test_an_open_breaker_stops_a_retry_loop(run: Runner, clock: FakeClock) -> None:
    """The breaker sits inside retry: once it opens, the loop ends. The caller gets the last
    attempt's own error (the dependency did answer); the next call is rejected outright."""
    flaky = Flaky(failures=10)
    guard = buttress.protect(
        "b",
        retry=buttress.Retry(on=ConnectionError, attempts=10),
        breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2, open_duration=60.0),
        clock=clock,
    )

    with capture_events() as events:
        with pytest.raises(ConnectionError, match="refused"):
            run.call(guard, flaky)
    assert 2 == flaky.calls
    # The second failure opened the breaker: no back-off is slept before a refusal.
    assert 1 == len(clock.sleeps)
    assert ["circuit_open"] == [e.reason for e in events if isinstance(e, RetriesExhausted)]
    with pytest.raises(buttress.CircuitOpenError):
        run.call(guard, flaky)
    assert 2 == flaky.calls


def test_breaker_outside_retry_counts_one_outcome_per_call(run: Runner, clock: FakeClock) -> None:
    """With order putting the breaker before retry, a retried call is one breaker outcome."""
    flaky = Flaky(failures=2)
    order = (
        "fallback",
        "cache",
        "rate_limit",
        "bulkhead",
        "breaker",
        "timeout",
        "retry",
        "attempt_timeout",
    )
    guard = buttress.protect(
        "outer",
        retry=buttress.Retry(on=ConnectionError, attempts=3),
        breaker=buttress.CircuitBreaker(),
        order=order,
        clock=clock,
    )

    assert "ok" == run.call(guard, flaky)
    snapshot = guard.breaker.snapshot(clock.monotonic())  # type: ignore[union-attr]
    assert (1, 0) == (snapshot.calls, snapshot.failures)
    assert ("retry", "breaker") == guard.describe()[-2:][::-1] or guard.describe() == (
        "breaker",
        "retry",
    )


def test_an_unsupported_order_is_refused_with_the_rules() -> None:
    """A cache inside retry is refused at construction."""
    order = (
        "fallback",
        "rate_limit",
        "bulkhead",
        "timeout",
        "retry",
        "cache",
        "breaker",
        "attempt_timeout",
    )
    with pytest.raises(buttress.ConfigurationError, match="fallback and cache come first"):
        buttress.protect("bad", order=order)


def test_fallback_value_serves_rejections_and_failures(run: Runner, clock: FakeClock) -> None:
    """A fallback answers an open breaker and reports what it replaced."""
    guard = buttress.protect(
        "fb",
        breaker=buttress.CircuitBreaker(),
        fallback=buttress.Fallback(value="cached"),
        clock=clock,
    )
    guard.breaker.force_open()  # type: ignore[union-attr]

    with capture_events() as events:
        result = run.call(guard, lambda: "live")

    assert "cached" == result
    assert "buttress.CircuitOpenError" == next(
        e.error_type for e in events if isinstance(e, FallbackUsed)
    )


def test_fallback_leaves_unmatched_failures_alone(run: Runner) -> None:
    """Only the failures named by `on` are replaced."""
    guard = buttress.protect(
        "fb", fallback=buttress.Fallback(handler=lambda exc: f"after {exc}", on=ConnectionError)
    )

    assert "after down" == run.call(guard, Flaky(failures=1, error=ConnectionError("down")))
    with pytest.raises(KeyError):
        run.call(guard, Flaky(failures=1, error=KeyError("k")))


def test_cache_key_serves_the_second_call_from_cache(run: Runner, clock: FakeClock) -> None:
    """Two calls with the same cache key run the function once."""
    guard = buttress.protect("c", cache=buttress.Cache(ttl=30.0), clock=clock)
    counter = Flaky(failures=0, value="v")

    first = run.call(guard.options(cache_key="k"), counter)
    second = run.call(guard.options(cache_key="k"), counter)

    assert ("v", "v", 1) == (first, second, counter.calls)


def test_retry_on_result_returns_the_last_result(run: Runner, clock: FakeClock) -> None:
    """A result predicate retries, and hands back the last result when attempts run out."""
    results = iter([503, 503, 503])
    guard = buttress.protect(
        "res",
        retry=buttress.Retry(on=ConnectionError, attempts=3, on_result=lambda r: r >= 500),
        clock=clock,
    )

    assert 503 == run.call(guard, lambda: next(results))
    assert 2 == len(clock.sleeps)


def test_testing_mode_makes_calls_single_shot(run: Runner, clock: FakeClock) -> None:
    """set_testing(True) caps attempts at one and never sleeps."""
    flaky = Flaky(failures=1)
    guard = buttress.protect("t", retry=buttress.Retry(on=ConnectionError, attempts=5), clock=clock)

    with set_testing(True), pytest.raises(ConnectionError):
        run.call(guard, flaky)
    assert (1, []) == (flaky.calls, clock.sleeps)
    again = Flaky(failures=1)
    with set_testing(True, attempts=2):
        assert "ok" == run.call(guard, again)
    assert (2, []) == (again.calls, clock.sleeps)


def test_inactive_passes_straight_through(run: Runner) -> None:
    """set_active(False) bypasses every policy, even a forced-open breaker."""
    guard = buttress.protect("off", breaker=buttress.CircuitBreaker())
    guard.breaker.force_open()  # type: ignore[union-attr]

    with set_active(False):
        assert "through" == run.call(guard, lambda: "through")
    with pytest.raises(buttress.CircuitOpenError):
        run.call(guard, lambda: "blocked")


def test_observe_mode_reports_but_never_enforces(run: Runner, clock: FakeClock) -> None:
    """In observe mode an open breaker admits and a retry is reported, not performed."""
    flaky = Flaky(failures=1)
    guard = buttress.protect(
        "obs",
        retry=buttress.Retry(on=ConnectionError, attempts=3),
        breaker=buttress.CircuitBreaker(),
        observe=True,
        clock=clock,
    )
    guard.breaker.force_open()  # type: ignore[union-attr]

    with capture_events() as events, pytest.raises(ConnectionError):
        run.call(guard, flaky)

    assert 1 == flaky.calls
    rejected = [e for e in events if isinstance(e, CallRejected)]
    retried = [e for e in events if isinstance(e, RetryScheduled)]
    assert [True] == [e.observed for e in rejected]
    assert [True] == [e.observed for e in retried]


def test_sync_overrun_is_counted_as_timed_out_and_its_result_kept(clock: FakeClock) -> None:
    """A synchronous attempt cannot be pre-empted: a late success is returned and reported."""
    guard = buttress.protect("late", timeout=buttress.Timeout(attempt=1.0, total=None), clock=clock)
    slow = Flaky(failures=0, value="late", clock=clock, takes=3.0)

    with capture_events() as events:
        result = guard.call(slow)

    assert "late" == result
    assert [("attempt", False)] == [
        (e.scope, e.cancelled) for e in events if isinstance(e, TimedOut)
    ]


def test_async_attempt_timeout_cancels_and_raises_ours() -> None:
    """An async attempt past its timeout is cancelled; the error is also a builtin TimeoutError."""
    cancelled = []

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    guard = buttress.protect("hang", timeout=buttress.Timeout(attempt=0.02, total=None))

    with pytest.raises(buttress.TimeoutError) as info:
        asyncio.run(guard.acall(hang))

    assert isinstance(info.value, TimeoutError)
    assert ("attempt", [True]) == (info.value.scope, cancelled)


def test_async_timeouts_are_retried_when_named() -> None:
    """Retry(on=TimeoutError) retries a cancelled attempt; the total timeout then ends the call."""
    calls = []

    async def hang() -> None:
        calls.append(1)
        await asyncio.sleep(10)

    guard = buttress.protect(
        "hang2",
        timeout=buttress.Timeout(attempt=0.02, total=0.5),
        retry=buttress.Retry(on=TimeoutError, attempts=3, backoff=buttress.constant(0.0)),
    )

    with pytest.raises(buttress.TimeoutError):
        asyncio.run(guard.acall(hang))
    assert 3 == len(calls)


def test_deadline_is_published_to_the_attempt_when_propagation_is_on(
    run: Runner, clock: FakeClock
) -> None:
    """buttress.remaining() inside an attempt sees the tighter of attempt and total timeouts."""
    buttress.configure(propagate_deadlines=True)
    guard = buttress.protect("dl", timeout=buttress.Timeout(attempt=4.0, total=30.0), clock=clock)

    seen = run.call(guard, buttress.remaining)

    assert 4.0 == seen
    assert buttress.remaining() is None


def test_base_exceptions_pass_and_release_the_bulkhead(run: Runner) -> None:
    """A KeyboardInterrupt-like error reaches the caller and frees the slot."""

    class Stop(BaseException):
        pass

    guard = buttress.protect("stop", bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=0))

    def boom() -> None:
        raise Stop

    with pytest.raises(Stop):
        run.call(guard, boom)
    assert 0 == guard.bulkhead.active  # type: ignore[union-attr]
    assert "free" == run.call(guard, lambda: "free")


def test_bulkhead_full_rejects_a_second_concurrent_call() -> None:
    """With one slot and no queue, a concurrent second call is rejected before it starts."""
    guard = buttress.protect("bh", bulkhead=buttress.Bulkhead(max_concurrent=1, max_queue=0))
    inside, leave = threading.Event(), threading.Event()

    def hold() -> str:
        inside.set()
        leave.wait(5)
        return "held"

    worker = threading.Thread(target=guard.call, args=(hold,))
    worker.start()
    inside.wait(5)
    try:
        with pytest.raises(buttress.BulkheadFullError) as info:
            guard.call(lambda: "second")
    finally:
        leave.set()
        worker.join(5)
    assert "bulkhead_full" == info.value.reason


def test_priority_reaches_the_bulkhead_queue() -> None:
    """Queued calls are served by priority: options(priority=...) is honoured."""
    guard = buttress.protect("prio", bulkhead=buttress.Bulkhead(max_concurrent=1, max_wait=5.0))
    order: list[str] = []
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        leave.wait(5)

    holder = threading.Thread(target=guard.call, args=(hold,))
    holder.start()
    inside.wait(5)
    threads = []
    for name, priority in (("low", 0), ("high", 10)):
        t = threading.Thread(
            target=guard.options(priority=priority).call, args=(order.append, name)
        )
        t.start()
        threads.append(t)
        while guard.bulkhead.queued < len(threads):  # type: ignore[union-attr]
            threading.Event().wait(0.001)
    leave.set()
    for t in (holder, *threads):
        t.join(5)

    assert ["high", "low"] == order


def test_rate_limit_rejects_past_the_burst(run: Runner, clock: FakeClock) -> None:
    """A bucket of 2 with no wait admits two calls and rejects the third."""
    guard = buttress.protect("rl", rate_limit=buttress.RateLimit(rate=1.0, burst=2), clock=clock)

    assert ["a", "a"] == [run.call(guard, lambda: "a") for _ in range(2)]
    with pytest.raises(buttress.RateLimitedError):
        run.call(guard, lambda: "a")
    clock.advance(1.0)
    assert "a" == run.call(guard, lambda: "a")


def test_rate_limit_waits_on_the_clock_when_allowed(run: Runner, clock: FakeClock) -> None:
    """With max_wait the call sleeps until its token instead of failing."""
    guard = buttress.protect(
        "rlw", rate_limit=buttress.RateLimit(rate=2.0, burst=1, max_wait=1.0), clock=clock
    )

    run.call(guard, lambda: None)
    run.call(guard, lambda: None)

    assert [0.5] == clock.sleeps


def test_decorator_keeps_the_function_identity_sync_and_async(clock: FakeClock) -> None:
    """@guard works on sync and async functions and keeps their names."""
    guard = buttress.protect("deco", retry=buttress.Retry(on=ConnectionError), clock=clock)

    @guard
    def add(a: int, b: int) -> int:
        return a + b

    @guard
    async def aadd(a: int, b: int) -> int:
        return a + b

    assert (3, 7) == (add(1, 2), asyncio.run(aadd(3, 4)))
    assert ("add", "aadd") == (add.__name__, aadd.__name__)


def test_protect_returns_the_same_pipeline_for_the_same_policies() -> None:
    """Protecting a name twice with equal policies is idempotent; different policies conflict."""
    first = buttress.protect("same", timeout=buttress.Timeout())
    again = buttress.protect("same", timeout=buttress.Timeout())

    assert first is again
    with pytest.raises(buttress.ConfigurationError, match="already protected"):
        buttress.protect("same", timeout=buttress.Timeout(total=5.0))
    replaced = buttress.protect("same", timeout=buttress.Timeout(total=5.0), replace=True)
    assert replaced is buttress.get_target("same")


def test_target_cap_folds_new_names_into_other(caplog: pytest.LogCaptureFixture) -> None:
    """Past max_targets, new pipelines still work but report as 'other', with one warning."""
    buttress.configure(max_targets=3)
    try:
        with caplog.at_level(logging.WARNING, logger="buttress"):
            guards = [buttress.protect(f"t{i}", timeout=buttress.Timeout()) for i in range(10)]
    finally:
        buttress.configure(max_targets=256)

    assert ["t0", "t1", "t2"] == buttress.targets()
    assert {"other"} == {g.target for g in guards[3:]}
    assert 1 == sum("targets" in r.getMessage() for r in caplog.records)
    assert 5 == guards[9].call(lambda: 5)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"retry": "3"}, "retry"),
        ({"breaker": buttress.Timeout()}, "breaker"),
        ({"kind": "grpc"}, "kind"),
    ],
)
def test_bad_protect_arguments_name_the_parameter(kwargs: dict[str, Any], named: str) -> None:
    """Wrong types are refused at construction with the parameter's name."""
    with pytest.raises(buttress.ConfigurationError, match=named):
        buttress.protect("bad", **kwargs)


def test_describe_lists_present_policies_outermost_first() -> None:
    """describe() is the policy-order descriptor."""
    guard = buttress.protect(
        "d", template=buttress.templates.http(), fallback=buttress.Fallback(value=None)
    )

    assert (
        "fallback",
        "bulkhead",
        "timeout",
        "retry",
        "breaker",
        "attempt_timeout",
    ) == guard.describe()


def test_state_change_events_flow_through_the_pipeline(run: Runner, clock: FakeClock) -> None:
    """Breaker transitions caused by pipeline calls are emitted as events."""
    guard = buttress.protect(
        "ev", breaker=buttress.CircuitBreaker(window_size=2, minimum_calls=2), clock=clock
    )
    with capture_events() as events:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                run.call(guard, Flaky(failures=1))

    assert [("closed", "open")] == [
        (e.from_state, e.to_state) for e in events if isinstance(e, CircuitStateChanged)
    ]


def test_observe_mode_publishes_no_deadline(run: Runner, clock: FakeClock) -> None:
    """Observe mode never shortens a call: clients see no deadline to pass as their timeout."""
    buttress.configure(propagate_deadlines=True)
    guard = buttress.protect(
        "obs-dl", timeout=buttress.Timeout(attempt=4.0, total=30.0), observe=True, clock=clock
    )

    seen = run.call(guard, buttress.remaining)

    assert seen is None


def test_a_failing_fallback_counts_the_failure_not_a_fallback(
    run: Runner, clock: FakeClock
) -> None:
    """When the fallback handler raises, the caller gets its error and the call counts as failed."""

    def broken(exc: BaseException) -> str:
        raise KeyError("no cached value")

    guard = buttress.protect(
        "fb-broken", fallback=buttress.Fallback(handler=broken, on=ConnectionError), clock=clock
    )

    with capture_events() as events, pytest.raises(KeyError):
        run.call(guard, Flaky(failures=1))

    assert {"failure": 1} == {k: v for k, v in guard.stats.by_outcome().items() if v}
    assert [] == [e for e in events if isinstance(e, FallbackUsed)]


@pytest.mark.parametrize("failing", [False, True])
def test_a_rate_limit_and_a_bulkhead_take_one_token_and_one_permit_per_call(
    run: Runner, clock: FakeClock, failing: bool
) -> None:
    """Each call takes one permit and gives it back, and spends one token, success or failure:
    before, the default order took the permit twice and gave one back (issue 14, defect 1)."""
    guard = buttress.protect(
        "rl-bh",
        rate_limit=buttress.RateLimit(rate=0.001, burst=30),
        bulkhead=buttress.Bulkhead(max_concurrent=2, max_queue=0),
        clock=clock,
    )

    def call() -> str:
        if failing:
            raise ConnectionError("refused")
        return "ok"

    for _ in range(25):  # far more calls than permits
        if failing:
            with pytest.raises(ConnectionError):
                run.call(guard, call)
        else:
            assert "ok" == run.call(guard, call)
    assert guard.bulkhead is not None
    assert guard.rate_limiter is not None
    assert 2 == len(guard.bulkhead._free)
    assert 5 == round(guard.rate_limiter.available)


def test_a_spent_budget_raising_after_a_rejected_result_counts_a_rejection(
    run: Runner, clock: FakeClock
) -> None:
    """budget_exhausted="raise" after a result the retry rejects: the call raises
    RetryBudgetExhaustedError and counts as rejected (before, it was counted under no outcome)."""
    guard = buttress.protect(
        "budget-result",
        retry=buttress.Retry(
            on=ConnectionError,
            on_result=lambda result: result == "again",
            backoff=buttress.constant(0.0),
            budget=buttress.RetryBudget(ratio=0.0, min_per_second=0.0),
            budget_exhausted="raise",
        ),
        clock=clock,
    )

    with pytest.raises(buttress.RetryBudgetExhaustedError):
        run.call(guard, lambda: "again")

    assert {"rejected": 1} == {k: v for k, v in guard.stats.by_outcome().items() if v}


@pytest.mark.parametrize("wrapper", ["cache", "fallback"])
def test_a_result_the_retry_gave_up_on_counts_a_failure_with_a_cache_or_a_fallback(
    run: Runner, clock: FakeClock, wrapper: str
) -> None:
    """With a cache or a fallback around the retry, a result the retry gave up on still counts
    as a failure, as without them (it counted as a success)."""
    guard = buttress.protect(
        f"gave-up-{wrapper}",
        retry=buttress.Retry(
            on=ConnectionError,
            attempts=2,
            on_result=lambda result: result == "again",
            backoff=buttress.constant(0.0),
            budget=None,
        ),
        cache=buttress.Cache(key=lambda: "k") if wrapper == "cache" else None,
        fallback=buttress.Fallback(value="fallback") if wrapper == "fallback" else None,
        clock=clock,
    )

    assert "again" == run.call(guard, lambda: "again")

    assert {"failure": 1} == {k: v for k, v in guard.stats.by_outcome().items() if v}


class OpensOnSleep(FakeClock):
    """A fake clock that opens *breaker* while the retry backs off (another call opened it)."""

    breaker: CircuitBreakerState | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.breaker is not None:
            self.breaker.force_open()


def test_a_retry_refused_by_a_breaker_that_opened_ends_with_the_timeout_it_retried(
    run: Runner,
) -> None:
    """A timed-out attempt, then a retry the breaker refuses (it opened meanwhile): the caller
    gets that timeout, and the call counts as a timeout (it counted as a failure)."""
    clock = OpensOnSleep()
    guard = buttress.protect(
        "refused-timeout",
        retry=buttress.Retry(on=buttress.TimeoutError, backoff=buttress.constant(0.5), budget=None),
        breaker=buttress.CircuitBreaker(),
        clock=clock,
    )
    clock.breaker = guard.breaker

    def nested_timeout() -> None:  # as a pipeline called inside this one would raise it
        raise buttress.TimeoutError("inner ran out", target="inner", timeout=1.0, scope="total")

    with pytest.raises(buttress.TimeoutError):
        run.call(guard, nested_timeout)

    assert {"timeout": 1} == {k: v for k, v in guard.stats.by_outcome().items() if v}


def test_a_result_the_retry_gave_up_on_is_not_cached(run: Runner, clock: FakeClock) -> None:
    """The cache keeps no result the retry rejected (a 503, say): the next call asks the
    dependency again, and its good answer is the one kept (the failure was served for ttl)."""
    answers = iter(["again", "again", "ok", "unused"])
    calls: list[str] = []

    def dependency() -> str:
        calls.append(answer := next(answers))
        return answer

    guard = buttress.protect(
        "no-failed-cache",
        retry=buttress.Retry(
            on=ConnectionError,
            attempts=2,
            on_result=lambda result: result == "again",
            backoff=buttress.constant(0.0),
            budget=None,
        ),
        cache=buttress.Cache(key=lambda: "k"),
        clock=clock,
    )

    assert "again" == run.call(guard, dependency)
    assert "ok" == run.call(guard, dependency)
    assert "ok" == run.call(guard, dependency)

    assert ["again", "again", "ok"] == calls
    assert {"failure": 1, "success": 2} == {k: v for k, v in guard.stats.by_outcome().items() if v}
