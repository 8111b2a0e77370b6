"""What a client that does not play along can do to the apps and the pipeline behind them.

Each test starts its own app-a (its own OTEL_SERVICE_NAME, against the session stack's real
Collector, Jaeger and Prometheus), so what it sends stays out of the session apps' telemetry, and
stops it by its PID. Hostile requests go to loopback only and are bounded in number.

- No client-chosen value adds a series: made-up methods, random paths, query strings and header
  values, sent in two rounds of the same shape, leave /metrics, Prometheus (scraped and OTLP
  series) and Jaeger's operations as the first round left them.
- Exactly /healthz and /metrics are left out of traces: every near miss is traced, and a request
  target that could make the Host header complete an excluded URL is refused before the app.
- Attribute values are cut at the SDK limit, and the request target has a bound of its own.
- Clients that never finish a request are cut off at the request deadline while others are
  served, and past the concurrency limit requests get a 503.
- Past the apps, the Collector's span metrics bound the series a client of its OTLP port can
  make with free-form span names.
"""

import contextlib
import os
import re
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h11
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from app.limits import MAX_TARGET_BYTES, REQUEST_TIMEOUT_SECONDS
from app.server import PROTOCOLS
from helpers.clients import JaegerAPI, PrometheusAPI, Span
from helpers.request_loop import RequestLoop
from helpers.waiting import wait_for_count
from nativestack import compose
from nativestack.apps import App, start_app
from nativestack.backends import Prometheus, start_prometheus
from nativestack.paths import REPO, read_env_file
from nativestack.processes import free_port, wait_until
from nativestack.scrape import metric_total, scrape
from nativestack.stack import Stack

SLOW = 90  # seconds: span metrics flush every 15 s, SDK metrics every 5 s, scrapes every 5 s
# A loaded 2-core machine may run the worker's timer late; the bound is stated, this is slack.
TIMER_SLACK_S = 5.0
OTEL_ENV = read_env_file(REPO / "services" / "otel.env")
COLLECTOR_CONFIG = REPO / "collector" / "config.yaml"
SPAN_ATTRIBUTE_LIMIT = int(OTEL_ENV["OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT"])

Launch = Callable[..., App]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def launch(stack: Stack, tmp_path: Path) -> Iterator[Launch]:
    """Start an app-a of a fresh service name against the session stack; stopped by PID."""
    started: list[App] = []

    def _launch(prefix: str, **overrides: str) -> App:
        service = unique(prefix)
        overrides = {"OTEL_SERVICE_NAME": service, **overrides}
        app = start_app(stack.spec, "app-a", tmp_path, stack.app_addresses(), name=service, overrides=overrides)
        started.append(app)
        return app

    yield _launch
    for app in started:
        app.process.stop(timeout=40)


def service_of(app: App) -> str:
    return app.process.name


def server_spans(jaeger: JaegerAPI, service: str) -> list[Span]:
    spans = {span.span_id: span for span in jaeger.service_spans(service)}
    return [span for span in spans.values() if span.kind == "server"]


def wait_for_spans(jaeger: JaegerAPI, service: str, count: int) -> list[Span]:
    return wait_for_count(lambda: server_spans(jaeger, service), count, f"server spans of {service}", timeout=SLOW)


def prometheus_value(prometheus: PrometheusAPI, promql: str) -> float:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else 0.0


def raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes as they are (no client library fixes them up) and return the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]


# ---------------------------------------------------------------- 1. no client-chosen series


def token() -> str:
    return uuid.uuid4().hex[:10]


def hostile_round(client: httpx.Client) -> int:
    """One round of requests whose method, path, query and headers are fresh random values, of
    a fixed shape (the same routes and statuses every round). Returns the number sent."""
    requests: list[tuple[str, str, dict[str, str], int]] = []
    for _ in range(6):
        requests += [
            (f"X{token().upper()}", "/", {}, 405),  # a made-up method on a route
            (f"X{token().upper()}", f"/{token()}", {}, 404),  # ... on no route
            ("gEt", f"/{token()}/{token()}", {}, 404),  # a known method, oddly cased
            ("GET", f"/items/{uuid.uuid4().int % 10**9}?{token()}={token()}&q={token()}", {}, 200),
            ("GET", "/", {"user-agent": token(), f"x-{token()}": token(), "host": f"{token()}.example"}, 200),
        ]
    for method, path, headers, status in requests:
        assert client.request(method, path, headers=headers).status_code == status, (method, path)
    return len(requests)


