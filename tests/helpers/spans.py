"""Spans in and out of a pipeline: an open-loop OTLP span generator with no retries (the caller
sees every refusal), and what a Jaeger API holds of one service."""

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from .clients import JaegerAPI
from .waiting import wait_for_count


@dataclass
class Stored:
    """Spans one backend holds for one service: every copy, and the distinct span ids."""

    copies: int
    ids: set[str]

    def __len__(self) -> int:
        return len(self.ids)


def stored_spans(api_url: str, service: str) -> Stored:
    spans = JaegerAPI(api_url).service_spans(service)
    return Stored(len(spans), {span.span_id for span in spans})


def wait_for_spans(api_url: str, service: str, expected: int, timeout: float = 90) -> Stored:
    """Poll until `expected` distinct spans of `service` are stored (or fail with the count)."""
    return wait_for_count(lambda: stored_spans(api_url, service), expected, f"spans of {service} at {api_url}", timeout)


def export_request(service: str, scope: str) -> tuple[ExportTraceServiceRequest, ScopeSpans]:
    """An empty OTLP export request from `service`, and the scope's span list to fill."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", service
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    return request, scope_spans


def span_batch(service: str, traces: int, spans_per_trace: int) -> tuple[bytes, list[str]]:
    """One OTLP/protobuf export request: `traces` new traces of `spans_per_trace` spans each (a
    root and its children) from `service`. Returns the body and the span ids (hex)."""
    request, scope_spans = export_request(service, "tests.helpers.spans")
    end = time.time_ns()
    ids = []
    for trace in range(traces):
        trace_id = os.urandom(16)
        # Each trace a microsecond apart, as real ones are: Jaeger's Cassandra index of a service's
        # traces keys on (service, bucket, start in us) and keeps one trace per key.
        start = end - 2_000_000 - trace * 1000
        root = b""
        for index in range(spans_per_trace):
            span = scope_spans.spans.add()
            span.trace_id, span.span_id = trace_id, os.urandom(8)
            if index:
                span.parent_span_id = root
                span.name, span.kind = "generated child", Span.SPAN_KIND_INTERNAL
            else:
                root = span.span_id
                span.name, span.kind = "generated root", Span.SPAN_KIND_SERVER
            span.start_time_unix_nano, span.end_time_unix_nano = start, end
            ids.append(span.span_id.hex())
    return request.SerializeToString(), ids


@dataclass
class Sent:
    """What a generator run got back: HTTP statuses by count of spans, and errors."""

    statuses: Counter[int] = field(default_factory=Counter)  # status -> spans in requests so answered
    errors: Counter[str] = field(default_factory=Counter)  # exception type -> spans
    accepted_ids: list[str] = field(default_factory=list)

    @property
    def spans(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def accepted(self) -> int:
        return len(self.accepted_ids)


def generate(
    url: str,
    service: str,
    *,
    spans_per_s: float,
    duration_s: float,
    spans_per_request: int = 100,
    spans_per_trace: int = 10,
    workers: int = 4,
    timeout_s: float = 10,
    distinct: bool = True,
) -> Sent:
    """Post OTLP/protobuf span batches to `url` (…/v1/traces) at `spans_per_s` for `duration_s`,
    open loop (the schedule does not wait for slow answers; `workers` requests in flight at
    most), no retries: the caller sees every refusal. `distinct=False` cycles through a few
    prepared requests instead of building each (ids repeat): for rates Python cannot build."""
    sent = Sent()
    prepared = (
        []
        if distinct
        else [span_batch(service, spans_per_request // spans_per_trace, spans_per_trace) for _ in range(16)]
    )
    lock = threading.Lock()
    interval = spans_per_request / spans_per_s
    total = max(1, round(duration_s / interval))
    start = time.monotonic()
    next_index = 0

    def worker() -> None:
        nonlocal next_index
        with httpx.Client(timeout=timeout_s) as client:
            while True:
                with lock:
                    index, next_index = next_index, next_index + 1
                if index >= total:
                    return
                delay = start + index * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if prepared:
                    body, ids = prepared[index % len(prepared)]
                else:
                    body, ids = span_batch(service, spans_per_request // spans_per_trace, spans_per_trace)
                try:
                    response = client.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
                except httpx.HTTPError as error:
                    with lock:
                        sent.errors[type(error).__name__] += len(ids)
                    continue
                with lock:
                    sent.statuses[response.status_code] += len(ids)
                    if response.status_code == 200:
                        sent.accepted_ids.extend(ids)

    threads = [threading.Thread(target=worker, name=f"otlp-generator-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent
