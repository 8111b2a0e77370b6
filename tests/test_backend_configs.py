"""The Tempo, Loki and Grafana settings compose runs, checked against what those programs do.

Tempo, Loki and Grafana are AGPL and never run here. Each test states the upstream behaviour it
relies on, with the upstream file and key, and checks our files against it; where a figure of our
own is needed (span sizes), it is measured on the native stack.
"""

import re
from typing import Any

import pytest
import yaml

from helpers import grafana as gf
from helpers.traffic import Traffic
from nativestack import compose
from nativestack.paths import REPO, read_env_file
from nativestack.processes import wait_until
from nativestack.scrape import metric_total, scrape
from nativestack.stack import Stack

TEMPO_FILE = REPO / "backends" / "tempo.yaml"
COLLECTOR_FILE = REPO / "collector" / "config.yaml"
BENCHMARKS = REPO / "docs" / "benchmarks.md"
OTEL_ENV = REPO / "services" / "otel.env"
_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_GO_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def tempo() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(TEMPO_FILE.read_text())
    return config


def go_seconds(duration: str) -> float:
    """A Go duration string (`0s`, `1m30s`, `250ms`) in seconds."""
    parts = _GO_DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Go duration: {duration!r}")
    return sum(float(number) * _GO_UNITS[unit] for number, unit in parts)


# ---------------------------------------------------------------- Tempo


def test_tempo_search_finds_a_trace_as_soon_as_it_is_exported() -> None:
    # Tempo 3.0 defaults query_frontend.query_end_cutoff to 30s (CHANGELOG, grafana/tempo PR
    # #7210; modules/frontend/config.go, `QueryEndCutoff ... yaml:"query_end_cutoff"`): the newest
    # 30 s are left out of search and TraceQL metrics, though a trace is found by id at once.
    # otel.env promises traces within a second or two: the SDK exports every
    # OTEL_BSP_SCHEDULE_DELAY ms, and the cutoff may not add more than that.
    cutoff = go_seconds(str(tempo()["query_frontend"]["query_end_cutoff"]))
    export_delay = int(read_env_file(OTEL_ENV)["OTEL_BSP_SCHEDULE_DELAY"]) / 1000
    assert cutoff <= export_delay < 30


def test_tempo_ingestion_limits_carry_the_pipeline_ceiling_in_bytes(stack: Stack, traffic: Traffic) -> None:
    # Tempo's distributor charges each push its OTLP protobuf size (modules/distributor/
    # distributor.go: `size += b.Size()` per ResourceSpans, then ingestionRateLimiter.AllowN)
    # against overrides.defaults.ingestion.rate_limit_bytes, with burst_size_bytes the most one
    # push may carry; both default to 30e6 in Tempo 3.0 (modules/overrides/config.go,
    # RegisterFlagsAndApplyDefaults: distributor.ingestion-rate-limit-bytes and
    # distributor.ingestion-burst-size-bytes).
    tempo_default = 30_000_000
    ingestion = tempo()["overrides"]["defaults"].get("ingestion", {})
    rate = ingestion.get("rate_limit_bytes", tempo_default)
    burst = ingestion.get("burst_size_bytes", tempo_default)
    assert rate >= tempo_default and burst >= tempo_default, "never below Tempo's own defaults"

    # The pipeline's ceiling, from the benchmark (docs/benchmarks.md, "Pipeline capacity"), in
    # bytes at the size of the apps' real spans as the Collector's Tempo exporter batches them.
    found = re.search(r"Highest rate with nothing lost: (\d+) spans/s", BENCHMARKS.read_text())
    assert found, "docs/benchmarks.md states no pipeline capacity"
    ceiling_spans_per_s = int(found.group(1))

    def batches() -> tuple[float, float] | None:
        samples = scrape(stack.collector.metrics_url)
        spans = metric_total(samples, "otelcol_exporter_queue_batch_send_size_sum", exporter="otlp_grpc/tempo")
        size = metric_total(samples, "otelcol_exporter_queue_batch_send_size_bytes_sum", exporter="otlp_grpc/tempo")
        return (spans, size) if spans >= traffic.expected_spans() else None

    spans, size = wait_until(batches, "the session traffic through the Tempo exporter", timeout=60)
    bytes_per_span = size / spans
    exporter = yaml.safe_load(compose.with_env_defaults(COLLECTOR_FILE.read_text()))["exporters"]["otlp_grpc/tempo"]
    largest_push = exporter["sending_queue"]["batch"]["max_size"] * bytes_per_span
    assert rate >= 2 * ceiling_spans_per_s * bytes_per_span, (rate, ceiling_spans_per_s, bytes_per_span)
    assert burst >= 2 * largest_push, (burst, largest_push)


