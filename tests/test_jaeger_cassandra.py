"""Jaeger on Cassandra, run for real: the variant `make up JAEGER_STORAGE=cassandra` starts
(compose profile `cassandra`, backends/compose.cassandra.yaml, backends/jaeger-cassandra.yaml),
proven like the Badger one.

One real Cassandra node per module (nativestack.cassandra: the server jars native/build.sh
fetched from Maven Central at .env's CASSANDRA_VERSION, on loopback, data in the module's
temporary directory) and a whole native stack of its own whose Jaeger runs
backends/jaeger-cassandra.yaml with only its addresses changed: the Collector fans out to it and
the Tempo stand-in, the three apps send /chain traffic, Prometheus serves the Monitor tab. The
last two tests take Cassandra and Jaeger down; they run after the read-back tests (file order).
Figures (start time, memory, the outage) go to reports/reliability.json, as test_reliability's.
"""

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from helpers.chain import assert_chain_trace, stored_chain_traces
from helpers.clients import JaegerAPI
from helpers.figures import record
from helpers.outage import assert_nothing_lost_or_duplicated, spans_through_an_outage
from helpers.spans import generate, wait_for_spans
from helpers.traffic import Traffic, drive
from helpers.waiting import wait_for_count
from nativestack import compose
from nativestack.apps import APP_NAMES
from nativestack.backends import Jaeger, start_jaeger
from nativestack.cassandra import Cassandra, jaeger_on, restart_cassandra, start_cassandra
from nativestack.counters import span_counters
from nativestack.paths import REPO, versions
from nativestack.processes import ProcessExited, wait_until
from nativestack.procfs import rss_mib
from nativestack.scrape import metric_total, scrape
from nativestack.stack import Stack, start_stack

SLOW = 90  # seconds: span metrics flush every 15 s, Prometheus scrapes every 5 s
JAEGER_CONFIG = REPO / "backends" / "jaeger-cassandra.yaml"
SPAN_TABLES = {
    "traces",
    "service_names",
    "operation_names_v2",
    "service_operation_index",
    "service_name_index",
    "duration_index",
    "tag_index",
}


def cassandra_store() -> dict[str, Any]:
    """The cassandra_store settings of backends/jaeger-cassandra.yaml, as compose runs it."""
    config = yaml.safe_load(compose.with_env_defaults(JAEGER_CONFIG.read_text()))
    store: dict[str, Any] = config["extensions"]["jaeger_storage"]["backends"]["cassandra_store"]["cassandra"]
    return store


def seconds(duration: str) -> int:
    """A Go duration of whole hours, minutes or seconds (`72h`) in seconds."""
    match = re.fullmatch(r"(\d+)([hms])", duration)
    assert match, f"{duration!r}: expected e.g. 72h"
    return int(match[1]) * {"h": 3600, "m": 60, "s": 1}[match[2]]


@pytest.fixture(scope="module")
def cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cassandra]:
    node = start_cassandra(compose.load(), tmp_path_factory.mktemp("cassandra"))
    try:
        yield node
    finally:
        node.process.stop(timeout=60)  # the one running now: the outage test restarts it in place


@pytest.fixture(scope="module")
def cstack(cassandra: Cassandra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("cassandra-stack"), jaeger_on(cassandra.address)) as running:
        yield running


@pytest.fixture(scope="module")
def chain_traffic(cstack: Stack) -> Traffic:
    return drive({name: app.url for name, app in cstack.apps.items()})


def restart_jaeger(stack: Stack, cassandra_address: str) -> Jaeger:
    """The stack's (stopped) Jaeger started again on its ports, its Cassandra at `address`."""
    variant = jaeger_on(cassandra_address)
    assert variant.spec is not None
    stack.jaeger = start_jaeger(
        variant.spec,
        stack.workdir,
        name="jaeger",
        prometheus_url=stack.prometheus.url,
        ports=stack.jaeger.ports,
        env=variant.env,
    )
    return stack.jaeger


