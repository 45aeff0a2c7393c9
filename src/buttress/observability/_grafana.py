"""
Grafana dashboards, generated from :mod:`buttress.telemetry._semconv` with grafana-foundation-sdk.

:func:`dashboards` is a pure function from its parameters to plain dicts (one per dashboard file);
:func:`render` serialises one with sorted keys, so regenerating is byte-stable and CI can diff.
Panels are declared as :class:`PanelSpec` values (title, queries, unit, size, runbook anchor) and
laid out left to right, top to bottom, with explicit ids; every range query uses
``$__rate_interval`` and every series has an explicit legend.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# The SDK deprecates its classic dashboard model in favour of dashboardv2, which Grafana only
# provisions behind a feature flag; the classic JSON is what file provisioning and
# ../shared/grafana-schema/dashboard.jsonschema.json describe, so we use it on purpose.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as cb
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus as pb
    from grafana_foundation_sdk.builders import stat, statetimeline, table, text, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as pm
    from grafana_foundation_sdk.models import text as tm

from ..telemetry import _semconv as sc
from . import _promql as p
from ._promql import Selector, agg

DEFAULT_DATASOURCE = "prometheus"
"""The Prometheus data source uid the dashboards select by default (the provisioning example in
``collector-config/grafana`` creates it); a ``datasource`` variable lets users pick another."""
DEFAULT_RUNBOOK_URL = "https://github.com/buttress-dev/buttress/blob/main/docs/runbooks.md"
"""Where ``docs/runbooks.md`` is published; anchors are appended. Override with --runbook-url."""

RATE = "$__rate_interval"
_DS_VAR = "datasource"
_T, _K = sc.ATTR_TARGET, sc.ATTR_KIND
_TK = (_T, _K)
_STATE_COLOURS = {
    "closed": "green",
    "open": "red",
    "half_open": "yellow",
    "forced_open": "dark-red",
    "disabled": "text",
}
LLM_RATE_LIMIT_ERRORS = "(?i).*(ratelimit|toomanyrequests|429|retryableresponse).*"
"""``error_type`` values that mean "the provider said slow down": SDK RateLimitError classes and
buttress's own RetryableResponse (a retried 429/5xx status from the HTTP integrations)."""


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


def _row(title: str) -> PanelSpec:
    return PanelSpec("row", title, width=24, height=1)


@dataclass(slots=True)
class _Layout:
    """Places panels left to right, wrapping at 24 columns; rows start a new line."""

    x: int = 0
    y: int = 0
    line_height: int = 0
    positions: list[dm.GridPos] = field(default_factory=list)

    def place(self, width: int, height: int, *, new_line: bool = False) -> dm.GridPos:
        if new_line or self.x + width > 24:
            self.y += self.line_height
            self.x = 0
            self.line_height = 0
        pos = dm.GridPos(h=height, w=width, x=self.x, y=self.y)
        self.x += width
        self.line_height = max(self.line_height, height)
        return pos


@dataclass(frozen=True, slots=True)
class _Context:
    datasource: dm.DataSourceRef
    runbook_url: str


def _target(query: Query, ref: str) -> pb.Dataquery:
    built = (
        pb.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref).datasource(_ds())
    )
    if query.instant:
        return built.instant().format(pm.PromQueryFormat.TABLE)
    return built.range()


def _ds() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val="prometheus", uid=f"${{{_DS_VAR}}}")


def _runbook_link(ctx: _Context, anchor: str) -> list[db.DashboardLink]:
    if not anchor:
        return []
    return [
        db.DashboardLink("Runbook")
        .type(dm.DashboardLinkType.LINK)
        .url(f"{ctx.runbook_url}#{anchor}")
        .target_blank(True)
    ]


def _legend(*, table_mode: bool = False) -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.TABLE if table_mode else cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
        .calcs(["lastNotNull", "max"] if table_mode else [])
    )


