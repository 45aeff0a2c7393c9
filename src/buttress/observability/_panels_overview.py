"""
The overview dashboard's panels (``buttress-overview.json``): every target at once.

One catalogue per dashboard keeps each under a screenful of panels to scan; the order of
the list is the order on the page.
"""

from __future__ import annotations

from ..telemetry import _semconv as sc
from . import _promql as p
from ._panel_spec import RATE, PanelSpec, Query, breaker_state, outcome, ratio, row
from ._promql import Selector, agg

_T, _K = sc.ATTR_TARGET, sc.ATTR_KIND
_TK = (_T, _K)


def overview_panels(q: Selector) -> list[PanelSpec]:
    """The overview dashboard: every target at once."""
    calls = q.rate(sc.CALLS, RATE)
    not_closed = f'{sc.ATTR_STATE}=~"{p.regex(p.NOT_CLOSED_STATES)}"'
    return [
        row("At a glance"),
        PanelSpec(
            "stat",
            "Request rate",
            "Logical calls per second through every pipeline (a retried call counts once).",
            (Query(agg("sum", (), calls), "calls/s"),),
            unit="reqps",
            width=4,
            height=4,
        ),
        PanelSpec(
            "stat",
            "Success rate",
            "Share of calls that got an answer (success or fallback); failures, timeouts and "
            "rejections are the errors the SLO alerts count.",
            (Query(f"1 - ({p.error_ratio(q, (), RATE, p.ERROR_OUTCOMES)})", "success"),),
            unit="percentunit",
            width=4,
            height=4,
            runbook="buttresserrorbudgetburn",
        ),
        PanelSpec(
            "stat",
            "p95 latency",
            "95th percentile of whole-call duration (retries, back-off and queueing included).",
            (Query(p.quantile(q, 0.95, sc.CALL_DURATION, (), RATE), "p95"),),
            unit="s",
            width=4,
            height=4,
        ),
        PanelSpec(
            "stat",
            "Breakers not closed",
            "Circuit breakers open, half-open or forced open now.",
            (
                Query(
                    f"count({agg('max', _TK, q(sc.CIRCUIT_STATE, not_closed))} > 0) or vector(0)",
                    "breakers",
                ),
            ),
            width=4,
            height=4,
            runbook="buttresscircuitopen",
        ),
        PanelSpec(
            "stat",
            "Firing buttress alerts",
            "Alerts named Buttress* firing now (the ALERTS series of the Prometheus that "
            "evaluates alerts/buttress-alerts.yaml).",
            (
                Query(
                    'count(ALERTS{alertname=~"Buttress.+", alertstate="firing"}) or vector(0)',
                    "alerts",
                ),
            ),
            width=4,
            height=4,
        ),
        PanelSpec(
            "stat",
            "Fallback rate",
            "Calls per second answered by a fallback instead of the target.",
            (
                Query(
                    agg("sum", (), q.rate(sc.CALLS, RATE, outcome(("fallback",))))
                    + " or vector(0)",
                    "fallbacks/s",
                ),
            ),
            unit="reqps",
            width=4,
            height=4,
        ),
        row("Circuit breakers"),
        PanelSpec(
            "statetimeline",
            "Breaker state",
            "State of every circuit breaker over time: closed (green), open (red), half-open "
            "(yellow), forced open (dark red), disabled (grey).",
            (Query(breaker_state(q, _TK), "{{target}}"),),
            width=16,
            height=8,
            runbook="buttresscircuitopen",
        ),
        PanelSpec(
            "timeseries",
            "Breaker transitions",
            "State changes per second, by target and new state; frequent opens mean flapping.",
            (
                Query(
                    agg(
                        "sum",
                        (_T, sc.ATTR_TO_STATE),
                        q.rate(sc.CIRCUIT_TRANSITIONS, RATE),
                    ),
                    "{{target}} -> {{to_state}}",
                ),
            ),
            unit="ops",
            width=8,
            height=8,
            runbook="buttresscircuitflapping",
        ),
        row("Calls"),
        PanelSpec(
            "timeseries",
            "Calls by outcome",
            "Logical calls per second by how they ended.",
            (Query(agg("sum", (sc.ATTR_OUTCOME,), calls), "{{outcome}}"),),
            unit="reqps",
            stack=True,
            runbook="buttresshighfailurerate",
        ),
        PanelSpec(
            "timeseries",
            "p95 latency by target",
            "95th percentile of whole-call duration per target.",
            (Query(p.quantile(q, 0.95, sc.CALL_DURATION, (_T,), RATE), "{{target}}"),),
            unit="s",
        ),
        row("Retries"),
        PanelSpec(
            "timeseries",
            "Retries by target and error",
            "Retries scheduled per second, by target and the error that caused them.",
            (
                Query(
                    agg(
                        "sum", (_T, sc.ATTR_ERROR_TYPE.replace(".", "_")), q.rate(sc.RETRIES, RATE)
                    ),
                    "{{target}} {{error_type}}",
                ),
            ),
            unit="ops",
            width=8,
            runbook="buttressretrystorm",
        ),
        PanelSpec(
            "timeseries",
            "Retry ratio",
            "Retries per logical call, by target: 0.5 means the target sees 50 % extra load.",
            (
                Query(
                    ratio(
                        agg("sum", (_T,), q.rate(sc.RETRIES, RATE)),
                        agg("sum", (_T,), calls),
                    ),
                    "{{target}}",
                ),
            ),
            unit="percentunit",
            width=8,
            runbook="buttressretrystorm",
        ),
        PanelSpec(
            "timeseries",
            "Retries exhausted",
            "Calls whose retrying stopped before success, by why (attempts, deadline, budget, "
            "vetoed, circuit_open).",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_EXHAUSTED_REASON), q.rate(sc.RETRIES_EXHAUSTED, RATE)),
                    "{{target}} {{reason}}",
                ),
            ),
            unit="ops",
            width=8,
        ),
        row("Rejections and timeouts"),
        PanelSpec(
            "timeseries",
            "Rejections by reason",
            "Calls or attempts refused before they started, by target and reason.",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_REASON), q.rate(sc.REJECTIONS, RATE)),
                    "{{target}} {{reason}}",
                ),
            ),
            unit="ops",
            runbook="buttressrejectionshigh",
        ),
        PanelSpec(
            "timeseries",
            "Timeouts by scope",
            "Attempts (scope=attempt) or whole calls (scope=total) that ran past their timeout.",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_SCOPE), q.rate(sc.TIMEOUTS, RATE)),
                    "{{target}} {{scope}}",
                ),
            ),
            unit="ops",
        ),
        row("Bulkheads and rate limits"),
        PanelSpec(
            "timeseries",
            "Bulkhead utilisation",
            "Slots in use over the concurrency limit, per target; 100 % means new calls queue.",
            (
                Query(
                    ratio(
                        agg("sum", (_T,), q(sc.BULKHEAD_ACTIVE)),
                        agg("sum", (_T,), q(sc.BULKHEAD_LIMIT)),
                    ),
                    "{{target}}",
                ),
            ),
            unit="percentunit",
            width=8,
            max=1.0,
            runbook="buttressbulkheadsaturated",
        ),
        PanelSpec(
            "timeseries",
            "Bulkhead queue wait p95",
            "95th percentile of the time queued calls waited for a slot.",
            (Query(p.quantile(q, 0.95, sc.BULKHEAD_QUEUE_WAIT, (_T,), RATE), "{{target}}"),),
            unit="s",
            width=8,
            runbook="buttressqueuewaithigh",
        ),
        PanelSpec(
            "timeseries",
            "Rate-limit wait p95",
            "95th percentile of the time calls waited for a rate-limit token.",
            (Query(p.quantile(q, 0.95, sc.RATE_LIMIT_WAIT, (_T,), RATE), "{{target}}"),),
            unit="s",
            width=8,
        ),
        row("Cache and observe mode"),
        PanelSpec(
            "timeseries",
            "Cache lookups by result",
            "Cache hits, misses and coalesced calls (joined an identical call in flight).",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_RESULT), q.rate(sc.CACHE_REQUESTS, RATE)),
                    "{{target}} {{result}}",
                ),
            ),
            unit="ops",
        ),
        PanelSpec(
            "timeseries",
            "Observe mode: would-be rejections and retries",
            "Targets in observe mode: what the policies would have refused or retried.",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_REASON), q.rate(sc.OBSERVED_REJECTIONS, RATE)),
                    "{{target}} rejected ({{reason}})",
                ),
                Query(
                    agg("sum", (_T,), q.rate(sc.OBSERVED_RETRIES, RATE)),
                    "{{target}} retried",
                ),
            ),
            unit="ops",
        ),
        row("Worst targets"),
        PanelSpec(
            "table",
            "Worst targets",
            "Every target by error ratio (failure, timeout, rejected) over the selected rate "
            "interval, with its call rate, p95 latency and retry ratio.",
            (
                Query(p.error_ratio(q, _TK, RATE, p.ERROR_OUTCOMES), "error ratio", instant=True),
                Query(agg("sum", _TK, calls), "calls/s", instant=True),
                Query(p.quantile(q, 0.95, sc.CALL_DURATION, _TK, RATE), "p95", instant=True),
                Query(
                    ratio(
                        agg("sum", _TK, q.rate(sc.RETRIES, RATE)),
                        agg("sum", _TK, calls),
                    ),
                    "retry ratio",
                    instant=True,
                ),
            ),
            unit="short",
            width=24,
            height=9,
            runbook="buttresshighfailurerate",
        ),
    ]
