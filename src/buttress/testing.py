"""
Helpers for testing code that uses buttress, without sleeping.

- :class:`FakeClock`: a clock whose ``sleep`` advances time instantly.
- :func:`capture_events`: collect every event emitted inside a ``with`` block.
- :func:`set_testing`: make retries immediate and capped (stamina's ``set_testing``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading as _threading
from collections.abc import Iterator as _Iterator
from contextlib import contextmanager as _contextmanager

from ._config import set_active, set_testing
from .telemetry._events import Event as _Event
from .telemetry._hooks import add_hook as _add_hook

__all__ = ["FakeClock", "capture_events", "set_active", "set_testing"]


class FakeClock:
    """
    A manual clock: ``monotonic()`` returns a number you move with :meth:`advance`.

    ``sleep`` and ``asleep`` advance the clock by the requested time and return at once, and
    every sleep is recorded in :attr:`sleeps`, so tests can assert on back-off delays.

    .. versionadded:: 0.1.0
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = _threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The current fake time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance: seconds={seconds!r} must be >= 0")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time by *seconds*, without blocking."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        """Like :meth:`sleep`, for coroutines."""
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now:.3f}>"


@_contextmanager
def capture_events() -> _Iterator[list[_Event]]:
    """
    Collect every event emitted inside the block, in order.

    .. versionadded:: 0.1.0
    """
    captured: list[_Event] = []
    remove = _add_hook(captured.append)
    try:
        yield captured
    finally:
        remove()
