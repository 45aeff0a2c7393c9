# Copyright 2025 the buttress developers. SPDX-License-Identifier: Apache-2.0
# The house style asserts `expected == actual`, which SIM300 calls a Yoda condition.
# ruff: noqa: SIM300
"""Tests for the circuit breaker's configuration and its sans-IO runtime state."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading

import pytest

from buttress._context import PolicyContext
from buttress._exceptions import CircuitOpenError, ConfigurationError
from buttress.policies._circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerState,
    CircuitSnapshot,
    CircuitState,
)
from buttress.telemetry._events import CallRejected, CircuitStateChanged, Event
from buttress.testing import FakeClock, capture_events


class Harness:
    """A bound breaker, its fake clock and the events it emitted."""

    def __init__(self, *, ctx_observe: bool = False, emit: bool = True, **config: object) -> None:
        self.clock = FakeClock()
        self.events: list[Event] = []
        kwargs: dict[str, object] = {"target": "svc", "kind": "http", "clock": self.clock}
        if emit:
            kwargs["emit"] = self.events.append
        ctx = PolicyContext(observe=ctx_observe, **kwargs)  # type: ignore[arg-type]
        self.breaker = CircuitBreaker(**config)  # type: ignore[arg-type]
        self.state: CircuitBreakerState = self.breaker.bind(ctx)

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def succeed(self, n: int = 1, duration: float = 0.01, result: object = None) -> None:
        for _ in range(n):
            self.state.acquire(self.now)
            self.state.on_result(self.now, duration, result)

    def fail(self, n: int = 1, exc: BaseException | None = None, duration: float = 0.01) -> None:
        for _ in range(n):
            self.state.acquire(self.now)
            self.state.on_exception(self.now, duration, exc or ConnectionError("boom"))

    def snap(self) -> CircuitSnapshot:
        return self.state.snapshot(self.now)

    def transitions(self) -> list[tuple[str, str]]:
        return [
            (e.from_state, e.to_state) for e in self.events if isinstance(e, CircuitStateChanged)
        ]

    def rejections(self) -> list[CallRejected]:
        return [e for e in self.events if isinstance(e, CallRejected)]


def tripped(**config: object) -> Harness:
    """A breaker opened by four failures out of four calls."""
    h = Harness(minimum_calls=4, **config)
    h.fail(4)
    assert CircuitState.OPEN == h.state.state
    return h


# -- configuration ------------------------------------------------------------------------------


def test_defaults():
    """CircuitBreaker() works and carries the documented defaults."""
    cb = CircuitBreaker()

    expected = (0.5, 1.0, 60.0, "count", 100, 20, None, 30.0, 1.0, 300.0, 5, Exception, (), None)
    assert (*expected, False) == (
        cb.failure_rate_threshold,
        cb.slow_call_rate_threshold,
        cb.slow_call_duration,
        cb.window,
        cb.window_size,
        cb.minimum_calls,
        cb.consecutive_failures,
        cb.open_duration,
        cb.open_duration_multiplier,
        cb.max_open_duration,
        cb.half_open_calls,
        cb.failure_on,
        cb.ignore,
        cb.failure_on_result,
        cb.observe,
    )


def test_config_is_frozen():
    """A breaker's configuration cannot change after construction."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        CircuitBreaker().open_duration = 1.0  # type: ignore[misc]


def test_times_are_normalised_to_float():
    """Integer seconds become floats; a count window size stays an int."""
    cb = CircuitBreaker(open_duration=10, slow_call_duration=2, window_size=50)

    assert (10.0, 2.0, 50) == (cb.open_duration, cb.slow_call_duration, cb.window_size)
    assert isinstance(cb.open_duration, float)


def test_repr_of_defaults():
    """The default breaker's repr shows no fields."""
    assert "<CircuitBreaker>" == repr(CircuitBreaker())


