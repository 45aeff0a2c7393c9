"""
The retry budget: retries allowed as a share of recent calls.

It keeps a failing dependency from triggering a retry storm.

Per-attempt limits ("3 attempts") multiply load by up to 3x exactly when a dependency is weakest.
A budget bounds the *aggregate*: over a sliding window, retries may not exceed
``ratio * calls + min_per_second * window`` (Finagle's and Linkerd's design; Envoy's default is
20 %). The floor lets a quiet service still retry the odd failure.

Cost matters here because every call is counted: the driver only increments :attr:`calls`
(one integer add, no lock). The counts are folded into one-second buckets lazily, when a retry
asks for budget, which is rare. Calls counted since the previous fold are spread evenly over
the seconds they could have happened in, so the window stays a sliding window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .. import _validate


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryBudget:
    """
    How many retries a target may spend, relative to its traffic.

    Args:
        ratio: Retries allowed per call over the window, in [0, 1]. Default 0.2 (Envoy, Finagle).
        min_per_second: Retries always allowed per second regardless of traffic, >= 0.
        window: The sliding window in whole seconds, 1 to 600.

    .. versionadded:: 0.1.0
    """

    ratio: float = 0.2
    min_per_second: float = 3.0
    window: int = 10

    def __post_init__(self) -> None:
        owner = "RetryBudget"
        _validate.number(owner, "ratio", self.ratio, low=0, high=1)
        _validate.number(owner, "min_per_second", self.min_per_second, low=0)
        _validate.integer(owner, "window", self.window, low=1, high=600)

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
        "_calls",
        "_config",
        "_floor",
        "_folded",
        "_folded_at",
        "_lock",
        "_retries",
        "_second",
        "_size",
        "calls",
        "calls_source",
    )

    def __init__(self, config: RetryBudget) -> None:
        self._config = config
        self._size = config.window
        self._floor = config.min_per_second * config.window
        self._calls = [0.0] * config.window
        self._retries = [0] * config.window
        self._second = -1
        self._lock = threading.Lock()
        self.calls = 0
        """Logical calls counted so far (monotonic), when no :attr:`calls_source` is set."""
        self.calls_source: Callable[[], int] | None = None
        """Where to read the count of calls instead (a pipeline's outcome counts)."""
        self._folded = 0
        self._folded_at: float | None = None

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

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget; ``False`` means the budget is spent."""
        with self._lock:
            self._fold(now)
            allowed = self._config.ratio * sum(self._calls) + self._floor
            if sum(self._retries) + 1 > allowed:
                return False
            self._retries[int(now) % self._size] += 1
            return True

    def snapshot(self, now: float) -> tuple[float, int]:
        """``(calls, retries)`` over the current window."""
        with self._lock:
            self._fold(now)
            return sum(self._calls), sum(self._retries)

    def __repr__(self) -> str:
        return f"<RetryBudgetState ratio={self._config.ratio:g} window={self._size}s>"
