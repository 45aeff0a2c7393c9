# Copyright 2025 the buttress developers. SPDX-License-Identifier: Apache-2.0
# The house style asserts `expected == actual`, which SIM300 calls a Yoda condition.
# ruff: noqa: SIM300
"""Hypothesis drives the breaker's pure state machine through random sequences of calls."""

from __future__ import annotations

from collections import deque

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from buttress._context import PolicyContext
from buttress._exceptions import CircuitOpenError
from buttress.policies._circuit_breaker import CircuitBreaker, CircuitBreakerState, CircuitState
from buttress.telemetry._events import CallRejected, CircuitStateChanged, Event
from buttress.testing import FakeClock

SLOW = 1.0


class StatusError(ConnectionError):
    """A failure that carries an HTTP status (or none), as a client's HTTP error does."""

    def __init__(self, status: int | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status


class BreakerMachine(RuleBasedStateMachine):
    """
    Random calls, outcomes, clock moves and manual switches against one breaker.

    Besides the window, it models the consecutive-failure run and the last failure's status,
    and checks that the lock-free flags are never set while a run is under way.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.events: list[Event] = []
        self.in_flight = 0
        self.seen = 0  # events already looked at
        # A reference model of the count window: (failure, slow) of the last window_size
        # outcomes recorded while closed.
        self.model: deque[tuple[bool, bool]] = deque()
        self.observe = False
        self.window = "count"
        # The failures in a row recorded while closed, and the status of the last counted failure.
        self.run = 0
        self.last_status: int | None = None
        self.config = CircuitBreaker()
        self.state: CircuitBreakerState

    @initialize(
        window_size=st.integers(1, 8),
        minimum_calls=st.integers(1, 6),
        half_open_calls=st.integers(1, 4),
        failure_rate_threshold=st.sampled_from([0.25, 0.5, 1.0]),
        slow_call_rate_threshold=st.sampled_from([0.5, 1.0]),
        consecutive_failures=st.one_of(st.none(), st.integers(1, 4)),
        window=st.sampled_from(["count", "time"]),
        observe=st.booleans(),
    )
    def build(
        self,
        *,
        window_size: int,
        minimum_calls: int,
        half_open_calls: int,
        failure_rate_threshold: float,
        slow_call_rate_threshold: float,
        consecutive_failures: int | None,
        window: str,
        observe: bool,
    ) -> None:
        """Bind a breaker with a random small configuration."""
        self.config = CircuitBreaker(
            window=window,
            window_size=window_size,
            minimum_calls=minimum_calls,
            half_open_calls=half_open_calls,
            failure_rate_threshold=failure_rate_threshold,
            slow_call_rate_threshold=slow_call_rate_threshold,
            consecutive_failures=consecutive_failures,
            slow_call_duration=SLOW,
            open_duration=10,
            open_duration_multiplier=2,
            max_open_duration=40,
            failure_on=ConnectionError,
        )
        self.observe = observe
        self.window = window
        self.model = deque(maxlen=window_size)
        ctx = PolicyContext(target="t", clock=self.clock, observe=observe, emit=self.events.append)
        self.state = self.config.bind(ctx)

    # -- rules --------------------------------------------------------------------------------

    @rule()
    def acquire(self) -> None:
        """Ask for a permit; only observe mode may never be refused."""
        try:
            self.state.acquire(self.clock.monotonic())
        except CircuitOpenError as err:
            rejected: CircuitOpenError | None = err
        else:
            rejected = None
            self.in_flight += 1

        assert rejected is None or (not self.observe and "t" == rejected.target)
        assert rejected is None or self.last_status == rejected.last_status

    def _finish(
        self, failure: bool, slow: bool, *, as_exception: bool, status: int | None = None
    ) -> None:
        s = self.state
        was = s.state
        counted_probe = was is CircuitState.HALF_OPEN and s._probes_taken > s._probe_done
        now = self.clock.monotonic()
        duration = 2 * SLOW if slow else SLOW / 10
        if as_exception:
            exc = StatusError(status) if failure else ValueError()
            s.on_exception(now, duration, exc)
        else:
            assert not failure
            # As the drivers do: a fast success in a quiet window skips on_result altogether.
            if not (s._quiet and duration < SLOW):
                s.on_result(now, duration, "ok")
        self.in_flight -= 1
        if was is CircuitState.CLOSED:
            self.model.append((failure, slow))
            self.run = self.run + 1 if failure else 0
        if failure and (was is CircuitState.CLOSED or counted_probe):
            self.last_status = status
        self._follow_transitions()

    @rule(outcome=st.sampled_from(["succeed", "fail", "raise_other"]), slow=st.booleans())
    def call(self, outcome: str, slow: bool) -> None:
        """A whole call: acquire, then an outcome if admitted."""
        before = self.in_flight
        self.acquire()
        if self.in_flight > before:
            getattr(self, outcome)(slow)

    @precondition(lambda self: self.in_flight > 0)
    @rule(slow=st.booleans())
    def succeed(self, slow: bool) -> None:
        """An attempt returns."""
        self._finish(False, slow, as_exception=False)

    @precondition(lambda self: self.in_flight > 0)
    @rule(slow=st.booleans(), status=st.sampled_from([None, 500, 503]))
    def fail(self, slow: bool, status: int | None = None) -> None:
        """An attempt raises a failure, with an HTTP status or without one."""
        self._finish(True, slow, as_exception=True, status=status)

    @precondition(lambda self: self.in_flight > 0)
    @rule(slow=st.booleans())
    def raise_other(self, slow: bool) -> None:
        """An attempt raises an exception outside failure_on: a success."""
        self._finish(False, slow, as_exception=True)

    @precondition(lambda self: self.in_flight > 0)
    @rule(cancelled=st.booleans())
    def cancel(self, cancelled: bool) -> None:
        """An attempt ends with nothing to record."""
        if cancelled:
            self.state.on_exception(self.clock.monotonic(), 0.0, KeyboardInterrupt())
        else:
            self.state.release()
        self.in_flight -= 1

    @rule(seconds=st.sampled_from([0.5, 5, 10, 20, 40, 100]))
    def advance(self, seconds: float) -> None:
        """Time passes."""
        self.clock.advance(seconds)

    # Mostly no-ops: an operator switch every step would keep the breaker from ever tripping.
    @rule(action=st.sampled_from(["force_open", "reset", "disable", *[""] * 9]))
    def manual(self, action: str) -> None:
        """An operator (rarely) forces the breaker open, resets it or disables it."""
        if not action:
            return
        getattr(self.state, action)()
        self.model.clear()
        self.run = 0  # even closed -> closed, which reports no transition
        self.last_status = None
        self._follow_transitions()

    def _follow_transitions(self) -> None:
        # A return to closed (from half_open) empties the window and forgets the last status;
        # every transition restarts the run.
        for event in self.events[self.seen :]:
            if isinstance(event, CircuitStateChanged):
                self.run = 0
                if event.to_state == "closed":
                    self.model.clear()
                    self.last_status = None
        self.seen = len(self.events)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def never_closed_to_half_open(self) -> None:
        """Transitions chain up and never go from closed to half_open."""
        previous = "closed"
        for event in self.events:
            if isinstance(event, CircuitStateChanged):
                assert previous == event.from_state
                assert (event.from_state, event.to_state) != ("closed", "half_open")
                assert event.from_state != event.to_state
                previous = event.to_state
        assert previous == self.state.state.value

    @invariant()
    def probe_permits_bounded(self) -> None:
        """Half-open never hands out more than half_open_calls permits."""
        s = self.state
        assert 0 <= s._probe_done <= s._probes_taken <= self.config.half_open_calls

    @invariant()
    def run_matches_model(self) -> None:
        """The run of failures is the model's, and a closed breaker's is under the limit."""
        s = self.state
        limit = self.config.consecutive_failures

        assert self.run == s._run
        assert s.state is not CircuitState.CLOSED or limit is None or s._run < limit

    @invariant()
    def fast_paths_off_during_a_run(self) -> None:
        """No success may skip the lock (and so miss resetting the run) while a run is on."""
        s = self.state

        assert s._run == 0 or not (s._quiet or s._clean)

    @invariant()
    def last_status_matches_model(self) -> None:
        """The status rejections would carry is that of the last failure counted."""
        assert self.last_status == self.state._last_status

    @invariant()
    def window_matches_model(self) -> None:
        """The window's counts equal a naive model's, stay within window_size, rates in [0, 1]."""
        if self.window == "time":  # the model does not age outcomes
            return
        snap = self.state.snapshot(self.clock.monotonic())
        expected = (
            len(self.model),
            sum(f for f, _ in self.model),
            sum(s for _, s in self.model),
        )

        assert expected == (snap.calls, snap.failures, snap.slow_calls)
        assert snap.calls <= self.config.window_size
        for rate in (snap.failure_rate, snap.slow_call_rate):
            assert rate is None or 0.0 <= rate <= 1.0

    @invariant()
    def closed_means_under_thresholds(self) -> None:
        """A closed breaker's window never sits at or over a threshold it should have acted on."""
        if self.window == "time":  # a refreshed window may age its successes out first
            return
        snap = self.state.snapshot(self.clock.monotonic())
        if snap.state is CircuitState.CLOSED and snap.failure_rate is not None:
            assert snap.failure_rate < self.config.failure_rate_threshold
            assert snap.slow_call_rate is not None
            assert snap.slow_call_rate < self.config.slow_call_rate_threshold

    @invariant()
    def rejections_flagged_by_mode(self) -> None:
        """Rejection events say whether they were only observed."""
        for event in self.events:
            if isinstance(event, CallRejected):
                assert (self.observe, "circuit_open") == (event.observed, event.reason)


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=80, deadline=None)
test_breaker_state_machine = BreakerMachine.TestCase