def jaeger_queue(stack: Stack) -> float:
    samples = scrape(stack.collector.metrics_url)
    return metric_total(samples, "otelcol_exporter_queue_size", exporter="otlp_grpc/jaeger")


# ---------------------------------------------------------------- the node and the schema


def test_native_cassandra_is_the_env_version_on_composes_data_center(
    cassandra: Cassandra, figures: dict[str, Any]
) -> None:
    spec = compose.load()
    version = versions()["CASSANDRA_VERSION"]
    assert spec["services"]["cassandra"]["image"] == f"cassandra:{version}"  # one version, both runs
    (local,) = cassandra.query("SELECT release_version, data_center, rack FROM system.local")
    assert local["release_version"] == version
    assert local["data_center"] == compose.service_environment(spec, "cassandra")["CASSANDRA_DC"]
    # Everything it writes is in the module's temporary directory.
    assert {"data", "commitlog", "saved_caches", "hints"} <= {p.name for p in cassandra.storage_dir.iterdir()}
    record(
        figures,
        "cassandra_node",
        version=version,
        start_to_first_cql_s=cassandra.started_in_s,
        rss_mib_idle=round(rss_mib(cassandra.process.pid)),
        heap=spec["services"]["cassandra"]["environment"]["MAX_HEAP_SIZE"],
    )


def test_jaeger_creates_its_keyspace_and_tables_with_the_configured_ttl(cstack: Stack, cassandra: Cassandra) -> None:
    store = cassandra_store()
    keyspace, replicas = store["schema"]["keyspace"], store["schema"]["replication_factor"]
    assert re.fullmatch(r"\w+", keyspace), keyspace  # an identifier: safe to put in the queries below
    data_center = compose.service_environment(cstack.spec, "cassandra")["CASSANDRA_DC"]
    where = f"WHERE keyspace_name = '{keyspace}'"
    (row,) = cassandra.query(f"SELECT replication FROM system_schema.keyspaces {where}")  # noqa: S608
    assert row["replication"] == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        data_center: str(replicas),
    }
    tables = {
        t["table_name"]: t["default_time_to_live"]
        for t in cassandra.query(f"SELECT table_name, default_time_to_live FROM system_schema.tables {where}")  # noqa: S608
    }
    assert set(tables) >= SPAN_TABLES | {"dependencies_v2"}
    assert {tables[t] for t in SPAN_TABLES} == {seconds(store["schema"]["trace_ttl"])}


# ---------------------------------------------------------------- read back like the Badger variant


@pytest.mark.parametrize("backend", ["jaeger", "tempo"])
def test_every_chain_trace_read_back_with_three_services_and_correct_parents(
    backend: str, cstack: Stack, chain_traffic: Traffic
) -> None:
    api = JaegerAPI(cstack.jaeger.api_url if backend == "jaeger" else cstack.tempo.api_url)
    chains = chain_traffic.requests("/chain", app="app-a")
    traces = stored_chain_traces(api, chains, timeout=SLOW)
    assert len(traces) == chains
    for trace in traces:
        assert_chain_trace(trace, {port: name for name, port in cstack.app_ports.items()})


def test_every_span_stored_once_in_cassandra_and_in_the_tempo_standin(cstack: Stack, chain_traffic: Traffic) -> None:
    expected = chain_traffic.expected_spans()
    jaeger, tempo = JaegerAPI(cstack.jaeger.api_url), JaegerAPI(cstack.tempo.api_url)
    in_cassandra = wait_for_count(lambda: jaeger.all_spans(list(APP_NAMES)), expected, "spans in Cassandra", SLOW)
    in_tempo = wait_for_count(lambda: tempo.all_spans(list(APP_NAMES)), expected, "spans in the Tempo stand-in", SLOW)
    assert len(in_cassandra) == expected
    assert set(in_cassandra) == set(in_tempo)


def test_monitor_tab_reads_span_metrics_with_the_cassandra_variant(cstack: Stack, chain_traffic: Traffic) -> None:
    jaeger = JaegerAPI(cstack.jaeger.api_url)
    assert wait_until(lambda: jaeger.call_rates("app-a"), "a call rate for app-a in Jaeger's Monitor API", timeout=SLOW)


