"""The services end to end: the three apps under their real launch command (the Dockerfile's
CMD, with compose's environment) export through the real Collector into real Jaeger,
Prometheus and the Loki stand-in: spans per endpoint, /chain traces across the services,
exemplars, trace ids in the logs, SIGTERM, two workers, gRPC, and bad input (invalid ids,
unknown paths, hostile trace headers, oversized header blocks, no Collector).

The session stack (tests/conftest.py) runs app-a, app-b and app-c; tests that need another
configuration (internal ASGI spans kept, two workers, SIGTERM under load, no Collector) launch
their own instance with a unique OTEL_SERVICE_NAME and stop it by PID.

Latency is never asserted here (no timing assertions in tests): the benchmark measures it.
"""

import contextlib
import re
import signal
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.logging_config import FIRST_LINE_REGEX, LINE_REGEX
from app.server import PROTOCOLS
from helpers.chain import CHAIN_HOPS, assert_chain_trace, stored_chain_traces
from helpers.clients import JaegerAPI, PrometheusAPI, Span, Trace, otlp_log_records
from helpers.exposition import OPENMETRICS, exemplars
from helpers.load import BoundedLoad
from helpers.logs import group_lines
from helpers.traffic import Traffic
from helpers.waiting import wait_for_count
from nativestack import compose
from nativestack.apps import APP_NAMES, App, start_app
from nativestack.processes import wait_until
from nativestack.scrape import metric_total, scrape
from nativestack.stack import Stack

SLOW = 60  # seconds: spans flush every 1 s, SDK metrics every 5 s, the stand-in's file every 0.2 s
# The route template each path of the traffic round matches (None: no route, a 404).
ROUTES: dict[str, str | None] = {
    "/": "/",
    "/items/7": "/items/{item_id}",
    "/io_task": "/io_task",
    "/cpu_task": "/cpu_task",
    "/random_status": "/random_status",
    "/random_sleep": "/random_sleep",
    "/error_test": "/error_test",
    "/chain": "/chain",
    "/items/not-a-number": "/items/{item_id}",
    "/no/such/path": None,
}
# What /chain calls on each hop, and the log line each hop writes inside its server span.
TRACEBACK = "Traceback (most recent call last):"


# ---------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def server_spans(spans: list[Span]) -> list[Span]:
    return [span for span in spans if span.kind == "server"]


def parsed_lines(output: str) -> list[re.Match[str]]:
    return [match for line in output.splitlines() if (match := re.match(LINE_REGEX, line))]


def prometheus_value(prometheus: PrometheusAPI, promql: str) -> float | None:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else None


def loki_records(stack: Stack, service: str) -> list[dict[str, Any]]:
    """The Loki stand-in's OTLP log records of `service`."""
    return [record for record in otlp_log_records(stack.loki.records_file) if record["service"] == service]


Launch = Callable[..., App]


@pytest.fixture
def launch(stack: Stack, tmp_path: Path) -> Iterator[Launch]:
    """Start an extra instance of a compose service against the session stack's Collector;
    every instance started is stopped by its PID at the end of the test."""
    started: list[App] = []

    def _launch(service: str, name: str, **overrides: str) -> App:
        app = start_app(stack.spec, service, tmp_path, stack.app_addresses(), name=name, overrides=overrides)
        started.append(app)
        return app

    yield _launch
    for app in started:
        app.process.stop(timeout=40)


# ---------------------------------------------------------------- 1. spans for every endpoint