def test_repr_shows_non_default_fields():
    """The repr names only the fields that differ from the defaults, readably."""

    def is_503(result: object) -> bool:
        return result == 503

    cb = CircuitBreaker(
        failure_rate_threshold=0.25,
        window="time",
        failure_on=(ConnectionError, TimeoutError),
        ignore=(ValueError,),
        failure_on_result=is_503,
    )

    assert (
        "<CircuitBreaker failure_rate_threshold=0.25 window='time'"
        " failure_on=(ConnectionError, TimeoutError) ignore=(ValueError)"
        " failure_on_result=test_repr_shows_non_default_fields.<locals>.is_503>"
    ) == repr(cb)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold=1.5"),
        ({"failure_rate_threshold": 0}, "failure_rate_threshold=0"),
        ({"failure_rate_threshold": "high"}, "failure_rate_threshold='high'"),
        ({"slow_call_rate_threshold": 0.0}, "slow_call_rate_threshold=0.0"),
        ({"slow_call_rate_threshold": 2}, "slow_call_rate_threshold=2"),
        ({"slow_call_duration": 0}, "slow_call_duration=0"),
        ({"slow_call_duration": -1.0}, "slow_call_duration=-1.0"),
        ({"window": "sliding"}, "window='sliding'"),
        ({"window_size": 0}, "window_size=0"),
        ({"window_size": 10.5}, "window_size=10.5"),
        ({"window": "time", "window_size": 0.5}, "window_size=0.5"),
        ({"minimum_calls": 0}, "minimum_calls=0"),
        ({"minimum_calls": 2.0}, "minimum_calls=2.0"),
        ({"open_duration": 0}, "open_duration=0"),
        ({"open_duration_multiplier": 0.5}, "open_duration_multiplier=0.5"),
        ({"max_open_duration": 10.0}, "max_open_duration=10.0"),
        ({"open_duration": 600, "max_open_duration": 300}, "max_open_duration=300"),
        ({"half_open_calls": 0}, "half_open_calls=0"),
        ({"half_open_calls": True}, "half_open_calls=True"),
        ({"failure_on": 42}, "failure_on=42"),
        ({"failure_on": ()}, "failure_on=()"),
        ({"ignore": ValueError}, "ignore=<class 'ValueError'>"),
        ({"ignore": (int,)}, "ignore=(<class 'int'>,)"),
        ({"failure_on_result": 503}, "failure_on_result=503"),
        ({"observe": "yes"}, "observe='yes'"),
    ],
)
def test_bad_parameters_are_rejected(kwargs, shown):
    """Each bad parameter raises ConfigurationError naming the owner, the parameter and value."""
    with pytest.raises(ConfigurationError) as excinfo:
        CircuitBreaker(**kwargs)

    message = str(excinfo.value)

    assert message.startswith("CircuitBreaker: ")
    assert shown in message
    assert "expected" in message


def test_max_open_duration_message_names_the_range():
    """A cap below open_duration says what it must be at least."""
    with pytest.raises(ConfigurationError) as excinfo:
        CircuitBreaker(max_open_duration=10.0)

    assert (
        "CircuitBreaker: max_open_duration=10.0 is out of range; expected a number >= 30 "
        "(open_duration=30.0)"
    ) == str(excinfo.value)


def test_fractional_time_window_is_accepted():
    """A time window may be given in fractional seconds (rounded up to whole buckets)."""
    h = Harness(window="time", window_size=2.5, minimum_calls=1)
    h.succeed()

    assert 2.5 == h.breaker.window_size
    assert 1 == h.snap().calls


def test_bind_creates_independent_states():
    """Two pipelines bound to the same breaker never share a window or a state."""
    cb = CircuitBreaker(minimum_calls=1)
    a = cb.bind(PolicyContext(target="a", emit=lambda e: None))
    b = cb.bind(PolicyContext(target="b", emit=lambda e: None))
    a.acquire(0.0)
    a.on_exception(0.0, 0.1, ConnectionError())

    assert (CircuitState.OPEN, CircuitState.CLOSED) == (a.state, b.state)
    assert "<CircuitBreakerState target='a' state=open>" == repr(a)


# -- closed: counting and tripping --------------------------------------------------------------