# ---------------------------------------------------------------- a bad day


def test_cassandra_down_30s_collector_queue_holds_jaegers_spans_and_delivers_them_once(
    cstack: Stack, cassandra: Cassandra, figures: dict[str, Any]
) -> None:
    """100 spans/s into the Collector; Cassandra is stopped (SIGTERM) for 30 s and started again
    on its data. Jaeger stays up, answers the Collector's exports with an error meanwhile (no
    batch processor in jaeger-cassandra.yaml), so Jaeger's share waits in the Collector's
    persistent queue; the Tempo stand-in gets everything during the outage. After recovery
    Jaeger has every span exactly once; the Collector refused and dropped nothing."""
    stop_s: list[float] = []
    jaeger_stayed_up: list[bool] = []

    def down() -> None:
        began = time.monotonic()
        cassandra.process.stop(timeout=60)  # SIGTERM: Cassandra drains, then exits
        stop_s.append(round(time.monotonic() - began, 1))

    def back() -> None:
        jaeger_stayed_up.append(cstack.jaeger.process.alive())
        restart_cassandra(cstack.spec, cassandra)

    run = spans_through_an_outage(
        cstack,
        service="cassandra-outage",
        # Within what Jaeger writes to Cassandra on 2 busy cores (backends/compose.cassandra.yaml).
        rate=100,
        down_s=30,
        stop=down,
        start=back,
    )
    record(
        figures,
        "cassandra_down",
        **run.figures(),
        cassandra_stop_s=stop_s,
        cassandra_restart_to_cql_s=cassandra.started_in_s,
        jaeger_stayed_up=jaeger_stayed_up == [True],
    )
    assert jaeger_stayed_up == [True], cstack.jaeger.process.output()[-2000:]
    assert_nothing_lost_or_duplicated(run)


def test_jaeger_on_an_unreachable_cassandra_fails_readably_and_the_tempo_path_keeps_working(
    cstack: Stack, cassandra: Cassandra, figures: dict[str, Any]
) -> None:
    """Jaeger restarted with its `servers` on a port nothing listens on exits at start-up with a
    message naming the address; meanwhile the Collector accepts everything (nothing refused), the
    Tempo stand-in stores it, and Jaeger's share waits; Jaeger back on the real node gets it."""
    service = "cassandra-unreachable"
    url = f"{cstack.collector.otlp_http_url}/v1/traces"
    cstack.jaeger.process.stop()
    with socket.socket() as closed:  # bound, never listening: refuses connections
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(ProcessExited) as failed:
            restart_jaeger(cstack, address)
    message = str(failed.value)
    assert "jaeger exited with 1" in message
    assert "failed to initialize storage 'cassandra_store'" in message
    assert f"dial tcp {address}: connect: connection refused" in message
    sent = generate(url, service, spans_per_s=200, duration_s=3)
    assert set(sent.statuses) == {200} and not sent.errors, (sent.statuses, sent.errors)
    tempo = wait_for_spans(cstack.tempo.api_url, service, sent.accepted, timeout=30)
    assert tempo.copies == len(tempo.ids) == sent.accepted
    queued = jaeger_queue(cstack)
    assert queued >= sent.accepted, "Jaeger's share waits in the Collector's queue"
    restart_jaeger(cstack, cassandra.address)
    stored = wait_for_spans(cstack.jaeger.api_url, service, sent.accepted, timeout=120)
    assert stored.ids == set(sent.accepted_ids) and stored.copies == sent.accepted
    assert not span_counters(cstack.collector.metrics_url).failures()
    record(
        figures,
        "jaeger_cassandra_unreachable",
        jaeger_error=message.splitlines()[-1],
        spans_accepted=sent.accepted,
        spans_in_tempo=tempo.copies,
        jaeger_queue_while_down=queued,
        spans_in_cassandra_after=stored.copies,
    )
