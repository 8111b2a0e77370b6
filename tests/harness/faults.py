"""Fault injection for tests/test_reliability.py (issue 6).

A private pipeline per test module (its own Collector with collector/config.yaml, Jaeger, a
second Jaeger standing in for Tempo, the Loki stand-in and a stand-in for Prometheus' OTLP
receiver), so killing and restarting parts of it never touches the session `stack`; an OTLP
span generator; an open-loop request loop with latencies; a /proc RSS sampler.
Everything listens on 127.0.0.1 and every process is stopped by its PID.
"""

import asyncio
import contextlib
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from . import compose
from .apps import App, start_app
from .backends import (
    LOOPBACK,
    Collector,
    Jaeger,
    LokiStandin,
    start_collector,
    start_jaeger,
    start_log_and_trace_backends,
)
from .clients import JaegerAPI, scrape
from .processes import Process, free_port, wait_until

# ---------------------------------------------------------------- a stand-in for Prometheus' OTLP receiver


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsSink:
    """Answers 200 to every OTLP metrics POST (the Collector's otlp_http/prometheus exporter) and
    an empty result to Jaeger's Prometheus queries: these tests look at traces only, and a real
    Prometheus would only cost CPU on a 2-core machine."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer((LOOPBACK, 0), _Sink)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-sink", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the private pipeline


@contextlib.contextmanager
def environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """`overrides` in this process' os.environ for the block: for SDK objects built in-process,
    which read their settings from the environment."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class _Parts:
    """What the Collector is wired to: enough to launch it."""

    spec: dict[str, Any]
    workdir: Path
    sink: MetricsSink
    loki: LokiStandin
    jaeger: Jaeger
    tempo: Jaeger


@dataclass
class Pipeline(_Parts):
    collector: Collector
    collector_env: dict[str, str] = field(default_factory=dict)
    apps: list[App] = field(default_factory=list)

    def restart_collector(self, **env: str) -> Collector:
        """Start the Collector again in place (same ports, same persistent queue directory), with
        `env` instead of the previous overrides when given. The old one must be stopped."""
        assert not self.collector.process.alive(), "stop the running Collector first"
        if env:
            self.collector_env = dict(env)
        self.collector = _launch_collector(self, self.collector_env, previous=self.collector)
        return self.collector

    def start_jaeger(self) -> Jaeger:
        """(Re)start Jaeger in place: same ports, same Badger directory."""
        self.jaeger = start_jaeger(
            self.spec, self.workdir, name="jaeger", prometheus_url=self.sink.url, ports=self.jaeger.ports
        )
        return self.jaeger

    def app(self, service: str, name: str, *, alone: bool = False, **overrides: str) -> App:
        """`service`'s compose launch config against this Collector, as `name` (OTEL_SERVICE_NAME).
        `alone`: /chain calls this app's own /io_task and /cpu_task instead of app-b's and app-c's."""
        port = free_port()
        if alone:
            own = f"http://{LOOPBACK}:{port}"
            overrides = {"CHAIN_APP_B_URL": own, "CHAIN_APP_C_URL": own, **overrides}
        addresses = {
            "collector:4318": f"{LOOPBACK}:{self.collector.http_port}",
            "collector:4317": f"{LOOPBACK}:{self.collector.grpc_port}",
        }
        app = start_app(
            self.spec,
            service,
            self.workdir,
            addresses,
            port=port,
            overrides={"OTEL_SERVICE_NAME": name, **overrides},
            name=name,
        )
        self.apps.append(app)
        return app

    def processes(self) -> list[Process]:
        apps = [app.process for app in self.apps]
        return [*apps, self.collector.process, self.jaeger.process, self.tempo.process, self.loki.process]

    def stop(self) -> None:
        for process in self.processes():
            process.stop()
        self.sink.stop()


def _launch_collector(parts: _Parts, env: Mapping[str, str], previous: Collector | None = None) -> Collector:
    ports = queue_dir = None
    if previous is not None:
        ports = (previous.grpc_port, previous.http_port, previous.health_port, previous.metrics_port)
        queue_dir = previous.queue_dir
    runs = len(list(parts.workdir.glob("collector-*.log")))
    return start_collector(
        parts.spec,
        parts.workdir,
        tempo_otlp=parts.tempo.otlp_grpc_endpoint,
        jaeger_otlp=parts.jaeger.otlp_grpc_endpoint,
        loki_url=parts.loki.otlp_url,
        prometheus_otlp_url=f"{parts.sink.url}/api/v1/otlp",
        name=f"collector-{runs}",  # a log file per run
        queue_dir=queue_dir or parts.workdir / "collector-queue",
        ports=ports,
        overrides=env,
    )