def test_no_decision_before_minimum_calls():
    """Failures below minimum_calls never trip the breaker, however many of them fail."""
    h = Harness(minimum_calls=5)
    h.fail(4)

    assert CircuitState.CLOSED == h.state.state
    assert None is h.snap().failure_rate


def test_trips_when_failure_rate_meets_threshold():
    """At minimum_calls, a failure rate equal to the threshold opens the breaker."""
    h = Harness(minimum_calls=4, failure_rate_threshold=0.5)
    h.succeed(2)
    h.fail(1)

    assert CircuitState.CLOSED == h.state.state

    h.fail(1)

    assert CircuitState.OPEN == h.state.state
    assert [("closed", "open")] == h.transitions()


def test_stays_closed_below_threshold():
    """A failure rate under the threshold keeps the breaker closed."""
    h = Harness(minimum_calls=4, failure_rate_threshold=0.5)
    h.succeed(3)
    h.fail(1)
    snap = h.snap()

    assert CircuitState.CLOSED == snap.state
    assert (4, 1, 0.25) == (snap.calls, snap.failures, snap.failure_rate)


def test_minimum_calls_is_capped_at_count_window_size():
    """A count window smaller than minimum_calls can still trip (resilience4j)."""
    h = Harness(window_size=4)  # minimum_calls stays at its default, 20
    h.fail(4)

    assert CircuitState.OPEN == h.state.state


def test_slow_call_rate_trips():
    """Slow successes trip the breaker once the slow-call rate reaches its threshold."""
    h = Harness(minimum_calls=4, slow_call_rate_threshold=0.5, slow_call_duration=1.0)
    h.succeed(2, duration=0.1)
    h.succeed(1, duration=1.0)

    assert CircuitState.CLOSED == h.state.state

    h.succeed(1, duration=5.0)

    assert CircuitState.OPEN == h.state.state


def test_default_slow_threshold_needs_every_call_slow():
    """With the default slow-call threshold of 1.0, one fast call keeps the breaker closed."""
    h = Harness(minimum_calls=4, slow_call_duration=1.0)
    h.succeed(3, duration=2.0)
    h.succeed(1, duration=0.5)
    snap = h.snap()

    assert CircuitState.CLOSED == snap.state
    assert 0.75 == snap.slow_call_rate

    h2 = Harness(minimum_calls=4, slow_call_duration=1.0)
    h2.succeed(4, duration=2.0)

    assert CircuitState.OPEN == h2.state.state


def test_count_window_evicts_oldest_outcomes():
    """A count window only remembers its last window_size outcomes."""
    h = Harness(window_size=4, minimum_calls=4, failure_rate_threshold=0.75)
    h.fail(2)
    h.succeed(4)
    snap = h.snap()

    assert (4, 0, 0.0) == (snap.calls, snap.failures, snap.failure_rate)


def test_full_clean_window_still_records_a_failure():
    """After the lock-free fast path took over, a failure is still counted."""
    h = Harness(window_size=10, minimum_calls=10)
    h.succeed(25)
    h.fail(1)
    snap = h.snap()

    assert (10, 1) == (snap.calls, snap.failures)


def test_full_clean_window_still_records_a_slow_call():
    """After the lock-free fast path took over, a slow call is still counted."""
    h = Harness(window_size=10, minimum_calls=10, slow_call_duration=1.0)
    h.succeed(25)
    h.succeed(1, duration=3.0)

    assert 1 == h.snap().slow_calls


def test_time_window_forgets_old_buckets():
    """Outcomes older than window_size seconds fall out of a time window."""
    h = Harness(window="time", window_size=10, minimum_calls=3)
    h.fail(2)
    h.clock.advance(10)

    assert 0 == h.snap().calls

    h.succeed(2)
    h.fail(1)
    snap = h.snap()

    assert CircuitState.CLOSED == snap.state
    assert (3, 1) == (snap.calls, snap.failures)