def test_every_endpoint_has_server_spans_with_names_status_and_http_attributes(
    traffic: Traffic, jaeger: JaegerAPI
) -> None:
    # Expected server spans by (service, url.path, status): the round's requests, plus the
    # calls every /chain made: its own `/`, app-b's /io_task and app-c's /cpu_task.
    expected: Counter[tuple[str, str, int]] = Counter(traffic.responses)
    for (app, path, status), count in traffic.responses.items():
        if path == "/chain":
            assert status == 200, f"{app} /chain answered {status}"
            expected[(app, "/", 200)] += count
            expected[("app-b", "/io_task", 200)] += count
            expected[("app-c", "/cpu_task", 200)] += count

    def stored() -> list[Span]:
        return [
            span
            for service in APP_NAMES
            for span in server_spans(jaeger.distinct_spans(service))
            if span.tags.get("url.path") in ROUTES
        ]

    spans = wait_for_count(stored, expected.total(), "server spans", timeout=SLOW)
    assert Counter((s.service, s.tags["url.path"], s.tags["http.response.status_code"]) for s in spans) == expected

    for span in spans:
        tags = span.tags
        path, status = tags["url.path"], tags["http.response.status_code"]
        route = ROUTES[path]
        what = f"{span.service} {path} {status}"
        assert tags["http.request.method"] == "GET", what
        assert tags["url.scheme"] == "http", what
        if route is None:  # matched no route: the span is named by the method alone
            assert span.name == "GET" and "http.route" not in tags and status == 404, what
        else:
            assert span.name == f"GET {route}" and tags["http.route"] == route, what
        if status >= 500:
            assert tags.get("otel.status_code") == "ERROR" and tags.get("error") is True, what
            assert tags.get("error.type") == str(status), what
        else:  # 4xx is the client's fault: a server span stays UNSET
            assert "otel.status_code" not in tags and "error" not in tags and "error.type" not in tags, what
        if path == "/items/not-a-number":
            assert status == 422, what
        if path == "/error_test":
            (event,) = span.events
            assert event["event"] == "exception" and event["exception.type"] == "ValueError", what
            assert event["exception.message"] == "value error", what
            assert event["exception.stacktrace"].startswith(TRACEBACK), what
            assert 'raise ValueError("value error")' in event["exception.stacktrace"], what
        else:
            assert span.events == (), what


# ---------------------------------------------------------------- 2. /chain across services


@pytest.mark.parametrize("backend", ["jaeger", "tempo"])
def test_chain_trace_links_each_server_span_to_its_httpx_client_span(
    backend: str, request: pytest.FixtureRequest, stack: Stack, traffic: Traffic
) -> None:
    """Every /chain trace, in Jaeger and in the Tempo stand-in: one root, app-a's three httpx
    client spans under it, each callee's server span under the client span that called it."""
    api: JaegerAPI = request.getfixturevalue(backend)
    chains = traffic.requests("/chain", app="app-a")  # app-b's and app-c's /chain start elsewhere
    traces = stored_chain_traces(api, chains, timeout=SLOW)
    assert len(traces) == chains
    for trace in traces:
        assert_chain_trace(trace, {port: name for name, port in stack.app_ports.items()})

    # No internal ASGI spans anywhere, for any service.
    for service in APP_NAMES:
        for span in api.service_spans(service):
            assert not span.name.endswith(("http send", "http receive")), span.name
            assert "asgi.event.type" not in span.tags, span.name


def test_keep_asgi_internal_spans_switch_brings_them_back(launch: Launch, jaeger: JaegerAPI) -> None:
    service = unique("internal-spans")
    app = launch("app-a", service, OTEL_SERVICE_NAME=service, KEEP_ASGI_INTERNAL_SPANS="true")
    assert httpx.get(f"{app.url}/", timeout=10).status_code == 200

    spans = wait_for_count(lambda: jaeger.distinct_spans(service), 3, "the server span and its send spans", SLOW)
    (server,) = server_spans(spans)
    internal = [s for s in spans if s is not server]
    assert internal and {s.name for s in internal} == {"GET / http send"}
    assert {s.tags["asgi.event.type"] for s in internal} == {"http.response.start", "http.response.body"}
    assert all(s.parent_id == server.span_id for s in internal)


# ---------------------------------------------------------------- 3. exemplars on /metrics


