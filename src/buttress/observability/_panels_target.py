"""
The per-target drill-down's panels (``buttress-target.json``): one ``$target`` in detail.

The order of the list is the order on the page.
"""

from __future__ import annotations

from ..telemetry import _semconv as sc
from . import _promql as p
from ._panel_spec import RATE, PanelSpec, Query, breaker_state, ratio, row
from ._promql import Selector, agg

_T, _K = sc.ATTR_TARGET, sc.ATTR_KIND


def target_panels(q: Selector) -> list[PanelSpec]:
    """The per-target drill-down: everything about ``$target`` (of kind ``$kind``)."""
    tm_ = (f'{_T}="$target"', f'{_K}=~"$kind"')
    calls = q.rate(sc.CALLS, RATE, *tm_)
    tq = Selector(", ".join(m for m in (q.matchers, *tm_) if m))
    return [
        row("$target"),
        PanelSpec(
            "stat",
            "Request rate",
            "Logical calls per second to this target.",
            (Query(agg("sum", (), calls), "calls/s"),),
            unit="reqps",
            width=6,
            height=4,
        ),
        PanelSpec(
            "stat",
            "Error ratio",
            "Share of calls that failed, timed out or were rejected.",
            (Query(p.error_ratio(tq, (), RATE, p.ERROR_OUTCOMES), "errors"),),
            unit="percentunit",
            width=6,
            height=4,
            runbook="buttresshighfailurerate",
        ),
        PanelSpec(
            "stat",
            "p95 latency",
            "95th percentile of whole-call duration.",
            (Query(p.quantile(tq, 0.95, sc.CALL_DURATION, (), RATE), "p95"),),
            unit="s",
            width=6,
            height=4,
        ),
        PanelSpec(
            "stat",
            "Retry ratio",
            "Retries per logical call.",
            (
                Query(
                    ratio(agg("sum", (), tq.rate(sc.RETRIES, RATE)), agg("sum", (), calls))
                    + " or vector(0)",
                    "retries/call",
                ),
            ),
            unit="percentunit",
            width=6,
            height=4,
            runbook="buttressretrystorm",
        ),
        row("Calls and latency"),
        PanelSpec(
            "timeseries",
            "Calls by outcome",
            "Logical calls per second by how they ended.",
            (Query(agg("sum", (sc.ATTR_OUTCOME,), calls), "{{outcome}}"),),
            unit="reqps",
            stack=True,
        ),
        PanelSpec(
            "timeseries",
            "Latency quantiles",
            "p50, p95 and p99 of whole-call duration (sampled: see docs/telemetry.md).",
            tuple(
                Query(p.quantile(tq, phi, sc.CALL_DURATION, (), RATE), f"p{round(phi * 100)}")
                for phi in (0.5, 0.95, 0.99)
            ),
            unit="s",
        ),
        row("Circuit breaker"),
        PanelSpec(
            "statetimeline",
            "Breaker state",
            "The breaker's state over time.",
            (Query(breaker_state(q, (_T,), *tm_), "{{target}}"),),
            width=16,
            height=5,
            runbook="buttresscircuitopen",
        ),
        PanelSpec(
            "timeseries",
            "Breaker transitions",
            "State changes per second, by old and new state.",
            (
                Query(
                    agg(
                        "sum",
                        (sc.ATTR_FROM_STATE, sc.ATTR_TO_STATE),
                        tq.rate(sc.CIRCUIT_TRANSITIONS, RATE),
                    ),
                    "{{from_state}} -> {{to_state}}",
                ),
            ),
            unit="ops",
            width=8,
            height=5,
            runbook="buttresscircuitflapping",
        ),
        row("Retries"),
        PanelSpec(
            "timeseries",
            "Retries by error",
            "Retries scheduled per second, by the error that caused them.",
            (
                Query(
                    agg("sum", ("error_type",), tq.rate(sc.RETRIES, RATE)),
                    "{{error_type}}",
                ),
            ),
            unit="ops",
            width=8,
            runbook="buttressretrystorm",
        ),
        PanelSpec(
            "timeseries",
            "Retry delay p95 by source",
            "95th percentile of the delay before a retry: our back-off or the server's ask.",
            (
                Query(
                    p.quantile(tq, 0.95, sc.RETRY_DELAY, (sc.ATTR_SOURCE,), RATE),
                    "{{source}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Retries exhausted",
            "Calls whose retrying stopped before success, by why.",
            (
                Query(
                    agg("sum", (sc.ATTR_EXHAUSTED_REASON,), tq.rate(sc.RETRIES_EXHAUSTED, RATE)),
                    "{{reason}}",
                ),
            ),
            unit="ops",
            width=8,
        ),
        row("Rejections, timeouts and fallbacks"),
        PanelSpec(
            "timeseries",
            "Rejections by reason",
            "Calls or attempts refused before they started.",
            (Query(agg("sum", (sc.ATTR_REASON,), tq.rate(sc.REJECTIONS, RATE)), "{{reason}}"),),
            unit="ops",
            width=8,
            runbook="buttressrejectionshigh",
        ),
        PanelSpec(
            "timeseries",
            "Timeouts by scope",
            "Attempts or whole calls that ran past their timeout.",
            (Query(agg("sum", (sc.ATTR_SCOPE,), tq.rate(sc.TIMEOUTS, RATE)), "{{scope}}"),),
            unit="ops",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Fallbacks by error",
            "Calls answered by the fallback, by the error it replaced.",
            (Query(agg("sum", ("error_type",), tq.rate(sc.FALLBACKS, RATE)), "{{error_type}}"),),
            unit="ops",
            width=8,
        ),
        row("Bulkhead, rate limit and cache"),
        PanelSpec(
            "timeseries",
            "Bulkhead slots",
            "Calls holding a slot, waiting in the queue, and the concurrency limit.",
            (
                Query(agg("sum", (), tq(sc.BULKHEAD_ACTIVE)), "active"),
                Query(agg("sum", (), tq(sc.BULKHEAD_QUEUED)), "queued"),
                Query(agg("sum", (), tq(sc.BULKHEAD_LIMIT)), "limit"),
            ),
            width=8,
            runbook="buttressbulkheadsaturated",
        ),
        PanelSpec(
            "timeseries",
            "Queue and rate-limit waits p95",
            "95th percentile of bulkhead queue waits and rate-limit token waits.",
            (
                Query(p.quantile(tq, 0.95, sc.BULKHEAD_QUEUE_WAIT, (), RATE), "bulkhead queue"),
                Query(p.quantile(tq, 0.95, sc.RATE_LIMIT_WAIT, (), RATE), "rate limit"),
            ),
            unit="s",
            width=8,
            runbook="buttressqueuewaithigh",
        ),
        PanelSpec(
            "timeseries",
            "Cache lookups",
            "Cache hits, misses and coalesced calls per second.",
            (Query(agg("sum", (sc.ATTR_RESULT,), tq.rate(sc.CACHE_REQUESTS, RATE)), "{{result}}"),),
            unit="ops",
            width=8,
        ),
    ]