def test_time_window_counts_within_the_window():
    """Outcomes less than window_size seconds apart add up and can trip the breaker."""
    h = Harness(window="time", window_size=10, minimum_calls=3)
    h.fail(1)
    h.clock.advance(4)
    h.fail(1)
    h.clock.advance(5)
    h.succeed(1)

    assert CircuitState.OPEN == h.state.state


def test_clean_time_window_counts_fast_successes():
    """
    Successes in a clean time window are counted without the lock, and they still count.

    The failure rate is failures / calls, so a success that went uncounted would make the
    breaker trip early: 10 successes then 9 failures is 9/19 (stays closed), a 10th failure is
    10/20 (trips at a 0.5 threshold).
    """
    h = Harness(window="time", window_size=10, minimum_calls=10, failure_rate_threshold=0.5)
    h.succeed(1)  # the first outcome rotates the window in: the slow path
    assert h.state._clean
    h.succeed(9)  # the same second: the lock-free path
    assert 10 == h.snap().calls
    h.fail(9)

    assert CircuitState.CLOSED == h.state.state
    assert not h.state._clean

    h.fail(1)

    assert CircuitState.OPEN == h.state.state


def test_clean_time_window_totals_survive_rotation():
    """Fast successes over several seconds add up, and leave the window as they age out."""
    h = Harness(window="time", window_size=3, minimum_calls=100)
    for _ in range(4):
        h.succeed(5)
        h.clock.advance(1)

    assert 10 == h.snap().calls  # seconds 2 and 3 (5 each) and the empty second 4
    h.clock.advance(2)

    assert 0 == h.snap().calls


def test_time_window_drops_buckets_one_by_one():
    """As time passes, a time window drops each second's bucket in turn."""
    h = Harness(window="time", window_size=3, minimum_calls=100)
    for _ in range(3):
        h.succeed(1)
        h.clock.advance(1)

    assert 2 == h.snap().calls

    h.clock.advance(1)

    assert 1 == h.snap().calls


def test_time_window_drops_stale_outcomes():
    """An outcome reported with a `now` older than the window is not counted."""
    h = Harness(window="time", window_size=5, minimum_calls=100)
    h.succeed(1)
    h.clock.advance(100)
    h.state.on_result(h.now - 50, 0.01, None)
    h.state.on_result(h.now - 2, 0.01, None)

    assert 1 == h.snap().calls


def test_snapshot_rates_are_none_below_minimum_calls():
    """The snapshot gives no rates while the breaker would take no decision."""
    h = Harness(minimum_calls=3)
    h.succeed(1)
    h.fail(1)

    assert (
        CircuitSnapshot(
            state=CircuitState.CLOSED,
            calls=2,
            failures=1,
            slow_calls=0,
            failure_rate=None,
            slow_call_rate=None,
        )
        == h.snap()
    )


# -- classification -------------------------------------------------------------------------------


def test_other_exceptions_count_as_successes():
    """An exception outside failure_on counts as a success: the dependency did answer."""
    h = Harness(failure_on=ConnectionError, minimum_calls=2)
    h.fail(2, exc=ValueError("bad input"))
    snap = h.snap()

    assert (CircuitState.CLOSED, 2, 0) == (snap.state, snap.calls, snap.failures)


@pytest.mark.parametrize(
    "failure_on",
    [
        ConnectionError,
        (ConnectionError, TimeoutError),
        lambda exc: isinstance(exc, OSError) and "refused" in str(exc),
    ],
)
def test_failure_on_shapes(failure_on):
    """failure_on accepts a type, a tuple of types or a predicate."""
    h = Harness(failure_on=failure_on, minimum_calls=1)
    h.fail(1, exc=ConnectionRefusedError("refused"))

    assert CircuitState.OPEN == h.state.state


def test_ignored_exceptions_record_nothing():
    """An ignored exception counts as neither a success nor a failure, even if in failure_on."""
    h = Harness(ignore=(ValueError,), minimum_calls=1)
    h.fail(3, exc=ValueError("ignored"))

    assert (CircuitState.CLOSED, 0) == (h.state.state, h.snap().calls)


