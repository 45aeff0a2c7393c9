"""
Timeouts: per attempt and for the whole call.

Honest semantics, because Python cannot safely pre-empt a running synchronous call:

- **asyncio**: the attempt is cancelled when its time is up (``asyncio.timeout``), and the caller
  gets :class:`buttress.TimeoutError`. The whole-call (*total*) timeout bounds every attempt too:
  an attempt never runs past the total deadline, and no back-off sleep is scheduled past it.
- **synchronous code**: no signals, no killing threads. The deadline is *published*
  (:func:`remaining`) so that client integrations hand it to the client's own timeout
  parameter, which is the only safe way to interrupt blocking I/O. An attempt that overruns is
  counted as timed out (a ``TimedOut`` event with ``cancelled=False``); if it failed, it is not
  retried past the deadline; if it succeeded late, its result is returned (the work is done;
  discarding it would help nobody). No attempt starts after the total deadline: the call then
  raises :class:`buttress.TimeoutError`.

See docs/timeouts.md.
"""

from __future__ import annotations

import math
from contextvars import ContextVar, Token
from dataclasses import dataclass

from .. import _validate
from .._clock import SYSTEM_CLOCK, Clock

# One variable for the deadline and the clock that measures it: the drivers set it around every
# attempt of every call, and each ContextVar.set/reset pair costs an allocation and a few hundred
# instructions. ``None`` outside any deadline.
deadline_var: ContextVar[tuple[float, Clock] | None] = ContextVar("buttress_deadline", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout:
    """
    Per-attempt and whole-call time limits, in seconds (``None`` disables one).

    Defaults follow Microsoft's standard HTTP resilience handler: 10 s per attempt, 30 s in all.

    .. versionadded:: 0.1.0
    """

    attempt: float | None = 10.0
    total: float | None = 30.0

    def __post_init__(self) -> None:
        # Normalised to float seconds so events and reprs read alike whatever was passed.
        for name in ("attempt", "total"):
            value = _validate.number(
                "Timeout", name, getattr(self, name), low=0, low_inclusive=False, allow_none=True
            )
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Timeout attempt={self.attempt} total={self.total}>"


def remaining() -> float | None:
    """
    Seconds left before the current attempt's deadline, or ``None`` outside any deadline.

    Client integrations pass this to the client's own timeout so that blocking I/O stops in
    time. It can be negative when the deadline has passed.

    .. versionadded:: 0.1.0
    """
    published = deadline_var.get()
    if published is None:
        return None
    deadline, clock = published
    return deadline - clock.monotonic()


_Token = Token[tuple[float, Clock] | None]


def publish_deadline(deadline: float, clock: Clock = SYSTEM_CLOCK) -> _Token:
    """
    Make *deadline* visible to :func:`remaining`; returns a token for :func:`restore`.

    An infinite deadline publishes "no deadline". The drivers set :data:`deadline_var`
    themselves, inline, on their hot path; this is the readable form for everything else.
    """
    return deadline_var.set(None if deadline == math.inf else (deadline, clock))


def restore(token: _Token) -> None:
    """Undo :func:`publish_deadline`."""
    deadline_var.reset(token)
