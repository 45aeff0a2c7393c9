"""
How :func:`~._health.health` measures and classifies one target.

The rolling-window figures come from a pipeline's recent calls (rates, nearest-rank
percentiles), and :func:`classify` applies the :class:`~._health.HealthRules` to them (the rules
are spelled out in :mod:`._health`'s docstring). Kept apart from :mod:`._health`, which holds the
public report classes and the operator actions that ``import buttress`` loads: this module is
imported on the first :func:`~._health.health` call, so start-up does not pay for it.
"""

from __future__ import annotations

import math

from ._health import DEGRADED, HEALTHY, UNHEALTHY, HealthRules, TargetHealth
from ._pipeline import Pipeline
from ._stats import FAILURE, FALLBACK, REJECTED, SUCCESS, TIMEOUT
from .policies._circuit_breaker import CircuitState

__all__ = ["classify", "overall_status", "target_health"]


def overall_status(targets: tuple[TargetHealth, ...]) -> str:
    """The service's status from its targets' (see :attr:`HealthReport.status`)."""
    if any(t.critical and t.status == UNHEALTHY for t in targets):
        return UNHEALTHY
    if any(t.status != HEALTHY for t in targets):
        return DEGRADED
    return HEALTHY


def target_health(pipeline: Pipeline, window: float, rules: HealthRules) -> TargetHealth:
    """Measure and classify one pipeline."""
    now = pipeline.context.clock.monotonic()
    breaker = pipeline.breaker
    snapshot = breaker.snapshot(now) if breaker is not None else None
    slow_after = breaker.config.slow_call_duration if breaker is not None else None
    if slow_after is None:
        slow_after = rules.slow_call_duration

    recent = pipeline.stats.recent(now - window)
    counts = [0, 0, 0, 0, 0]
    ran: list[float] = []
    for _end, duration, outcome in recent:
        counts[outcome] += 1
        if outcome != REJECTED:
            ran.append(duration)
    ran.sort()
    calls = len(recent)
    verdicts = counts[SUCCESS] + counts[FAILURE] + counts[TIMEOUT]
    slow = sum(1 for d in ran if d >= slow_after)

    active: int | None = None
    queued: int | None = None
    limit: int | None = None
    bulkhead_full = False
    if pipeline.bulkhead is not None:
        active, queued, limit = (
            pipeline.bulkhead.active,
            pipeline.bulkhead.queued,
            pipeline.bulkhead.limit,
        )
        bulkhead_full = queued > 0 and active >= limit

    failure_rate = _ratio(counts[FAILURE] + counts[TIMEOUT], verdicts)
    rejection_rate = _ratio(counts[REJECTED], calls)
    fallback_rate = _ratio(counts[FALLBACK], calls)
    slow_call_rate = _ratio(slow, len(ran))
    state = snapshot.state if snapshot is not None else None

    status, reasons = classify(
        rules,
        state=state,
        verdicts=verdicts,
        failure_rate=failure_rate,
        rejection_rate=rejection_rate,
        fallback_rate=fallback_rate,
        slow_call_rate=slow_call_rate,
        bulkhead_full_with_queue=bulkhead_full,
    )
    return TargetHealth(
        target=pipeline.target,
        kind=pipeline.kind,
        critical=pipeline.critical,
        status=status,
        reasons=reasons,
        state=state.value if state is not None else None,
        window=window,
        calls=calls,
        failure_rate=failure_rate,
        rejection_rate=rejection_rate,
        fallback_rate=fallback_rate,
        slow_call_rate=slow_call_rate,
        p50=_nearest_rank(ran, 0.50),
        p95=_nearest_rank(ran, 0.95),
        breaker=snapshot,
        bulkhead_active=active,
        bulkhead_queued=queued,
        bulkhead_limit=limit,
        calls_by_outcome=pipeline.stats.by_outcome(),
    )


def classify(
    rules: HealthRules,
    *,
    state: CircuitState | None,
    verdicts: int,
    failure_rate: float | None,
    rejection_rate: float | None,
    fallback_rate: float | None,
    slow_call_rate: float | None,
    bulkhead_full_with_queue: bool,
) -> tuple[str, tuple[str, ...]]:
    """
    A target's status and the reasons for it, by *rules* (a pure function).

    Every matching rule of the worst status is reported, so an operator sees all of them.
    """
    unhealthy: list[str] = []
    if state is CircuitState.OPEN or state is CircuitState.FORCED_OPEN:
        unhealthy.append(f"breaker is {state.value}")
    if (
        failure_rate is not None
        and verdicts >= rules.min_calls
        and failure_rate >= rules.unhealthy_failure_rate
    ):
        unhealthy.append(
            f"failure rate {failure_rate:.0%} >= {rules.unhealthy_failure_rate:.0%} "
            f"over {verdicts} calls"
        )
    if unhealthy:
        return UNHEALTHY, tuple(unhealthy)

    degraded: list[str] = []
    if state is CircuitState.HALF_OPEN:
        degraded.append("breaker is half_open")
    checks = (
        ("failure rate", failure_rate, rules.degraded_failure_rate),
        ("rejection rate", rejection_rate, rules.degraded_rejection_rate),
        ("fallback rate", fallback_rate, rules.degraded_fallback_rate),
        ("slow-call rate", slow_call_rate, rules.degraded_slow_call_rate),
    )
    degraded.extend(
        f"{label} {value:.0%} >= {threshold:.0%}"
        for label, value, threshold in checks
        if value is not None and value >= threshold
    )
    if bulkhead_full_with_queue:
        degraded.append("bulkhead is full and calls are queued")
    if degraded:
        return DEGRADED, tuple(degraded)
    return HEALTHY, ()


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _nearest_rank(ordered: list[float], quantile: float) -> float | None:
    # Nearest-rank: the smallest value with at least `quantile` of the values at or below it.
    # It always returns a measured duration, never an interpolation between two.
    if not ordered:
        return None
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]