def test_failure_on_result():
    """A returned value can be a failure."""
    h = Harness(failure_on_result=lambda r: r == 503, minimum_calls=4)
    h.succeed(2, result=200)
    h.succeed(1, result=503)

    assert 1 == h.snap().failures

    h.succeed(1, result=503)

    assert CircuitState.OPEN == h.state.state


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), asyncio.CancelledError(), SystemExit(1), GeneratorExit()]
)
def test_base_exceptions_never_count(exc):
    """A BaseException that is not an Exception releases the attempt and records nothing."""
    h = Harness(failure_on=BaseException, minimum_calls=1)
    h.fail(3, exc=exc)

    assert (CircuitState.CLOSED, 0) == (h.state.state, h.snap().calls)


# -- open ---------------------------------------------------------------------------------------


def test_open_rejects_with_circuit_open_error():
    """An open breaker rejects with CircuitOpenError carrying the target and the time left."""
    h = tripped(open_duration=30)
    h.clock.advance(12)

    with pytest.raises(CircuitOpenError) as excinfo:
        h.state.acquire(h.now)

    err = excinfo.value

    assert ("svc", "circuit_open", 18.0) == (err.target, err.reason, err.retry_after)
    assert str(err).startswith("buttress: the circuit breaker of target 'svc' is open")
    assert [CallRejected(target="svc", kind="http", reason="circuit_open")] == h.rejections()


def test_retry_after():
    """retry_after is the open time left, and None when the breaker is not open."""
    h = Harness(minimum_calls=1, open_duration=30)

    assert None is h.state.retry_after(h.now)

    h.fail(1)
    h.clock.advance(10)

    assert 20.0 == h.state.retry_after(h.now)

    h.clock.advance(25)

    assert 0.0 == h.state.retry_after(h.now)


def test_state_is_lazy():
    """An open breaker reads open until an acquire moves it to half_open: there are no timers."""
    h = tripped(open_duration=30)
    h.clock.advance(31)

    assert CircuitState.OPEN == h.state.state

    h.state.acquire(h.now)

    assert CircuitState.HALF_OPEN == h.state.state


def test_outcomes_while_open_are_not_recorded():
    """An attempt admitted before the trip and finishing after it changes nothing."""
    h = tripped()
    before = h.snap()
    h.state.on_exception(h.now, 0.1, ConnectionError())
    h.state.on_result(h.now, 0.1, None)
    h.state.release()

    assert before == h.snap()
    assert CircuitState.OPEN == h.state.state


# -- half-open ----------------------------------------------------------------------------------


def test_half_opens_after_open_duration():
    """The first acquire after open_duration is a probe; before that, calls are rejected."""
    h = tripped(open_duration=30)
    h.clock.advance(29.9)

    with pytest.raises(CircuitOpenError):
        h.state.acquire(h.now)

    h.clock.advance(0.1)
    h.state.acquire(h.now)

    assert CircuitState.HALF_OPEN == h.state.state
    assert [("closed", "open"), ("open", "half_open")] == h.transitions()


def test_half_open_permits_are_limited():
    """Half-open lets exactly half_open_calls probes through, then rejects without retry_after."""
    h = tripped(half_open_calls=3)
    h.clock.advance(30)
    for _ in range(3):
        h.state.acquire(h.now)

    with pytest.raises(CircuitOpenError) as excinfo:
        h.state.acquire(h.now)

    assert None is excinfo.value.retry_after
    assert None is h.state.retry_after(h.now)


def test_good_probes_close_the_breaker():
    """When every probe completes under the thresholds, the breaker closes with a clear window."""
    h = tripped(half_open_calls=3)
    h.clock.advance(30)
    h.succeed(2)

    assert CircuitState.HALF_OPEN == h.state.state

    h.succeed(1)
    snap = h.snap()

    assert (CircuitState.CLOSED, 0, 0) == (snap.state, snap.calls, snap.failures)
    assert ("half_open", "closed") == h.transitions()[-1]


