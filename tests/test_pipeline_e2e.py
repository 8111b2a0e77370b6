"""The pipeline end to end: every signal of the three apps flows through the real Collector to
the real backends, counted from the requests made, with nothing lost, refused or duplicated.

Runs on the native stack (native/nativestack): the Collector built from collector/manifest.yaml with
collector/config.yaml, Jaeger v2, a second Jaeger standing in for Tempo, a Collector standing in
for Loki's OTLP endpoint, Prometheus 3 with backends/prometheus.yml, and the three apps. The
shape of each /chain trace is tests/test_services_e2e.py's subject.
"""

import contextlib
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.clients import JaegerAPI, PrometheusAPI, Span, otlp_log_records
from helpers.traffic import Traffic
from helpers.waiting import wait_for_count
from nativestack.apps import APP_NAMES, start_app
from nativestack.processes import wait_until
from nativestack.scrape import metric_total, scrape
from nativestack.stack import Stack

SLOW = 90  # seconds: span metrics flush every 15 s, scrapes every 5 s, SDK metrics every 5 s


def _stored_spans(api: JaegerAPI, expected: int) -> dict[str, Span]:
    return wait_for_count(lambda: api.all_spans(list(APP_NAMES)), expected, "spans", timeout=SLOW)


def test_no_span_lost(stack: Stack, traffic: Traffic, jaeger: JaegerAPI, tempo: JaegerAPI) -> None:
    # The round's spans, counted from the requests made, are all stored, once, in both backends.
    expected = traffic.expected_spans()
    in_jaeger = _stored_spans(jaeger, expected)
    in_tempo = _stored_spans(tempo, expected)
    assert len(in_jaeger) == expected
    assert set(in_tempo) == set(in_jaeger)  # the same spans, no duplicates (ids are keys)

    # Everything the Collector accepted in this session (other tests' app instances included)
    # was sent to both exporters and stored by both backends.
    def totals() -> tuple[float, float, float, int, int]:
        collector = scrape(stack.collector.metrics_url)
        return (
            metric_total(collector, "otelcol_receiver_accepted_spans_total"),
            metric_total(collector, "otelcol_exporter_sent_spans_total", exporter="otlp_grpc/jaeger"),
            metric_total(collector, "otelcol_exporter_sent_spans_total", exporter="otlp_grpc/tempo"),
            len(jaeger.all_spans(jaeger.services())),
            len(tempo.all_spans(tempo.services())),
        )

    def settled() -> tuple[float, float, float, int, int] | None:
        now = totals()
        return now if len(set(now)) == 1 else None

    assert wait_until(settled, "accepted = sent = stored", timeout=SLOW)[0] >= expected


def test_collector_refused_and_failed_nothing(stack: Stack, traffic: Traffic, jaeger: JaegerAPI) -> None:
    _stored_spans(jaeger, traffic.expected_spans())
    collector = scrape(stack.collector.metrics_url)
    for name in (
        "otelcol_receiver_refused_spans_total",
        "otelcol_receiver_refused_metric_points_total",
        "otelcol_receiver_refused_log_records_total",
        "otelcol_exporter_send_failed_spans_total",
        "otelcol_exporter_send_failed_metric_points_total",
        "otelcol_exporter_send_failed_log_records_total",
        "otelcol_exporter_enqueue_failed_spans_total",
    ):
        assert metric_total(collector, name) == 0, name
    assert metric_total(collector, "otelcol_receiver_accepted_metric_points_total") > 0
    assert metric_total(collector, "otelcol_receiver_accepted_log_records_total") > 0


def _series(prometheus: PrometheusAPI, promql: str) -> list[dict[str, Any]]:
    return wait_until(lambda: prometheus.query(promql), f"series for {promql}", timeout=SLOW)


def _services(prometheus: PrometheusAPI, promql: str) -> set[str]:
    """The services with a series for `promql`, once every app has one (each app exports on its
    own schedule: the first series to arrive is not all of them); fewer after SLOW fails below."""

    def services() -> set[str]:
        return {s["metric"]["service_name"] for s in prometheus.query(promql)}

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: services() >= set(APP_NAMES), f"every app's series for {promql}", timeout=SLOW)
    return services()


@pytest.mark.parametrize("app", APP_NAMES)
def test_prometheus_scraped_app_metrics(app: str, traffic: Traffic, prometheus: PrometheusAPI) -> None:
    series = _series(prometheus, f'fastapi_requests_total{{app_name="{app}", path="/chain"}}')
    assert {s["metric"]["job"] for s in series} == {app}


