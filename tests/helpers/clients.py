"""Read what reached the backends: Jaeger's API, Prometheus' API, the Loki stand-in's file,
and the Prometheus text exposition of the Collector's own metrics."""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass(frozen=True)
class Span:
    """A span as Jaeger's API stores it, with its service and resource attributes attached (the
    API returns them once per trace, under `processes`)."""

    trace_id: str
    span_id: str
    name: str  # Jaeger's operationName
    service: str  # the resource's service.name
    tags: dict[str, Any]  # span attributes, plus span.kind, otel.status_code, error
    resource: dict[str, Any]  # the other resource attributes (Jaeger's process tags)
    references: tuple[tuple[str, str], ...]  # (refType, spanID)
    events: tuple[dict[str, Any], ...]  # each event's fields, `event` being its name

    @property
    def parent_id(self) -> str | None:
        return next((span_id for kind, span_id in self.references if kind == "CHILD_OF"), None)

    @property
    def kind(self) -> str | None:
        kind: str | None = self.tags.get("span.kind")
        return kind


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[Span, ...]

    def root(self) -> Span:
        (root,) = [span for span in self.spans if span.parent_id is None]
        return root


def _fields(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: item["value"] for item in items}


def _trace(data: dict[str, Any]) -> Trace:
    spans = []
    for span in data["spans"]:
        process = data["processes"][span["processID"]]
        spans.append(
            Span(
                trace_id=span["traceID"],
                span_id=span["spanID"],
                name=span["operationName"],
                service=process["serviceName"],
                tags=_fields(span.get("tags", [])),
                resource=_fields(process.get("tags", [])),
                references=tuple((ref["refType"], ref["spanID"]) for ref in span.get("references", [])),
                events=tuple(_fields(log["fields"]) for log in span.get("logs", [])),
            )
        )
    return Trace(data["traceID"], tuple(spans))


class JaegerAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def services(self) -> list[str]:
        data: list[str] = httpx.get(f"{self.url}/api/services", timeout=10).json()["data"] or []
        return data

    def trace(self, trace_id: str) -> Trace | None:
        response = httpx.get(f"{self.url}/api/traces/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        traces = response.json()["data"]
        return _trace(traces[0]) if traces else None

    def traces(self, service: str, operation: str | None = None, lookback_s: int = 3600) -> list[Trace]:
        now_us = int(time.time() * 1e6)
        params: dict[str, str | int] = {
            "service": service,
            "limit": 10000,
            "start": now_us - lookback_s * 1_000_000,
            "end": now_us,
        }
        if operation:
            params["operation"] = operation
        response = httpx.get(f"{self.url}/api/traces", params=params, timeout=30)
        response.raise_for_status()
        return [_trace(data) for data in response.json()["data"] or []]

    def service_spans(self, service: str, operation: str | None = None) -> list[Span]:
        """Every stored copy of every span of `service` (not of the other services in its traces)."""
        return [span for trace in self.traces(service, operation) for span in trace.spans if span.service == service]

    def distinct_spans(self, service: str, operation: str | None = None) -> list[Span]:
        """Every stored span of `service`, once each (a span id stored twice is one span)."""
        return list({span.span_id: span for span in self.service_spans(service, operation)}.values())

    def call_rates(self, service: str, span_kind: str = "server") -> list[float]:
        """The non-zero call rates (per minute, last 10 min) of `service` that the Monitor tab
        (SPM) shows: Jaeger computes them from the span metrics in Prometheus."""
        params: dict[str, str | int] = {
            "service": service,
            "endTs": int(time.time() * 1000),
            "lookback": 600_000,
            "step": 15_000,
            "ratePer": 60_000,
            "spanKind": span_kind,
        }
        body = httpx.get(f"{self.url}/api/metrics/calls", params=params, timeout=10).json()
        return [
            p["gaugeValue"]["doubleValue"]
            for m in body["metrics"]
            for p in m["metricPoints"]
            if p["gaugeValue"]["doubleValue"] > 0
        ]

    def all_spans(self, services: list[str]) -> dict[str, Span]:
        """Every stored span of traces touching `services`, by span id (traces overlap, ids don't)."""
        return {span.span_id: span for service in services for trace in self.traces(service) for span in trace.spans}


class PrometheusAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"PromQL {promql!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def exemplars(self, promql: str, lookback_s: int = 3600) -> list[dict[str, Any]]:
        now = time.time()
        params: dict[str, str | float] = {"query": promql, "start": now - lookback_s, "end": now}
        body = httpx.get(f"{self.url}/api/v1/query_exemplars", params=params, timeout=30).json()
        if body.get("status") != "success":
            raise AssertionError(f"exemplar query {promql!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]
        return result

    def target_health(self) -> dict[str, str]:
        targets = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return {target["labels"]["job"]: target["health"] for target in targets}


def otlp_log_records(records_file: Path) -> list[dict[str, Any]]:
    """Log records the Loki stand-in wrote (OTLP JSON, one export request per line), each with
    its resource's attributes under `resource` and its service.name under `service`."""
    if not records_file.exists():
        return []
    records = []
    for line in records_file.read_text().splitlines():
        try:
            export = json.loads(line)
        except json.JSONDecodeError:  # blank, or the stand-in is still writing its last line
            continue
        for resource_logs in export.get("resourceLogs", []):
            attributes = resource_logs.get("resource", {}).get("attributes", [])
            resource = {a["key"]: next(iter(a["value"].values()), None) for a in attributes}
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    records.append({**record, "resource": resource, "service": resource.get("service.name")})
    return records