def _build_panel(spec: PanelSpec, pid: int, pos: dm.GridPos, ctx: _Context) -> Any:
    """The builder for *spec* (typed Any: the SDK's panel builders share no base class)."""
    refs = [chr(ord("A") + i) for i in range(len(spec.queries))]
    targets = [_target(q, r) for q, r in zip(spec.queries, refs, strict=True)]
    links = _runbook_link(ctx, spec.runbook)
    if spec.kind == "row":
        return db.Row(spec.title).id(pid).grid_pos(pos).collapsed(False)
    builder: Any
    if spec.kind == "timeseries":
        builder = (
            timeseries.Panel()
            .legend(_legend(table_mode=len(spec.queries) > 0))
            .tooltip(
                cb.VizTooltipOptions()
                .mode(cm.TooltipDisplayMode.MULTI)
                .sort(cm.SortOrder.DESCENDING)
            )
            .fill_opacity(10)
            .line_width(1)
            .show_points(cm.VisibilityMode.NEVER)
            .stacking(
                cb.StackingConfig().mode(
                    cm.StackingMode.NORMAL if spec.stack else cm.StackingMode.NONE
                )
            )
            .min(0)
        )
        if spec.max is not None:
            builder = builder.max(spec.max)
    elif spec.kind == "stat":
        builder = (
            stat.Panel()
            .graph_mode(cm.BigValueGraphMode.AREA)
            .color_mode(cm.BigValueColorMode.VALUE)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        )
    elif spec.kind == "statetimeline":
        builder = (
            statetimeline.Panel()
            .show_value(cm.VisibilityMode.NEVER)
            .merge_values(True)
            .row_height(0.9)
            .legend(_legend())
            .mappings([_state_mapping()])
            .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        )
    elif spec.kind == "table":
        builder = (
            table.Panel()
            .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(
                dm.DataTransformerConfig(
                    id_val="organize",
                    options={"excludeByName": {"Time": True}, "renameByName": {}},
                )
            )
            .sort_by([cb.TableSortByFieldState().display_name("Value #A").desc(True)])
        )
    elif spec.kind == "text":
        builder = text.Panel().mode(tm.TextMode.MARKDOWN).content(spec.content)
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    builder = builder.id(pid).title(spec.title).grid_pos(pos).links(links)
    if spec.description:
        builder = builder.description(spec.description)
    if spec.kind != "text":
        builder = builder.datasource(_ds()).targets(targets).unit(spec.unit)
    return builder


def _state_mapping() -> dm.ValueMap:
    return dm.ValueMap(
        options={
            str(i): dm.ValueMappingResult(text=state, color=_STATE_COLOURS[state], index=i)
            for i, state in enumerate(sc.CIRCUIT_STATES)
        }
    )


