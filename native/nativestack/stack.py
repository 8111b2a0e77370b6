"""The whole stack natively, wired like docker-compose.yaml wires the containers."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import compose
from .apps import APP_NAMES, CONTAINER_PORT, App, start_apps
from .backends import (
    COMPOSE_JAEGER,
    LOOPBACK,
    PROMETHEUS_OTLP_PATH,
    Alertmanager,
    Collector,
    Jaeger,
    JaegerVariant,
    LokiStandin,
    Prometheus,
    start_alertmanager,
    start_collector,
    start_log_and_trace_backends,
    start_prometheus,
)
from .processes import Process, StoppedOnExit, free_port


@dataclass
class Stack(StoppedOnExit):
    spec: dict[str, Any]
    workdir: Path
    loki: LokiStandin
    jaeger: Jaeger
    tempo: Jaeger  # stand-in: a second real Jaeger (Tempo is AGPL, never built here)
    collector: Collector
    prometheus: Prometheus
    app_ports: dict[str, int]
    apps: dict[str, App] = field(default_factory=dict)
    alertmanager: Alertmanager | None = None

    def app_addresses(self) -> dict[str, str]:
        """Compose `host:port` -> native address, for the apps' environment."""
        addresses = {f"{name}:{CONTAINER_PORT}": f"{LOOPBACK}:{port}" for name, port in self.app_ports.items()}
        addresses["collector:4318"] = f"{LOOPBACK}:{self.collector.http_port}"
        addresses["collector:4317"] = f"{LOOPBACK}:{self.collector.grpc_port}"
        return addresses

    def processes(self) -> list[Process]:
        """Stop order: apps first (they flush into the Collector), backends last."""
        apps = [app.process for app in self.apps.values()]
        alerting = [self.alertmanager.process] if self.alertmanager else []
        return [
            *apps,
            self.collector.process,
            self.prometheus.process,
            *alerting,
            self.jaeger.process,
            self.tempo.process,
            self.loki.process,
        ]


def start_stack(
    workdir: Path,
    jaeger_variant: JaegerVariant = COMPOSE_JAEGER,
    *,
    webhook_url: str | None = None,
    interval: str | None = None,
    timings: Mapping[str, str] = {},
) -> Stack:
    """Every program compose runs that can run natively, each on its own loopback ports; Jaeger as
    `jaeger_variant` says (default: compose's own, on Badger). With `webhook_url`, Alertmanager
    too, delivering there. The alerting end-to-end test's overrides: `interval` for every
    Prometheus scrape and rule evaluation, `timings` for Alertmanager's route timers."""
    spec = compose.load()
    app_ports = {name: free_port() for name in APP_NAMES}
    prometheus_port = free_port()
    prometheus_url = f"http://{LOOPBACK}:{prometheus_port}"
    started: list[Process] = []
    try:
        loki, jaeger, tempo = start_log_and_trace_backends(spec, workdir, prometheus_url, started, jaeger_variant)
        collector = start_collector(
            spec,
            workdir,
            tempo_otlp=tempo.otlp_grpc_endpoint,
            jaeger_otlp=jaeger.otlp_grpc_endpoint,
            loki_url=loki.otlp_url,
            prometheus_otlp_url=prometheus_url + PROMETHEUS_OTLP_PATH,
            overrides=jaeger_variant.collector_env,
        )
        started.append(collector.process)
        targets = {f"{name}:{CONTAINER_PORT}": f"{LOOPBACK}:{port}" for name, port in app_ports.items()}
        targets["collector:8888"] = f"{LOOPBACK}:{collector.metrics_port}"
        targets["jaeger:8888"] = f"{LOOPBACK}:{jaeger.metrics_port}"
        alertmanager = None
        if webhook_url:
            alertmanager = start_alertmanager(spec, workdir, webhook_url, timings)
            started.append(alertmanager.process)
            targets["alertmanager:9093"] = alertmanager.address
        prometheus = start_prometheus(spec, workdir, targets, prometheus_port, interval)
        started.append(prometheus.process)
        stack = Stack(spec, workdir, loki, jaeger, tempo, collector, prometheus, app_ports, alertmanager=alertmanager)
        stack.apps = start_apps(spec, workdir, stack.app_addresses(), app_ports)
        return stack
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise
