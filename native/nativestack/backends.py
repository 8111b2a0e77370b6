"""The pipeline's real programs, started natively with the repo's config files.

Each takes its command-line flags from docker-compose.yaml (container paths of bind mounts
mapped back to the repo) and only its addresses, data folders and, for Prometheus, scrape
targets and rule paths changed (for Alertmanager, a webhook on its receivers), so every process
runs on its own loopback ports.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from . import compose
from .paths import REPO, binaries
from .processes import Process, free_port, start, wait_until

LOOPBACK = "127.0.0.1"
# Where Prometheus' OTLP receiver listens (--web.enable-otlp-receiver); the Collector's
# otlp_http/prometheus exporter appends /v1/metrics.
PROMETHEUS_OTLP_PATH = "/api/v1/otlp"


def bind_mounts(spec: dict[str, Any], service: str) -> dict[str, Path]:
    """Container path -> repo path of each of the service's bind mounts (`./...:/container`)."""
    mounts: dict[str, Path] = {}
    for volume in spec["services"][service].get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if source.startswith("."):
            mounts[rest.split(":")[0]] = (REPO / source).resolve()
    return mounts


def repo_path(mounts: Mapping[str, Path], container_path: str) -> str:
    """`container_path` (a file or a glob) where it lies in the repo, through a bind mount."""
    for target, source in mounts.items():
        if container_path == target or container_path.startswith(target + "/"):
            return str(source) + container_path[len(target) :]
    return container_path


def compose_argv(spec: dict[str, Any], service: str, overrides: Mapping[str, str] = {}) -> list[str]:
    """The service's compose `command`, with bind-mounted container paths mapped to the repo and
    each `--flag=value` in `overrides` replaced (or appended)."""
    mounts = bind_mounts(spec, service)
    argv: list[str] = []
    for arg in compose.service_command(spec, service):
        flag, sep, value = arg.partition("=")
        if sep and flag in overrides:
            continue
        argv.append(f"{flag}={mounts.get(value, value)}" if sep else str(mounts.get(arg, arg)))
    return argv + [f"{flag}={value}" for flag, value in overrides.items()]


def _healthy(process: Process, url: str) -> bool:
    process.ensure_alive()
    return httpx.get(url, timeout=2).status_code == 200


@dataclass
class Collector:
    process: Process
    grpc_port: int
    http_port: int
    health_port: int
    metrics_port: int
    queue_dir: Path

    @property
    def otlp_http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def otlp_grpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.grpc_port}"

    @property
    def health_url(self) -> str:
        return f"http://{LOOPBACK}:{self.health_port}/"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"


def start_collector(
    spec: dict[str, Any],
    workdir: Path,
    *,
    tempo_otlp: str,
    jaeger_otlp: str,
    loki_url: str,
    prometheus_otlp_url: str,
    name: str = "collector",
    service: str = "collector",
    queue_dir: Path | None = None,
    ports: tuple[int, int, int, int] | None = None,
    grpc_host: str = LOOPBACK,
    launcher: Sequence[str] = (),
    overrides: Mapping[str, str] = {},
) -> Collector:
    """The compose `service`'s Collector configs (collector/config.yaml, plus the gateway overlay's
    files for `gateway` or the agent) on the real Collector, with its env_file and environment;
    only its env-var addresses differ from compose. Pass `queue_dir` and `ports` of an earlier
    instance to restart it in place; `grpc_host` binds OTLP/gRPC elsewhere on loopback;
    `launcher` runs before the binary (e.g. `unshare` for a private hosts file); `overrides` set
    more of its `${env:...}` settings (e.g. COLLECTOR_MEMORY_LIMIT_MIB)."""
    grpc, http, health, metrics = ports or (free_port(), free_port(), free_port(), free_port())
    queue = queue_dir or workdir / f"{name}-queue"
    env = {
        **compose.service_environment(spec, service),
        "COLLECTOR_OTLP_GRPC_ENDPOINT": f"{grpc_host}:{grpc}",
        "COLLECTOR_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{http}",
        "COLLECTOR_HEALTH_ENDPOINT": f"{LOOPBACK}:{health}",
        "COLLECTOR_METRICS_HOST": LOOPBACK,
        "COLLECTOR_METRICS_PORT": str(metrics),
        "COLLECTOR_ZPAGES_ENDPOINT": f"{LOOPBACK}:{free_port()}",
        "COLLECTOR_QUEUE_DIR": str(queue),
        "TEMPO_OTLP_ENDPOINT": tempo_otlp,
        "JAEGER_OTLP_ENDPOINT": jaeger_otlp,
        "LOKI_OTLP_ENDPOINT": loki_url,
        "PROMETHEUS_OTLP_ENDPOINT": prometheus_otlp_url,
        **overrides,
    }
    argv = [*launcher, str(binaries()["OTELCOL"]), *compose_argv(spec, service)]
    collector = Collector(start(name, argv, env, workdir), grpc, http, health, metrics, queue)
    wait_until(lambda: _healthy(collector.process, collector.health_url), f"{name} health check", timeout=60)
    return collector


