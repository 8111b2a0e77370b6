"""Generate the provisioned dashboards in grafana/dashboards/ from code.

    services/.venv/bin/python grafana/generate_dashboards.py          # write the JSON files
    services/.venv/bin/python grafana/generate_dashboards.py --check  # exit 1 if they differ

Why generated: the panels are built with the typed builders of grafana-foundation-sdk, Grafana's
own SDK for the dashboard model (a build made from Grafana's main branch after 12.3, the version
in .env), so mypy checks every option, enum and unit against that model, and the JSON is what the
SDK serialises. The JSON is committed because Grafana reads files; tests/test_grafana.py fails
when it drifts from this generator, round-trips each file through the SDK's model, and runs every
PromQL target against real data.

Data sources are referenced by the fixed uids of grafana/provisioning/datasources/datasources.yaml.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, logs, nodegraph, table, tempo, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common

from panel_kit import (
    COLLECTOR,
    LOKI,
    PROMETHEUS,
    RATE,
    TEMPO,
    Grid,
    base,
    legend_list,
    legend_table,
    logql,
    merge_columns,
    multi_variable,
    promql,
    series,
    single,
    thresholds,
    tooltip_all,
)

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"


# ---------------------------------------------------------------------- FastAPI Observability


def fastapi_observability() -> builders.Dashboard:
    """Every panel of the reference dashboard (grafana.com 16110), its bugs fixed: counters go
    through increase()/rate() (raw counters drop at every restart), "PR 99" becomes a p99 title,
    data sources are the provisioned uids, the app filter is multi-select."""
    grid = Grid()
    app = 'app_name=~"$app_name"'
    requests = f"fastapi_requests_total{{{app}}}"
    responses = f"fastapi_responses_total{{{app}}}"
    buckets = f"fastapi_requests_duration_seconds_bucket{{{app}}}"
    logs_otlp = '{service_name=~"$app_name", log_source!="docker_driver"}'

    def share_of(status: str) -> str:
        # Share of responses with this status class over the range; `or ... * 0` gives 0 instead
        # of no data for an app that answered none.
        part = f'sum by (app_name) (increase(fastapi_responses_total{{{app}, status_code=~"{status}"}}[$__range]))'
        whole = f"sum by (app_name) (increase({responses}[$__range]))"
        return f"({part} or {whole} * 0) / {whole}"

    dash = base(
        "fastapi-observability",
        "FastAPI Observability",
        "The three FastAPI apps: requests, responses, latency with exemplars (click one for its "
        "trace in Tempo or Jaeger), exceptions and logs. Metrics scraped from each app's /metrics.",
    ).with_variable(multi_variable("app_name", "App", "label_values(fastapi_app_info, app_name)"))

    dash = dash.with_row(grid.row("Requests"))
    dash = dash.with_panel(
        single(grid, "Total requests", "Requests served in the selected time range.")
        .with_target(promql(f"sum(increase({requests}[$__range]))", "requests", instant=True))
        .decimals(0)
    )
    dash = dash.with_panel(
        single(grid, "Requests per second", "Current request rate, all selected apps.", unit="reqps")
        .with_target(promql(f"sum(rate({requests}[{RATE}]))", "req/s"))
        .graph_mode(common.BigValueGraphMode.AREA)
    )
    dash = dash.with_panel(
        single(grid, "Percent of 2xx responses", "Share of 2xx responses in the range, per app.", unit="percentunit")
        .with_target(promql(share_of("2.."), "{{app_name}}", instant=True))
        .thresholds(thresholds((None, "red"), (0.9, "orange"), (0.99, "green")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
    )
    dash = dash.with_panel(
        single(grid, "Percent of 5xx responses", "Share of 5xx responses in the range, per app.", unit="percentunit")
        .with_target(promql(share_of("5.."), "{{app_name}}", instant=True))
        .thresholds(thresholds((None, "green"), (0.01, "orange"), (0.05, "red")))
        .color_mode(common.BigValueColorMode.BACKGROUND)
    )
    dash = dash.with_panel(
        bargauge.Panel()
        .id(grid.next_id())
        .title("Requests per path")
        .description("Requests per route template in the selected range (the reference 'Requests Count').")
        .datasource(PROMETHEUS)
        .grid_pos(grid.place(8, 9))
        .unit("short")
        .decimals(0)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(promql(f"sort_desc(sum by (path) (increase({requests}[$__range])))", "{{path}}", instant=True))
    )
    dash = dash.with_panel(
        series(
            grid, "Requests per second by path", "Request rate per app and route template.", w=16, h=9, unit="reqps"
        ).with_target(promql(f"sum by (app_name, path) (rate({requests}[{RATE}]))", "{{app_name}} {{path}}"))
    )
    dash = dash.with_panel(
        series(
            grid, "Responses per second by status code", "Response rate per HTTP status code.", unit="reqps"
        ).with_target(promql(f"sum by (status_code) (rate({responses}[{RATE}]))", "{{status_code}}"))
    )
    dash = dash.with_panel(
        series(grid, "Requests in progress", "Requests being served right now, per app and path.")
        .with_target(
            promql(f"sum by (app_name, path) (fastapi_requests_in_progress{{{app}}})", "{{app_name}} {{path}}")
        )
        .decimals(0)
    )

    dash = dash.with_row(grid.row("Latency (exemplars link to the trace in Tempo and Jaeger)"))
    for quantile, label in ((0.99, "p99"), (0.90, "p90")):
        dash = dash.with_panel(
            series(
                grid,
                f"Request duration {label} by path",
                f"{label} of the request duration per route template. The dots are exemplars: "
                "requests that were traced; click one for its trace.",
                unit="s",
            ).with_target(
                promql(
                    f"histogram_quantile({quantile}, sum by (le, path) (rate({buckets}[{RATE}])))",
                    "{{path}}",
                    exemplar=True,
                )
            )
        )
    dash = dash.with_panel(
        series(grid, "Average request duration by path", "Mean duration per route template.", unit="s").with_target(
            promql(
                f"sum by (path) (rate(fastapi_requests_duration_seconds_sum{{{app}}}[{RATE}]))"
                f" / sum by (path) (rate(fastapi_requests_duration_seconds_count{{{app}}}[{RATE}]))",
                "{{path}}",
            )
        )
    )
    dash = dash.with_panel(
        series(
            grid,
            "Server duration p95 (OpenTelemetry SDK, OTLP)",
            "The same requests measured by the OpenTelemetry SDK (stable HTTP semantic conventions: "
            "http.server.request.duration) and pushed through the Collector to Prometheus, which "
            "promotes service.name to service_name; its exemplars come over OTLP.",
            unit="s",
        ).with_target(
            promql(
                "histogram_quantile(0.95, sum by (le, http_route) "
                f'(rate(http_server_request_duration_seconds_bucket{{service_name=~"$app_name"}}[{RATE}])))',
                "{{http_route}}",
                exemplar=True,
            )
        )
    )

    dash = dash.with_row(grid.row("Errors"))
    dash = dash.with_panel(
        series(grid, "Exceptions per second by type", "Unhandled exceptions per app and exception type.", w=24)
        .with_target(
            promql(
                f"sum by (app_name, exception_type) (rate(fastapi_exceptions_total{{{app}}}[{RATE}]))",
                "{{app_name}} {{exception_type}}",
            )
        )
        .unit("ops")
    )

    dash = dash.with_row(grid.row("Logs (OTLP records through the Collector; trace_id links to the trace)"))
    dash = dash.with_panel(
        timeseries.Panel()
        .id(grid.next_id())
        .title("Log lines per second by level")
        .description("Log records per app and severity, from Loki (the OTLP path).")
        .datasource(LOKI)
        .grid_pos(grid.place(24, 7))
        .unit("short")
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
        .legend(legend_list())
        .tooltip(tooltip_all())
        .with_target(
            logql(
                f"sum by (service_name, severity_text) (rate({logs_otlp} [$__auto]))",
                "{{service_name}} {{severity_text}}",
            )
        )
    )
    dash = dash.with_panel(
        logs.Panel()
        .id(grid.next_id())
        .title("Logs")
        .description(
            "Every log record of the selected apps. Open a line: its trace_id field links to the "
            "trace in Tempo and in Jaeger (Loki derived fields)."
        )
        .datasource(LOKI)
        .grid_pos(grid.place(24, 14))
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
        .with_target(logql(logs_otlp))
    )
    return dash


# ---------------------------------------------------------------------------- Pipeline health

SIGNALS = (
    # (title, counter suffix, exporter queue data_type)
    ("Spans", "spans", "traces"),
    ("Metric points", "metric_points", "metrics"),
    ("Log records", "log_records", "logs"),
)


def pipeline_health() -> builders.Dashboard:
    """What the Collector accepted, refused, sent and failed, per signal; its queues and memory."""
    grid = Grid()
    dash = base(
        "pipeline-health",
        "Pipeline health",
        "The OpenTelemetry Collector between the apps and the backends: data accepted and refused "
        "by its OTLP receiver, sent and failed by each backend exporter, queues and memory. "
        "Counters without _total: the Collector's own metrics are named so (job=collector).",
    )
    for title, unit_name, data_type in SIGNALS:
        zero_per_exporter = (
            f'sum by (exporter) (otelcol_exporter_queue_capacity{{{COLLECTOR}, data_type="{data_type}"}}) * 0'
        )
        dash = dash.with_row(grid.row(title))
        dash = dash.with_panel(
            series(
                grid,
                f"{title}: received by the Collector",
                "Accepted: passed on into the pipeline. Refused: rejected by a processor (the "
                "memory_limiter), the sender retries. Failed: could not be handled at all.",
                unit="cps",
            )
            .with_target(
                promql(
                    f"sum by (transport) (rate(otelcol_receiver_accepted_{unit_name}{{{COLLECTOR}}}[{RATE}]))",
                    "accepted ({{transport}})",
                )
            )
            .with_target(
                promql(f"sum(rate(otelcol_receiver_refused_{unit_name}{{{COLLECTOR}}}[{RATE}]))", "refused", "B")
            )
            .with_target(
                promql(f"sum(rate(otelcol_receiver_failed_{unit_name}{{{COLLECTOR}}}[{RATE}]))", "failed", "C")
            )
        )
        dash = dash.with_panel(
            series(
                grid,
                f"{title}: sent to each backend",
                "Sent: accepted by the backend. Send failed: dropped after the retries ran out. "
                "Enqueue failed: the sending queue was full.",
                unit="cps",
            )
            .with_target(
                promql(
                    f"sum by (exporter) (rate(otelcol_exporter_sent_{unit_name}{{{COLLECTOR}}}[{RATE}]))",
                    "sent {{exporter}}",
                )
            )
            .with_target(
                promql(
                    f"sum by (exporter) (rate(otelcol_exporter_send_failed_{unit_name}{{{COLLECTOR}}}[{RATE}])) or {zero_per_exporter}",
                    "send failed {{exporter}}",
                    "B",
                )
            )
            .with_target(
                promql(
                    f"sum by (exporter) (rate(otelcol_exporter_enqueue_failed_{unit_name}{{{COLLECTOR}}}[{RATE}])) or {zero_per_exporter}",
                    "enqueue failed {{exporter}}",
                    "C",
                )
            )
        )

    dash = dash.with_row(grid.row("Queues and resources"))
    dash = dash.with_panel(
        series(
            grid,
            "Sending queue size against capacity",
            "Items waiting in each exporter's persistent queue (file_storage), and the capacity at "
            "which new data is refused.",
            w=12,
        )
        .with_target(promql(f"max by (exporter) (otelcol_exporter_queue_size{{{COLLECTOR}}})", "size {{exporter}}"))
        .with_target(
            promql(f"max by (exporter) (otelcol_exporter_queue_capacity{{{COLLECTOR}}})", "capacity {{exporter}}", "B")
        )
        .legend(legend_table("lastNotNull", "max"))
    )
    dash = dash.with_panel(
        series(grid, "Sending queue fill", "Queue size as a share of capacity, per exporter.", w=12, unit="percentunit")
        .with_target(
            promql(
                f"max by (exporter) (otelcol_exporter_queue_size{{{COLLECTOR}}} / otelcol_exporter_queue_capacity{{{COLLECTOR}}})",
                "{{exporter}}",
            )
        )
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "green"), (0.5, "orange"), (0.8, "red")))
    )
    dash = dash.with_panel(
        series(
            grid,
            "Collector memory",
            "Resident memory and Go heap. The memory_limiter refuses data at 400 MiB by default "
            "(COLLECTOR_MEMORY_LIMIT_MIB); compose limits the container to 512 MiB.",
            unit="bytes",
        )
        .with_target(promql(f"otelcol_process_memory_rss{{{COLLECTOR}}}", "RSS"))
        .with_target(promql(f"otelcol_process_runtime_heap_alloc_bytes{{{COLLECTOR}}}", "heap", "B"))
        .thresholds(thresholds((None, "green"), (400 * 1024 * 1024, "red")))
    )
    dash = dash.with_panel(
        series(grid, "Collector CPU", "CPU time used per second (1 = one core).", unit="percentunit").with_target(
            promql(f"rate(otelcol_process_cpu_seconds{{{COLLECTOR}}}[{RATE}])", "CPU")
        )
    )

    dash = dash.with_row(grid.row("Errors per backend exporter"))

    def all_signals(kind: str) -> str:
        parts = [
            f"sum by (exporter) (rate(otelcol_exporter_{kind}_{name}{{{COLLECTOR}}}[{RATE}]))" for _, name, _ in SIGNALS
        ]
        zero = f"sum by (exporter) (otelcol_exporter_queue_capacity{{{COLLECTOR}}}) * 0"
        return " or ".join([*parts, zero])

    dash = dash.with_panel(
        series(
            grid,
            "Export errors per backend",
            "Items per second each backend exporter dropped after its retries (send failed) or "
            "could not queue (enqueue failed), all signals. Zero is a healthy pipeline.",
            w=24,
            unit="cps",
        )
        .with_target(promql(all_signals("send_failed"), "send failed {{exporter}}"))
        .with_target(promql(all_signals("enqueue_failed"), "enqueue failed {{exporter}}", "B"))
        .legend(legend_table("lastNotNull", "max"))
    )
    return dash


# ------------------------------------------------------------------- RED and service graph


def red_service_graph() -> builders.Dashboard:
    """Rate, errors, duration from the Collector's span metrics; the service graph from its
    service_graph connector."""
    grid = Grid()
    selector = 'service_name=~"$service", span_kind=~"$span_kind"'
    calls = f"traces_span_metrics_calls_total{{{selector}}}"
    errors = f'traces_span_metrics_calls_total{{{selector}, status_code="STATUS_CODE_ERROR"}}'
    duration = f"traces_span_metrics_duration_milliseconds_bucket{{{selector}}}"
    by = "service_name, span_name"

    def error_ratio(window: str) -> str:
        whole = f"sum by ({by}) (rate({calls}[{window}]))"
        return f"(sum by ({by}) (rate({errors}[{window}])) or {whole} * 0) / {whole}"

    dash = (
        base(
            "red-service-graph",
            "RED and service graph",
            "Rate, errors and duration of every span, from the Collector's span_metrics connector, "
            "and the calls between services from its service_graph connector.",
        )
        .with_variable(
            multi_variable("service", "Service", "label_values(traces_span_metrics_calls_total, service_name)")
        )
        .with_variable(
            multi_variable(
                "span_kind",
                "Span kind",
                'label_values(traces_span_metrics_calls_total{service_name=~"$service"}, span_kind)',
            )
        )
    )

    dash = dash.with_row(grid.row("Rate, errors, duration per service and span name"))
    dash = dash.with_panel(
        series(grid, "Rate", "Spans per second, per service and span name.", w=8, unit="reqps").with_target(
            promql(f"sum by ({by}) (rate({calls}[{RATE}]))", "{{service_name}} {{span_name}}")
        )
    )
    dash = dash.with_panel(
        series(grid, "Errors", "Share of spans with status ERROR.", w=8, unit="percentunit")
        .with_target(promql(error_ratio(RATE), "{{service_name}} {{span_name}}"))
        .min(0)
    )
    dash = dash.with_panel(
        series(grid, "Duration p95", "p95 span duration; exemplars link to traces.", w=8, unit="ms").with_target(
            promql(
                f"histogram_quantile(0.95, sum by (le, {by}) (rate({duration}[{RATE}])))",
                "{{service_name}} {{span_name}}",
                exemplar=True,
            )
        )
    )
    dash = dash.with_panel(
        table.Panel()
        .id(grid.next_id())
        .title("RED summary over the range")
        .description("Per service and span name, over the selected time range.")
        .datasource(PROMETHEUS)
        .grid_pos(grid.place(24, 10))
        .with_target(promql(f"sum by ({by}) (rate({calls}[$__range]))", ref="A", instant=True))
        .with_target(promql(error_ratio("$__range"), ref="B", instant=True))
        .with_target(
            promql(f"histogram_quantile(0.95, sum by (le, {by}) (rate({duration}[$__range])))", ref="C", instant=True)
        )
        .transformations(merge_columns({"Value #A": "Rate (/s)", "Value #B": "Error ratio", "Value #C": "p95 (ms)"}))
    )

    dash = dash.with_row(grid.row("Service graph"))
    edge = 'server=~"$service"'
    dash = dash.with_panel(
        nodegraph.Panel()
        .id(grid.next_id())
        .title("Service graph")
        .description(
            "Services and the calls between them (traces_service_graph_* in Prometheus, drawn by "
            "the Tempo data source's service map). 'user' stands for callers outside the traces."
        )
        .datasource(TEMPO)
        .grid_pos(grid.place(12, 14))
        .with_target(tempo.TempoQuery().ref_id("A").datasource(TEMPO).query_type("serviceMap"))
    )
    dash = dash.with_panel(
        table.Panel()
        .id(grid.next_id())
        .title("Calls between services")
        .description("Each client -> server edge over the selected range.")
        .datasource(PROMETHEUS)
        .grid_pos(grid.place(12, 14))
        .with_target(
            promql(
                f"sum by (client, server) (increase(traces_service_graph_request_total{{{edge}}}[$__range]))",
                ref="A",
                instant=True,
            )
        )
        .with_target(
            promql(
                f"sum by (client, server) (increase(traces_service_graph_request_failed_total{{{edge}}}[$__range]))"
                f" or sum by (client, server) (increase(traces_service_graph_request_total{{{edge}}}[$__range])) * 0",
                ref="B",
                instant=True,
            )
        )
        .with_target(
            promql(
                "histogram_quantile(0.9, sum by (client, server, le) "
                f"(rate(traces_service_graph_request_server_seconds_bucket{{{edge}}}[$__range])))",
                ref="C",
                instant=True,
            )
        )
        .transformations(merge_columns({"Value #A": "Requests", "Value #B": "Failed", "Value #C": "Server p90 (s)"}))
    )
    dash = dash.with_panel(
        series(
            grid, "Calls per second between services", "Request rate of each client -> server edge.", w=24, unit="reqps"
        ).with_target(
            promql(
                f"sum by (client, server) (rate(traces_service_graph_request_total{{{edge}}}[{RATE}]))",
                "{{client}} -> {{server}}",
            )
        )
    )
    return dash


# ------------------------------------------------------------------------------------- main

DASHBOARDS = {
    "fastapi-observability.json": fastapi_observability,
    "pipeline-health.json": pipeline_health,
    "red-service-graph.json": red_service_graph,
}


def render() -> dict[str, str]:
    """File name -> JSON text, as committed."""
    rendered = {}
    for name, make in DASHBOARDS.items():
        data: Any = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        rendered[name] = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return rendered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = DASHBOARDS_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run grafana/generate_dashboards.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
