"""
The retry budget: retries allowed as a share of recent calls.

It keeps a failing dependency from triggering a retry storm.

Per-attempt limits ("3 attempts") multiply load by up to 3x exactly when a dependency is weakest.
A budget bounds the *aggregate*: over a sliding window, retries may not exceed
``ratio * calls + min_per_second * window`` (Finagle's and Linkerd's design; Envoy's default is
20 %). The floor lets a quiet service still retry the odd failure.

The floor also lets a slow caller retry *every* call, which against a dependency that fails every
attempt multiplies each call's latency by its back-off for nothing. With ``drop_floor_after``
the budget withdraws the floor while the window holds at least that many retries and every one of
them failed; only ``ratio * calls`` is left until a retry comes back otherwise or the failures
leave the window. It learns of failed retries from the retry policy (a retryable failure of
attempt 2 or later is the failure of the retry that made it): no per-call cost.

Cost matters here because every call is counted: the driver only increments :attr:`calls`
(one integer add, no lock). The counts are folded into one-second buckets lazily, when a retry
asks for budget, which is rare. Calls counted since the previous fold are spread evenly over
the seconds they could have happened in, so the window stays a sliding window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .. import _fork, _validate


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudget:
    """
    How many retries a target may spend, relative to its traffic.

    Args:
        ratio: Retries allowed per call over the window, in [0, 1]. Default 0.2 (Envoy, Finagle).
        min_per_second: Retries always allowed per second regardless of traffic, >= 0.
        window: The sliding window in whole seconds, 1 to 600.
        drop_floor_after: Withdraw the ``min_per_second`` floor while the window holds at least
            this many retries (an int >= 1) and every one of them came back as a retryable
            failure: the dependency is failing every attempt, and retrying each call only
            delays its answer. Only ``ratio * calls`` is granted then. The floor returns as soon
            as a retry in the window does not come back as such a failure (it succeeded, failed
            otherwise, or is still running) or the failed ones leave the window. ``None`` (the
            default) keeps the floor always, as Finagle does. The templates use 3: one call's
            own retries (2 with 3 attempts) never withdraw it on their own.

    .. versionadded:: 0.1.0
    """

    ratio: float = 0.2
    min_per_second: float = 3.0
    window: int = 10
    drop_floor_after: int | None = None

    def __post_init__(self) -> None:
        owner = "RetryBudget"
        _validate.number(owner, "ratio", self.ratio, low=0, high=1)
        _validate.number(owner, "min_per_second", self.min_per_second, low=0)
        _validate.integer(owner, "window", self.window, low=1, high=600)
        _validate.integer(owner, "drop_floor_after", self.drop_floor_after, low=1, allow_none=True)

    def bind(self) -> RetryBudgetState:
        """Create the runtime state for one pipeline."""
        return RetryBudgetState(self)


class RetryBudgetState:
    """
    The sliding counts of one target's calls and retries.

    The driver counts calls with ``state.calls += 1``. Without a lock an increment can be lost
    under heavy thread contention, which only makes the budget slightly stricter: a fair price
    for a lock-free happy path. Spending takes a lock.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",
        "_calls",
        "_config",
        "_failed",
        "_floor",
        "_folded",
        "_folded_at",
        "_lock",
        "_retries",
        "_second",
        "_size",
        "_until_dead",
        "calls",
        "calls_source",
    )

    def __init__(self, config: RetryBudget) -> None:
        self._config = config
        self._size = config.window
        self._floor = config.min_per_second * config.window
        self._calls = [0.0] * config.window
        self._retries = [0] * config.window
        # Retries reported failed, in the second of the report (see record_failed_retry).
        self._failed = [0] * config.window
        self._until_dead = config.drop_floor_after
        self._second = -1
        self._lock = threading.Lock()
        self.calls = 0
        """Logical calls counted so far (monotonic), when no :attr:`calls_source` is set."""
        self.calls_source: Callable[[], int] | None = None
        """Where to read the count of calls instead (a pipeline's outcome counts)."""
        self._folded = 0
        self._folded_at: float | None = None
        _fork.track(self)

    def _after_fork_in_child(self) -> None:
        # The window of recent calls and retries is kept; only the lock, which another thread
        # may have held at the fork, must be free.
        _fork.reinit(self._lock)

    def _fold(self, now: float) -> None:
        # Move the calls counted since the last fold into the buckets, then rotate.
        second = int(now)
        total = self.calls if self.calls_source is None else self.calls_source()
        fresh = total - self._folded
        self._folded = total
        since = self._folded_at
        self._folded_at = now
        if self._second < 0:
            self._zero(range(self._size))
        elif second != self._second:
            self._zero(range(self._second + 1, min(second, self._second + self._size) + 1))
        self._second = second
        if fresh <= 0:
            return
        # Spread the fresh calls over the seconds they may have happened in, within the window.
        first = second if since is None else max(int(since), second - self._size + 1)
        span = second - first + 1
        elapsed = max(1.0, now - since) if since is not None else 1.0
        kept = fresh * min(1.0, self._size / elapsed)
        share = kept / span
        for s in range(first, second + 1):
            self._calls[s % self._size] += share

    def _zero(self, seconds: range) -> None:
        for s in seconds:
            index = s % self._size
            self._calls[index] = 0.0
            self._retries[index] = 0
            self._failed[index] = 0

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget; ``False`` means the budget is spent."""
        with self._lock:
            self._fold(now)
            spent = sum(self._retries)
            allowed = self._config.ratio * sum(self._calls)
            if not self._dead(spent):
                allowed += self._floor
            if spent + 1 > allowed:
                return False
            self._retries[int(now) % self._size] += 1
            return True

    def record_failed_retry(self, now: float) -> None:
        """
        Note that a retry came back as a retryable failure (see ``drop_floor_after``).

        Failures are bucketed by the time they are reported, spends by the time they were
        granted. A failure reported just after its spend left the window still counts, for at
        most the few seconds its retry took: the window then looks a little more failed than it
        is.
        """
        if self._until_dead is None:
            return
        with self._lock:
            self._fold(now)
            self._failed[int(now) % self._size] += 1

    def _dead(self, spent: int) -> bool:
        # Every retry in the window failed, and there were enough of them to tell. A retry still
        # running counts as not failed, so concurrent callers keep the floor longer: a budget
        # that cannot tell errs towards the floor it had before.
        until = self._until_dead
        return until is not None and spent >= until and sum(self._failed) >= spent

    def snapshot(self, now: float) -> tuple[float, int]:
        """``(calls, retries)`` over the current window."""
        with self._lock:
            self._fold(now)
            return sum(self._calls), sum(self._retries)

    def __repr__(self) -> str:
        return f"<RetryBudgetState ratio={self._config.ratio:g} window={self._size}s>"
