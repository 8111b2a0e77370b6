"""The two-tier pipeline natively, wired like backends/compose.gateway.yaml: gateways (the
`gateway` service's Collector configs) and an agent (the `collector` service's, overridden)
in front of Jaeger, the Tempo stand-in, the Loki stand-in and Prometheus.

Compose's DNS gives the agent every gateway replica under one name. Here each gateway listens for
OTLP/gRPC on its own loopback address (127.0.0.11, .12, ...) at one shared port, and the agent
resolves the name through a hosts file of its own: it runs in a private mount namespace
(`unshare --mount`) with that file bind-mounted over /etc/hosts, so the machine's /etc/hosts is
never touched. Rewriting the file in place is what a scale event or a dead replica looks like to
the agent's dns resolver. Needs root (CI and our machines run as root).
"""

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import compose
from .apps import APP_NAMES, CONTAINER_PORT, App, start_apps
from .backends import (
    LOOPBACK,
    Collector,
    Jaeger,
    LokiStandin,
    Prometheus,
    start_collector,
    start_log_and_trace_backends,
    start_prometheus,
)
from .paths import REPO
from .processes import Process, StoppedOnExit, free_port

OVERLAY = REPO / "backends" / "compose.gateway.yaml"
GATEWAY_HOSTNAME = "gateway"  # the compose service name the agent resolves


def gateway_address(index: int) -> str:
    return f"127.0.0.{11 + index}"


@dataclass
class HostsFile:
    """The agent's /etc/hosts: one line per gateway it should see."""

    path: Path

    def publish(self, addresses: list[str]) -> None:
        # In place (same inode): the agent sees this file through a bind mount.
        with self.path.open("r+") as file:
            file.truncate(0)
            file.write("127.0.0.1 localhost\n" + "".join(f"{a} {GATEWAY_HOSTNAME}\n" for a in addresses))


def private_hosts_launcher(hosts: HostsFile) -> list[str]:
    """Runs the program in its own mount namespace with `hosts` as its /etc/hosts, and a
    resolv.conf naming only loopback, so a name missing from `hosts` fails here and is never
    asked of the machine's DNS server."""
    resolv = hosts.path.with_suffix(".resolv.conf")
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    script = 'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, str(hosts.path), str(resolv)]


@dataclass
class Tier(StoppedOnExit):
    spec: dict[str, Any]
    workdir: Path
    loki: LokiStandin
    jaeger: Jaeger
    tempo: Jaeger
    prometheus_otlp_url: str
    gateway_port: int
    hosts: HostsFile
    gateways: dict[int, Collector] = field(default_factory=dict)
    agents: list[Collector] = field(default_factory=list)

    def start_gateway(self, index: int) -> Collector:
        """Gateway `index` on its own address, not yet in the agents' hosts file."""
        previous = self.gateways.get(index)
        gateway = start_collector(
            self.spec,
            self.workdir,
            tempo_otlp=self.tempo.otlp_grpc_endpoint,
            jaeger_otlp=self.jaeger.otlp_grpc_endpoint,
            loki_url=self.loki.otlp_url,
            prometheus_otlp_url=self.prometheus_otlp_url,
            name=f"gateway-{index}",
            service="gateway",
            grpc_host=gateway_address(index),
            ports=(self.gateway_port, free_port(), free_port(), free_port()),
            queue_dir=previous.queue_dir if previous else None,
            overrides={"HOSTNAME": f"gateway-{index}"},
        )
        self.gateways[index] = gateway
        return gateway

    def kill_gateway(self, index: int) -> None:
        """SIGKILL: a crash, with no flush of what the gateway holds."""
        process = self.gateways[index].process
        process.signal(signal.SIGKILL)
        process.popen.wait(timeout=30)

    def resolve(self, indexes: list[int]) -> None:
        """What the agents' dns resolver sees from now on."""
        self.hosts.publish([gateway_address(i) for i in indexes])

    def start_agent(self, name: str = "agent", hosts: HostsFile | None = None, **overrides: str) -> Collector:
        """An agent that resolves the gateways through `hosts` (the tier's own by default)."""
        agent = start_collector(
            self.spec,
            self.workdir,
            tempo_otlp="unused:4317",
            jaeger_otlp="unused:4317",
            loki_url=self.loki.otlp_url,
            prometheus_otlp_url=self.prometheus_otlp_url,
            name=name,
            launcher=private_hosts_launcher(hosts or self.hosts),
            overrides={"GATEWAY_OTLP_PORT": str(self.gateway_port), "GATEWAY_RESOLVE_INTERVAL": "1s", **overrides},
        )
        self.agents.append(agent)
        return agent

    def processes(self) -> list[Process]:
        """Stop order: agents first (they flush into the gateways), then gateways, backends last."""
        return [
            *(agent.process for agent in self.agents),
            *(gateway.process for gateway in self.gateways.values()),
            self.jaeger.process,
            self.tempo.process,
            self.loki.process,
        ]


def start_tier(workdir: Path, prometheus_url: str, gateways: int = 3) -> Tier:
    """Backends, `gateways` gateways and one agent that resolves all of them; the caller starts
    Prometheus at `prometheus_url` (it scrapes the apps, which start after the agent)."""
    spec = compose.load_with(OVERLAY)
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = HostsFile(workdir / "agent-hosts")
    hosts.path.write_text("")
    started: list[Process] = []
    try:
        loki, jaeger, tempo = start_log_and_trace_backends(spec, workdir, prometheus_url, started)
        tier = Tier(spec, workdir, loki, jaeger, tempo, f"{prometheus_url}/api/v1/otlp", free_port(), hosts)
        for index in range(gateways):
            started.append(tier.start_gateway(index).process)
        tier.resolve(list(range(gateways)))
        started.append(tier.start_agent().process)
        return tier
    except BaseException:
        for process in reversed(started):
            process.stop()
        raise


def agent_addresses(agent: Collector) -> dict[str, str]:
    """Compose `host:port` of the agent (the apps' `collector`) -> its native address."""
    return {"collector:4318": f"{LOOPBACK}:{agent.http_port}", "collector:4317": f"{LOOPBACK}:{agent.grpc_port}"}


@dataclass
class GatewayStack(StoppedOnExit):
    """The tier plus Prometheus and the three apps sending to the agent, as compose runs them."""

    tier: Tier
    prometheus: Prometheus
    apps: dict[str, App]

    def processes(self) -> list[Process]:
        return [*(app.process for app in self.apps.values()), *self.tier.processes(), self.prometheus.process]


def start_gateway_stack(workdir: Path) -> GatewayStack:
    prometheus_port = free_port()
    tier = start_tier(workdir, f"http://{LOOPBACK}:{prometheus_port}")
    prometheus: Prometheus | None = None
    try:
        agent = tier.agents[0]
        app_ports = {name: free_port() for name in APP_NAMES}
        app_targets = {f"{name}:{CONTAINER_PORT}": f"{LOOPBACK}:{port}" for name, port in app_ports.items()}
        targets = {
            **app_targets,
            "collector:8888": f"{LOOPBACK}:{agent.metrics_port}",
            "jaeger:8888": f"{LOOPBACK}:{tier.jaeger.metrics_port}",
        }
        prometheus = start_prometheus(tier.spec, workdir, targets, prometheus_port)
        apps = start_apps(tier.spec, workdir, {**app_targets, **agent_addresses(agent)}, app_ports)
        return GatewayStack(tier, prometheus, apps)
    except BaseException:
        tier.stop()
        if prometheus:
            prometheus.process.stop()
        raise
