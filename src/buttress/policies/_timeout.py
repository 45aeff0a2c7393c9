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

    Args:
        attempt: The longest one attempt may take.
        total: The longest the whole call may take, retries and back-off included.
        respect_app_timeout: Matters only for the zero-code integrations, whose calls carry a
            client's own timeout (an HTTP client's ``timeout``, an SDK's, a database server's
            statement timeout). When true, a call whose client has a timeout of its own keeps
            it: *attempt* does not apply to it, and *total* never cuts its first attempt; it
            only bounds the retries after it. *attempt* then fills in only for clients that
            would otherwise wait forever. When false, both shorten the client's own timeout
            (and a database integration sends *attempt* to the server). Configuring
            ``timeout.attempt`` or ``timeout.total`` (file or ``BUTTRESS_TIMEOUT_*``) sets it
            to false for the targets it applies to, unless the same table sets it: a value you
            chose is enforced, a built-in default never shortens what the app chose.

    .. versionadded:: 0.1.0
    """

    attempt: float | None = 10.0
    total: float | None = 30.0
    respect_app_timeout: bool = True

    def __post_init__(self) -> None:
        # Normalised to float seconds so events and reprs read alike whatever was passed.
        for name in ("attempt", "total"):
            value = _validate.number(
                "Timeout", name, getattr(self, name), low=0, low_inclusive=False, allow_none=True
            )
            object.__setattr__(self, name, value)
        _validate.boolean("Timeout", "respect_app_timeout", self.respect_app_timeout)

    def __repr__(self) -> str:
        respect = "" if self.respect_app_timeout else " respect_app_timeout=False"
        return f"<Timeout attempt={self.attempt} total={self.total}{respect}>"


def ended_by_buttress(target: str, scope: str, limit: float, what: str) -> str:
    """
    The message of a call or an attempt that a buttress timeout ended.

    It says that buttress ended it, which limit did, and where to change that limit: in code,
    or in the zero-code configuration.
    """
    return (
        f"buttress: the {scope} timeout of {limit:g}s of target {target!r} {what}; "
        f"to change it, set Timeout({scope}=...) on the pipeline, or for zero-code "
        f"timeout.{scope} in a BUTTRESS_CONFIG table or BUTTRESS_TIMEOUT_{scope.upper()}"
    )


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
