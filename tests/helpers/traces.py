"""Whole traces sent in pieces, as services export them: each trace's spans leave in separate
OTLP requests over time (children first, the root last), so a router that splits a trace, or a
sampler that decides before its last span, shows in what the backends hold."""

import os
import time
from dataclasses import dataclass

import httpx
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from nativestack.processes import wait_until

from .clients import JaegerAPI
from .spans import export_request


@dataclass(frozen=True)
class PlannedTrace:
    trace_id: str  # 32 hex digits
    span_ids: tuple[str, ...]  # root first
    end_ns: int  # when the root ends: every piece carries the same timestamps
    error: bool = False  # the root's status is ERROR
    server_error: bool = False  # a child carries http.response.status_code 503
    slow: bool = False  # the root lasts 700 ms

    @property
    def marked(self) -> bool:
        """Kept by the error, 5xx or slow policy, whatever its id."""
        return self.error or self.server_error or self.slow


def plan_traces(
    count: int, spans: int = 3, *, error_every: int = 0, server_error_every: int = 0, slow_every: int = 0
) -> list[PlannedTrace]:
    """`count` traces with random ids; every n-th one marked as asked (0: none)."""

    def every(n: int, i: int) -> bool:
        return n > 0 and i % n == 0

    return [
        PlannedTrace(
            os.urandom(16).hex(),
            tuple(os.urandom(8).hex() for _ in range(spans)),
            time.time_ns(),
            error=every(error_every, i),
            server_error=every(server_error_every, i + 1),
            slow=every(slow_every, i + 2),
        )
        for i in range(count)
    ]


def piece(service: str, traces: list[PlannedTrace], index: int) -> bytes:
    """One OTLP/protobuf request with span `index` of each trace (0 is the root)."""
    request, scope_spans = export_request(service, "tests.helpers.traces")
    for trace in traces:
        end, duration = trace.end_ns, 700_000_000 if trace.slow else 20_000_000
        span = scope_spans.spans.add()
        span.trace_id, span.span_id = bytes.fromhex(trace.trace_id), bytes.fromhex(trace.span_ids[index])
        span.start_time_unix_nano, span.end_time_unix_nano = end - duration, end - (duration // 2 if index else 0)
        if index:
            span.parent_span_id = bytes.fromhex(trace.span_ids[0])
            span.name, span.kind = f"child {index}", Span.SPAN_KIND_CLIENT
            if trace.server_error and index == 1:
                status = span.attributes.add()
                status.key, status.value.int_value = "http.response.status_code", 503
        else:
            span.name, span.kind = "root", Span.SPAN_KIND_SERVER
            if trace.error:
                span.status.code = Status.STATUS_CODE_ERROR
    body: bytes = request.SerializeToString()
    return body


def send_in_pieces(url: str, service: str, traces: list[PlannedTrace], gap_s: float = 0.3) -> None:
    """Children first, one request per span position, `gap_s` apart; the root last. Every
    request must be accepted (200): a refusal here is a failure of the pipeline under test."""
    with httpx.Client(timeout=30) as client:
        for index in [*range(1, len(traces[0].span_ids)), 0]:
            response = client.post(
                f"{url}/v1/traces",
                content=piece(service, traces, index),
                headers={"Content-Type": "application/x-protobuf"},
            )
            response.raise_for_status()
            time.sleep(gap_s)


def stored_span_counts(api: JaegerAPI, traces: list[PlannedTrace]) -> dict[str, int]:
    """Trace id -> spans the backend holds for it (0: absent), every copy counted."""
    counts = {}
    for trace in traces:
        found = api.trace(trace.trace_id)
        counts[trace.trace_id] = len(found.spans) if found else 0
    return counts


def wait_whole(api: JaegerAPI, traces: list[PlannedTrace], timeout: float = 60) -> None:
    """Until the backend holds every span of every one of `traces`."""
    spans = len(traces[0].span_ids)

    def whole() -> bool:
        return all(n == spans for n in stored_span_counts(api, traces).values())

    wait_until(whole, f"{len(traces)} whole traces at {api.url}", timeout=timeout, interval=1)