# ---------------------------------------------------------------- Grafana's Tempo datasource


def test_grafana_streams_tempo_search_and_metrics_results() -> None:
    # Grafana's Tempo datasource streams only when its jsonData says so
    # (public/app/plugins/datasource/tempo/datasource.ts: isStreamingSearchEnabled() is
    # `streamingEnabled?.search && config.liveEnabled`, isStreamingMetricsEnabled() the same with
    # `metrics`); Tempo serves the stream on its HTTP port only with stream_over_http_enabled
    # (cmd/tempo/app/config.go). Grafana Live is on unless [live] max_connections is 0.
    jsondata = gf.datasources()["tempo"]["jsonData"]
    assert jsondata["streamingEnabled"] == {"search": True, "metrics": True}
    assert tempo()["stream_over_http_enabled"] is True
    grafana_env = compose.load()["services"]["grafana"].get("environment", {})
    assert grafana_env.get("GF_LIVE_MAX_CONNECTIONS", "100") != "0"


# ---------------------------------------------------------------- Grafana's Loki datasource


def loki_label_names() -> set[str]:
    """Every label name a log line can carry in Grafana's Loki results here: the Docker driver's
    stream labels (docker-compose.yaml), the OTLP records' labels and structured metadata, and
    the labels the provisioned trace-to-logs queries extract (`regexp` named groups)."""
    options = compose.load()["services"]["app-a"]["logging"]["options"]
    driver = {"compose_service", "compose_project", "host", "filename"}
    driver |= {pair.partition("=")[0] for pair in options["loki-external-labels"].split(",")}
    driver |= {
        rule["target_label"] for rule in yaml.safe_load(options["loki-relabel-config"]) if "target_label" in rule
    }
    # Loki's OTLP ingestion: service.name as the index label service_name, the record's trace and
    # span ids and severity as structured metadata (Loki's docs, "Ingesting logs to Loki using
    # OpenTelemetry Collector"; tests/test_grafana.py models the same).
    otlp = {"service_name", "trace_id", "span_id", "severity_text"}
    extracted = set()
    for source in gf.datasources().values():
        query = source.get("jsonData", {}).get("tracesToLogsV2", {}).get("query", "")
        extracted |= set(re.findall(r"\(\?P<(\w+)>", query))
    assert "line_trace_id" in extracted, "the trace-to-logs queries extract the driver lines' trace id"
    return driver | otlp | extracted


def test_loki_label_derived_fields_match_exactly_the_trace_id_label() -> None:
    # Grafana tests a `matcherType: label` field's matcherRegex against each label name with
    # `new RegExp(matcherRegex).test(key)` and takes the first that matches
    # (public/app/plugins/datasource/loki/getDerivedFields.ts): an unanchored `trace_id` also
    # matches `line_trace_id`, and a driver line would get a second trace link.
    names = loki_label_names()
    fields = [f for f in gf.datasources()["loki"]["jsonData"]["derivedFields"] if f.get("matcherType") == "label"]
    assert fields
    for field in fields:
        # The pattern uses no syntax where JavaScript and Python regexes differ.
        assert re.fullmatch(r"[\w^$]+", field["matcherRegex"]), field["matcherRegex"]
        assert sorted(name for name in names if re.search(field["matcherRegex"], name)) == ["trace_id"], field


# ---------------------------------------------------------------- Loki's image


def test_loki_health_probe_exists_in_the_pinned_loki() -> None:
    # `loki -health` (grafana/loki PR #20313) shipped in 3.6.5; the 3.6+ images are distroless,
    # so without it compose has no way to probe Loki.
    version = tuple(int(part) for part in read_env_file(REPO / ".env")["LOKI_VERSION"].split("."))
    assert version >= (3, 6, 5)
    assert compose.load()["services"]["loki"]["healthcheck"]["test"] == ["CMD", "/usr/bin/loki", "-health"]


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0.0), ("30s", 30.0), ("1m30s", 90.0), ("250ms", 0.25)])
def test_go_durations_read_as_tempo_reads_them(text: str, seconds: float) -> None:
    assert go_seconds(text) == seconds