@dataclass
class Jaeger:
    process: Process
    grpc_port: int
    http_port: int
    query_port: int
    query_grpc_port: int
    health_port: int
    metrics_port: int

    @property
    def ports(self) -> tuple[int, ...]:
        """Pass back to `start_jaeger` to restart this instance in place."""
        return (
            self.grpc_port,
            self.http_port,
            self.query_port,
            self.query_grpc_port,
            self.health_port,
            self.metrics_port,
        )

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.query_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class JaegerVariant:
    """Which Jaeger runs: the `jaeger` service of `spec` gives its command (None: the stack's own
    compose file, backends/jaeger.yaml on Badger; backends/compose.cassandra.yaml's points it at
    backends/jaeger-cassandra.yaml), `env` the storage address that config reads, and
    `collector_env` what the variant's compose file adds to the Collector's environment."""

    spec: dict[str, Any] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    collector_env: Mapping[str, str] = field(default_factory=dict)


COMPOSE_JAEGER = JaegerVariant()  # docker-compose.yaml's own jaeger service: Badger


def start_jaeger(
    spec: dict[str, Any],
    workdir: Path,
    *,
    name: str,
    prometheus_url: str,
    ports: tuple[int, ...] | None = None,
    env: Mapping[str, str] = {},
) -> Jaeger:
    """compose's `jaeger` service of `spec` (backends/jaeger.yaml: its Badger store in `workdir`)
    on real Jaeger v2, `env` added to its addresses. Also serves as the Tempo stand-in
    (`name="tempo-standin"`): Tempo is AGPL and never built here; both ingest the same OTLP from
    the same Collector exporter settings."""
    grpc, http, query, query_grpc, health, metrics = ports or tuple(free_port() for _ in range(6))
    addresses = {
        "JAEGER_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{grpc}",
        "JAEGER_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{http}",
        "JAEGER_QUERY_HTTP_ENDPOINT": f"{LOOPBACK}:{query}",
        "JAEGER_QUERY_GRPC_ENDPOINT": f"{LOOPBACK}:{query_grpc}",
        "JAEGER_HEALTH_ENDPOINT": f"{LOOPBACK}:{health}",
        "JAEGER_METRICS_HOST": LOOPBACK,
        "JAEGER_METRICS_PORT": str(metrics),
        "JAEGER_BADGER_DIR": str(workdir / f"{name}-badger"),
        "JAEGER_PROMETHEUS_URL": prometheus_url,
    }
    argv = [str(binaries()["JAEGER"]), *compose_argv(spec, "jaeger")]
    process = start(name, argv, {**addresses, **env}, workdir)
    jaeger = Jaeger(process, grpc, http, query, query_grpc, health, metrics)
    wait_until(lambda: _healthy(jaeger.process, f"http://{LOOPBACK}:{health}/status"), f"{name} health", timeout=60)
    return jaeger


@dataclass
class LokiStandin:
    process: Process
    port: int
    records_file: Path

    @property
    def otlp_url(self) -> str:
        """What the Collector's otlp_http/loki exporter is pointed at (it appends /v1/logs)."""
        return f"http://{LOOPBACK}:{self.port}/otlp"


def start_loki_standin(workdir: Path) -> LokiStandin:
    port = free_port()
    records = workdir / "loki-standin-records.jsonl"
    env = {"LOKI_STANDIN_ENDPOINT": f"{LOOPBACK}:{port}", "LOKI_STANDIN_FILE": str(records)}
    config = REPO / "native" / "standins" / "loki-standin.yaml"
    standin = LokiStandin(
        start("loki-standin", [str(binaries()["LOKI_STANDIN"]), f"--config={config}"], env, workdir), port, records
    )

    # An empty POST answers once the receiver is up (any HTTP status will do).
    def answers() -> int:
        standin.process.ensure_alive()
        return httpx.post(f"{standin.otlp_url}/v1/logs", timeout=2).status_code

    wait_until(answers, "Loki stand-in")
    return standin


@dataclass
class Prometheus:
    process: Process
    port: int
    config_file: Path
    dropped_jobs: list[str]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def _swap_targets(static_configs: list[dict[str, Any]], targets: Mapping[str, str]) -> bool:
    """Each compose address in `static_configs` swapped for its native one; False (and nothing
    swapped) if one has none."""
    addresses = [address for group in static_configs for address in group["targets"]]
    if not all(address in targets for address in addresses):
        return False
    for group in static_configs:
        group["targets"] = [targets[address] for address in group["targets"]]
    return True


