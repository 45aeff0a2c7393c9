"""
Prometheus alerting and recording rules, from the semconv module.

Monitoring-mixin conventions: CamelCase alert names prefixed ``Buttress``; ``severity`` critical
(pages) or warning (tickets); annotations ``summary``, ``description`` and ``runbook_url`` (an
anchor of docs/runbooks.md); recording rules named ``level:metric:operations``. Every alert
aggregates by :data:`~._promql.GROUP_LABELS` (job, target, kind).

The SLO counts a call as an error when its outcome is failure, timeout or rejected (a fallback
answered, so it is good). Burn-rate alerts follow the SRE workbook (30-day objective): page when
the 1h and 5m windows both burn faster than 14.4x, or 6h and 30m faster than 6x; open a ticket
when 3d and 6h burn faster than 1x.

:func:`rule_files` is a pure function of :class:`AlertParams`; the promtool unit tests that
check every alert fires (and stays quiet) as documented are generated apart, in
:mod:`._promtool_tests`, which reads the alerts from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from ..telemetry import _semconv as sc
from . import _promql as p
from ._promql import GROUP_LABELS, Selector, agg

DEFAULT_RUNBOOK_URL = "https://github.com/buttress-dev/buttress/blob/main/docs/runbooks.md"
RULES_FILE = "buttress-rules.yaml"
ALERTS_FILE = "buttress-alerts.yaml"
TESTS_FILE = "tests/buttress-alerts.test.yaml"
ALERT_WINDOW = "5m"
"""The rate window of the non-SLO alerts (their ``for:`` adds persistence)."""


@dataclass(frozen=True, slots=True)
class AlertParams:
    """
    Every threshold and duration of the generated alerts, with the documented defaults.

    Attributes:
        selector: Extra label matchers for every metric, e.g. ``job="checkout"``.
        slo: Availability objective per target over 30 days (0.999 = 99.9 %).
        runbook_url: URL of docs/runbooks.md; each alert links to its anchor.
        circuit_open_for: How long a breaker may stay out of closed (open, half-open, forced
            open) before ButtressCircuitOpen fires: longer than a usual recovery.
        flapping_window: Window over which breaker trips (closed -> open) are counted.
        flapping_trips: ButtressCircuitFlapping fires above this many trips in the window.
        failure_ratio: ButtressHighFailureRate fires above this share of failed or timed-out
            calls (5m rate).
        failure_for: ... for this long.
        retry_ratio: ButtressRetryStorm fires above this many retries per logical call.
        retry_for: ... for this long.
        rejection_ratio: ButtressRejectionsHigh fires above this share of rejections per call,
            per reason.
        rejection_for: ... for this long.
        bulkhead_utilisation: ButtressBulkheadSaturated fires when active/limit reaches this.
        bulkhead_for: ... for this long.
        queue_wait_seconds: ButtressQueueWaitHigh fires when the p95 bulkhead queue wait
            exceeds this.
        queue_wait_for: ... for this long.
        absent_for: ButtressTelemetryAbsent fires when no buttress_calls_total series matches
            the selector for this long.

    .. versionadded:: 0.1.0
    """

    selector: str = ""
    slo: float = 0.999
    runbook_url: str = DEFAULT_RUNBOOK_URL
    circuit_open_for: str = "5m"
    flapping_window: str = "30m"
    flapping_trips: int = 3
    failure_ratio: float = 0.05
    failure_for: str = "10m"
    retry_ratio: float = 0.5
    retry_for: str = "10m"
    rejection_ratio: float = 0.05
    rejection_for: str = "10m"
    bulkhead_utilisation: float = 0.9
    bulkhead_for: str = "10m"
    queue_wait_seconds: float = 1.0
    queue_wait_for: str = "10m"
    absent_for: str = "15m"

    def __post_init__(self) -> None:
        if not 0 < self.slo < 1:
            raise ValueError(f"slo must be between 0 and 1 (exclusive), got {self.slo}")
        for f in fields(self):
            if f.name.endswith(("_for", "_window")) and not _DURATION.fullmatch(
                getattr(self, f.name)
            ):
                raise ValueError(
                    f"{f.name} must be a Prometheus duration like 5m, got {getattr(self, f.name)!r}"
                )


_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One multi-window burn-rate alert: both windows must burn faster than *factor*."""

    long: str
    short: str
    factor: float
    severity: str
    for_: str


