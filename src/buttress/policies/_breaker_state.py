# Copyright 2025 the buttress developers. SPDX-License-Identifier: Apache-2.0
"""
The circuit breaker's runtime: its states, its snapshot, and the thread-safe state machine.

Apart from the configuration (:mod:`buttress.policies._circuit_breaker`) because this is the part
that runs on every call: the lock-free fast paths, the locked transitions and the ordered
delivery of events. The state diagram is in that module's docstring.
"""

from __future__ import annotations

import enum
import math
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buttress import _fork
from buttress._exceptions import CircuitOpenError
from buttress._http_signals import status_of
from buttress.policies._breaker_window import _CountWindow, _TimeWindow
from buttress.telemetry import _hooks
from buttress.telemetry._events import CallRejected, CircuitStateChanged, Event

if TYPE_CHECKING:
    from buttress._context import PolicyContext
    from buttress.policies._circuit_breaker import CircuitBreaker

__all__ = ["CircuitBreakerState", "CircuitSnapshot", "CircuitState"]


class CircuitState(enum.StrEnum):
    """Where a circuit breaker stands; the values are what events and metrics report.

    .. versionadded:: 0.1.0
    """

    CLOSED = "closed"
    """Calls flow and their outcomes are recorded."""
    OPEN = "open"
    """Calls are rejected until the open duration has passed."""
    HALF_OPEN = "half_open"
    """A few probe calls are let through to decide between closed and open."""
    FORCED_OPEN = "forced_open"
    """Every call is rejected until :meth:`CircuitBreakerState.reset` (an operator's switch)."""
    DISABLED = "disabled"
    """Every call flows and nothing is recorded (an operator's switch)."""


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN
_FORCED_OPEN = CircuitState.FORCED_OPEN
_DISABLED = CircuitState.DISABLED


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitSnapshot:
    """A consistent view of a breaker at one instant, for health endpoints and tests.

    The counts are those of the sliding window (while open or half-open: the window that tripped
    the breaker; probes are tracked apart). The rates are ``None`` while the window holds fewer
    than ``minimum_calls`` calls, because the breaker takes no decision on them yet.

    .. versionadded:: 0.1.0
    """

    state: CircuitState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float | None
    slow_call_rate: float | None


def open_message(target: str) -> str:
    """What an open breaker's rejection says: that buttress refused, and what to change."""
    return (
        f"buttress: the circuit breaker of target {target!r} is open, so the call was not sent; "
        "it lets a probe through after breaker.open_duration (breaker settings: BUTTRESS_CONFIG, "
        "or CircuitBreaker(...) in code)"
    )


