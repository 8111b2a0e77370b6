"""Read what reached the backends: Jaeger's API, Prometheus' API, the Loki stand-in's file,
and the Prometheus text exposition of the Collector's own metrics."""

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx


class JaegerAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def services(self) -> list[str]:
        data: list[str] = httpx.get(f"{self.url}/api/services", timeout=10).json()["data"] or []
        return data

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.url}/api/traces/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        traces = response.json()["data"]
        return traces[0] if traces else None

    def traces(self, service: str, operation: str | None = None, lookback_s: int = 3600) -> list[dict[str, Any]]:
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
        data: list[dict[str, Any]] = response.json()["data"] or []
        return data

    def service_spans(self, service: str, operation: str | None = None) -> list[dict[str, Any]]:
        """Every stored copy of every span of `service` (not of the other services in its
        traces), each with its process (service name and resource tags) under `process`."""
        return [
            {**span, "process": trace["processes"][span["processID"]]}
            for trace in self.traces(service, operation)
            for span in trace["spans"]
            if trace["processes"][span["processID"]]["serviceName"] == service
        ]

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

    def all_spans(self, services: list[str]) -> dict[str, dict[str, Any]]:
        """Every stored span of traces touching `services`, by span id (traces overlap, ids don't)."""
        spans: dict[str, dict[str, Any]] = {}
        for service in services:
            for trace in self.traces(service):
                for span in trace["spans"]:
                    span["serviceName"] = trace["processes"][span["processID"]]["serviceName"]
                    spans[span["spanID"]] = span
        return spans


def span_tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def parent_id(span: dict[str, Any]) -> str | None:
    for reference in span.get("references", []):
        if reference["refType"] == "CHILD_OF":
            parent: str = reference["spanID"]
            return parent
    return None


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


def by_service(spans: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans.values():
        grouped[span["serviceName"]].append(span)
    return grouped