def test_probe_failures_under_threshold_still_close():
    """One failed probe out of four is under a 50 % threshold: the breaker closes."""
    h = tripped(half_open_calls=4)
    h.clock.advance(30)
    h.fail(1)
    h.succeed(3)

    assert CircuitState.CLOSED == h.state.state


def test_bad_probes_reopen_as_soon_as_decided():
    """Half-open re-opens once the failed probes reach the threshold, without waiting for all."""
    h = tripped(half_open_calls=4)
    h.clock.advance(30)
    for _ in range(4):
        h.state.acquire(h.now)
    h.state.on_exception(h.now, 0.1, ConnectionError())

    assert CircuitState.HALF_OPEN == h.state.state

    h.state.on_exception(h.now, 0.1, ConnectionError())

    assert CircuitState.OPEN == h.state.state
    assert ("half_open", "open") == h.transitions()[-1]

    h.state.on_result(h.now, 0.1, None)  # the late probes change nothing
    h.state.on_result(h.now, 0.1, None)

    assert CircuitState.OPEN == h.state.state


def test_slow_probes_reopen():
    """Probes that are all slow re-open the breaker at the default slow threshold."""
    h = tripped(half_open_calls=2, slow_call_duration=1.0)
    h.clock.advance(30)
    h.succeed(2, duration=2.0)

    assert CircuitState.OPEN == h.state.state


def test_release_gives_back_a_probe_permit():
    """A cancelled probe returns its permit so another probe may run."""
    h = tripped(half_open_calls=1)
    h.clock.advance(30)
    h.state.acquire(h.now)
    h.state.release()
    h.state.acquire(h.now)

    with pytest.raises(CircuitOpenError):
        h.state.acquire(h.now)


def test_base_exception_gives_back_a_probe_permit():
    """A probe cancelled by a BaseException returns its permit and decides nothing."""
    h = tripped(half_open_calls=1)
    h.clock.advance(30)
    h.state.acquire(h.now)
    h.state.on_exception(h.now, 0.1, asyncio.CancelledError())
    h.succeed(1)

    assert CircuitState.CLOSED == h.state.state


def test_ignored_probe_gives_back_its_permit():
    """A probe that raised an ignored exception returns its permit."""
    h = tripped(half_open_calls=1, ignore=(LookupError,))
    h.clock.advance(30)
    h.fail(1, exc=KeyError("x"))
    h.succeed(1)

    assert CircuitState.CLOSED == h.state.state


def test_stragglers_do_not_decide_half_open():
    """Outcomes beyond the permits taken (calls admitted while closed) are not probe outcomes."""
    h = tripped(half_open_calls=2)
    h.clock.advance(30)
    h.state.acquire(h.now)
    h.state.on_result(h.now, 0.1, None)  # the probe
    h.state.on_exception(h.now, 0.1, ConnectionError())  # a straggler: no permit outstanding
    h.state.release()  # nothing to give back

    assert CircuitState.HALF_OPEN == h.state.state

    h.succeed(1)

    assert CircuitState.CLOSED == h.state.state


def test_open_duration_grows_and_is_capped():
    """Each consecutive trip multiplies the open duration, up to max_open_duration."""
    h = tripped(
        open_duration=10, open_duration_multiplier=2, max_open_duration=25, half_open_calls=1
    )
    waits = [h.state.retry_after(h.now)]
    for _ in range(3):
        h.clock.advance(waits[-1] or 0)
        h.fail(1)
        waits.append(h.state.retry_after(h.now))

    assert [10.0, 20.0, 25.0, 25.0] == waits


def test_open_duration_growth_resets_after_closing():
    """Once the breaker closes again, the next trip uses the base open duration."""
    h = tripped(open_duration=10, open_duration_multiplier=3, half_open_calls=1)
    h.clock.advance(10)
    h.fail(1)

    assert 30.0 == h.state.retry_after(h.now)

    h.clock.advance(30)
    h.succeed(1)
    h.fail(4)

    assert 10.0 == h.state.retry_after(h.now)


# -- manual control -----------------------------------------------------------------------------


