"""Tests for the token-bucket rate limiter: config, refill, reservations, bounds, observe mode."""

# ruff: noqa: SIM300 - house style asserts `expected == actual` (R15)

from __future__ import annotations

import contextlib
import math
import threading

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from buttress._context import PolicyContext
from buttress._exceptions import ConfigurationError, RateLimitedError
from buttress.policies._rate_limit import RateLimit, RateLimitState
from buttress.telemetry._events import CallRejected, Event, RateLimitWaited
from buttress.testing import FakeClock, capture_events

EPS = 1e-9


def make(
    clock: FakeClock, events: list[Event] | None = None, *, observe_ctx: bool = False, **kw: object
) -> RateLimitState:
    """Bind a RateLimit built from *kw* to a context on *clock* whose events go to *events*."""
    sink = events if events is not None else []
    ctx = PolicyContext(
        target="api", kind="http", clock=clock, emit=sink.append, observe=observe_ctx
    )
    return RateLimit(**kw).bind(ctx)  # type: ignore[arg-type]


# -- configuration ---------------------------------------------------------------------------


def test_defaults():
    """RateLimit() allows 10 calls per second, a one-second burst, and never waits."""
    r = RateLimit()

    assert (10.0, None, 10, 0.0, False) == (
        r.rate,
        r.burst,
        r.effective_burst,
        r.max_wait,
        r.observe,
    )


@pytest.mark.parametrize(("rate", "expected"), [(0.5, 1), (2.5, 3), (100.0, 100)])
def test_auto_burst_is_one_second_of_tokens(rate, expected):
    """burst=None means max(1, ceil(rate))."""
    assert expected == RateLimit(rate=rate).effective_burst


def test_per_minute():
    """per_minute converts calls per minute to a rate and passes other parameters through."""
    r = RateLimit.per_minute(120, burst=5, max_wait=2)

    assert (2.0, 5, 2.0) == (r.rate, r.burst, r.max_wait)


def test_reprs():
    """Config and state reprs show the rate, the bucket and (for the state) the tokens left."""
    state = make(FakeClock(), rate=2, burst=4)
    state.acquire(1000.0)

    assert "<RateLimit rate=2/s burst=4 max_wait=0s>" == repr(state.config)
    assert "<RateLimit rate=0.5/s burst=1 (auto) max_wait=0s observe>" == repr(
        RateLimit.per_minute(30, observe=True)
    )
    assert "<RateLimitState target='api' tokens=3.00/4 rate=2/s>" == repr(state)


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"rate": 0}, "RateLimit: rate=0 is out of range; expected a finite number > 0"),
        ({"rate": -1.0}, "RateLimit: rate=-1.0 is out of range; expected a finite number > 0"),
        ({"rate": math.inf}, "RateLimit: rate=inf is out of range; expected a finite number > 0"),
        ({"rate": "10/s"}, "RateLimit: rate='10/s' is not accepted"),
        ({"burst": 0}, "RateLimit: burst=0 is out of range; expected an integer >= 1 or None"),
        ({"burst": 2.5}, "RateLimit: burst=2.5 is not accepted"),
        ({"max_wait": -1}, "RateLimit: max_wait=-1 is out of range; expected a number >= 0"),
        ({"observe": 1}, "RateLimit: observe=1 is not accepted"),
    ],
)
def test_validation_names_parameter_value_and_range(kw, expected):
    """Bad parameters raise ConfigurationError naming the parameter, the value and the range."""
    with pytest.raises(ConfigurationError) as info:
        RateLimit(**kw)

    assert str(info.value).startswith(expected)


def test_per_minute_validates_n():
    """per_minute names its own parameter when n is out of range."""
    with pytest.raises(ConfigurationError, match=r"RateLimit.per_minute: n=0 is out of range"):
        RateLimit.per_minute(0)


def test_cost_must_be_positive():
    """A cost of zero or less is a programming error."""
    clock = FakeClock()
    state = make(clock)

    with pytest.raises(ValueError, match="cost=0"):
        state.acquire(clock.monotonic(), math.inf, 0)