def native_prometheus_config(
    targets: Mapping[str, str], destination: Path, spec: dict[str, Any] | None = None, interval: str | None = None
) -> list[str]:
    """backends/prometheus.yml with each compose target (`app-a:8000`) swapped for its native
    address and the rule files for their place in the repo (through compose's mounts). Jobs
    whose backend has no native counterpart (Tempo, Loki, Grafana) are dropped, their names
    returned; so is the Alertmanager when `targets` has none. `interval` replaces every scrape
    and the rule evaluation interval (the alerting end-to-end test's override)."""
    config = yaml.safe_load((REPO / "backends" / "prometheus.yml").read_text())
    mounts = bind_mounts(spec or compose.load(), "prometheus")
    config["rule_files"] = [repo_path(mounts, pattern) for pattern in config.get("rule_files", [])]
    if not all(_swap_targets(am["static_configs"], targets) for am in config["alerting"]["alertmanagers"]):
        del config["alerting"]
    kept, dropped = [], []
    for job in config["scrape_configs"]:
        if _swap_targets(job["static_configs"], targets):
            if interval:
                job.pop("scrape_interval", None)
            kept.append(job)
        else:
            dropped.append(job["job_name"])
    config["scrape_configs"] = kept
    if interval:
        config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    destination.write_text(yaml.safe_dump(config, sort_keys=False))
    return dropped


def start_prometheus(
    spec: dict[str, Any], workdir: Path, targets: Mapping[str, str], port: int, interval: str | None = None
) -> Prometheus:
    """Real Prometheus with compose's flags and our config, scraping the native targets.
    `targets` maps compose addresses to native ones; `port` is reserved by the caller so the
    self-scrape target can name it; `interval`: see native_prometheus_config."""
    config_file = workdir / "prometheus.yml"
    dropped = native_prometheus_config({**targets, "localhost:9090": f"{LOOPBACK}:{port}"}, config_file, spec, interval)
    overrides = {
        "--config.file": str(config_file),
        "--storage.tsdb.path": str(workdir / "prometheus-data"),
        "--web.listen-address": f"{LOOPBACK}:{port}",
    }
    argv = [str(binaries()["PROMETHEUS"]), *compose_argv(spec, "prometheus", overrides)]
    prometheus = Prometheus(start("prometheus", argv, {}, workdir), port, config_file, dropped)
    wait_until(lambda: _healthy(prometheus.process, f"{prometheus.url}/-/ready"), "Prometheus ready", timeout=60)
    return prometheus


@dataclass
class Alertmanager:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"


def native_alertmanager_config(destination: Path, webhook_url: str, timings: Mapping[str, str] = {}) -> None:
    """backends/alertmanager.yml with a webhook to `webhook_url` on every receiver (the shipped
    ones deliver nowhere) and, on every route, the timers in `timings` (group_wait,
    group_interval, repeat_interval) instead of the shipped ones."""
    config = yaml.safe_load((REPO / "backends" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        route.update(timings)
        routes += route.get("routes", [])
    destination.write_text(yaml.safe_dump(config, sort_keys=False))


def start_alertmanager(
    spec: dict[str, Any], workdir: Path, webhook_url: str, timings: Mapping[str, str] = {}
) -> Alertmanager:
    """Real Alertmanager with compose's flags and backends/alertmanager.yml, delivering every
    notification to `webhook_url` (see native_alertmanager_config)."""
    port = free_port()
    config_file = workdir / "alertmanager.yml"
    native_alertmanager_config(config_file, webhook_url, timings)
    overrides = {
        "--config.file": str(config_file),
        "--storage.path": str(workdir / "alertmanager-data"),
        "--web.listen-address": f"{LOOPBACK}:{port}",
    }
    argv = [str(binaries()["ALERTMANAGER"]), *compose_argv(spec, "alertmanager", overrides)]
    alertmanager = Alertmanager(start("alertmanager", argv, {}, workdir), port)
    wait_until(lambda: _healthy(alertmanager.process, f"{alertmanager.url}/-/ready"), "Alertmanager ready", timeout=60)
    return alertmanager


def start_log_and_trace_backends(
    spec: dict[str, Any],
    workdir: Path,
    prometheus_url: str,
    started: list[Process],
    jaeger_variant: JaegerVariant = COMPOSE_JAEGER,
) -> tuple[LokiStandin, Jaeger, Jaeger]:
    """The Loki stand-in, Jaeger (as `jaeger_variant` says) and the Tempo stand-in (a second
    Jaeger, on Badger), each appended to `started` as soon as it runs, so the caller can stop
    them if a later start fails."""
    loki = start_loki_standin(workdir)
    started.append(loki.process)
    jaeger = start_jaeger(
        jaeger_variant.spec or spec, workdir, name="jaeger", prometheus_url=prometheus_url, env=jaeger_variant.env
    )
    started.append(jaeger.process)
    tempo = start_jaeger(spec, workdir, name="tempo-standin", prometheus_url=prometheus_url)
    started.append(tempo.process)
    return loki, jaeger, tempo