def _dashboard(
    uid: str,
    title: str,
    description: str,
    specs: Sequence[PanelSpec],
    variables: Sequence[db.QueryVariable],
    ctx: _Context,
    datasource: str,
) -> dict[str, Any]:
    ds_var = db.DatasourceVariable(_DS_VAR).label("Data source").type("prometheus")
    ds_var = ds_var.current(dm.VariableOption(selected=True, text=datasource, value=datasource))
    board = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["buttress", "resilience"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
        .with_variable(ds_var)
        .links(
            [
                db.DashboardLink("buttress dashboards")
                .type(dm.DashboardLinkType.DASHBOARDS)
                .tags(["buttress"])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True),
                db.DashboardLink("Runbooks")
                .type(dm.DashboardLinkType.LINK)
                .url(ctx.runbook_url)
                .target_blank(True),
            ]
        )
    )
    for variable in variables:
        board = board.with_variable(variable)
    layout = _Layout()
    for pid, spec in enumerate(specs, start=1):
        pos = layout.place(spec.width, spec.height, new_line=spec.kind == "row")
        built = _build_panel(spec, pid, pos, ctx)
        board = board.with_row(built) if spec.kind == "row" else board.with_panel(built)
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def _query_variable(name: str, label: str, query: str, *, include_all: bool) -> db.QueryVariable:
    variable = (
        db.QueryVariable(name)
        .label(label)
        .datasource(_ds())
        .query(query)
        .definition(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .include_all(include_all)
        .multi(include_all)
    )
    if include_all:
        variable = variable.all_value(".*")
    return variable


# -- panel sets ----------------------------------------------------------------------------------


def _outcome(outcomes: tuple[str, ...]) -> str:
    return f'{sc.ATTR_OUTCOME}=~"{p.regex(outcomes)}"'


def _breaker_state(q: Selector, by: tuple[str, ...], *matchers: str) -> str:
    """One series per breaker whose value is the index of its state in CIRCUIT_STATES."""
    parts = []
    for i, state in enumerate(sc.CIRCUIT_STATES):
        series = q(sc.CIRCUIT_STATE, f'{sc.ATTR_STATE}="{state}"', *matchers)
        parts.append(f"({series} == 1) * {i}")
    return agg("max", by, " or ".join(parts))


def _ratio(num: str, den: str) -> str:
    return f"{num} / {den}"


def overview_panels(q: Selector) -> list[PanelSpec]:
    """The overview dashboard: every target at once."""
    calls = q.rate(sc.CALLS, RATE)
    not_closed = f'{sc.ATTR_STATE}=~"{p.regex(p.NOT_CLOSED_STATES)}"'
    return [
        _row("At a glance"),
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
                    f"count({agg('max', _TK, q(sc.CIRCUIT_STATE, not_closed))} == 1) or vector(0)",
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
                    agg("sum", (), q.rate(sc.CALLS, RATE, _outcome(("fallback",))))
                    + " or vector(0)",
                    "fallbacks/s",
                ),
            ),
            unit="reqps",
            width=4,
            height=4,
        ),
        _row("Circuit breakers"),
        PanelSpec(
            "statetimeline",
            "Breaker state",
            "State of every circuit breaker over time: closed (green), open (red), half-open "
            "(yellow), forced open (dark red), disabled (grey).",
            (Query(_breaker_state(q, _TK), "{{target}}"),),
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
        _row("Calls"),
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
        _row("Retries"),
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
                    _ratio(
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
            "vetoed).",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_EXHAUSTED_REASON), q.rate(sc.RETRIES_EXHAUSTED, RATE)),
                    "{{target}} {{reason}}",
                ),
            ),
            unit="ops",
            width=8,
        ),
        _row("Rejections and timeouts"),
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
        _row("Bulkheads and rate limits"),
        PanelSpec(
            "timeseries",
            "Bulkhead utilisation",
            "Slots in use over the concurrency limit, per target; 100 % means new calls queue.",
            (
                Query(
                    _ratio(
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
        _row("Cache and observe mode"),
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
        _row("Worst targets"),
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
                    _ratio(
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


def target_panels(q: Selector) -> list[PanelSpec]:
    """The per-target drill-down: everything about ``$target`` (of kind ``$kind``)."""
    tm_ = (f'{_T}="$target"', f'{_K}=~"$kind"')
    calls = q.rate(sc.CALLS, RATE, *tm_)
    tq = Selector(", ".join(m for m in (q.matchers, *tm_) if m))
    return [
        _row("$target"),
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
                    _ratio(agg("sum", (), tq.rate(sc.RETRIES, RATE)), agg("sum", (), calls))
                    + " or vector(0)",
                    "retries/call",
                ),
            ),
            unit="percentunit",
            width=6,
            height=4,
            runbook="buttressretrystorm",
        ),
        _row("Calls and latency"),
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
        _row("Circuit breaker"),
        PanelSpec(
            "statetimeline",
            "Breaker state",
            "The breaker's state over time.",
            (Query(_breaker_state(q, (_T,), *tm_), "{{target}}"),),
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
        _row("Retries"),
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
        _row("Rejections, timeouts and fallbacks"),
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
        _row("Bulkhead, rate limit and cache"),
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


def llm_panels(q: Selector) -> list[PanelSpec]:
    """The LLM view: per provider/model target of kind ``llm``."""
    lm = (f'{_K}="llm"', f'{_T}=~"$target"')
    calls = q.rate(sc.CALLS, RATE, *lm)
    lq = Selector(", ".join(m for m in (q.matchers, *lm) if m))
    return [
        _row("LLM providers and models"),
        PanelSpec(
            "timeseries",
            "Calls by model and outcome",
            "Logical LLM calls per second, by target (provider/model) and outcome.",
            (Query(agg("sum", (_T, sc.ATTR_OUTCOME), calls), "{{target}} {{outcome}}"),),
            unit="reqps",
        ),
        PanelSpec(
            "timeseries",
            "p95 latency by model",
            "95th percentile of whole-call duration, retries and waits included.",
            (Query(p.quantile(lq, 0.95, sc.CALL_DURATION, (_T,), RATE), "{{target}}"),),
            unit="s",
        ),
        _row("Rate limiting (429s)"),
        PanelSpec(
            "timeseries",
            "429s: retries on rate-limit errors",
            "Retries caused by the provider's rate limiting (RateLimitError, 429 responses), "
            "per target and error type.",
            (
                Query(
                    agg(
                        "sum",
                        (_T, "error_type"),
                        lq.rate(sc.RETRIES, RATE, f'error_type=~"{LLM_RATE_LIMIT_ERRORS}"'),
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
            "Retries by error type",
            "Every retry of LLM calls by error type, for context.",
            (
                Query(
                    agg("sum", (_T, "error_type"), lq.rate(sc.RETRIES, RATE)),
                    "{{target}} {{error_type}}",
                ),
            ),
            unit="ops",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Rejections by reason",
            "LLM calls refused before they started: rate_limited is our own client-side limit.",
            (
                Query(
                    agg("sum", (_T, sc.ATTR_REASON), lq.rate(sc.REJECTIONS, RATE)),
                    "{{target}} {{reason}}",
                ),
            ),
            unit="ops",
            width=8,
            runbook="buttressrejectionshigh",
        ),
        PanelSpec(
            "timeseries",
            "Waits asked by servers (p95)",
            "95th percentile of the Retry-After style delays the provider asked for (capped).",
            (
                Query(
                    p.quantile(
                        Selector(", ".join(m for m in (lq.matchers, f'{sc.ATTR_SOURCE}="server"'))),
                        0.95,
                        sc.RETRY_DELAY,
                        (_T,),
                        RATE,
                    ),
                    "{{target}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Time spent waiting for servers",
            "Seconds per second spent in server-asked retry delays (sampled histogram sum).",
            (
                Query(
                    agg(
                        "sum",
                        (_T,),
                        lq.rate(sc.RETRY_DELAY, RATE, f'{sc.ATTR_SOURCE}="server"', suffix="_sum"),
                    ),
                    "{{target}}",
                ),
            ),
            unit="s",
            width=8,
        ),
        PanelSpec(
            "timeseries",
            "Client-side rate-limit wait p95",
            "95th percentile of the time calls waited for one of our own rate-limit tokens.",
            (Query(p.quantile(lq, 0.95, sc.RATE_LIMIT_WAIT, (_T,), RATE), "{{target}}"),),
            unit="s",
            width=8,
        ),
        _row("Fallbacks and tokens"),
        PanelSpec(
            "timeseries",
            "Fallbacks",
            "Calls answered by the fallback (another model, a canned answer), by target and the "
            "error it replaced.",
            (
                Query(
                    agg("sum", (_T,), q.rate(sc.CALLS, RATE, *lm, _outcome(("fallback",)))),
                    "{{target}} answered by fallback",
                ),
                Query(
                    agg("sum", (_T, "error_type"), lq.rate(sc.FALLBACKS, RATE)),
                    "{{target}} replaced {{error_type}}",
                ),
            ),
            unit="ops",
            width=16,
        ),
        PanelSpec(
            "text",
            "Tokens",
            content=(
                "**Tokens: not recorded yet.** buttress does not emit a token metric "
                "(see `docs/telemetry.md`); use the `gen_ai.client.token.usage` histogram of "
                "an OpenTelemetry GenAI instrumentation if you have one."
            ),
            width=8,
        ),
    ]


def dashboards(
    *,
    datasource: str = DEFAULT_DATASOURCE,
    selector: str = "",
    runbook_url: str = DEFAULT_RUNBOOK_URL,
) -> dict[str, dict[str, Any]]:
    """
    Every dashboard, by file name.

    Args:
        datasource: Default Prometheus data source uid (the ``datasource`` variable can change it).
        selector: Extra label matchers for every metric, e.g. ``job="checkout"``.
        runbook_url: URL of docs/runbooks.md; panels link to its anchors.

    Returns:
        ``{"buttress-overview.json": {...}, ...}``: plain, JSON-serialisable dicts.

    .. versionadded:: 0.1.0
    """
    q = Selector(selector)
    ctx = _Context(datasource=_ds(), runbook_url=runbook_url)
    calls_sel = q(sc.CALLS)
    kind_calls = q(sc.CALLS, _K + '=~"$kind"')
    llm_calls = q(sc.CALLS, _K + '="llm"')
    kinds = _query_variable("kind", "Kind", f"label_values({calls_sel}, {_K})", include_all=True)
    targets = _query_variable(
        "target", "Target", f"label_values({kind_calls}, {_T})", include_all=False
    )
    llm_targets = _query_variable(
        "target", "Model", f"label_values({llm_calls}, {_T})", include_all=True
    )
    return {
        "buttress-overview.json": _dashboard(
            "buttress-overview",
            "buttress / Overview",
            "Every protected target: rates, errors, latency, breakers, retries, rejections, "
            "bulkheads. Generated by `buttress dashboards`; do not edit by hand.",
            overview_panels(q),
            (),
            ctx,
            datasource,
        ),
        "buttress-target.json": _dashboard(
            "buttress-target",
            "buttress / Target",
            "One target in detail; pick it with the kind and target variables. Generated by "
            "`buttress dashboards`.",
            target_panels(q),
            (kinds, targets),
            ctx,
            datasource,
        ),
        "buttress-llm.json": _dashboard(
            "buttress-llm",
            "buttress / LLM providers",
            "LLM targets (kind=llm): 429s, server-asked waits, fallbacks. Generated by "
            "`buttress dashboards`.",
            llm_panels(q),
            (llm_targets,),
            ctx,
            datasource,
        ),
    }


def render(board: dict[str, Any]) -> str:
    """*board* as the committed file text: sorted keys, two-space indent, final newline."""
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
