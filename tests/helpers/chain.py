"""What a stored /chain trace must look like, whichever store Jaeger's API reads it from."""

import contextlib
from typing import Any

from nativestack.processes import wait_until

from .clients import JaegerAPI, parent_id

CHAIN_SERVICES = {"app-a", "app-b", "app-c"}
# app-a's server span, its 3 httpx client spans, and the server spans of app-a's `/`, app-b's
# /io_task and app-c's /cpu_task.
CHAIN_SPANS = 7


def assert_chain_trace(trace: dict[str, Any]) -> None:
    """One /chain trace from app-a (Jaeger API JSON): the three services, seven spans, one root,
    and every parent in the trace; a server span hangs off an httpx client span of app-a, client
    spans off the root."""
    spans = trace["spans"]
    services = {trace["processes"][s["processID"]]["serviceName"] for s in spans}
    assert services == CHAIN_SERVICES
    assert len(spans) == CHAIN_SPANS, [s["operationName"] for s in spans]
    by_id = {s["spanID"]: s for s in spans}
    roots = [s for s in spans if parent_id(s) is None]
    assert [r["operationName"] for r in roots] == ["GET /chain"]
    for span in spans:
        if span is roots[0]:
            continue
        parent = by_id[parent_id(span)]  # every parent is in the same trace
        service = trace["processes"][span["processID"]]["serviceName"]
        parent_service = trace["processes"][parent["processID"]]["serviceName"]
        if service != "app-a" or span["operationName"] != "GET /chain":
            assert parent_service == "app-a"


def stored_chain_traces(api: JaegerAPI, expected: int, timeout: float) -> list[dict[str, Any]]:
    """app-a's /chain traces once `expected` of them are stored whole: a trace's spans come from
    three apps' exports and can be read before the last one is written. After `timeout` s, what
    is stored, for the caller's assertions to show what is missing."""

    def whole() -> list[dict[str, Any]] | None:
        traces = api.traces("app-a", "GET /chain")
        done = len(traces) == expected and all(len(t["spans"]) >= CHAIN_SPANS for t in traces)
        return traces if done else None

    with contextlib.suppress(TimeoutError):
        return wait_until(whole, f"{expected} whole /chain traces at {api.url}", timeout=timeout)
    return api.traces("app-a", "GET /chain")
