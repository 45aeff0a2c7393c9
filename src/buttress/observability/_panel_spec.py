"""
What a dashboard panel shows, as plain values, and the PromQL helpers the catalogues share.

Kept apart from the grafana-foundation-sdk builder (:mod:`._grafana_builder`) so that the
catalogues (``_panels_*.py``) read as data: a newcomer adding a panel edits a catalogue and
never touches the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..telemetry import _semconv as sc
from . import _promql as p
from ._promql import Selector, agg

RATE = "$__rate_interval"
"""The range of every dashboard ``rate()``: Grafana picks it from the scrape interval."""


@dataclass(frozen=True, slots=True)
class Query:
    """One panel query: PromQL, legend, and whether it is an instant (table) query."""

    expr: str
    legend: str
    instant: bool = False


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """
    What a panel shows, independent of the builder.

    Attributes:
        kind: ``timeseries``, ``stat``, ``statetimeline``, ``table``, ``text`` or ``row``.
        title: Panel title.
        description: Hover text: what it shows and how to read it.
        queries: Its queries (none for text and row panels).
        unit: Grafana unit id.
        width: Grid columns (of 24).
        height: Grid rows.
        runbook: Anchor in docs/runbooks.md the panel links to, or empty.
        content: Markdown of a text panel.
        stack: Stack the series (timeseries).
        max: Axis or gauge maximum.
    """

    kind: str
    title: str
    description: str = ""
    queries: tuple[Query, ...] = ()
    unit: str = "short"
    width: int = 12
    height: int = 8
    runbook: str = ""
    content: str = ""
    stack: bool = False
    max: float | None = None


def row(title: str) -> PanelSpec:
    """A full-width row header: starts a new line of panels."""
    return PanelSpec("row", title, width=24, height=1)


def outcome(outcomes: tuple[str, ...]) -> str:
    """A matcher for calls whose outcome is one of *outcomes*."""
    return f'{sc.ATTR_OUTCOME}=~"{p.regex(outcomes)}"'


def breaker_state(q: Selector, by: tuple[str, ...], *matchers: str) -> str:
    """One series per breaker whose value is the index of its state in CIRCUIT_STATES."""
    parts = []
    for i, state in enumerate(sc.CIRCUIT_STATES):
        series = q(sc.CIRCUIT_STATE, f'{sc.ATTR_STATE}="{state}"', *matchers)
        # > 0, not == 1: target "other" counts the breakers past the bound in each state.
        parts.append(f"({series} > 0) * {i}")
    return agg("max", by, " or ".join(parts))


def ratio(num: str, den: str) -> str:
    """*num* over *den*, as PromQL."""
    return f"{num} / {den}"