# -- the bucket ------------------------------------------------------------------------------


def test_burst_then_refill_at_rate():
    """A full bucket serves *burst* calls at once, then one more per 1/rate seconds."""
    clock = FakeClock()
    state = make(clock, rate=2, burst=3)
    now = clock.monotonic()

    first = [state.acquire(now) for _ in range(3)]
    with pytest.raises(RateLimitedError):
        state.acquire(now)
    clock.advance(0.5)
    after_refill = state.acquire(clock.monotonic())

    assert [0.0, 0.0, 0.0] == first
    assert 0.0 == after_refill
    assert 0.0 == pytest.approx(state.available)


def test_refill_never_exceeds_burst():
    """A long quiet period fills the bucket only up to *burst*."""
    clock = FakeClock()
    state = make(clock, rate=5, burst=2)
    state.acquire(clock.monotonic())

    clock.advance(3600)

    assert 2.0 == state.available


def test_rejection_reports_retry_after_and_takes_nothing():
    """A rejected call gets retry_after = seconds until a token, and leaves the bucket as it was."""
    events: list[Event] = []
    clock = FakeClock()
    state = make(clock, events, rate=4, burst=1)
    now = clock.monotonic()
    state.acquire(now)
    clock.advance(0.1)

    with pytest.raises(RateLimitedError) as info:
        state.acquire(clock.monotonic())

    assert ("rate_limited", "api") == (info.value.reason, info.value.target)
    assert 0.15 == pytest.approx(info.value.retry_after)
    assert 0.4 == pytest.approx(state.available)
    assert "buttress: rate limit for target 'api' exceeded: next token in 0.15s" in str(info.value)
    assert [CallRejected(target="api", kind="http", reason="rate_limited")] == events


def test_reservations_queue_callers_in_order():
    """Waiting callers reserve their token at once: each waits 1/rate longer than the last."""
    events: list[Event] = []
    clock = FakeClock()
    state = make(clock, events, rate=1, burst=1, max_wait=10)
    now = clock.monotonic()

    delays = [state.acquire(now) for _ in range(4)]

    assert [0.0, 1.0, 2.0, 3.0] == delays
    assert -3.0 == state.available
    assert [RateLimitWaited(target="api", kind="http", wait=w) for w in (1.0, 2.0, 3.0)] == events


def test_max_wait_bounds_the_delay():
    """A call that would wait longer than max_wait is rejected; the bucket's debt is unchanged."""
    clock = FakeClock()
    state = make(clock, rate=1, burst=1, max_wait=1.5)
    now = clock.monotonic()
    state.acquire(now)
    state.acquire(now)

    with pytest.raises(RateLimitedError) as info:
        state.acquire(now)
    clock.advance(0.5)
    later = state.acquire(clock.monotonic())

    assert 2.0 == info.value.retry_after
    assert 1.5 == later


def test_deadline_bounds_the_delay():
    """The call's deadline bounds the wait even when max_wait allows more."""
    clock = FakeClock()
    state = make(clock, rate=1, burst=1, max_wait=60)
    now = clock.monotonic()
    state.acquire(now)

    with pytest.raises(RateLimitedError):
        state.acquire(now, now + 0.5)
    granted = state.acquire(now, now + 1.0)

    assert 1.0 == granted


def test_cost_takes_several_tokens():
    """A call may cost more than one token, even more than the bucket holds (it waits)."""
    clock = FakeClock()
    state = make(clock, rate=2, burst=2, max_wait=10)
    now = clock.monotonic()

    delays = [state.acquire(now, math.inf, 1.5), state.acquire(now, math.inf, 3)]

    assert [0.0, 1.25] == delays


def test_stale_now_does_not_refill():
    """A caller passing an older time than the last one neither refills nor breaks the bucket."""
    clock = FakeClock()
    state = make(clock, rate=1, burst=1)
    now = clock.monotonic()
    state.acquire(now + 1.0)

    with pytest.raises(RateLimitedError):
        state.acquire(now)


