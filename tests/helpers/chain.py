"""What a stored /chain trace must look like, whichever store Jaeger's API reads it from."""

import contextlib

import httpx

from nativestack.apps import APP_NAMES
from nativestack.processes import wait_until

from .clients import JaegerAPI, Trace

# Each app's server span under app-a's /chain, with the path it serves.
CHAIN_HOPS = {"app-a": ("/", "Hello World"), "app-b": ("/io_task", "io task"), "app-c": ("/cpu_task", "cpu task")}
# app-a's server span, its 3 httpx client spans, and the server spans of app-a's `/`, app-b's
# /io_task and app-c's /cpu_task.
CHAIN_SPANS = 7


def assert_chain_trace(trace: Trace, port_to_service: dict[int, str]) -> None:
    """One /chain trace from app-a: one root, app-a's three httpx client spans under it, each
    callee's server span under the client span that called it (found by the port it called),
    nothing else (no internal send/receive spans)."""
    spans = trace.spans
    assert {s.trace_id for s in spans} == {trace.trace_id}
    root = trace.root()
    assert (root.service, root.name, root.kind) == ("app-a", "GET /chain", "server")
    clients = [s for s in spans if s.kind == "client"]
    assert len(clients) == 3 and all(c.service == "app-a" and c.parent_id == root.span_id for c in clients)
    for client in clients:
        target = httpx.URL(client.tags["url.full"])
        (server,) = [s for s in spans if s.parent_id == client.span_id]
        assert server.service == port_to_service.get(target.port or 80)
        assert server.kind == "server"
        assert server.tags["url.path"] == target.path == CHAIN_HOPS[server.service][0]
        assert client.tags["http.response.status_code"] == 200
    client_ids = {c.span_id for c in clients}
    assert sorted(s.service for s in spans if s.parent_id in client_ids) == list(APP_NAMES)
    assert len(spans) == CHAIN_SPANS, [s.name for s in spans]


def stored_chain_traces(api: JaegerAPI, expected: int, timeout: float) -> list[Trace]:
    """app-a's /chain traces once `expected` of them are stored whole: a trace's spans come from
    three apps' exports and can be read before the last one is written. After `timeout` s, what
    is stored, for the caller's assertions to show what is missing."""

    def whole() -> list[Trace] | None:
        traces = api.traces("app-a", "GET /chain")
        done = len(traces) == expected and all(len(t.spans) >= CHAIN_SPANS for t in traces)
        return traces if done else None

    with contextlib.suppress(TimeoutError):
        return wait_until(whole, f"{expected} whole /chain traces at {api.url}", timeout=timeout)
    return api.traces("app-a", "GET /chain")
