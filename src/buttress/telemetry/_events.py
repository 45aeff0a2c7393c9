"""
Typed events: one frozen dataclass per decision a policy takes.

Events are built only when something happens (a retry, a rejection, a transition, a queue wait):
the happy path builds none. Hooks (``buttress.telemetry.add_hook``) receive them; the
OpenTelemetry listener is one such hook.

Every event carries ``target`` (the pipeline name) and ``kind`` (http, db, llm or function), the
two labels every metric shares. ``observed=True`` marks a decision taken in observe mode: it was
recorded and reported, but not enforced.

Events are read-only by contract but not ``frozen``: a frozen dataclass's ``__init__`` goes
through ``object.__setattr__`` per field and costs twice as much (0.65 us against 0.29 us here),
and events are built on rejection paths that must stay cheaper than pybreaker's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, kw_only=True)
class Event:
    """
    Base of all events.

    .. versionadded:: 0.1.0
    """

    target: str
    kind: str


@dataclass(slots=True, kw_only=True)
class RetryScheduled(Event):
    """
    A retry will happen after *delay* seconds; *attempt* is the attempt that just failed (1-based).

    ``error_type`` is the failed attempt's exception class, or ``result`` when a result predicate
    asked for the retry. ``server_delay`` is what the dependency asked for (Retry-After), if any.
    """

    attempt: int
    delay: float
    error_type: str
    server_delay: float | None = None
    observed: bool = False


@dataclass(slots=True, kw_only=True)
class RetriesExhausted(Event):
    """
    Retrying stopped and the last outcome goes to the caller.

    ``reason`` is ``attempts`` (max attempts reached), ``deadline`` (the next attempt would start
    past the deadline), ``budget`` (the retry budget refused it), ``vetoed`` (a veto hook or a
    no-retry scope forbade it) or ``circuit_open`` (the breaker inside the retry is open: the
    next attempt would be refused).
    """

    attempts: int
    error_type: str
    reason: str


@dataclass(slots=True, kw_only=True)
class CircuitStateChanged(Event):
    """The breaker moved from *from_state* to *to_state* (values of ``CircuitState``)."""

    from_state: str
    to_state: str


@dataclass(slots=True, kw_only=True)
class CallRejected(Event):
    """
    A call or an attempt was refused before it started.

    ``reason`` is one of circuit_open, bulkhead_full, queue_timeout, rate_limited, retry_budget.
    """

    reason: str
    observed: bool = False


@dataclass(slots=True, kw_only=True)
class BulkheadQueued(Event):
    """A call joined the bulkhead's queue; ``queued`` is the queue length after it joined."""

    priority: int
    queued: int


@dataclass(slots=True, kw_only=True)
class BulkheadDequeued(Event):
    """A queued call got its slot after waiting *wait* seconds."""

    priority: int
    wait: float


@dataclass(slots=True, kw_only=True)
class RateLimitWaited(Event):
    """A call waited *wait* seconds for a rate-limit token."""

    wait: float
    observed: bool = False


@dataclass(slots=True, kw_only=True)
class TimedOut(Event):
    """
    An attempt or the whole call ran past its timeout.

    ``scope`` is ``attempt`` or ``total``. ``cancelled`` tells whether the work was actually
    cancelled (asyncio) or only counted as timed out (a running synchronous call cannot be
    pre-empted safely; see docs/timeouts.md).
    """

    scope: str
    timeout: float
    cancelled: bool
    observed: bool = False


@dataclass(slots=True, kw_only=True)
class CacheAccessed(Event):
    """A cache lookup: ``result`` is ``hit``, ``miss`` or ``coalesced`` (joined one in flight)."""

    result: str


@dataclass(slots=True, kw_only=True)
class FallbackUsed(Event):
    """The fallback served the call instead of the failure ``error_type``."""

    error_type: str
    observed: bool = False