@pytest.mark.parametrize("service", APP_NAMES)
def test_metrics_exemplars_are_trace_ids_of_real_spans(
    service: str, stack: Stack, traffic: Traffic, jaeger: JaegerAPI
) -> None:
    response = httpx.get(f"{stack.apps[service].url}/metrics", headers={"Accept": OPENMETRICS}, timeout=10)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    found = exemplars(response.text)
    counted_paths = {
        dict(re.findall(r'(\w+)="([^"]*)"', line))["path"]
        for line in response.text.splitlines()
        if line.startswith("fastapi_requests_total{")
    }
    # Every sampled request leaves an exemplar in its bucket: every counted path has one.
    assert {labels["path"] for labels, _ in found} == counted_paths
    assert {"/", "<unmatched>"} <= counted_paths
    trace_ids = {trace_id for _, trace_id in found}
    traces: dict[str, Trace] = {}

    def fetch() -> dict[str, Trace]:
        for trace_id in trace_ids - set(traces):
            if trace := jaeger.trace(trace_id):
                traces[trace_id] = trace
        return traces

    assert set(wait_for_count(fetch, len(trace_ids), "exemplars' traces", timeout=SLOW)) == trace_ids
    for labels, trace_id in found:
        servers = [s for s in server_spans(list(traces[trace_id].spans)) if s.service == service]
        routes = {s.tags.get("http.route", "<unmatched>") for s in servers}
        assert labels["path"] in routes, (labels, trace_id, routes)


# ---------------------------------------------------------------- 4. logs carry trace ids


def test_chain_log_lines_carry_their_trace_and_span_ids(stack: Stack, traffic: Traffic, jaeger: JaegerAPI) -> None:
    chains = traffic.requests("/chain", app="app-a")
    traces = wait_for_count(lambda: jaeger.traces("app-a", "GET /chain"), chains, "app-a /chain traces", SLOW)
    lines = {service: parsed_lines(stack.apps[service].process.output()) for service in APP_NAMES}
    for trace in traces:
        root = trace.root()
        for service, (path, message) in CHAIN_HOPS.items():
            (hop,) = [s for s in server_spans(list(trace.spans)) if s.service == service and s.tags["url.path"] == path]
            logged = [m for m in lines[service] if m["trace_id"] == trace.trace_id and m["message"] == message]
            assert [(m["span_id"], m["service"], m["level"]) for m in logged] == [(hop.span_id, service, "INFO")]
        finished = [m for m in lines["app-a"] if m["trace_id"] == trace.trace_id and m["message"] == "chain finished"]
        assert [m["span_id"] for m in finished] == [root.span_id]
    # The same records over OTLP: their own trace context, and no attribute that repeats it or
    # the resource (the logging instrumentation's otelTraceID/otelSpanID/..., record factory off).
    exported = {t.trace_id: t for t in traces}
    records = wait_until(
        lambda: [r for r in loki_records(stack, "app-b") if r.get("traceId") in exported],
        "app-b's /chain log records over OTLP",
        timeout=SLOW,
    )
    for record in records:
        (hop,) = [s for s in server_spans(list(exported[record["traceId"]].spans)) if s.service == "app-b"]
        assert record["spanId"] == hop.span_id
        keys = {a["key"] for a in record.get("attributes", [])}
        assert not {k for k in keys if k.startswith("otel")}, keys


def test_stdout_is_one_line_format_and_tracebacks_follow_their_first_line(
    stack: Stack, traffic: Traffic, jaeger: JaegerAPI
) -> None:
    errors = traffic.requests("/error_test", app="app-a")
    spans = wait_for_count(lambda: jaeger.distinct_spans("app-a", "GET /error_test"), errors, "error spans", SLOW)
    error_spans = {(s.trace_id, s.span_id) for s in server_spans(spans)}
    entries = group_lines(stack.apps["app-a"].process.output().splitlines(), FIRST_LINE_REGEX)
    for entry in entries:
        assert re.match(LINE_REGEX, entry[0]), entry[0]  # every entry starts with one parsable line
        assert len(entry) == 1 or entry[1] == TRACEBACK, entry[:2]  # only a traceback continues one
    unhandled = [e for e in entries if e[0].endswith("] Unhandled exception on GET /error_test")]
    assert len(unhandled) == errors
    for entry in unhandled:
        first = re.match(LINE_REGEX, entry[0])
        assert first is not None and first["level"] == "ERROR" and first["service"] == "app-a"
        assert (first["trace_id"], first["span_id"]) in error_spans
        assert entry[1] == TRACEBACK and entry[-1] == "ValueError: value error"
        assert not any(re.match(FIRST_LINE_REGEX, line) for line in entry[1:])
    # One traceback per failed request: uvicorn's second, id-less copy is not printed.
    tracebacks = sum(line == TRACEBACK for entry in entries for line in entry)
    assert tracebacks == errors