def test_prometheus_received_sdk_metrics_over_otlp(traffic: Traffic, prometheus: PrometheusAPI) -> None:
    assert _services(prometheus, 'http_server_request_duration_seconds_count{http_route="/chain"}') == set(APP_NAMES)


def test_prometheus_received_span_and_service_graph_metrics(traffic: Traffic, prometheus: PrometheusAPI) -> None:
    calls = 'traces_span_metrics_calls_total{span_name="GET /chain", span_kind="SPAN_KIND_SERVER"}'
    assert _services(prometheus, calls) == set(APP_NAMES)
    _series(prometheus, 'traces_span_metrics_duration_milliseconds_bucket{service_name="app-c"}')
    edges = _series(prometheus, "traces_service_graph_request_total")
    assert {(s["metric"]["client"], s["metric"]["server"]) for s in edges} >= {("app-a", "app-b"), ("app-a", "app-c")}


@pytest.mark.parametrize(
    "promql",
    [
        'fastapi_requests_duration_seconds_bucket{app_name="app-b"}',  # scraped (OpenMetrics)
        'http_server_request_duration_seconds_bucket{service_name="app-b"}',  # SDK over OTLP
        'traces_span_metrics_duration_milliseconds_bucket{service_name="app-b"}',  # connector
    ],
)
def test_exemplars_point_at_traces_in_jaeger(
    promql: str, traffic: Traffic, prometheus: PrometheusAPI, jaeger: JaegerAPI
) -> None:
    groups = wait_until(lambda: prometheus.exemplars(promql), f"exemplars of {promql}", timeout=SLOW)
    trace_ids = {e["labels"]["trace_id"] for group in groups for e in group["exemplars"]}
    assert trace_ids
    for trace_id in sorted(trace_ids)[:5]:
        assert wait_until(partial(jaeger.trace, trace_id), f"trace {trace_id} in Jaeger", timeout=SLOW)


def test_logs_with_trace_ids_reach_loki_standin(stack: Stack, traffic: Traffic, jaeger: JaegerAPI) -> None:
    def chain_logs() -> list[dict[str, Any]]:
        records = otlp_log_records(stack.loki.records_file)
        return [r for r in records if r.get("traceId") and r["service"] == "app-a"]

    records = wait_until(chain_logs, "app-a log records with trace ids at the Loki stand-in", timeout=SLOW)
    services = {r["service"] for r in otlp_log_records(stack.loki.records_file)}
    assert services >= {"app-a"}
    assert wait_until(lambda: jaeger.trace(records[0]["traceId"]), "the log's trace in Jaeger", timeout=SLOW)


def test_prometheus_scrapes_collector_and_jaeger(stack: Stack, traffic: Traffic, prometheus: PrometheusAPI) -> None:
    def every_target_up() -> dict[str, str] | None:
        health = prometheus.target_health()
        return health if len(health) >= 6 and set(health.values()) == {"up"} else None

    health = wait_until(every_target_up, "every native scrape target up", timeout=SLOW)
    assert set(health) == {*APP_NAMES, "collector", "jaeger", "prometheus"}
    assert sorted(stack.prometheus.dropped_jobs) == ["alertmanager", "grafana", "loki", "tempo"]


def test_spans_of_all_three_services_stored(traffic: Traffic, jaeger: JaegerAPI) -> None:
    spans = _stored_spans(jaeger, traffic.expected_spans())
    assert {span.service for span in spans.values()} == set(APP_NAMES)


def test_jaeger_monitor_tab_reads_span_metrics_from_prometheus(stack: Stack, jaeger: JaegerAPI, tmp_path: Path) -> None:
    """Jaeger's Monitor tab (SPM) queries the span_metrics connector's series in Prometheus. It
    shows rates over the last 10 minutes, and the session's traffic may be older than that by the
    time this runs: an app-a of its own service name gets fresh requests (the session's apps'
    span counts stay the other tests' to check)."""
    service = "monitor-probe"
    app = start_app(
        stack.spec, "app-a", tmp_path, stack.app_addresses(), name=service, overrides={"OTEL_SERVICE_NAME": service}
    )
    try:
        for _ in range(5):
            httpx.get(f"{app.url}/", timeout=10).raise_for_status()
        assert wait_until(
            lambda: jaeger.call_rates(service), f"a call rate for {service} in Jaeger's Monitor API", timeout=SLOW
        )
    finally:
        app.process.stop(timeout=40)