BURN_WINDOWS: tuple[BurnWindow, ...] = (
    BurnWindow("1h", "5m", 14.4, "critical", "2m"),
    BurnWindow("6h", "30m", 6.0, "critical", "15m"),
    BurnWindow("3d", "6h", 1.0, "warning", "3h"),
)
"""The SRE workbook's windows for a 30-day objective: 2 % of the budget in 1h, 5 % in 6h, 10 % in
3d."""
SLO_WINDOWS: tuple[str, ...] = ("5m", "30m", "1h", "6h", "3d")
_G = GROUP_LABELS


def error_ratio_record(window: str) -> str:
    """The recording rule name of the per-target error ratio over *window*."""
    return f"buttress_target:error_ratio:rate{window}"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def _labels_text() -> str:
    return "{{ $labels.target }} ({{ $labels.kind }}, job {{ $labels.job }})"


@dataclass(frozen=True, slots=True)
class Alert:
    """One alerting rule, before serialisation."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    extra_labels: tuple[tuple[str, str], ...] = ()

    def rule(self, runbook_url: str) -> dict[str, Any]:
        """The rule as Prometheus reads it."""
        rule: dict[str, Any] = {
            "alert": self.name,
            "expr": self.expr,
            "labels": {"severity": self.severity, **dict(self.extra_labels)},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{runbook_url}#{self.name.lower()}",
            },
        }
        if self.for_ not in ("", "0s", "0m"):
            rule["for"] = self.for_
        return rule


def alerts(params: AlertParams) -> list[Alert]:
    """Every alert, in documentation order (the SLO ones last)."""
    q = Selector(params.selector)
    w = ALERT_WINDOW
    not_closed = f'{sc.ATTR_STATE}=~"{p.regex(p.NOT_CLOSED_STATES)}"'
    by_reason = (*_G, sc.ATTR_REASON)
    on = f"on ({', '.join(_G)}) group_left"
    queue_p95 = p.quantile(q, 0.95, sc.BULKHEAD_QUEUE_WAIT, _G, w)
    trips = q.rate(
        sc.CIRCUIT_TRANSITIONS,
        params.flapping_window,
        f'{sc.ATTR_FROM_STATE}="closed"',
        f'{sc.ATTR_TO_STATE}="open"',
    ).replace("rate(", "increase(", 1)
    who = _labels_text()
    result = [
        Alert(
            "ButtressCircuitOpen",
            # > 0, not == 1: target "other" counts the breakers past the bound in each state.
            f"{agg('max', _G, q(sc.CIRCUIT_STATE, not_closed))} > 0",
            params.circuit_open_for,
            "critical",
            "Circuit breaker of {{ $labels.target }} has not closed for "
            f"{params.circuit_open_for}.",
            f"The breaker of {who} has been open, half-open or forced open for longer than "
            f"{params.circuit_open_for}: calls are being refused and the target is not "
            "recovering.",
        ),
        Alert(
            "ButtressCircuitFlapping",
            f"{agg('sum', _G, trips)} > {params.flapping_trips}",
            "",
            "warning",
            "Circuit breaker of {{ $labels.target }} is flapping.",
            f"The breaker of {who} tripped from closed to open more than "
            f"{params.flapping_trips} times in {params.flapping_window}.",
        ),
        Alert(
            "ButtressHighFailureRate",
            f"{p.error_ratio(q, _G, w, p.FAILURE_OUTCOMES)} > {params.failure_ratio:g}",
            params.failure_for,
            "warning",
            "Calls to {{ $labels.target }} are failing.",
            f"More than {_pct(params.failure_ratio)} of calls to {who} failed or timed out "
            f"over {w}, for {params.failure_for}.",
        ),
        Alert(
            "ButtressRetryStorm",
            f"{agg('sum', _G, q.rate(sc.RETRIES, w))} / {agg('sum', _G, q.rate(sc.CALLS, w))}"
            f" > {params.retry_ratio:g}",
            params.retry_for,
            "warning",
            "Retries to {{ $labels.target }} are amplifying load.",
            f"{who} sees more than {params.retry_ratio:g} retries per logical call over {w}, "
            f"for {params.retry_for}: retries add load to a struggling dependency.",
        ),
        Alert(
            "ButtressRejectionsHigh",
            f"{agg('sum', by_reason, q.rate(sc.REJECTIONS, w))} / {on} "
            f"{agg('sum', _G, q.rate(sc.CALLS, w))} > {params.rejection_ratio:g}",
            params.rejection_for,
            "warning",
            "Calls to {{ $labels.target }} are rejected ({{ $labels.reason }}).",
            f"More than {_pct(params.rejection_ratio)} of calls to {who} are refused before "
            f"they start, reason {{{{ $labels.reason }}}}, over {w} for "
            f"{params.rejection_for}.",
        ),
        Alert(
            "ButtressBulkheadSaturated",
            f"{agg('sum', _G, q(sc.BULKHEAD_ACTIVE))} / {agg('sum', _G, q(sc.BULKHEAD_LIMIT))}"
            f" >= {params.bulkhead_utilisation:g}",
            params.bulkhead_for,
            "warning",
            "Bulkhead of {{ $labels.target }} is saturated.",
            f"The bulkhead of {who} has used at least {_pct(params.bulkhead_utilisation)} of "
            f"its concurrency limit for {params.bulkhead_for}: new calls queue or are refused.",
        ),
        Alert(
            "ButtressQueueWaitHigh",
            f"{queue_p95} > {params.queue_wait_seconds:g}",
            params.queue_wait_for,
            "warning",
            "Calls to {{ $labels.target }} wait long for a bulkhead slot.",
            f"The p95 bulkhead queue wait of {who} is above {params.queue_wait_seconds:g}s "
            f"over {w}, for {params.queue_wait_for}.",
        ),
        Alert(
            "ButtressTelemetryAbsent",
            f"absent({q(sc.CALLS)})",
            params.absent_for,
            "warning",
            "buttress telemetry is absent.",
            f"No {q(sc.CALLS)} series for {params.absent_for}: the service is down, not "
            "instrumented, or not scraped.",
        ),
    ]
    budget = 1 - params.slo
    for bw in BURN_WINDOWS:
        threshold = f"({bw.factor:g} * (1 - {params.slo:g}))"
        days = 30 / bw.factor
        result.append(
            Alert(
                "ButtressErrorBudgetBurn",
                f"{error_ratio_record(bw.long)} > {threshold} and "
                f"{error_ratio_record(bw.short)} > {threshold}",
                bw.for_,
                bw.severity,
                "{{ $labels.target }} is burning its error budget fast."
                if bw.severity == "critical"
                else "{{ $labels.target }} is burning its error budget.",
                f"{who} has an error ratio above {bw.factor:g}x its budget of "
                f"{_pct(budget)} (objective {_pct(params.slo)}) over both {bw.long} and "
                f"{bw.short}: at this rate the 30-day budget lasts {days:.3g} days.",
                (("long_window", bw.long), ("short_window", bw.short)),
            )
        )
    return result


def recording_rules(params: AlertParams) -> list[dict[str, str]]:
    """The per-target error ratios the SLO alerts read, one per window."""
    q = Selector(params.selector)
    return [
        {
            "record": error_ratio_record(window),
            "expr": p.error_ratio(q, _G, window, p.ERROR_OUTCOMES),
        }
        for window in SLO_WINDOWS
    ]


_HEADER = (
    "Generated by `buttress alerts` from buttress.telemetry.semconv: do not edit by hand.\n"
    "Regenerate with: buttress alerts --out alerts/ (CI fails on drift)."
)


def rule_files(params: AlertParams | None = None) -> dict[str, dict[str, Any]]:
    """
    The Prometheus rule files, by path relative to the output folder.

    .. versionadded:: 0.1.0
    """
    params = params or AlertParams()
    slo_names = {"ButtressErrorBudgetBurn"}
    everything = alerts(params)
    return {
        RULES_FILE: {"groups": [{"name": "buttress.rules", "rules": recording_rules(params)}]},
        ALERTS_FILE: {
            "groups": [
                {
                    "name": "buttress.alerts",
                    "rules": [
                        a.rule(params.runbook_url) for a in everything if a.name not in slo_names
                    ],
                },
                {
                    "name": "buttress.slo",
                    "rules": [
                        a.rule(params.runbook_url) for a in everything if a.name in slo_names
                    ],
                },
            ]
        },
    }


def header() -> str:
    """The comment at the top of every generated rule file."""
    return _HEADER
