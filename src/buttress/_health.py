"""
Health of the registered targets: what a ``/health`` endpoint, a CLI or a test asks.

:func:`health` reads every registered pipeline without taking a call: its breaker, its bulkhead,
its lifetime outcome counts, and the recent calls its :class:`~buttress._stats.CallStats` ring
remembers (at most 512), from which it computes rolling-window figures on the pipeline's own
clock. Each target is then classified by :class:`HealthRules`::

    unhealthy   the breaker is open or forced_open, or
                >= min_calls calls reached a verdict and failure_rate >= unhealthy_failure_rate
    degraded    the breaker is half_open, or
                failure_rate >= degraded_failure_rate, or
                rejection_rate >= degraded_rejection_rate, or
                fallback_rate >= degraded_fallback_rate, or
                slow_call_rate >= degraded_slow_call_rate, or
                the bulkhead is full (active >= limit) with calls waiting
    healthy     otherwise (a disabled breaker counts neither way: it is an operator's choice)

The service as a whole is unhealthy when a *critical* target is, degraded when any target is
degraded or unhealthy, healthy otherwise: a non-critical dependency that is down degrades the
service but must not get it restarted or taken out of a load balancer.

:func:`reset` and :func:`probe` are the two operator actions: close a breaker by hand, and run a
target's registered probe through its pipeline.

The figures and the classification are computed in :mod:`._health_measure`, imported on the
first :func:`health` call (this module is loaded by ``import buttress``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _validate
from ._exceptions import ConfigurationError
from ._pipeline import Pipeline
from ._registry import REGISTRY
from .policies._circuit_breaker import CircuitSnapshot

__all__ = [
    "DEGRADED",
    "HEALTHY",
    "UNHEALTHY",
    "HealthReport",
    "HealthRules",
    "ProbeResult",
    "TargetHealth",
    "health",
    "probe",
    "reset",
]

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"

DEFAULT_WINDOW = 60.0
"""Seconds of recent calls the rolling figures cover."""

_OWNER = "HealthRules"
_KNOWN_SHOWN = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthRules:
    """
    The thresholds that classify a target as healthy, degraded or unhealthy.

    Rates are shares in [0, 1], compared with ``>=``. See the module docstring for how they
    combine.

    Args:
        min_calls: The failure rate makes a target unhealthy only once at least this many
            calls in the window reached a verdict (>= 1): two failures out of three calls are
            noise, not an outage. The degraded rules need no minimum: degraded costs nothing
            (``/health`` still answers 200) and shows early.
        unhealthy_failure_rate: Failure rate (failures and timeouts over calls that reached a
            verdict) at which a target is unhealthy.
        degraded_failure_rate: Failure rate at which a target is degraded.
        degraded_rejection_rate: Share of calls rejected (breaker, bulkhead, rate limit, retry
            budget) at which a target is degraded.
        degraded_fallback_rate: Share of calls answered by the fallback at which a target is
            degraded.
        degraded_slow_call_rate: Share of slow calls at which a target is degraded.
        slow_call_duration: Seconds from which a call counts as slow for a target without a
            breaker; a target with one uses its breaker's ``slow_call_duration``.

    .. versionadded:: 0.1.0
    """

    min_calls: int = 10
    unhealthy_failure_rate: float = 0.5
    degraded_failure_rate: float = 0.1
    degraded_rejection_rate: float = 0.1
    degraded_fallback_rate: float = 0.1
    degraded_slow_call_rate: float = 0.5
    slow_call_duration: float = 5.0

    def __post_init__(self) -> None:
        _validate.integer(_OWNER, "min_calls", self.min_calls, low=1)
        for name in (
            "unhealthy_failure_rate",
            "degraded_failure_rate",
            "degraded_rejection_rate",
            "degraded_fallback_rate",
            "degraded_slow_call_rate",
        ):
            value = _validate.number(_OWNER, name, getattr(self, name), low=0, high=1)
            object.__setattr__(self, name, value)
        duration = _validate.number(
            _OWNER, "slow_call_duration", self.slow_call_duration, low=0, low_inclusive=False
        )
        object.__setattr__(self, "slow_call_duration", duration)


DEFAULT_RULES = HealthRules()


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetHealth:
    """
    The health of one target at one instant.

    Attributes:
        target: The target's name.
        kind: ``http``, ``db``, ``llm`` or ``function``.
        critical: Whether this target being unhealthy makes the service unhealthy.
        status: ``healthy``, ``degraded`` or ``unhealthy``.
        reasons: Why the status is not ``healthy``, one short sentence per rule that matched.
        state: The breaker's state (``closed``, ``open``...), or ``None`` without a breaker.
        window: Seconds of recent calls the figures below cover.
        calls: Calls that ended within the window, every outcome.
        failure_rate: Failures and timeouts over the calls that reached a verdict (success,
            failure or timeout); ``None`` when none did. Rejected calls never reached the
            dependency, and a fallback hides which verdict it replaced: both are rated apart.
        rejection_rate: Rejected calls over all calls; ``None`` without calls.
        fallback_rate: Calls answered by the fallback over all calls; ``None`` without calls.
        slow_call_rate: Calls that ran (not rejected) for at least the slow-call duration, over
            the calls that ran; ``None`` when none ran.
        p50: Median duration in seconds of the calls that ran (nearest rank); ``None`` when none
            ran. Rejections are left out: they take no time and would hide an outage's latency.
        p95: 95th percentile, likewise.
        breaker: The breaker's own window figures, or ``None`` without a breaker.
        bulkhead_active: Calls holding a bulkhead slot, or ``None`` without a bulkhead.
        bulkhead_queued: Calls waiting for a slot, or ``None``.
        bulkhead_limit: Slots, or ``None``.
        calls_by_outcome: Lifetime count of calls per outcome (``success``, ``failure``,
            ``rejected``, ``timeout``, ``fallback``).

    .. versionadded:: 0.1.0
    """

    target: str
    kind: str
    critical: bool
    status: str
    reasons: tuple[str, ...]
    state: str | None
    window: float
    calls: int
    failure_rate: float | None
    rejection_rate: float | None
    fallback_rate: float | None
    slow_call_rate: float | None
    p50: float | None
    p95: float | None
    breaker: CircuitSnapshot | None
    bulkhead_active: int | None
    bulkhead_queued: int | None
    bulkhead_limit: int | None
    calls_by_outcome: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        """
        A JSON-ready dict with the attributes' names as keys.

        .. versionadded:: 0.1.0
        """
        snap = self.breaker
        return {
            "target": self.target,
            "kind": self.kind,
            "critical": self.critical,
            "status": self.status,
            "reasons": list(self.reasons),
            "state": self.state,
            "window": self.window,
            "calls": self.calls,
            "failure_rate": self.failure_rate,
            "rejection_rate": self.rejection_rate,
            "fallback_rate": self.fallback_rate,
            "slow_call_rate": self.slow_call_rate,
            "p50": self.p50,
            "p95": self.p95,
            "breaker": None
            if snap is None
            else {
                "state": snap.state.value,
                "calls": snap.calls,
                "failures": snap.failures,
                "slow_calls": snap.slow_calls,
                "failure_rate": snap.failure_rate,
                "slow_call_rate": snap.slow_call_rate,
            },
            "bulkhead_active": self.bulkhead_active,
            "bulkhead_queued": self.bulkhead_queued,
            "bulkhead_limit": self.bulkhead_limit,
            "calls_by_outcome": dict(self.calls_by_outcome),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """
    The health of the service: every registered target, and the overall status.

    Attributes:
        status: ``unhealthy`` if a critical target is unhealthy; ``degraded`` if any target is
            degraded or unhealthy; else ``healthy`` (also with no targets at all).
        window: Seconds of recent calls the per-target figures cover.
        targets: One entry per registered target, sorted by name.

    .. versionadded:: 0.1.0
    """

    status: str
    window: float
    targets: tuple[TargetHealth, ...]

    def to_dict(self) -> dict[str, Any]:
        """
        A JSON-ready dict: ``{"status": ..., "window": ..., "targets": [...]}``.

        .. versionadded:: 0.1.0
        """
        return {
            "status": self.status,
            "window": self.window,
            "targets": [t.to_dict() for t in self.targets],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """
    What running a target's probe gave.

    Attributes:
        target: The target probed.
        ok: Whether the probe returned without raising.
        error: The qualified type name of the exception it raised (``ConnectionError``,
            ``buttress.CircuitOpenError``), never its message, which may hold secrets
            (a connection string, a token); ``None`` when ok.
        duration: Seconds the probe took through the pipeline, on the pipeline's clock.

    .. versionadded:: 0.1.0
    """

    target: str
    ok: bool
    error: str | None
    duration: float

    def to_dict(self) -> dict[str, Any]:
        """
        A JSON-ready dict with the attributes' names as keys.

        .. versionadded:: 0.1.0
        """
        return {
            "target": self.target,
            "ok": self.ok,
            "error": self.error,
            "duration": self.duration,
        }


def health(*, window: float = DEFAULT_WINDOW, rules: HealthRules | None = None) -> HealthReport:
    """
    The health of every registered target and of the service.

    Args:
        window: Seconds of recent calls the rolling figures cover (> 0). Only the last 512
            calls of each target are remembered, so under heavy traffic the figures cover
            fewer seconds than asked.
        rules: The thresholds (default: ``HealthRules()``).

    Returns:
        The report; ``report.to_dict()`` is ready for :func:`json.dumps`.

    Raises:
        ConfigurationError: *window* is not a positive number.

    .. versionadded:: 0.1.0
    """
    from ._health_measure import overall_status, target_health  # noqa: PLC0415 - on first use, not at import

    _validate.number("health", "window", window, low=0, low_inclusive=False)
    seconds = float(window)
    if rules is None:
        rules = DEFAULT_RULES
    elif not isinstance(rules, HealthRules):
        raise ConfigurationError(
            f"health: rules={_validate.shown(rules)} is not accepted; expected a "
            "buttress.HealthRules or None"
        )
    entries = tuple(target_health(p, seconds, rules) for p in REGISTRY.pipelines())
    return HealthReport(status=overall_status(entries), window=seconds, targets=entries)


def reset(target: str) -> None:
    """
    Close the breaker of *target* by hand, with an empty window.

    Only the breaker is touched: call counts, the cache and the bulkhead are left as they are.
    A target without a breaker has nothing to reset, and this returns without doing anything.

    Raises:
        KeyError: No target is registered under *target*; the message lists known targets.

    .. versionadded:: 0.1.0
    """
    breaker = _lookup("reset", target).breaker
    if breaker is not None:
        breaker.reset()


def probe(target: str) -> ProbeResult:
    """
    Run the probe registered with ``protect(target, probe=...)`` through the target's pipeline.

    The probe runs with the target's policies (a closed breaker records it, an open one rejects
    it), so probing after :func:`reset` tells whether the dependency is back. A coroutine
    function is run with :func:`asyncio.run`, so call this from a thread without a running event
    loop (the health server's threads have none).

    Returns:
        Whether the probe succeeded, the type of what it raised, and how long it took.

    Raises:
        KeyError: No target is registered under *target*.
        ConfigurationError: The target has no probe.

    .. versionadded:: 0.1.0
    """
    pipeline = _lookup("probe", target)
    fn = pipeline.probe
    if fn is None:
        raise ConfigurationError(
            f"probe: target {target!r} has no probe; register one with "
            f"buttress.protect({target!r}, probe=...)"
        )
    clock = pipeline.context.clock
    start = clock.monotonic()
    try:
        if inspect.iscoroutinefunction(fn):
            asyncio.run(pipeline.acall(fn))
        else:
            pipeline.call(fn)
    except Exception as exc:
        return ProbeResult(
            target=target, ok=False, error=_type_name(exc), duration=clock.monotonic() - start
        )
    return ProbeResult(target=target, ok=True, error=None, duration=clock.monotonic() - start)


def _lookup(owner: str, target: str) -> Pipeline:
    pipeline = REGISTRY.get(target)
    if pipeline is None:
        raise KeyError(f"{owner}: no target named {target!r}; {_describe_known()}")
    return pipeline


def _describe_known() -> str:
    names = REGISTRY.names()
    if not names:
        return "no target is registered"
    shown = ", ".join(repr(n) for n in names[:_KNOWN_SHOWN])
    more = len(names) - _KNOWN_SHOWN
    return f"known targets: {shown}" + (f" and {more} more" if more > 0 else "")


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