@dataclass
class SeriesCounts:
    exposition: int  # samples at the app's /metrics
    scraped: int  # series Prometheus holds from scraping it
    otlp: int  # series of the service Prometheus holds from OTLP (SDK metrics, span metrics)
    operations: list[str]  # Jaeger's operations (span names) of the service


def settled_counts(
    app: App, requests: int, scraper: Prometheus, prometheus: PrometheusAPI, jaeger: JaegerAPI
) -> SeriesCounts:
    """The series counts once every request so far has reached every path."""
    service = service_of(app)
    own = PrometheusAPI(scraper.url)

    def arrived(api: PrometheusAPI, promql: str) -> bool:
        return prometheus_value(api, promql) >= requests

    wait_for_spans(jaeger, service, requests)
    for api, promql in [
        (own, "sum(fastapi_requests_total)"),
        (prometheus, f'sum(http_server_request_duration_seconds_count{{service_name="{service}"}})'),
        (prometheus, f'sum(traces_span_metrics_calls_total{{service_name="{service}"}})'),
    ]:
        wait_until(lambda api=api, promql=promql: arrived(api, promql), promql, timeout=SLOW)  # type: ignore[misc]

    def count(api: PrometheusAPI, selector: str) -> int:
        return int(float(api.query(f"count({selector})")[0]["value"][1]))

    operations = httpx.get(f"{jaeger.url}/api/operations", params={"service": service}, timeout=10).json()["data"]
    return SeriesCounts(
        exposition=len(scrape(f"{app.url}/metrics")),
        scraped=count(own, '{job="app-a"}'),
        # Not the recording rules' series (backends/rules/: names with a colon), which appear as
        # rules are next evaluated, whatever the clients sent.
        otlp=count(prometheus, f'{{service_name="{service}", __name__!~".*:.*"}}'),
        operations=sorted(op["name"] for op in operations),
    )


def test_client_chosen_values_add_no_series_after_the_first_round(
    launch: Launch, stack: Stack, tmp_path: Path, prometheus: PrometheusAPI, jaeger: JaegerAPI
) -> None:
    # h11, which passes any method token on to the app: the app's own bound is what is tested.
    # (httptools, the default, refuses made-up methods before the app: the next test.)
    app = launch("hostile-series", HTTP_PARSER="h11")
    # A Prometheus of its own scrapes this app as compose's scrapes app-a (backends/prometheus.yml).
    scraper = start_prometheus(stack.spec, tmp_path, {"app-a:8000": f"127.0.0.1:{app.port}"}, free_port())
    try:
        with httpx.Client(base_url=app.url, timeout=10) as client:
            sent = hostile_round(client)
            first = settled_counts(app, sent, scraper, prometheus, jaeger)
            sent += hostile_round(client)
            second = settled_counts(app, sent, scraper, prometheus, jaeger)
    finally:
        scraper.process.stop()
    assert second == first
    # The bounded values are the ones the semantic conventions name.
    exposition = httpx.get(f"{app.url}/metrics", timeout=10).text
    methods = set(re.findall(r'method="([^"]*)"', exposition))
    assert methods == {"_OTHER", "GET"}, methods
    assert first.operations == sorted(["HTTP /", "HTTP", "GET", "GET /items/{item_id}", "GET /"])


