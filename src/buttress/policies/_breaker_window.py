# Copyright 2025 the buttress developers. SPDX-License-Identifier: Apache-2.0
"""The circuit breaker's sliding windows: the last N outcomes, or those of the last N seconds.

Both keep running totals (``calls``, ``failures``, ``slow``), so deciding whether to trip is O(1)
whatever the window size; recording an outcome is a few integer operations. Neither window locks:
the breaker calls them under its own lock.

- :class:`_CountWindow` is a ring of one byte per outcome (bit 0: failure, bit 1: slow), like
  resilience4j's ``FixedSizeSlidingWindowMetrics``.
- :class:`_TimeWindow` is a ring of one-second buckets rotated lazily by the caller's ``now``
  (no timers), like resilience4j's ``SlidingTimeWindowMetrics``.
"""

from __future__ import annotations

import math

__all__ = ["_CountWindow", "_TimeWindow"]


class _CountWindow:
    """The outcomes of the last *size* calls."""

    __slots__ = ("_codes", "_pos", "calls", "failures", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self._codes = bytearray(size)
        self._pos = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def record(self, _now: float, failure: bool, slow: bool) -> None:
        """Add one outcome, evicting the oldest once the ring is full."""
        pos = self._pos
        if self.calls == self.size:
            old = self._codes[pos]
            self.failures -= old & 1
            self.slow -= old >> 1
        else:
            self.calls += 1
        self._codes[pos] = failure | (slow << 1)
        self.failures += failure
        self.slow += slow
        pos += 1
        self._pos = 0 if pos == self.size else pos

    def refresh(self, _now: float) -> None:
        """Nothing to do: a count window does not age."""

    def clear(self) -> None:
        """Forget every outcome."""
        self._codes = bytearray(self.size)
        self._pos = 0
        self.calls = self.failures = self.slow = 0

    def __repr__(self) -> str:
        return f"<_CountWindow size={self.size} calls={self.calls} failures={self.failures}>"


class _TimeWindow:
    """The outcomes of the last *seconds* seconds, in one-second buckets."""

    __slots__ = ("_b_calls", "_b_failures", "_b_slow", "_head", "calls", "failures", "size", "slow")

    def __init__(self, seconds: float) -> None:
        # A fractional window (2.5 s) rounds up to whole buckets: buckets are one second wide.
        self.size = math.ceil(seconds)
        self._b_calls = [0] * self.size
        self._b_failures = [0] * self.size
        self._b_slow = [0] * self.size
        self._head: int | None = None  # the second of the newest bucket
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def refresh(self, now: float) -> None:
        """Drop the buckets that fell out of the window by *now*."""
        second = math.floor(now)
        head = self._head
        if head is None or second > head:
            self._advance(head, second)

    def _advance(self, head: int | None, second: int) -> None:
        # Make *second* the newest bucket, zeroing the buckets of the seconds skipped over.
        if head is None or second - head >= self.size:
            self.clear()
        else:
            size = self.size
            for s in range(head + 1, second + 1):
                index = s % size
                self.calls -= self._b_calls[index]
                self.failures -= self._b_failures[index]
                self.slow -= self._b_slow[index]
                self._b_calls[index] = self._b_failures[index] = self._b_slow[index] = 0
            # Re-derived once a second rather than trusted: the breaker counts clean successes
            # without its lock (CircuitBreakerState.on_result), and totals recomputed from the
            # buckets cannot drift whatever a racing update did.
            self.calls = sum(self._b_calls)
            self.failures = sum(self._b_failures)
            self.slow = sum(self._b_slow)
        self._head = second

    def record(self, now: float, failure: bool, slow: bool) -> None:
        """Add one outcome to the bucket of *now*'s second."""
        second = math.floor(now)
        head = self._head
        if head is None or second > head:
            self._advance(head, second)
        elif head - second >= self.size:
            # A racing thread reported a `now` so old its second has left the window: drop it.
            # (A slightly older second still inside the window is counted in its own bucket.)
            return
        index = second % self.size
        self._b_calls[index] += 1
        self._b_failures[index] += failure
        self._b_slow[index] += slow
        self.calls += 1
        self.failures += failure
        self.slow += slow

    def clear(self) -> None:
        """Forget every outcome."""
        self._b_calls = [0] * self.size
        self._b_failures = [0] * self.size
        self._b_slow = [0] * self.size
        self._head = None
        self.calls = self.failures = self.slow = 0

    def __repr__(self) -> str:
        return f"<_TimeWindow seconds={self.size} calls={self.calls} failures={self.failures}>"