class CircuitBreakerState:
    """One target's breaker at runtime: its state, its window and its probes.

    Created by :meth:`CircuitBreaker.bind`. A driver calls :meth:`acquire` before each attempt,
    then exactly one of :meth:`on_result`, :meth:`on_exception` or :meth:`release`.

    Thread-safe. Transitions and rejections are reported through ``ctx.emit`` outside the lock,
    in the order they happened.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",
        "_clean",
        "_clean_ok",
        "_ctx",
        "_emit_lock",
        "_fail_threshold",
        "_free",
        "_half_open_calls",
        "_ignore",
        "_is_failure",
        "_is_failure_result",
        "_last_status",
        "_lock",
        "_max_open",
        "_min_calls",
        "_multiplier",
        "_observe",
        "_open_base",
        "_open_duration",
        "_open_message",
        "_opened_at",
        "_pending",
        "_probe_done",
        "_probe_failures",
        "_probe_slow",
        "_probes_taken",
        "_quiet",
        "_quiet_ok",
        "_run",
        "_run_limit",
        "_slow_duration",
        "_slow_threshold",
        "_state",
        "_window",
        "config",
    )

    def __init__(self, config: CircuitBreaker, ctx: PolicyContext) -> None:
        self.config = config
        self._ctx = ctx
        self._open_message = open_message(ctx.target)
        self._lock = threading.Lock()
        # Events are queued under _lock in transition order and delivered under _emit_lock, so
        # hooks never run under the state lock yet always see transitions in order. Reentrant: a
        # hook may call back into this breaker.
        self._emit_lock = threading.RLock()
        self._pending: deque[Event] = deque()
        self._state = _CLOSED
        # True in closed and disabled: acquire() has nothing to check.
        self._free = True
        # True when a fast success would change nothing: a full count window with no failure
        # and no slow call, and no result predicate. on_result() then returns without the lock.
        self._quiet = False
        # True when a time window holds no failure and no slow call (and there is no result
        # predicate): a fast success then cannot trip anything, so on_result() counts it in the
        # current second's bucket without the lock.
        self._clean = False
        self._fail_threshold = config.failure_rate_threshold
        self._slow_threshold = config.slow_call_rate_threshold
        self._slow_duration = config.slow_call_duration
        self._is_failure = config._is_failure
        self._is_failure_result = config.failure_on_result
        self._ignore = config.ignore
        self._observe = config.observe or ctx.observe
        self._half_open_calls = config.half_open_calls
        self._open_base = config.open_duration
        self._open_duration = config.open_duration
        self._multiplier = config.open_duration_multiplier
        self._max_open = config.max_open_duration
        self._opened_at = 0.0
        self._probes_taken = 0
        self._probe_done = 0
        self._probe_failures = 0
        self._probe_slow = 0
        # The consecutive-failure trigger: failures recorded in a row while closed, and how many
        # trip the breaker (sys.maxsize when off: one comparison, no None check).
        self._run = 0
        self._run_limit = config.consecutive_failures or sys.maxsize
        # The HTTP status of the last failure the breaker counted (None: it had none, such as
        # a connection error), carried by the rejections of the trip it led to.
        self._last_status: int | None = None
        self._window: _CountWindow | _TimeWindow
        if config.window == "count":
            size = int(config.window_size)
            self._window = _CountWindow(size)
            self._min_calls = min(config.minimum_calls, size)
            self._quiet_ok = config.failure_on_result is None
            self._clean_ok = False
        else:
            self._window = _TimeWindow(config.window_size)
            self._min_calls = config.minimum_calls
            self._quiet_ok = False
            self._clean_ok = config.failure_on_result is None
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        # A forked child keeps what the breaker knows of the dependency (its state, window and
        # open duration) and drops what belonged to the parent's other threads: the half-open
        # probes they took (their outcomes never come, and they would block every probe of the
        # child), the events they queued (they deliver them in the parent) and the locks.
        _fork.reinit(self._lock)
        _fork.reinit(self._emit_lock)
        self._pending.clear()
        if self._state is _HALF_OPEN:
            self._probes_taken = self._probe_done
        # The fork may have split a transition, whose flags are written one by one: derive the
        # lock-free flags again (the next recorded outcome sets _quiet and _clean as due).
        self._free = self._state is _CLOSED or self._state is _DISABLED
        self._quiet = self._clean = False

    # -- the hot path -----------------------------------------------------------------------

    def acquire(self, now: float) -> None:
        """Ask to start an attempt at *now*.

        Raises:
            CircuitOpenError: the breaker is open, forced open, or half-open with every probe
                permit taken (never in observe mode, which reports the rejection and admits).

        .. versionadded:: 0.1.0
        """
        if self._free:
            return
        rejection = self._admit(now)
        if rejection is not None:
            raise rejection

    def on_result(self, now: float, duration: float, result: object) -> None:
        """Record that the attempt returned *result* after *duration* seconds.

        The outcome is a failure if ``failure_on_result(result)`` is true, else a success; either
        is slow if *duration* >= ``slow_call_duration``.

        .. versionadded:: 0.1.0
        """
        if duration < self._slow_duration:
            if self._quiet:
                # A full, clean count window stays full and clean: nothing to record. A racy
                # read is fine: the slow path re-checks everything under the lock.
                return
            if self._clean:
                # A clean time window: a success cannot trip it, it only has to be counted.
                # Within the newest bucket's second that is two increments (_TimeWindow.record
                # without the rotation), done without the lock. Under the GIL neither increment
                # can be interrupted (no call or backward jump between load and store); the
                # window re-derives its totals from the buckets whenever it rotates, so a lost
                # update on a free-threaded build cannot make them drift.
                window = self._window
                second = math.floor(now)
                if second == window._head:  # type: ignore[union-attr]
                    window._b_calls[second % window.size] += 1  # type: ignore[union-attr]
                    window.calls += 1
                    return
        predicate = self._is_failure_result
        if predicate is not None and predicate(result):
            self._record(now, True, duration >= self._slow_duration, status_of(result))
        else:
            self._record(now, False, duration >= self._slow_duration)

    def on_exception(self, now: float, duration: float, exc: BaseException) -> None:
        """Record that the attempt raised *exc* after *duration* seconds.

        A ``BaseException`` that is not an ``Exception`` (cancellation, KeyboardInterrupt) and
        an ignored exception record nothing (see :meth:`release`). A ``failure_on`` exception is
        a failure; any other exception is a success: the dependency did answer.

        .. versionadded:: 0.1.0
        """
        if not isinstance(exc, Exception) or (self._ignore and isinstance(exc, self._ignore)):
            self.release()
            return
        if self._is_failure(exc):
            self._record(now, True, duration >= self._slow_duration, status_of(exc))
        else:
            self._record(now, False, duration >= self._slow_duration)

    def release(self) -> None:
        """End an attempt that has nothing to record, giving back its half-open permit if any.

        .. versionadded:: 0.1.0
        """
        if self._free:
            return
        with self._lock:
            if self._state is _HALF_OPEN and self._probes_taken > self._probe_done:
                self._probes_taken -= 1

    # -- the slow paths ---------------------------------------------------------------------

    def _admit(self, now: float) -> CircuitOpenError | None:
        """
        The slow half of :meth:`acquire`: the error to raise, or ``None`` when admitted.

        Returning the error instead of raising it lets the pipeline drivers count the rejection
        and raise it from their own frame, without a costly catch-and-re-raise.
        """
        # Lock-free rejection while plainly open: the common case during an outage must stay
        # cheaper than pybreaker's. A stale read can only reject a call that arrived as the open
        # duration ended, which is indistinguishable from it arriving a moment earlier; it
        # never admits one. Anything that may change state takes the lock below.
        state = self._state
        if state is _FORCED_OPEN:
            return self._reject(None)
        if state is _OPEN:
            left = self._opened_at + self._open_duration - now
            if left > 0:
                return self._reject(left)
        retry_after: float | None = None
        with self._lock:
            state = self._state
            if state is _OPEN:
                left = self._opened_at + self._open_duration - now
                if left <= 0:
                    self._transition(_HALF_OPEN)
                    self._probes_taken = 1
                    rejected = False
                else:
                    rejected = True
                    retry_after = left
            elif state is _HALF_OPEN:
                rejected = self._probes_taken >= self._half_open_calls
                if not rejected:
                    self._probes_taken += 1
            else:
                # Forced open; or closed/disabled if we raced with a transition.
                rejected = state is _FORCED_OPEN
            if rejected:
                ctx = self._ctx
                self._pending.append(
                    CallRejected(
                        target=ctx.target,
                        kind=ctx.kind,
                        reason="circuit_open",
                        observed=self._observe,
                    )
                )
        if self._pending:
            self._drain()
        if rejected and not self._observe:
            target = self._ctx.target
            return CircuitOpenError(
                open_message(target),
                target=target,
                retry_after=retry_after,
                last_status=self._last_status,
            )
        return None

    def _reject(self, retry_after: float | None) -> CircuitOpenError | None:
        """Report a rejection taken without the lock; the error to raise unless observing."""
        ctx = self._ctx
        # Build the event only when someone listens: during an outage this path runs for every
        # call, and an event costs as much as the rest of the rejection.
        if ctx.emit is not _hooks.emit or _hooks._hooks:
            ctx.emit(
                CallRejected(
                    target=ctx.target, kind=ctx.kind, reason="circuit_open", observed=self._observe
                )
            )
        if self._observe:
            return None
        return CircuitOpenError(
            self._open_message,
            target=ctx.target,
            retry_after=retry_after,
            last_status=self._last_status,
        )

    def _record(self, now: float, failure: bool, slow: bool, status: int | None = None) -> None:
        # *status*: the HTTP status of a failure (see _last_status); None for a success.
        with self._lock:
            state = self._state
            if state is _CLOSED:
                window = self._window
                window.record(now, failure, slow)
                calls = window.calls
                # The run of failures in a row. Invariant: _quiet and _clean are set only while
                # the run is 0. The lock-free paths (on_result's early returns, the drivers'
                # inlined _quiet checks) skip successes only, and only while a flag is set;
                # failures always come here. A failure clears both flags in this same locked
                # section (below, or in _trip), and only a success recorded here, which resets
                # the run itself, can set them again. So no success is skipped while a run is
                # under way, and a skipped success read its flag before the run began: it
                # counts as having finished before the run's first failure.
                if failure:
                    self._last_status = status
                    run = self._run = self._run + 1
                else:
                    run = self._run = 0
                if run >= self._run_limit or (
                    calls >= self._min_calls
                    and (
                        window.failures >= self._fail_threshold * calls
                        or window.slow >= self._slow_threshold * calls
                    )
                ):
                    self._trip(now, _CLOSED)
                else:
                    clean = not run and not window.failures and not window.slow
                    self._quiet = self._quiet_ok and clean and calls == window.size
                    self._clean = self._clean_ok and clean
            # Only outcomes of permitted probes count in half_open: a straggler admitted while
            # closed must not decide the probe round.
            elif state is _HALF_OPEN and self._probes_taken > self._probe_done:
                self._probe_done += 1
                if failure:
                    self._last_status = status
                self._probe_failures += failure
                self._probe_slow += slow
                n = self._half_open_calls
                if (
                    self._probe_failures >= self._fail_threshold * n
                    or self._probe_slow >= self._slow_threshold * n
                ):
                    self._trip(now, _HALF_OPEN)
                elif self._probe_done >= n:
                    self._window.clear()
                    self._open_duration = self._open_base
                    self._transition(_CLOSED)
            # open, forced open, disabled: an attempt admitted before the transition finished;
            # there is nothing left to decide with it.
        if self._pending:
            self._drain()

    def _trip(self, now: float, old: CircuitState) -> None:
        # Called under the lock. A trip from half_open is a consecutive one: back off further.
        if old is _HALF_OPEN:
            self._open_duration = min(self._open_duration * self._multiplier, self._max_open)
        else:
            self._open_duration = self._open_base
        self._opened_at = now
        self._transition(_OPEN)

    def _transition(self, new: CircuitState) -> None:
        # Called under the lock: switch state, reset the per-state bookkeeping, queue the event.
        old = self._state
        # The lock-free fast paths read _free and _quiet without the lock: clear them before the
        # state changes, so no reader can see the new state with the old "nothing to do" flags
        # (impossible under the GIL between two stores, but not on free-threaded builds).
        self._free = False
        self._quiet = False
        self._clean = False
        self._state = new
        self._free = new is _CLOSED or new is _DISABLED
        self._probes_taken = self._probe_done = self._probe_failures = self._probe_slow = 0
        self._run = 0
        if new is _CLOSED:
            # A closed breaker starts over: the next trip reports the failures that caused it.
            self._last_status = None
        if old is not new:
            ctx = self._ctx
            self._pending.append(
                CircuitStateChanged(
                    target=ctx.target, kind=ctx.kind, from_state=old.value, to_state=new.value
                )
            )

    def _drain(self) -> None:
        emit = self._ctx.emit
        pending = self._pending
        with self._emit_lock:
            while pending:
                try:
                    event = pending.popleft()
                except IndexError:  # another thread emitted it between our check and the pop
                    break
                emit(event)

    # -- inspection and manual control -----------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state.

        An open breaker whose open duration has passed still reads ``open`` until the next
        :meth:`acquire` moves it to half_open: there are no timers.

        .. versionadded:: 0.1.0
        """
        return self._state

    def refuses_at(self, at: float) -> bool:
        """Whether an attempt starting at *at* would be refused, as far as is known now.

        Lock-free, like the open rejection: open with its open duration not over by *at*, or
        forced open. Never in observe mode, which refuses nothing.

        .. versionadded:: 0.1.0
        """
        if self._free or self._observe:
            return False
        state = self._state
        return state is _FORCED_OPEN or (
            state is _OPEN and at < self._opened_at + self._open_duration
        )

    def retry_after(self, now: float) -> float | None:
        """Seconds from *now* until the breaker lets a probe through; ``None`` when not open.

        Forced open has no end of its own, so it is ``None`` too.

        .. versionadded:: 0.1.0
        """
        with self._lock:
            if self._state is not _OPEN:
                return None
            return max(0.0, self._opened_at + self._open_duration - now)

    def snapshot(self, now: float) -> CircuitSnapshot:
        """The state and the window's counts at *now*.

        .. versionadded:: 0.1.0
        """
        with self._lock:
            window = self._window
            window.refresh(now)
            calls = window.calls
            enough = calls >= self._min_calls
            return CircuitSnapshot(
                state=self._state,
                calls=calls,
                failures=window.failures,
                slow_calls=window.slow,
                failure_rate=window.failures / calls if enough else None,
                slow_call_rate=window.slow / calls if enough else None,
            )

    def force_open(self) -> None:
        """Reject every call until :meth:`reset` (or :meth:`disable`).

        .. versionadded:: 0.1.0
        """
        self._manual(_FORCED_OPEN)

    def reset(self) -> None:
        """Close the breaker, clear its window and restart the open-duration growth.

        .. versionadded:: 0.1.0
        """
        self._manual(_CLOSED)

    def disable(self) -> None:
        """Admit every call and record nothing until :meth:`reset` (or :meth:`force_open`).

        .. versionadded:: 0.1.0
        """
        self._manual(_DISABLED)

    def _manual(self, new: CircuitState) -> None:
        # Every operator switch starts from a clean slate: no stale window or probe round, and
        # the open-duration growth starts over.
        with self._lock:
            self._window.clear()
            self._open_duration = self._open_base
            self._last_status = None
            self._transition(new)
        if self._pending:
            self._drain()

    def __repr__(self) -> str:
        return f"<CircuitBreakerState target={self._ctx.target!r} state={self._state.value}>"