def test_threads_share_the_bucket():
    """Concurrent threads at a frozen time are granted exactly *burst* tokens in total."""
    clock = FakeClock()
    state = make(clock, rate=1, burst=50)
    now = clock.monotonic()
    granted = []

    def worker() -> None:
        for _ in range(20):
            with contextlib.suppress(RateLimitedError):
                granted.append(state.acquire(now))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert 50 == len(granted)


# -- observe mode and events -----------------------------------------------------------------


@pytest.mark.parametrize(("config_observe", "ctx_observe"), [(True, False), (False, True)])
def test_observe_mode_never_delays_or_raises(config_observe, ctx_observe):
    """Observe mode returns 0.0 and reports the waits and rejections enforcement would cause."""
    events: list[Event] = []
    clock = FakeClock()
    state = make(
        clock, events, observe_ctx=ctx_observe, rate=1, burst=1, max_wait=1, observe=config_observe
    )
    now = clock.monotonic()

    delays = [state.acquire(now) for _ in range(3)]

    assert [0.0, 0.0, 0.0] == delays
    assert [
        RateLimitWaited(target="api", kind="http", wait=1.0, observed=True),
        CallRejected(target="api", kind="http", reason="rate_limited", observed=True),
    ] == events


def test_events_reach_registered_hooks():
    """With the default emit, events go to the hook registry."""
    clock = FakeClock()
    state = RateLimit(rate=1, burst=1, max_wait=5).bind(PolicyContext(target="t", clock=clock))
    now = clock.monotonic()
    state.acquire(now)

    with capture_events() as events:
        state.acquire(now)

    assert [RateLimitWaited(target="t", kind="function", wait=1.0)] == events


# -- properties ------------------------------------------------------------------------------


class TokenBucketMachine(RuleBasedStateMachine):
    """Random arrivals and clock moves against a bucket; check its promises."""

    state: RateLimitState

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.served: list[float] = []  # the times granted calls proceed (now + delay)

    @initialize(
        rate=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
        burst=st.integers(1, 5),
        max_wait=st.sampled_from([0.0, 0.25, 1.0, 5.0]),
    )
    def start(self, rate: float, burst: int, max_wait: float) -> None:
        """Create a bucket."""
        self.rate, self.burst, self.max_wait = rate, burst, max_wait
        self.state = make(self.clock, rate=rate, burst=burst, max_wait=max_wait)

    @rule(dt=st.floats(0, 3, allow_nan=False))
    def advance(self, dt: float) -> None:
        """Time passes."""
        self.clock.advance(dt)

    @rule(deadline_in=st.one_of(st.just(math.inf), st.floats(-1, 5, allow_nan=False)))
    def call(self, deadline_in: float) -> None:
        """A call asks for a token; a granted delay never exceeds max_wait or the deadline."""
        now = self.clock.monotonic()
        try:
            delay = self.state.acquire(now, now + deadline_in)
        except RateLimitedError as exc:
            retry_after = exc.retry_after
        else:
            retry_after = None
        if retry_after is not None:
            assert retry_after > min(self.max_wait, deadline_in) - EPS
            return
        assert delay >= 0.0
        if delay > 0:
            assert delay <= min(self.max_wait, deadline_in) + EPS
        self.served.append(now + delay)

    @invariant()
    def tokens_never_exceed_burst(self) -> None:
        """The bucket never holds more than *burst* tokens."""
        assert self.state.available <= self.burst + EPS

    @invariant()
    def grants_respect_burst_plus_rate(self) -> None:
        """In any window, calls served <= burst + rate * window length."""
        times = sorted(self.served)
        for i in range(len(times)):
            for j in range(i, len(times)):
                assert j - i + 1 <= self.burst + self.rate * (times[j] - times[i]) + 1e-6


TestTokenBucketMachine = TokenBucketMachine.TestCase
TestTokenBucketMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