# ---------------------------------------------------------------- 5. SIGTERM loses nothing


def test_sigterm_under_load_loses_no_span_metric_or_log(
    launch: Launch, stack: Stack, jaeger: JaegerAPI, prometheus: PrometheusAPI
) -> None:
    service = unique("sigterm")
    app = launch("app-b", service, OTEL_SERVICE_NAME=service)
    load = BoundedLoad(f"{app.url}/", total=400, concurrency=8, budget_s=30).start()
    try:
        load.wait_answered(60)
        in_flight, answered_before = load.in_flight, load.answered
        app.process.signal(signal.SIGTERM)  # the gunicorn master, by PID, as `docker stop` does
        assert app.process.popen.wait(timeout=60) == 0
    finally:
        load.join()
    assert in_flight > 0, "the signal must land while requests are in flight"
    assert set(load.statuses) == {200}, load.statuses
    completed = load.statuses[200]
    assert completed > answered_before, "requests in flight at the signal were still answered"
    assert set(load.errors) <= {"ConnectError", "RemoteProtocolError", "ReadError", "ReadTimeout"}, load.errors

    spans = wait_for_count(lambda: jaeger.distinct_spans(service), completed, "spans", SLOW)
    assert len(spans) == completed
    assert {s.name for s in spans} == {"GET /"}

    promql = f'sum(http_server_request_duration_seconds_count{{service_name="{service}"}})'
    wait_until(lambda: (prometheus_value(prometheus, promql) or 0) >= completed, "the OTLP request count", SLOW)
    assert prometheus_value(prometheus, promql) == completed

    hello = [m for m in parsed_lines(app.process.output()) if m["message"] == "Hello World"]
    assert len(hello) == completed
    records = wait_for_count(
        lambda: [record for record in loki_records(stack, service) if record.get("traceId")],
        completed,
        "log records with trace ids at the Loki stand-in",
        SLOW,
    )
    assert len(records) == completed
    assert {r["traceId"] for r in records} == {m["trace_id"] for m in hello} == {s.trace_id for s in spans}


# ---------------------------------------------------------------- 6. two workers


def test_two_workers_both_export_and_metrics_count_whichever_answers(
    launch: Launch, stack: Stack, jaeger: JaegerAPI
) -> None:
    service = unique("two-workers")
    app = launch("app-b", service, OTEL_SERVICE_NAME=service, WEB_CONCURRENCY="2")
    booted = set(re.findall(r"Booting worker with pid: (\d+)", app.process.output()))
    assert len(booted) == 2

    # The resource carries no process.pid (no process detector in otel.env), but the SDK gives
    # every process its own service.instance.id; each worker's "Booting worker with pid: N" log
    # record, sent over OTLP from that worker, ties its instance id to its PID.
    # New connections, several at a time, go to whichever worker accepts first; that can be the
    # same one for a while, so send rounds (bounded) until both have answered.
    requests = 0
    for _ in range(8):
        load = BoundedLoad(f"{app.url}/", total=40, concurrency=8, headers={"Connection": "close"}).start()
        load.join()
        assert load.statuses == {200: 40}, (load.statuses, load.errors)
        requests += 40
        spans = wait_for_count(lambda: jaeger.distinct_spans(service), requests, "spans", SLOW)
        per_instance = Counter(s.resource["service.instance.id"] for s in spans)
        if len(per_instance) == 2:
            break
    assert len(spans) == requests
    assert len(per_instance) == 2, per_instance

    def instance_pids() -> dict[str, str] | None:
        pids = {}
        for record in loki_records(stack, service):
            match = re.fullmatch(r"Booting worker with pid: (\d+)", record["body"].get("stringValue", ""))
            if match:
                pids[record["resource"]["service.instance.id"]] = match.group(1)
        return pids if len(pids) == 2 else None

    pids = wait_until(instance_pids, "both workers' boot records", timeout=SLOW)
    assert set(per_instance) <= set(pids) and {pids[i] for i in per_instance} == booted

    for _ in range(6):  # new connections: whichever worker answers, the count is every worker's
        samples = scrape(f"{app.url}/metrics")  # httpx.get: a new connection each time
        assert metric_total(samples, "fastapi_requests_total", app_name=service, path="/") == requests
        assert metric_total(samples, "fastapi_requests_in_progress", app_name=service, path="/") == 0
    assert app.process.stop(timeout=40) == 0, "both workers and the master exit cleanly on SIGTERM"


