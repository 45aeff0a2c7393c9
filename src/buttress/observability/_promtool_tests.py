"""
The promtool unit tests of the generated alerts (``alerts/tests/buttress-alerts.test.yaml``).

For every alert of :mod:`._prometheus_rules`, a case where it fires and one where it must not,
with input series built from the semconv names. Kept apart from the rules because it is test
data, not rules: it changes when a case changes, and a reader of the rules need not scroll past
it.
:func:`unit_tests` is a pure function of :class:`~._prometheus_rules.AlertParams`.
"""

from __future__ import annotations

import re
from typing import Any

from ..telemetry import _semconv as sc
from . import _promql as p
from ._prometheus_rules import ALERTS_FILE, RULES_FILE, Alert, AlertParams, alerts

_BASE_LABELS = {"job": "checkout", sc.ATTR_TARGET: "payments", sc.ATTR_KIND: "http"}
_SCOPE = {"otel_scope_name": sc.METER_NAME}
_TEMPLATE = re.compile(r"\{\{ \$labels\.([a-z_]+) \}\}")


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{metric}{{{body}}}", "values": values}


def _expect(alert: Alert, labels: dict[str, str], runbook_url: str) -> dict[str, Any]:
    all_labels = {**labels, "severity": alert.severity, **dict(alert.extra_labels)}
    rule = alert.rule(runbook_url)
    annotations = {
        k: _TEMPLATE.sub(lambda m: all_labels.get(m.group(1), ""), v)
        for k, v in rule["annotations"].items()
    }
    return {"exp_labels": all_labels, "exp_annotations": annotations}


def _case(
    name: str, series: list[dict[str, str]], eval_time: str, expected: list[dict[str, Any]]
) -> dict[str, Any]:
    """One promtool test group; *name* ("Alert: what") is for readers of this code only."""
    alertname = name.split(":", maxsplit=1)[0]
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": eval_time, "alertname": alertname, "exp_alerts": expected}
        ],
    }


