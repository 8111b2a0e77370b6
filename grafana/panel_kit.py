"""The building blocks of grafana/generate_dashboards.py: the provisioned data sources, a grid
that lays panels out, and the query, legend, threshold and panel helpers every dashboard uses."""

from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import loki, stat, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

PROMETHEUS = common.DataSourceRef(type_val="prometheus", uid="prometheus")
LOKI = common.DataSourceRef(type_val="loki", uid="loki")
TEMPO = common.DataSourceRef(type_val="tempo", uid="tempo")

TAG = "fastapi-observability"  # on every dashboard: the dashboard links below list them by it
RATE = "$__rate_interval"
# The Collector's own metrics: Jaeger v2 is a Collector too and exports otelcol_* under job=jaeger.
COLLECTOR = 'job="collector"'


# ---------------------------------------------------------------------------------- helpers


@dataclass
class Grid:
    """Lays panels out left to right on Grafana's 24-column grid and numbers them."""

    x: int = 0
    y: int = 0
    row_height: int = 0
    ids: int = 0

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def place(self, w: int, h: int) -> model.GridPos:
        if self.x + w > 24:
            self.newline()
        pos = model.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def newline(self) -> None:
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> builders.Row:
        self.newline()
        pos = model.GridPos(h=1, w=24, x=0, y=self.y)
        self.y += 1
        return builders.Row(title).id(self.next_id()).grid_pos(pos)


def promql(
    expr: str, legend: str = "__auto", ref: str = "A", *, exemplar: bool = False, instant: bool = False
) -> prom.Dataquery:
    query = prom.Dataquery().ref_id(ref).datasource(PROMETHEUS).expr(expr).legend_format(legend)
    query = query.editor_mode(QueryEditorMode.CODE).exemplar(exemplar)
    if instant:
        return query.instant().format(PromQueryFormat.TABLE)
    return query.range()


def logql(expr: str, legend: str = "__auto", ref: str = "A") -> loki.Dataquery:
    return loki.Dataquery().ref_id(ref).datasource(LOKI).expr(expr).legend_format(legend)


def legend_list() -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )


def legend_table(*calcs: str) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(list(calcs))
    )


def tooltip_all() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def series(
    grid: Grid, title: str, description: str, *, w: int = 12, h: int = 8, unit: str = "short"
) -> timeseries.Panel:
    return (
        timeseries.Panel()
        .id(grid.next_id())
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .grid_pos(grid.place(w, h))
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(legend_list())
        .tooltip(tooltip_all())
    )


def single(grid: Grid, title: str, description: str, *, w: int = 6, h: int = 5, unit: str = "short") -> stat.Panel:
    return (
        stat.Panel()
        .id(grid.next_id())
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .grid_pos(grid.place(w, h))
        .unit(unit)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
    )


def thresholds(*steps: tuple[float | None, str]) -> builders.ThresholdsConfig:
    return (
        builders.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def merge_columns(renames: dict[str, str]) -> list[model.DataTransformerConfig]:
    """Instant table queries A, B, C... merged into one table, value columns renamed."""
    return [
        model.DataTransformerConfig(id_val="merge", options={}),
        model.DataTransformerConfig(
            id_val="organize",
            options={"excludeByName": {"Time": True}, "renameByName": renames},
        ),
    ]


def dashboard_links() -> builders.DashboardLink:
    return (
        builders.DashboardLink("Dashboards")
        .type(model.DashboardLinkType.DASHBOARDS)
        .tags([TAG])
        .as_dropdown(True)
        .include_vars(False)
        .keep_time(True)
    )


def base(uid: str, title: str, description: str) -> builders.Dashboard:
    return (
        builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time("now-30m", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(dashboard_links())
    )


def multi_variable(name: str, label: str, query: str) -> builders.QueryVariable:
    return (
        builders.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query(query)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