# ---------------------------------------------------------------- 7. gRPC


def test_app_c_exports_over_grpc_as_compose_says(
    stack: Stack, traffic: Traffic, jaeger: JaegerAPI, prometheus: PrometheusAPI
) -> None:
    environments = {service: compose.service_environment(stack.spec, service) for service in APP_NAMES}
    assert environments["app-c"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert environments["app-c"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    for service in ("app-a", "app-b"):
        assert environments[service]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert environments[service]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    # The running process really got it (its environment, read from /proc by PID).
    raw = Path(f"/proc/{stack.apps['app-c'].process.pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{stack.collector.grpc_port}"

    # Traces: app-c's own requests of the round, plus the /cpu_task call of every /chain.
    at_least = traffic.requests(app="app-c") + traffic.requests("/chain")
    spans = wait_for_count(lambda: jaeger.distinct_spans("app-c"), at_least, "app-c spans", SLOW)
    paths = {s.tags["url.path"] for s in server_spans(spans)}
    assert {p for (a, p, _) in traffic.responses if a == "app-c"} <= paths
    collector = scrape(stack.collector.metrics_url)
    accepted_grpc = metric_total(collector, "otelcol_receiver_accepted_spans_total", transport="grpc")
    assert accepted_grpc >= len(spans)
    # Metrics and logs take the same gRPC exporter path.
    promql = 'sum(http_server_request_duration_seconds_count{service_name="app-c"})'
    wait_until(lambda: prometheus_value(prometheus, promql), "app-c's OTLP metrics in Prometheus", timeout=SLOW)
    wait_until(lambda: [r for r in loki_records(stack, "app-c") if r.get("traceId")], "app-c log records", timeout=SLOW)
    assert metric_total(collector, "otelcol_receiver_accepted_log_records_total", transport="grpc") > 0
    assert metric_total(collector, "otelcol_receiver_accepted_metric_points_total", transport="grpc") > 0


# ---------------------------------------------------------------- 8. bad input

# The bad-input tests talk to one more app-a of their own, so their odd requests stay out of the
# session apps' telemetry, which other tests (test_pipeline_e2e.py) count exactly.
EDGE_SERVICE = unique("bad-input")


@pytest.fixture(scope="module")
def edge(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    workdir = tmp_path_factory.mktemp("edge")
    overrides = {"OTEL_SERVICE_NAME": EDGE_SERVICE}
    app = start_app(stack.spec, "app-a", workdir, stack.app_addresses(), name=EDGE_SERVICE, overrides=overrides)
    try:
        yield app
    finally:
        app.process.stop(timeout=40)


@pytest.mark.parametrize("item", ["abc", "1.5", "%00", "7e3"])
def test_invalid_item_id_gets_422_with_a_json_body(item: str, edge: App) -> None:
    response = httpx.get(f"{edge.url}/items/{item}", timeout=10)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    (error,) = response.json()["detail"]
    assert error["loc"] == ["path", "item_id"] and error["type"] == "int_parsing"


def test_unknown_paths_404_and_count_under_one_fixed_path(edge: App) -> None:
    url = edge.url
    labels = {"app_name": EDGE_SERVICE, "path": "<unmatched>"}
    before = scrape(f"{url}/metrics")
    paths = [f"/{unique('nope')}/{unique('deeper')}" for _ in range(5)]
    for path in paths:
        response = httpx.get(url + path, timeout=10)
        assert response.status_code == 404 and response.json() == {"detail": "Not Found"}
    after = scrape(f"{url}/metrics")
    for name in ("fastapi_requests_total", "fastapi_responses_total"):
        assert metric_total(after, name, **labels) - metric_total(before, name, **labels) == len(paths)
    assert metric_total(after, "fastapi_responses_total", status_code="404", **labels) >= len(paths)
    assert not [key for key in after if any(path.split("/")[1] in key for path in paths)]


VALID_TRACE, VALID_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
HOSTILE_HEADERS: dict[str, dict[str, str]] = {
    "non-hex trace id": {"traceparent": f"00-{'z' * 32}-{VALID_SPAN}-01"},
    "all-zero trace id": {"traceparent": f"00-{'0' * 32}-{VALID_SPAN}-01"},
    "all-zero span id": {"traceparent": f"00-{VALID_TRACE}-{'0' * 16}-01"},
    "forbidden version ff": {"traceparent": f"ff-{VALID_TRACE}-{VALID_SPAN}-01"},
    "truncated": {"traceparent": f"00-{VALID_TRACE[:20]}-{VALID_SPAN}-01"},
    "trailing data, oversized": {"traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}-01" + "-ab" * 2000},
    "garbage baggage": {"traceparent": "garbage", "baggage": ";;;===%%%," * 500},
    "baggage over the W3C limits": {
        "traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}",
        "baggage": ",".join(f"k{i}={'v' * 40}" for i in range(200)),
    },
}


def test_hostile_trace_headers_are_ignored_and_a_fresh_trace_starts(edge: App, jaeger: JaegerAPI) -> None:
    url = edge.url
    sent: dict[str, str] = {}  # case -> unique url.path
    for case, headers in {
        **HOSTILE_HEADERS,
        "control: valid": {"traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}-01"},
    }.items():
        path = f"/items/{uuid.uuid4().int % 10**12}"
        assert httpx.get(url + path, headers=headers, timeout=10).status_code == 200, case
        sent[case] = path
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

    def by_path() -> dict[str, Trace] | None:
        found = {
            str(span.tags.get("url.path")): trace
            for trace in jaeger.traces(EDGE_SERVICE, "GET /items/{item_id}")
            for span in trace.spans
        }
        return found if all(path in found for path in sent.values()) else None

    traces = wait_until(by_path, "a span for every hostile request", timeout=SLOW)
    (control,) = traces[sent.pop("control: valid")].spans
    # The control proves the method can see a remote parent: a valid header is honoured.
    assert control.trace_id == VALID_TRACE and control.parent_id == VALID_SPAN
    for case, path in sent.items():
        (span,) = traces[path].spans  # a trace of its own, of one span
        assert span.references == () and span.parent_id is None, case
        assert span.trace_id not in (VALID_TRACE, "0" * 32), case
        assert span.tags["http.response.status_code"] == 200, case
    fresh = {traces[path].trace_id for path in sent.values()}
    assert len(fresh) == len(sent)  # each a new trace of its own


def header_block(size: int, shape: str) -> dict[str, str]:
    if shape == "one big header":
        return {"X-Big": "a" * size}
    return {f"X-Header-{i}": "b" * 100 for i in range(size // 100)}


@pytest.mark.parametrize("shape", ["one big header", "many headers"])
def test_headers_over_16_kib_get_431_and_the_app_stays_healthy(shape: str, edge: App) -> None:
    tracebacks_before = edge.process.output().count(TRACEBACK)
    response = httpx.get(f"{edge.url}/items/3", headers=header_block(17_000, shape), timeout=10)
    assert response.status_code == 431
    assert edge.process.alive()
    assert httpx.get(f"{edge.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{edge.url}/items/1", timeout=10).status_code == 200
    assert edge.process.output().count(TRACEBACK) == tracebacks_before


@pytest.mark.parametrize("shape", ["one big header", "many headers"])
@pytest.mark.parametrize("size", [60_000, 200_000, 1_000_000])
def test_huge_header_blocks_get_a_4xx_and_the_app_stays_healthy(size: int, shape: str, edge: App) -> None:
    # A block that arrives in one read meets the app's 431; one still incomplete after a read meets
    # the server's bound on the head (app/server.py: a 431, or h11's 400) and the connection is
    # closed (which of the two a 60 kB block meets depends on how the kernel splits it). The server closes with request
    # bytes unread, so the kernel resets the connection: a client still writing (httpx) sees the
    # reset. A raw socket that has written everything reads the answer.
    tracebacks_before = edge.process.output().count(TRACEBACK)
    headers = "".join(f"{name}: {value}\r\n" for name, value in header_block(size, shape).items())
    request = f"GET /items/4 HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.recv(65536).split(b"\r\n", 1)[0]
    assert status_line in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 431 Request Header Fields Too Large")
    assert edge.process.alive()
    assert httpx.get(f"{edge.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{edge.url}/items/2", timeout=10).status_code == 200
    assert edge.process.output().count(TRACEBACK) == tracebacks_before


@pytest.mark.parametrize("parser", PROTOCOLS)
def test_an_endless_header_block_is_cut_off_not_buffered(launch: Launch, parser: str) -> None:
    """Neither parser may buffer a header block without end: h11 gives up past 16 KiB with a
    400; httptools would buffer the whole block before the app's 431 could answer (measured:
    20 MB), so app/server.py cuts it off past MAX_HEAD_BYTES with a 431."""
    app = launch("app-a", f"{EDGE_SERVICE}-{parser}", HTTP_PARSER=parser, OTEL_SERVICE_NAME=f"{EDGE_SERVICE}-{parser}")
    sent, chunk, limit = 0, b"a" * 65536, 64 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nx-endless: ")
        with contextlib.suppress(OSError):  # reset or broken pipe: the server dropped the block
            while sent < limit:
                sock.sendall(chunk)
                sent += len(chunk)
    # Whatever the kernel buffers on loopback before the reset arrives, far below the 64 MiB offered.
    assert sent < 16 * 1024 * 1024, f"the server read {sent} bytes of one header block"
    assert httpx.get(f"{app.url}/healthz", timeout=10).status_code == 200


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound, never listening, so no
    other program can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def test_collector_unreachable_requests_served_one_warning_no_traceback_per_request(
    launch: Launch, closed_port: int
) -> None:
    service = unique("no-collector")
    app = launch(
        "app-b", service, OTEL_SERVICE_NAME=service, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port}"
    )
    # The status codes the same requests get with a Collector (see the tests above).
    plan = [("/", 200)] * 30 + [("/items/5", 200)] * 5 + [("/items/abc", 422)] * 5 + [("/nope/x", 404)] * 5
    plan += [("/error_test", 500)]

    def serve(client: httpx.Client) -> None:
        for path, status in plan:
            assert client.get(path).status_code == status, path

    with httpx.Client(base_url=app.url, timeout=10) as client:
        serve(client)

        def warnings() -> list[str]:
            return [
                line
                for line in app.process.output().splitlines()
                if " WARNING [opentelemetry.exporter." in line and f"port={closed_port}" in line
            ]

        # The SDK says, naming the endpoint, that it cannot export (its batch delay is 1 s).
        wait_until(warnings, "a warning naming the unreachable endpoint", timeout=SLOW)
        serve(client)  # and requests keep being answered the same while exports fail
    requests = 2 * len(plan)
    output = app.process.output()
    lines = output.splitlines()
    assert len(warnings()) < requests / 4, "warnings back off; not one per request"
    # One traceback per /error_test request (the app logs those on purpose) and none from the
    # failing exports: a constant, whatever the number of requests.
    assert len([line for line in lines if line.endswith("] Unhandled exception on GET /error_test")]) == 2
    assert output.count(TRACEBACK) == 2

    # Shutdown stays bounded with nowhere to flush to: gunicorn exits by itself, cleanly.
    app.process.signal(signal.SIGTERM)
    assert app.process.popen.wait(timeout=60) == 0
    assert "telemetry flush did not finish" in app.process.output()