def test_force_open_rejects_until_reset():
    """A forced-open breaker rejects every call, whatever the time, until reset."""
    h = Harness()
    h.state.force_open()
    h.clock.advance(10_000)

    with pytest.raises(CircuitOpenError) as excinfo:
        h.state.acquire(h.now)

    assert None is excinfo.value.retry_after
    assert None is h.state.retry_after(h.now)

    h.state.reset()
    h.state.acquire(h.now)

    assert [("closed", "forced_open"), ("forced_open", "closed")] == h.transitions()


def test_force_open_twice_reports_once():
    """Forcing an already forced-open breaker is not a transition."""
    h = Harness()
    h.state.force_open()
    h.state.force_open()

    assert [("closed", "forced_open")] == h.transitions()


def test_reset_clears_window_and_growth():
    """reset closes the breaker, empties its window and restarts the open-duration growth."""
    h = tripped(open_duration=10, open_duration_multiplier=2, half_open_calls=1)
    h.clock.advance(10)
    h.fail(1)
    h.state.reset()

    assert (CircuitState.CLOSED, 0) == (h.state.state, h.snap().calls)

    h.fail(4)

    assert 10.0 == h.state.retry_after(h.now)


def test_reset_when_closed_clears_without_event():
    """Resetting a closed breaker empties its window and reports no transition."""
    h = Harness(minimum_calls=10)
    h.fail(3)
    h.state.reset()

    assert (0, []) == (h.snap().calls, h.transitions())


def test_disable_admits_everything_and_records_nothing():
    """A disabled breaker neither rejects nor records, until reset."""
    h = tripped()
    h.state.disable()
    h.fail(50)
    snap = h.snap()

    assert (CircuitState.DISABLED, 0) == (snap.state, snap.calls)

    h.state.reset()
    h.fail(4)

    assert CircuitState.OPEN == h.state.state
    assert [
        ("closed", "open"),
        ("open", "disabled"),
        ("disabled", "closed"),
        ("closed", "open"),
    ] == h.transitions()


# -- observe mode -------------------------------------------------------------------------------


@pytest.mark.parametrize(("config_observe", "ctx_observe"), [(True, False), (False, True)])
def test_observe_mode_never_rejects(config_observe, ctx_observe):
    """Observe mode runs the state machine and reports rejections, but admits every call."""
    h = Harness(ctx_observe=ctx_observe, observe=config_observe)
    h.fail(20)

    assert CircuitState.OPEN == h.state.state

    h.state.acquire(h.now)  # does not raise

    assert [CallRejected(target="svc", kind="http", reason="circuit_open", observed=True)] == (
        h.rejections()
    )


def test_observe_mode_reports_excess_probes():
    """In observe mode, calls beyond the half-open permits are admitted and reported."""
    h = Harness(ctx_observe=True, minimum_calls=4, half_open_calls=2)
    h.fail(4)
    h.clock.advance(30)
    for _ in range(3):
        h.state.acquire(h.now)

    assert CircuitState.HALF_OPEN == h.state.state
    assert 1 == len(h.rejections())
    assert all(r.observed for r in h.rejections())

    h.state.on_result(h.now, 0.1, None)
    h.state.on_result(h.now, 0.1, None)

    assert [("closed", "open"), ("open", "half_open"), ("half_open", "closed")] == (h.transitions())


def test_observe_mode_forced_open_admits():
    """Even forced open, observe mode admits the call and reports an observed rejection."""
    h = Harness(ctx_observe=True)
    h.state.force_open()
    h.state.acquire(h.now)

    assert [True] == [r.observed for r in h.rejections()]


# -- events ---------------------------------------------------------------------------------------


def test_events_in_order_through_the_hook_registry():
    """Transitions and rejections reach the hooks in the order they happened."""
    h = Harness(emit=False, minimum_calls=2, half_open_calls=1, open_duration=5)
    with capture_events() as events:
        h.fail(2)
        with pytest.raises(CircuitOpenError):
            h.state.acquire(h.now)
        h.clock.advance(5)
        h.fail(1)
        h.clock.advance(5)
        h.succeed(1)

    changed = CircuitStateChanged
    assert [
        changed(target="svc", kind="http", from_state="closed", to_state="open"),
        CallRejected(target="svc", kind="http", reason="circuit_open"),
        changed(target="svc", kind="http", from_state="open", to_state="half_open"),
        changed(target="svc", kind="http", from_state="half_open", to_state="open"),
        changed(target="svc", kind="http", from_state="open", to_state="half_open"),
        changed(target="svc", kind="http", from_state="half_open", to_state="closed"),
    ] == events


