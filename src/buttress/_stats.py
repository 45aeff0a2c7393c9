"""
Per-pipeline call statistics, kept so cheaply that they are always on.

Every logical call ends with exactly one outcome: success, failure, rejected, timeout or fallback.
The drivers count it in :attr:`CallStats.counts` and remember ``(end, duration, outcome)`` in a
small ring of recent calls. Exporters read these at collection time (OpenTelemetry observable
instruments), and the health API computes rolling-window figures from the ring, so the happy path
pays a few integer and list operations instead of an SDK call (an OTel ``Counter.add`` costs
~7 us here; a whole buttress pipeline less than 0.5 us).

Concurrency: the counters are plain list items updated with ``counts[i] += 1``. Under the GIL of
CPython 3.11-3.13 that statement runs no Python-level code between read and write, so no thread
switch can split it; free-threaded builds would need per-thread counters.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Protocol

from .telemetry._semconv import OUTCOMES

SUCCESS, FAILURE, REJECTED, TIMEOUT, FALLBACK = range(5)
assert OUTCOMES == ("success", "failure", "rejected", "timeout", "fallback")  # noqa: S101 - codes index it

RING_SIZE = 512
_MASK = RING_SIZE - 1
_NEVER_QUIET = (-math.inf,) * len(OUTCOMES)


class Sampler(Protocol):
    """Receives some calls' durations (an OTel histogram behind a rate limit, for instance)."""

    def __call__(self, outcome: int, duration: float, now: float, /) -> float:
        """
        Take note of one call; returns the time before which it would decline this outcome.

        The callers skip calling it until then (:attr:`CallStats.quiet_until`): on a busy target
        nearly every call is declined, and not calling at all is cheaper than a cheap decline.
        """
        ...


_sampler_factory: Callable[[str, str], Sampler | None] | None = None


LIVE: weakref.WeakSet[CallStats] = weakref.WeakSet()
"""Every CallStats alive: exporters read them all, registered targets or not (``other``)."""

RETIRED: dict[tuple[str, str], list[int]] = {}
"""Counts of pipelines that were garbage-collected, per (target, kind): counters never go back."""


def _retire(target: str, kind: str, counts: list[int]) -> None:
    # Runs when a CallStats dies (a replaced pipeline, an overflow pipeline dropped by its user).
    # It holds the counts list, not the object, so it does not keep the object alive.
    kept = RETIRED.setdefault((target, kind), [0] * len(counts))
    for i, count in enumerate(counts):
        kept[i] += count


def totals() -> dict[tuple[str, str], list[int]]:
    """Lifetime counts per (target, kind) over live and retired pipelines."""
    result = {key: list(counts) for key, counts in list(RETIRED.items())}
    for stats in list(LIVE):
        kept = result.setdefault((stats.target, stats.kind), [0] * len(stats.counts))
        for i, count in enumerate(list(stats.counts)):
            kept[i] += count
    return result


def set_sampler_factory(factory: Callable[[str, str], Sampler | None] | None) -> None:
    """Install the sampler of every new and every live :class:`CallStats` (telemetry does)."""
    global _sampler_factory  # noqa: PLW0603 - one process-wide exporter hook-up
    _sampler_factory = factory
    for stats in list(LIVE):
        stats.sampler = factory(stats.target, stats.kind) if factory is not None else None
        stats.quiet_until[:] = _NEVER_QUIET


class CallStats:
    """
    Outcome counts and recent calls of one pipeline.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "__weakref__",
        "counts",
        "index",
        "kind",
        "quiet_until",
        "ring",
        "sampler",
        "target",
    )

    def __init__(self, target: str, kind: str) -> None:
        self.target = target
        self.kind = kind
        self.counts = [0, 0, 0, 0, 0]
        self.ring: list[tuple[float, float, int] | None] = [None] * RING_SIZE
        self.index = 0
        self.sampler: Sampler | None = (
            _sampler_factory(target, kind) if _sampler_factory is not None else None
        )
        # Per outcome, the time before which the sampler would decline: not called until then.
        # Mutated in place, never replaced (the compiled drivers hold it).
        self.quiet_until = list(_NEVER_QUIET)
        LIVE.add(self)
        weakref.finalize(self, _retire, target, kind, self.counts)

    def record(self, outcome: int, now: float, duration: float) -> None:
        """Count one finished call (the drivers inline this on the success path)."""
        self.counts[outcome] += 1
        i = self.index
        self.ring[i & _MASK] = (now, duration, outcome)
        self.index = i + 1
        sampler = self.sampler
        if sampler is not None and now >= self.quiet_until[outcome]:
            self.quiet_until[outcome] = sampler(outcome, duration, now)

    def total(self) -> int:
        """Calls finished so far, all outcomes."""
        return sum(self.counts)

    def recent(self, since: float) -> list[tuple[float, float, int]]:
        """The remembered calls that ended at or after *since* (at most :data:`RING_SIZE`)."""
        return [entry for entry in list(self.ring) if entry is not None and entry[0] >= since]

    def by_outcome(self) -> dict[str, int]:
        """Counts per outcome name."""
        return dict(zip(OUTCOMES, list(self.counts), strict=True))

    def __repr__(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in self.by_outcome().items() if v)
        return f"<CallStats target={self.target!r} {counts or 'no calls'}>"