def start_pipeline(workdir: Path, **collector_env: str) -> Pipeline:
    """The Loki stand-in, Jaeger, the Tempo stand-in and the Collector (with `collector_env`
    overrides of its `${env:...}` settings), on fresh loopback ports in `workdir`."""
    spec = compose.load()
    sink = MetricsSink()
    started: list[Process] = []
    try:
        loki, jaeger, tempo = start_log_and_trace_backends(spec, workdir, sink.url, started)
        parts = _Parts(spec, workdir, sink, loki, jaeger, tempo)
        collector = _launch_collector(parts, collector_env)
        return Pipeline(spec, workdir, sink, loki, jaeger, tempo, collector, dict(collector_env))
    except BaseException:
        for process in reversed(started):
            process.stop()
        sink.stop()
        raise


# ---------------------------------------------------------------- what reached a backend


@dataclass
class Stored:
    """Spans one backend holds for one service: every copy, and the distinct span ids."""

    copies: int
    ids: set[str]

    @property
    def duplicates(self) -> int:
        return self.copies - len(self.ids)


def stored_spans(api_url: str, service: str) -> Stored:
    spans = JaegerAPI(api_url).service_spans(service)
    return Stored(len(spans), {span["spanID"] for span in spans})


def wait_for_spans(api_url: str, service: str, expected: int, timeout: float = 90) -> Stored:
    """Poll until `expected` distinct spans of `service` are stored (or fail with the count)."""
    last = Stored(0, set())

    def probe() -> Stored | None:
        nonlocal last
        last = stored_spans(api_url, service)
        return last if len(last.ids) >= expected else None

    try:
        return wait_until(probe, f"{expected} spans of {service} at {api_url}", timeout=timeout, interval=1.0)
    except TimeoutError as error:
        raise AssertionError(f"{len(last.ids)} of {expected} spans of {service} arrived at {api_url}") from error


def collector_counters(collector: Collector) -> dict[str, float]:
    """The Collector's own span counters, summed over their labels (exporters split by name)."""
    samples = scrape(collector.metrics_url)
    totals: dict[str, float] = {}
    for key, value in samples.items():
        name, _, labels = key.partition("{")
        if not name.endswith("_total") or "span" not in name:
            continue
        exporter = re.search(r'exporter="([^"]+)"', labels)
        label = f"{name}[{exporter[1]}]" if exporter else name
        totals[label] = totals.get(label, 0.0) + value
    return totals


# ---------------------------------------------------------------- an OTLP span generator


def span_batch(service: str, traces: int, spans_per_trace: int) -> tuple[bytes, list[str]]:
    """One OTLP/protobuf export request: `traces` new traces of `spans_per_trace` spans each (a
    root and its children) from `service`. Returns the body and the span ids (hex)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", service
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tests.harness.faults"
    end = time.time_ns()
    ids = []
    for _ in range(traces):
        trace_id = os.urandom(16)
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
            span.start_time_unix_nano, span.end_time_unix_nano = end - 2_000_000, end
            ids.append(span.span_id.hex())
    return request.SerializeToString(), ids


@dataclass
class Sent:
    """What a generator run got back: HTTP statuses by count of spans, and errors."""

    statuses: Counter[int] = field(default_factory=Counter)  # status -> spans in requests so answered
    errors: Counter[str] = field(default_factory=Counter)  # exception type -> spans
    accepted_ids: list[str] = field(default_factory=list)
    requests: int = 0

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
                        sent.requests += 1
                    continue
                with lock:
                    sent.statuses[response.status_code] += len(ids)
                    sent.requests += 1
                    if response.status_code == 200:
                        sent.accepted_ids.extend(ids)

    threads = [threading.Thread(target=worker, name=f"otlp-generator-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


# ---------------------------------------------------------------- an open-loop request loop


@dataclass
class Result:
    started: float  # time.monotonic() when the request was sent
    latency: float  # seconds
    status: int | None  # None: no HTTP answer
    error: str | None = None


@dataclass
class RequestLoop:
    """GET `url` at `rate` per second from a background thread, open loop: a request starts on
    schedule whether or not earlier ones have answered. `stop()` waits for the last answers."""

    url: str
    rate: float
    timeout_s: float = 30
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "RequestLoop":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="request-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        if self._thread:
            self._thread.join(self.timeout_s + 10)
        return self.results

    async def _one(self, client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            response = await client.get(self.url)
            self.results.append(Result(started, time.monotonic() - started, response.status_code))
        except httpx.HTTPError as error:
            self.results.append(Result(started, time.monotonic() - started, None, type(error).__name__))

    async def _run(self) -> None:
        tasks = set()
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=httpx.Limits(max_connections=50)) as client:
            start, index = time.monotonic(), 0
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, start + index / self.rate - time.monotonic()))
                task = asyncio.create_task(self._one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            if tasks:
                await asyncio.wait(tasks)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def window(results: list[Result], start: float, end: float) -> list[Result]:
    return [r for r in results if start <= r.started < end]


# ---------------------------------------------------------------- memory


def rss_mib(pid: int) -> float:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(match[1]) / 1024 if match else 0.0


class RssSampler:
    """Samples a process' resident set size from /proc every `interval` s in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append(rss_mib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)