def test_hooks_run_outside_the_lock():
    """A hook may call back into the breaker without deadlocking."""
    seen: list[tuple[CircuitState, int]] = []
    clock = FakeClock()
    state: CircuitBreakerState

    def hook(event: Event) -> None:
        snap = state.snapshot(clock.monotonic())
        seen.append((snap.state, snap.calls))
        if isinstance(event, CircuitStateChanged) and event.to_state == "open":
            state.reset()

    state = CircuitBreaker(minimum_calls=1).bind(PolicyContext(target="t", emit=hook))
    state.acquire(clock.monotonic())
    state.on_exception(clock.monotonic(), 0.1, ConnectionError())

    assert CircuitState.CLOSED == state.state
    assert (CircuitState.OPEN, 1) == seen[0]


# -- threads --------------------------------------------------------------------------------------


@pytest.fixture
def busy_switching():
    """Switch threads often so races show up."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.usefixtures("busy_switching")
@pytest.mark.parametrize("window", ["count", "time"])
def test_counts_stay_consistent_under_threads(window):
    """Sixteen threads recording at once lose no outcome: calls == recorded."""
    per_thread = 2_000
    # A threshold of 1.0 with successes mixed in never trips, so every outcome is recorded.
    cb = CircuitBreaker(
        window=window,
        window_size=100_000 if window == "count" else 3_600,  # the largest of each
        failure_rate_threshold=1.0,
        failure_on=ConnectionError,
    )
    state = cb.bind(PolicyContext(target="t", emit=lambda e: None))
    start = threading.Barrier(16)

    def work(seed: int) -> None:
        start.wait()
        for i in range(per_thread):
            state.acquire(1.0)
            match (i + seed) % 4:
                case 0:
                    state.on_exception(1.0, 0.01, ConnectionError())
                case 1:
                    state.on_exception(1.0, 0.01, ValueError())  # a success
                case 2:
                    state.on_exception(1.0, 0.01, KeyboardInterrupt())  # released
                case _:
                    state.on_result(1.0, 0.01, None)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = state.snapshot(1.0)

    assert (CircuitState.CLOSED, 16 * per_thread * 3 // 4, 16 * per_thread // 4) == (
        snap.state,
        snap.calls,
        snap.failures,
    )


@pytest.mark.usefixtures("busy_switching")
def test_half_open_permits_hold_under_threads():
    """Racing threads never get more than half_open_calls probe permits."""
    h = tripped(half_open_calls=3)
    h.clock.advance(30)
    admitted: list[int] = []
    start = threading.Barrier(16)

    def probe(n: int) -> None:
        start.wait()
        try:
            h.state.acquire(h.now)
        except CircuitOpenError:
            return
        admitted.append(n)

    threads = [threading.Thread(target=probe, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert 3 == len(admitted)
    assert 13 == len(h.rejections())


# -- refuses_at: would an attempt starting then be refused? ---------------------------------------


def test_refuses_at_follows_the_open_duration():
    h = Harness(minimum_calls=4, open_duration=10.0)
    assert not h.state.refuses_at(h.now)
    h.fail(4)
    assert (True, True, False) == (
        h.state.refuses_at(h.now),
        h.state.refuses_at(h.now + 9.9),
        h.state.refuses_at(h.now + 10.0),
    )


def test_refuses_at_is_always_true_forced_open_and_never_when_observing():
    h = Harness()
    h.state.force_open()
    observing = tripped(observe=True)
    assert (True, False) == (h.state.refuses_at(h.now + 1e6), observing.state.refuses_at(0.0))
