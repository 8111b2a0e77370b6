"""A private trace pipeline for fault tests: its own Collector (collector/config.yaml), Jaeger, a
second Jaeger standing in for Tempo, the Loki stand-in and a stand-in for Prometheus' OTLP
receiver, so killing and restarting parts of it never touches the session stack.
Everything listens on 127.0.0.1 and every process is stopped by its PID.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import compose
from .apps import App, start_app
from .backends import (
    LOOPBACK,
    PROMETHEUS_OTLP_PATH,
    Collector,
    Jaeger,
    LokiStandin,
    start_collector,
    start_jaeger,
    start_log_and_trace_backends,
)
from .loopback import LoopbackServer, QuietHandler
from .processes import Process, StoppedOnExit, free_port


class _Sink(QuietHandler):
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


class MetricsSink(LoopbackServer):
    """Answers 200 to every OTLP metrics POST (the Collector's otlp_http/prometheus exporter) and
    an empty result to Jaeger's Prometheus queries: these tests look at traces only, and a real
    Prometheus would only cost CPU on a 2-core machine."""

    def __init__(self) -> None:
        super().__init__(_Sink, "metrics-sink")


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
class Pipeline(_Parts, StoppedOnExit):
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
        prometheus_otlp_url=parts.sink.url + PROMETHEUS_OTLP_PATH,
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
