"""
PromQL building blocks shared by the dashboards and the alert rules.

Every metric name comes from :mod:`buttress.telemetry._semconv`; nothing here spells one. The
exporter adds ``otel_scope_*`` labels (and Prometheus adds ``job``/``instance``), so every query
aggregates with an explicit ``by (...)`` list and never relies on the raw label set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..telemetry import _semconv as sc

ERROR_OUTCOMES: tuple[str, ...] = ("failure", "timeout", "rejected")
"""Outcomes that spend the error budget: the call did not get an answer from the target or the
fallback. ``fallback`` is degraded but answered, so it counts as good."""
FAILURE_OUTCOMES: tuple[str, ...] = ("failure", "timeout")
"""Outcomes of calls that ran and failed (rejections have their own alert)."""
GOOD_OUTCOMES: tuple[str, ...] = tuple(o for o in sc.OUTCOMES if o not in ERROR_OUTCOMES)
NOT_CLOSED_STATES: tuple[str, ...] = tuple(
    s for s in sc.CIRCUIT_STATES if s not in ("closed", "disabled")
)
"""Breaker states in which calls are (mostly) refused."""

GROUP_LABELS: tuple[str, ...] = ("job", sc.ATTR_TARGET, sc.ATTR_KIND)
"""What alerts and recording rules aggregate by: ``job`` keeps two services calling the same
target apart (an absent label is simply empty)."""

_EQUALITY = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')


def regex(values: tuple[str, ...]) -> str:
    """An anchored alternation of *values* for a ``=~`` matcher."""
    return "|".join(values)


def equality_labels(selector: str) -> dict[str, str]:
    """The ``label="value"`` matchers of *selector* (others are ignored)."""
    labels: dict[str, str] = {}
    for part in _split(selector):
        match = _EQUALITY.fullmatch(part)
        if match:
            labels[match.group(1)] = match.group(2)
    return labels


def _split(selector: str) -> list[str]:
    """Split *selector* on the commas outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in selector:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


@dataclass(frozen=True, slots=True)
class Selector:
    """
    Builds metric selectors that carry the user's extra matchers (``job="checkout"``).

    Attributes:
        matchers: Extra label matchers, without braces; empty for none.
    """

    matchers: str = ""

    def __post_init__(self) -> None:
        text = self.matchers.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        object.__setattr__(self, "matchers", ", ".join(_split(text)))

    def __call__(self, metric: sc.Metric, *matchers: str, suffix: str = "") -> str:
        """``metric{selector, *matchers}`` (histograms: pass ``suffix="_bucket"``)."""
        parts = [m for m in (self.matchers, *matchers) if m]
        if not parts:
            return f"{metric.prometheus}{suffix}"
        return f"{metric.prometheus}{suffix}{{{', '.join(parts)}}}"

    def rate(self, metric: sc.Metric, window: str, *matchers: str, suffix: str = "") -> str:
        """``rate(metric{...}[window])``."""
        return f"rate({self(metric, *matchers, suffix=suffix)}[{window}])"


def agg(op: str, by: tuple[str, ...], expr: str) -> str:
    """``op by (labels) (expr)``, or ``op(expr)`` for no labels."""
    if not by:
        return f"{op}({expr})"
    return f"{op} by ({', '.join(by)}) ({expr})"


def error_ratio(q: Selector, by: tuple[str, ...], window: str, outcomes: tuple[str, ...]) -> str:
    """
    The share of calls whose outcome is in *outcomes*, per *by*.

    A target with no such call yet has no series for them: ``or total * 0`` gives it a 0
    instead of dropping it from the result.
    """
    bad = agg("sum", by, q.rate(sc.CALLS, window, f'{sc.ATTR_OUTCOME}=~"{regex(outcomes)}"'))
    total = agg("sum", by, q.rate(sc.CALLS, window))
    return f"({bad} or {total} * 0) / {total}"


def quantile(q: Selector, phi: float, metric: sc.Metric, by: tuple[str, ...], window: str) -> str:
    """``histogram_quantile`` of *metric* over *window*, per *by*."""
    return (
        f"histogram_quantile({phi:g}, "
        f"{agg('sum', (*by, 'le'), q.rate(metric, window, suffix='_bucket'))})"
    )
