"""A real Cassandra node for the tests: the server jars native/build.sh fetched from Maven
Central (cassandra-all at .env's CASSANDRA_VERSION), one node on loopback, data in the test's
directory, started with CassandraDaemon the way Cassandra's bin/cassandra does (in the
foreground), with native/cassandra/'s small config and the heap and data center the compose
`cassandra` service gives its container.
"""

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import compose, cql
from .backends import LOOPBACK, JaegerVariant
from .compose import service_environment
from .paths import REPO, binaries
from .processes import Process, free_port, start, wait_until

CONFIG_DIR = REPO / "native" / "cassandra"
COMPOSE_OVERRIDE = REPO / "backends" / "compose.cassandra.yaml"
# A first start (JVM, system keyspaces, tokens) took 6 s on 2 quiet cores, 44 s on busy ones.
START_TIMEOUT = 120


@dataclass
class Cassandra:
    name: str
    workdir: Path
    process: Process
    native_port: int
    storage_port: int
    started_in_s: float  # from exec to the first answered CQL query

    @property
    def storage_dir(self) -> Path:
        """-Dcassandra.storagedir: data/, commitlog/, saved_caches/ and hints/ beneath it."""
        return self.workdir / f"{self.name}-data"

    @property
    def ports(self) -> tuple[int, int]:
        """Pass back to `start_cassandra` to restart this node in place."""
        return (self.native_port, self.storage_port)

    @property
    def address(self) -> str:
        """host:port for CQL clients (Jaeger's `servers`)."""
        return f"{LOOPBACK}:{self.native_port}"

    def query(self, statement: str) -> list[dict[str, Any]]:
        return cql.query(LOOPBACK, self.native_port, statement)


def heap_flags(spec: dict[str, Any]) -> list[str]:
    """-Xms/-Xmx from compose's MAX_HEAP_SIZE, as the image's cassandra-env.sh sets both."""
    size = service_environment(spec, "cassandra")["MAX_HEAP_SIZE"]
    if not re.fullmatch(r"\d+[MG]", size):
        raise ValueError(f"compose's cassandra MAX_HEAP_SIZE={size!r}: expected e.g. 512M")
    return [f"-Xms{size}", f"-Xmx{size}"]


def write_rackdc(spec: dict[str, Any], destination: Path) -> Path:
    """cassandra-rackdc.properties as the image's entrypoint writes it from CASSANDRA_DC/RACK."""
    env = service_environment(spec, "cassandra")
    destination.write_text(f"dc={env['CASSANDRA_DC']}\nrack={env.get('CASSANDRA_RACK', 'rack1')}\n")
    return destination


def cassandra_argv(spec: dict[str, Any], storage_dir: Path, native_port: int, storage_port: int) -> list[str]:
    home = binaries()["CASSANDRA"]  # native/build.sh: lib/ (the jars) and java (a Java 17)
    lib = home / "lib"
    (jamm,) = lib.glob("jamm-*.jar")  # measures object sizes for memtable accounting
    rackdc = write_rackdc(spec, storage_dir / "cassandra-rackdc.properties")
    return [
        str(home / "java"),
        f"@{CONFIG_DIR / 'jvm17-server.options'}",
        *heap_flags(spec),
        f"-javaagent:{jamm}",
        f"-Dcassandra.config={(CONFIG_DIR / 'cassandra.yaml').as_uri()}",
        f"-Dcassandra-rackdc.properties={rackdc.as_uri()}",
        f"-Dlogback.configurationFile={(CONFIG_DIR / 'logback.xml').as_uri()}",
        f"-Dcassandra.storagedir={storage_dir}",
        f"-Dcassandra.native_transport_port={native_port}",
        f"-Dcassandra.storage_port={storage_port}",
        # A lone seed has no peers to hear from: skip the (>= 5 s) wait for gossip to settle.
        "-Dcassandra.skip_wait_for_gossip_to_settle=0",
        "-Dcassandra-foreground=yes",
        "-cp",
        f"{lib}/*",
        "org.apache.cassandra.service.CassandraDaemon",
    ]


def start_cassandra(
    spec: dict[str, Any], workdir: Path, *, name: str = "cassandra", ports: tuple[int, int] | None = None
) -> Cassandra:
    """One node with its data in `workdir/<name>-data`; ready once it answers a CQL query on
    system.local. Pass `ports` of an earlier instance to restart it in place on its data."""
    native_port, storage_port = ports or (free_port(), free_port())
    storage_dir = workdir / f"{name}-data"
    storage_dir.mkdir(exist_ok=True)
    runs = len(list(workdir.glob(f"{name}-run*.log")))  # a log per run
    argv = cassandra_argv(spec, storage_dir, native_port, storage_port)
    began = time.monotonic()
    process = start(f"{name}-run{runs}", argv, {}, workdir)
    node = Cassandra(name, workdir, process, native_port, storage_port, 0.0)

    def answers() -> bool:
        process.ensure_alive()
        return bool(node.query("SELECT release_version FROM system.local"))

    try:
        wait_until(answers, f"{name} answering CQL on {node.address}", timeout=START_TIMEOUT, interval=0.5)
    except BaseException:
        process.stop()
        raise
    node.started_in_s = round(time.monotonic() - began, 1)
    return node


def jaeger_on(address: str) -> JaegerVariant:
    """Jaeger as `make up JAEGER_STORAGE=cassandra` runs it (the override file's command:
    backends/jaeger-cassandra.yaml, and its Collector environment), its Cassandra `servers` set
    to `address` (host:port)."""
    override = compose.load(COMPOSE_OVERRIDE)
    collector_env = service_environment(override, "collector")
    return JaegerVariant(override, {"JAEGER_CASSANDRA_SERVERS": address}, collector_env)


def restart_cassandra(spec: dict[str, Any], node: Cassandra) -> None:
    """`node` (stopped) started again on its data directory and ports; `node` is updated in
    place, so whoever holds it stops the new process."""
    assert not node.process.alive(), "stop the running node first"
    again = start_cassandra(spec, node.workdir, name=node.name, ports=node.ports)
    node.process, node.started_in_s = again.process, again.started_in_s