def test_the_default_parser_refuses_made_up_methods_before_the_app(launch: Launch) -> None:
    app = launch("hostile-methods")
    before = scrape(f"{app.url}/metrics")
    for method in (f"X{token().upper()}", "gEt"):
        assert raw_request(app.port, f"{method} / HTTP/1.1\r\nHost: a\r\n\r\n".encode()) == b"HTTP/1.1 400 Bad Request"
    assert httpx.get(f"{app.url}/", timeout=10).status_code == 200  # the worker serves on
    after = scrape(f"{app.url}/metrics")
    assert {k for k in after if "method=" in k} - {k for k in before if "method=" in k} <= {
        k for k in after if 'method="GET"' in k
    }


# ---------------------------------------------------------------- 2. exactly two untraced paths

NEAR_MISSES = [
    "/healthz/",
    "/healthzx",
    "/healthz.json",
    "/HEALTHZ",
    "/health",
    "//healthz",
    "/api/healthz",
    "/no/such/healthz-page",
    "/healthz%0A",  # a trailing newline: `$` would match before it, `\Z` does not
    "/metrics/",
    "/metricsx",
    "/metrics.txt",
    "/items/metrics",  # a 422: the route exists, the id is not an integer
]
# Targets no HTTP/1.1 form allows, with a Host that would complete an excluded URL
# (`http://` + host + path): refused by the server before the app, neither traced nor counted.
MALFORMED = [
    (b"healthz", b"a/"),
    (b"?x", b"a/healthz"),
    (b"x/metrics", b"a"),
]


def test_exactly_health_and_metrics_are_left_out_of_traces(
    launch: Launch, jaeger: JaegerAPI, prometheus: PrometheusAPI
) -> None:
    app = launch("hostile-exclusions")
    service = service_of(app)
    for path in ["/healthz", "/metrics", "/metrics?format=x"]:
        for host in ["127.0.0.1", "app-a:8000", f"{token()}.example"]:
            assert httpx.get(app.url + path, headers={"host": host}, timeout=10).status_code == 200
    statuses = {path: httpx.get(app.url + path, timeout=10).status_code for path in NEAR_MISSES}
    assert statuses["/healthz%0A"] == 200 and statuses["/items/metrics"] == 422
    refused = {
        target: raw_request(app.port, b"GET " + target + b" HTTP/1.1\r\nHost: " + completing_host + b"\r\n\r\n")
        for target, completing_host in MALFORMED
    }
    # Spans are exported in the order they end: once the last request's span is stored, so is
    # every span the requests before it made.
    last = f"/items/{uuid.uuid4().int % 10**9}"
    assert httpx.get(app.url + last, timeout=10).status_code == 200
    wait_until(lambda: last in [s.tags["url.path"] for s in server_spans(jaeger, service)], last, timeout=SLOW)

    traced = sorted(span.tags["url.path"] for span in server_spans(jaeger, service))
    expected = [httpx.URL(app.url + path).path for path in [*NEAR_MISSES, last]]
    assert traced == sorted(expected)
    # The metrics agree: the near misses counted at /metrics and over OTLP, nothing else.
    assert metric_total(scrape(f"{app.url}/metrics"), "fastapi_requests_total") == len(expected)
    promql = f'sum(http_server_request_duration_seconds_count{{service_name="{service}"}})'
    counted = wait_until(
        lambda: found if (found := prometheus_value(prometheus, promql)) >= len(expected) else None,
        "the OTLP request count",
        timeout=SLOW,
    )
    assert counted == len(expected)
    assert set(refused.values()) == {b"HTTP/1.1 400 Bad Request"}, refused


# ---------------------------------------------------------------- 3. bounded values and target


