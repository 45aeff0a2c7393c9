"""
The grafana-foundation-sdk side of the dashboards: panel specs in, classic dashboard JSON out.

:class:`~._panel_spec.PanelSpec` values are laid out left to right, top to bottom, with explicit
ids; every series has an explicit legend and every panel links to its runbook anchor. This is the
only module that imports the SDK, so the panel catalogues stay plain data.
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
from ._panel_spec import PanelSpec, Query

_DS_VAR = "datasource"
_STATE_COLOURS = {
    "closed": "green",
    "open": "red",
    "half_open": "yellow",
    "forced_open": "dark-red",
    "disabled": "text",
}


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
class Context:
    """What every panel of one generation run shares: the data source and the runbook URL."""

    datasource: dm.DataSourceRef
    runbook_url: str


def _target(query: Query, ref: str) -> pb.Dataquery:
    built = (
        pb.Dataquery()
        .expr(query.expr)
        .legend_format(query.legend)
        .ref_id(ref)
        .datasource(datasource_ref())
    )
    if query.instant:
        return built.instant().format(pm.PromQueryFormat.TABLE)
    return built.range()


def datasource_ref() -> dm.DataSourceRef:
    """The data source every query uses: the ``datasource`` variable."""
    return dm.DataSourceRef(type_val="prometheus", uid=f"${{{_DS_VAR}}}")


def _runbook_link(ctx: Context, anchor: str) -> list[db.DashboardLink]:
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


def _build_panel(spec: PanelSpec, pid: int, pos: dm.GridPos, ctx: Context) -> Any:
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
        builder = builder.datasource(datasource_ref()).targets(targets).unit(spec.unit)
    return builder


def _state_mapping() -> dm.ValueMap:
    return dm.ValueMap(
        options={
            str(i): dm.ValueMappingResult(text=state, color=_STATE_COLOURS[state], index=i)
            for i, state in enumerate(sc.CIRCUIT_STATES)
        }
    )


def dashboard(
    uid: str,
    title: str,
    description: str,
    specs: Sequence[PanelSpec],
    variables: Sequence[db.QueryVariable],
    ctx: Context,
    datasource: str,
) -> dict[str, Any]:
    """One dashboard as a plain dict: the variables, the links and *specs* laid out in order."""
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


def query_variable(name: str, label: str, query: str, *, include_all: bool) -> db.QueryVariable:
    """A dashboard variable filled from *query*; *include_all* adds "All" and multi-select."""
    variable = (
        db.QueryVariable(name)
        .label(label)
        .datasource(datasource_ref())
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
