"""
Time, made injectable.

Every policy reads time through a :class:`Clock` so that tests can drive it by hand
(:class:`buttress.testing.FakeClock`) and never sleep. Intervals always come from a monotonic
source: wall-clock time jumps (NTP, DST) must not open or close a breaker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """
    What policies need from time: a monotonic reading and a way to wait.

    .. versionadded:: 0.1.0
    """

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for *seconds*."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds*."""
        ...


class SystemClock:
    """
    The real clock: :func:`time.monotonic`, :func:`time.sleep` and :func:`asyncio.sleep`.

    .. versionadded:: 0.1.0
    """

    __slots__ = ()

    # Bound as attributes (not methods that forward) so the hot path pays one lookup.
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds*."""
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "<SystemClock>"


SYSTEM_CLOCK = SystemClock()