def unit_tests(params: AlertParams | None = None) -> dict[str, Any]:
    """
    A promtool test file: for every alert, a case where it fires and one where it must not.

    Input series carry the selector's ``label="value"`` matchers (other matcher kinds cannot
    be turned into sample labels, so tests for such selectors may not match).

    .. versionadded:: 0.1.0
    """
    params = params or AlertParams()
    by_name: dict[str, list[Alert]] = {}
    for alert in alerts(params):
        by_name.setdefault(alert.name, []).append(alert)
    sel = p.equality_labels(params.selector)
    labels = {**_BASE_LABELS, **sel}
    raw = {**labels, **_SCOPE}
    url = params.runbook_url
    calls, outcome = sc.CALLS.prometheus, sc.ATTR_OUTCOME

    def one(name: str) -> Alert:
        return by_name[name][0]

    def calls_series(
        good: int, bad: int, bad_outcome: str = "failure", n: int = 40
    ) -> list[dict[str, str]]:
        return [
            _series(calls, {**raw, outcome: "success"}, f"0+{good}x{n}"),
            _series(calls, {**raw, outcome: bad_outcome}, f"0+{bad}x{n}"),
        ]

    def state(open_values: str, closed_values: str) -> list[dict[str, str]]:
        return [
            _series(sc.CIRCUIT_STATE.prometheus, {**raw, sc.ATTR_STATE: "open"}, open_values),
            _series(sc.CIRCUIT_STATE.prometheus, {**raw, sc.ATTR_STATE: "closed"}, closed_values),
        ]

    other = {**raw, sc.ATTR_TARGET: sc.OVERFLOW_TARGET}
    trips_labels = {**raw, sc.ATTR_FROM_STATE: "closed", sc.ATTR_TO_STATE: "open"}
    retries = sc.RETRIES.prometheus
    rejections = sc.REJECTIONS.prometheus
    reason = {sc.ATTR_REASON: "bulkhead_full"}

    def queue(le_of_observations: float) -> list[dict[str, str]]:
        out = []
        for le in (*sc.WAIT_BUCKETS, float("inf")):
            le_text = "+Inf" if le == float("inf") else repr(le)
            per_minute = 10 if le >= le_of_observations else 0
            out.append(
                _series(
                    sc.BULKHEAD_QUEUE_WAIT.prometheus + "_bucket",
                    {**raw, "le": le_text},
                    f"0+{per_minute}x40",
                )
            )
        return out

    def gauges(active: int, limit: int) -> list[dict[str, str]]:
        return [
            _series(sc.BULKHEAD_ACTIVE.prometheus, raw, f"{active}x40"),
            _series(sc.BULKHEAD_LIMIT.prometheus, raw, f"{limit}x40"),
        ]

    slo = params.slo
    budget = 1 - slo
    fast, medium, slow = by_name["ButtressErrorBudgetBurn"]

    def slo_series(error_ratio: float, minutes: int) -> list[dict[str, str]]:
        total = 10_000
        bad = round(total * error_ratio)
        return calls_series(total - bad, bad, "timeout", minutes)

    cases = [
        _case(
            "ButtressCircuitOpen: fires",
            state("1x20", "0x20"),
            "15m",
            [_expect(one("ButtressCircuitOpen"), labels, url)],
        ),
        _case(
            "ButtressCircuitOpen: recovers in time", state("1 1 1 0x17", "0 0 0 1x17"), "15m", []
        ),
        _case(
            # Targets past the registry's bound each have a breaker; "other" counts them.
            "ButtressCircuitOpen: fires for targets past the bound, two of them open",
            [
                _series(sc.CIRCUIT_STATE.prometheus, {**other, sc.ATTR_STATE: "open"}, "2x20"),
                _series(sc.CIRCUIT_STATE.prometheus, {**other, sc.ATTR_STATE: "closed"}, "5x20"),
            ],
            "15m",
            [
                _expect(
                    one("ButtressCircuitOpen"), {**labels, sc.ATTR_TARGET: sc.OVERFLOW_TARGET}, url
                )
            ],
        ),
        _case(
            "ButtressCircuitFlapping: fires",
            [_series(sc.CIRCUIT_TRANSITIONS.prometheus, trips_labels, "0+0.5x60")],
            "45m",
            [_expect(one("ButtressCircuitFlapping"), labels, url)],
        ),
        _case(
            "ButtressCircuitFlapping: a single trip",
            [_series(sc.CIRCUIT_TRANSITIONS.prometheus, trips_labels, "0x10 1x50")],
            "45m",
            [],
        ),
        _case(
            "ButtressHighFailureRate: fires",
            calls_series(80, 20),
            "30m",
            [_expect(one("ButtressHighFailureRate"), labels, url)],
        ),
        _case("ButtressHighFailureRate: below threshold", calls_series(99, 1), "30m", []),
        _case(
            "ButtressRetryStorm: fires",
            [
                *calls_series(100, 0),
                _series(retries, {**raw, "error_type": "ConnectionError"}, "0+90x40"),
            ],
            "30m",
            [_expect(one("ButtressRetryStorm"), labels, url)],
        ),
        _case(
            "ButtressRetryStorm: few retries",
            [
                *calls_series(100, 0),
                _series(retries, {**raw, "error_type": "ConnectionError"}, "0+10x40"),
            ],
            "30m",
            [],
        ),
        _case(
            "ButtressRejectionsHigh: fires",
            [*calls_series(80, 20, "rejected"), _series(rejections, {**raw, **reason}, "0+20x40")],
            "30m",
            [_expect(one("ButtressRejectionsHigh"), {**labels, **reason}, url)],
        ),
        _case(
            "ButtressRejectionsHigh: few rejections",
            [*calls_series(99, 1, "rejected"), _series(rejections, {**raw, **reason}, "0+1x40")],
            "30m",
            [],
        ),
        _case(
            "ButtressBulkheadSaturated: fires",
            gauges(10, 10),
            "30m",
            [_expect(one("ButtressBulkheadSaturated"), labels, url)],
        ),
        _case("ButtressBulkheadSaturated: half used", gauges(5, 10), "30m", []),
        _case(
            "ButtressQueueWaitHigh: fires",
            queue(5.0),
            "30m",
            [_expect(one("ButtressQueueWaitHigh"), labels, url)],
        ),
        _case("ButtressQueueWaitHigh: short waits", queue(0.05), "30m", []),
        _case(
            "ButtressTelemetryAbsent: fires",
            [_series("up", labels, "1x40")],
            "30m",
            [_expect(one("ButtressTelemetryAbsent"), sel, url)],
        ),
        _case("ButtressTelemetryAbsent: present", calls_series(10, 0), "30m", []),
        # Budget burns: fast (14.4x) also trips the 6x pair, whose `for` is shorter than the run.
        _case(
            "ButtressErrorBudgetBurn: fast burn pages",
            slo_series(budget * 50, 90),
            "80m",
            [_expect(fast, labels, url), _expect(medium, labels, url)],
        ),
        _case(
            "ButtressErrorBudgetBurn: 10x burn pages on 6h/30m",
            slo_series(budget * 10, 90),
            "80m",
            [_expect(medium, labels, url)],
        ),
        _case(
            "ButtressErrorBudgetBurn: 3x burn opens a ticket",
            slo_series(budget * 3, 300),
            "290m",
            [_expect(slow, labels, url)],
        ),
        _case("ButtressErrorBudgetBurn: within budget", slo_series(budget * 0.5, 300), "290m", []),
    ]
    return {
        "rule_files": [f"../{RULES_FILE}", f"../{ALERTS_FILE}"],
        "evaluation_interval": "1m",
        "tests": cases,
    }