def test_a_long_query_string_is_cut_to_the_limit_on_the_stored_span(launch: Launch, jaeger: JaegerAPI) -> None:
    app = launch("hostile-lengths")
    accepted = "q=" + "a" * (MAX_TARGET_BYTES - 100)  # under the target bound: served
    refused = "q=" + "b" * (12 * 1024)  # past it, and under h11's 16 KiB for an unfinished head
    agent = "c" * (4 * 1024)
    with httpx.Client(base_url=app.url, timeout=10) as client:
        assert client.get(f"/items/1?{accepted}", headers={"user-agent": agent}).status_code == 200
    # Sent in one piece, so the server reads the whole head (a client still writing would see the
    # connection reset when the server answers early).
    status = raw_request(app.port, b"GET /items/2?" + refused.encode() + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert status == b"HTTP/1.1 414 Request-URI Too Long"
    # The issue's 60 KiB: the 414 if it arrives in one read, else h11's 400 for a head past 16 KiB.
    huge = b"GET /items/3?q=" + b"d" * (60 * 1024) + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert raw_request(app.port, huge) in (b"HTTP/1.1 414 Request-URI Too Long", b"HTTP/1.1 400 Bad Request")

    spans = {s.tags["url.path"]: s.tags for s in wait_for_spans(jaeger, service_of(app), 2)}
    spans.pop("/items/3", None)
    assert spans["/items/1"]["url.query"] == accepted[:SPAN_ATTRIBUTE_LIMIT]
    assert spans["/items/1"]["user_agent.original"] == agent[:SPAN_ATTRIBUTE_LIMIT]
    assert spans["/items/2"]["url.query"] == refused[:SPAN_ATTRIBUTE_LIMIT]
    assert spans["/items/2"]["http.response.status_code"] == 414
    for tags in spans.values():
        assert max(len(str(value)) for value in tags.values()) == SPAN_ATTRIBUTE_LIMIT


# ---------------------------------------------------------------- 4. partial requests


def worker_pid(app: App) -> int:
    """gunicorn's one worker, a child of the master the test started."""
    children = Path(f"/proc/{app.process.pid}/task/{app.process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def open_sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed while we looked
            count += os.readlink(fd).startswith("socket:")
    return count


@dataclass
class Partial:
    sock: socket.socket
    started: float
    trickle: bool = False  # sends one more byte every half second: no byte extends the deadline
    answer: bytes = b""
    closed_after: float | None = None  # seconds from start to the server's close


def complete_request(sock: socket.socket) -> int:
    """One keep-alive GET / read to the end of its body: the head and the body can arrive in
    separate reads, and a body left unread would precede the next answer on this connection."""
    client = h11.Connection(h11.CLIENT)
    sock.sendall(client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")])))
    sock.sendall(client.send(h11.EndOfMessage()))
    status = 0
    while (event := client.next_event()) is not h11.PAUSED and not isinstance(event, h11.EndOfMessage):
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
    return status


def open_partials(port: int, count: int) -> list[Partial]:
    """`count` connections that send half a request line and stop (the first of them instead
    trickles a header value a byte at a time, which keeps every parser waiting), and one that
    completes a request first and then stops inside its second."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert complete_request(sock) == 200
    sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-")
    partials = [Partial(sock, time.monotonic())]
    for index in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        trickle = index == 0
        sock.sendall(b"GET /items/1 HTTP/1.1\r\nHost: a\r\nX-Slow: " if trickle else b"GET /items/1 HT")
        partials.append(Partial(sock, time.monotonic(), trickle=trickle))
    return partials


def wait_for_closes(partials: list[Partial], deadline_s: float) -> None:
    """Read every partial's answer until the server closes it, or `deadline_s` passes."""
    pending = {p.sock: p for p in partials}
    next_trickle = time.monotonic() + 0.5
    end = time.monotonic() + deadline_s
    while pending and time.monotonic() < end:
        readable, _, _ = select.select(list(pending), [], [], 0.2)
        for sock in readable:
            partial = pending[sock]
            data = sock.recv(65536)
            partial.answer += data
            if not data:
                partial.closed_after = time.monotonic() - partial.started
                sock.close()
                del pending[sock]
        if time.monotonic() >= next_trickle:
            next_trickle += 0.5
            for partial in pending.values():
                if partial.trickle:
                    partial.sock.sendall(b"a")
    for sock in pending:
        sock.close()


@pytest.mark.parametrize("parser", PROTOCOLS)
def test_partial_requests_are_closed_at_the_deadline_while_others_are_served(launch: Launch, parser: str) -> None:
    app = launch("hostile-partial", HTTP_PARSER=parser)
    pid = worker_pid(app)
    sockets_before = open_sockets(pid)
    loop = RequestLoop(f"{app.url}/", rate=5).start()
    try:
        partials = open_partials(app.port, 200)
        # (give or take the exporters' own connections to the Collector)
        held = sockets_before + len(partials) - 5
        wait_until(lambda: open_sockets(pid) >= held, "the worker holding every partial")
        fresh = httpx.get(f"{app.url}/items/3", headers={"Connection": "close"}, timeout=10)
        wait_for_closes(partials, REQUEST_TIMEOUT_SECONDS + TIMER_SLACK_S + 5)
    finally:
        results = loop.stop()
    assert fresh.status_code == 200, "a new connection is served while the partials are held"
    late = [
        p.closed_after
        for p in partials
        if p.closed_after is None or p.closed_after > REQUEST_TIMEOUT_SECONDS + TIMER_SLACK_S
    ]
    assert not late, f"{len(late)} of {len(partials)} partial requests outlived the deadline"
    unexplained = [p.answer[:60] for p in partials if not p.answer.startswith(b"HTTP/1.1 408 Request Timeout")]
    assert not unexplained, f"{len(unexplained)} partials closed without a 408: {unexplained[:3]}"
    assert results and {r.status for r in results} == {200}, {(r.status, r.error) for r in results}
    wait_until(lambda: open_sockets(pid) <= sockets_before + 5, "the worker's sockets back to before")


@pytest.mark.parametrize("parser", PROTOCOLS)
def test_past_the_concurrency_limit_requests_get_503_until_the_deadline_frees_them(launch: Launch, parser: str) -> None:
    limit = 20
    app = launch("hostile-limit", GUNICORN_CMD_ARGS=f"--worker-connections={limit}", HTTP_PARSER=parser)
    partials = open_partials(app.port, limit)

    def refused() -> bool:
        return httpx.get(f"{app.url}/", headers={"Connection": "close"}, timeout=10).status_code == 503

    wait_until(refused, "a 503 past the concurrency limit", timeout=REQUEST_TIMEOUT_SECONDS / 2)
    wait_for_closes(partials, REQUEST_TIMEOUT_SECONDS + TIMER_SLACK_S + 5)
    assert all(p.closed_after is not None for p in partials)
    assert httpx.get(f"{app.url}/", headers={"Connection": "close"}, timeout=10).status_code == 200


# ---------------------------------------------------------------- 5. the Collector's span metrics


def test_span_metrics_fold_span_names_past_the_cardinality_limit(stack: Stack, prometheus: PrometheusAPI) -> None:
    """The apps bound their span names; anything else that reaches the OTLP port may not. The
    span_metrics connector keeps at most `aggregation_cardinality_limit` series a service and
    counts the rest under one overflow series (nothing is dropped from the counts)."""
    limit = yaml.safe_load(compose.with_env_defaults(COLLECTOR_CONFIG.read_text()))["connectors"]["span_metrics"][
        "aggregation_cardinality_limit"
    ]
    service, names = unique("free-span-names"), limit + 100
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", service
    spans = resource_spans.scope_spans.add().spans
    now = time.time_ns()
    for index in range(names):
        span = spans.add()
        span.trace_id, span.span_id = uuid.uuid4().bytes, uuid.uuid4().bytes[:8]
        span.name, span.kind = f"GET /users/{index}", OtlpSpan.SPAN_KIND_SERVER
        span.start_time_unix_nano, span.end_time_unix_nano = now - 1_000_000, now
    response = httpx.post(
        f"{stack.collector.otlp_http_url}/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200

    calls = f'traces_span_metrics_calls_total{{service_name="{service}"}}'
    wait_until(lambda: prometheus_value(prometheus, f"sum({calls})") >= names, "the span metrics", timeout=SLOW)
    assert prometheus_value(prometheus, f"sum({calls})") == names
    series = prometheus.query(calls)
    assert len(series) == limit + 1
    (overflow,) = [s for s in series if s["metric"].get("otel_metric_overflow") == "true"]
    assert float(overflow["value"][1]) == names - limit
