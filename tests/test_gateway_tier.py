"""The two-tier pipeline (backends/compose.gateway.yaml) on real Collectors: one agent routing by
trace id through its dns resolver to three tail-sampling gateways, in front of Jaeger, the Tempo
stand-in and Prometheus, with the three apps sending to the agent.

Every test here uses the dns resolver, fed through the agent's private hosts file
(nativestack.gateway): a scale event or a dead gateway is a rewrite of that file, as compose's DNS
would change. Traces are generated in pieces (tests/helpers/traces.py) so that a split trace or an
early decision would show; the apps' own traffic feeds the service graph and the exemplars.
Figures of the gateway-kill and scale cases are printed and written to reports/gateway-tier.json
for docs/reliability.md; the assertions are what must hold on any machine.
"""

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sampling import TailSampling
from helpers.clients import JaegerAPI, PrometheusAPI
from helpers.traces import PlannedTrace, piece, plan_traces, send_in_pieces, stored_span_counts, wait_whole
from helpers.traffic import drive
from nativestack.apps import start_app
from nativestack.compose import service_environment
from nativestack.gateway import GatewayStack, HostsFile, agent_addresses, gateway_address, start_gateway_stack
from nativestack.paths import REPO, binaries
from nativestack.processes import free_port, wait_until
from nativestack.scrape import metric_total, scrape

FIGURES_FILE = REPO / "reports" / "gateway-tier.json"
DECIDED = "otelcol_processor_tail_sampling_global_count_traces_sampled_total"
NEW_TRACES = "otelcol_processor_tail_sampling_new_trace_id_received_total"
ACCEPTED = "otelcol_receiver_accepted_spans_total"


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStack]:
    with start_gateway_stack(tmp_path_factory.mktemp("gateway-tier")) as running:
        yield running


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    recorded: dict[str, Any] = {}
    yield recorded
    FIGURES_FILE.parent.mkdir(exist_ok=True)
    FIGURES_FILE.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def rule(gateways: GatewayStack) -> TailSampling:
    """The thresholds the gateways run with (collector/sampling.env through compose)."""
    env = service_environment(gateways.tier.spec, "gateway")
    return TailSampling(int(env["TRACE_SAMPLING_BASELINE_PERCENT"]), int(env["TRACE_SAMPLING_SLOW_MS"]))


def gateway_total(stack: GatewayStack, name: str, **labels: str) -> float:
    return sum(
        metric_total(scrape(g.metrics_url), name, **labels) for g in stack.tier.gateways.values() if g.process.alive()
    )


def wait_decided(stack: GatewayStack, before: float, traces: int) -> None:
    """Until the gateways have decided `traces` more traces (decision_wait is 10 s)."""
    wait_until(
        lambda: gateway_total(stack, DECIDED) - before >= traces, f"{traces} sampling decisions", timeout=90, interval=1
    )


def expected_kept(rule: TailSampling, trace: PlannedTrace) -> bool:
    return trace.marked or rule.keeps_trace_id(trace.trace_id)


def test_every_trace_reaches_one_gateway_whole_and_is_kept_or_dropped_whole(
    gateways: GatewayStack, rule: TailSampling, figures: dict[str, Any]
) -> None:
    agent = gateways.tier.agents[0]
    traces = plan_traces(400, error_every=10, server_error_every=10, slow_every=10)
    decided, new, accepted = (gateway_total(gateways, m) for m in (DECIDED, NEW_TRACES, ACCEPTED))
    send_in_pieces(agent.otlp_http_url, "gw-whole", traces)
    wait_decided(gateways, decided, len(traces))
    # Each trace seen new by exactly one gateway, every span accepted by one.
    assert gateway_total(gateways, NEW_TRACES) - new == len(traces)
    assert gateway_total(gateways, ACCEPTED) - accepted == 3 * len(traces)
    per_gateway = {i: metric_total(scrape(g.metrics_url), NEW_TRACES) for i, g in gateways.tier.gateways.items()}
    assert all(per_gateway.values()), f"a gateway got no trace: {per_gateway}"

    kept = [t for t in traces if expected_kept(rule, t)]
    dropped = [t for t in traces if not expected_kept(rule, t)]
    for api in (JaegerAPI(gateways.tier.jaeger.api_url), JaegerAPI(gateways.tier.tempo.api_url)):
        wait_whole(api, kept)
        assert set(stored_span_counts(api, dropped).values()) == {0}, "a dropped trace was stored"
    baseline = [t for t in traces if not t.marked]
    share = sum(rule.keeps_trace_id(t.trace_id) for t in baseline) / len(baseline)
    figures["sampling"] = {
        "traces": len(traces),
        "kept": len(kept),
        "baseline_share": round(share, 3),
        "per_gateway": per_gateway,
    }
    # 10% of ~280 unmarked traces: binomial sd ~1.8 points; 4 sd either way.
    assert abs(share - rule.baseline_percent / 100) < 0.075


def test_red_metrics_count_every_span_before_sampling(gateways: GatewayStack) -> None:
    traces = plan_traces(120)
    send_in_pieces(gateways.tier.agents[0].otlp_http_url, "gw-red", traces)
    prometheus = PrometheusAPI(gateways.prometheus.url)

    def calls() -> float:
        result = prometheus.query('sum(traces_span_metrics_calls_total{service_name="gw-red"})')
        return float(result[0]["value"][1]) if result else 0.0

    # span_metrics flushes every 15 s; the count is of spans, kept or dropped.
    wait_until(lambda: calls() == 3 * len(traces), f"{3 * len(traces)} span-metrics calls", timeout=90, interval=2)
    series = prometheus.query(
        'count by (collector_instance_id) (traces_span_metrics_calls_total{service_name="gw-red"})'
    )
    assert len(series) >= 2, f"expected several gateways to write their own series: {series}"


def test_service_graph_has_the_chain_edges_with_one_series_per_gateway(gateways: GatewayStack) -> None:
    apps = {name: app.url for name, app in gateways.apps.items()}
    drive(apps, {"/chain": 12})
    prometheus = PrometheusAPI(gateways.prometheus.url)
    edges_query = "sum by (client, server) (traces_service_graph_request_total)"

    def edges() -> set[tuple[str, str]]:
        return {(r["metric"]["client"], r["metric"]["server"]) for r in prometheus.query(edges_query)}

    wait_until(
        lambda: {("app-a", "app-b"), ("app-a", "app-c")} <= edges(), "service-graph edges", timeout=90, interval=2
    )
    unlabelled = prometheus.query('traces_service_graph_request_total{collector_instance_id=""}')
    assert not unlabelled, f"service-graph series without a gateway identity: {unlabelled}"
    # Two gateways writing one series would send samples out of order for it: Prometheus
    # rejects and counts them.
    rejected = wait_until(
        lambda: prometheus.query("sum(prometheus_tsdb_out_of_order_samples_total)"),
        "Prometheus' own out-of-order counter (its self-scrape)",
        timeout=30,
    )
    assert float(rejected[0]["value"][1]) == 0, "Prometheus rejected samples: two gateways wrote one series"


EXEMPLAR_SOURCES = {
    "scraped (prometheus-client)": "fastapi_requests_duration_seconds_bucket",
    "OTLP (SDK)": "http_server_request_duration_seconds_bucket",
    "OTLP (span_metrics)": "traces_span_metrics_duration_milliseconds_bucket",
}


def test_every_exemplar_with_a_trace_link_resolves(gateways: GatewayStack, figures: dict[str, Any]) -> None:
    apps = {name: app.url for name, app in gateways.apps.items()}
    plan = {"/": 40, "/items/7": 20, "/error_test": 4, "/random_status": 20, "/chain": 4}
    drive(apps, plan)
    prometheus = PrometheusAPI(gateways.prometheus.url)

    def linked(metric: str) -> dict[str, int]:
        ids: dict[str, int] = {}
        for group in prometheus.exemplars(metric):
            for exemplar in group["exemplars"]:
                trace_id = exemplar["labels"].get("trace_id")
                if trace_id:
                    ids[trace_id] = ids.get(trace_id, 0) + 1
        return ids

    wait_until(lambda: all(linked(m) for m in EXEMPLAR_SOURCES.values()), "exemplars from every source", 90, 2)
    # A kept trace is in both backends 10 s (decision_wait) after its last span, give or take.
    jaeger, tempo = JaegerAPI(gateways.tier.jaeger.api_url), JaegerAPI(gateways.tier.tempo.api_url)
    shares = {}
    for source, metric in EXEMPLAR_SOURCES.items():
        ids = linked(metric)
        missing = set(ids)

        def resolved(missing: set[str] = missing) -> bool:
            missing -= {t for t in missing if jaeger.trace(t) and tempo.trace(t)}
            return not missing

        with contextlib.suppress(TimeoutError):
            wait_until(resolved, f"{source} exemplar traces", timeout=60, interval=1)
        shares[source] = {"trace_ids": len(ids), "resolved": len(ids) - len(missing)}
        assert not missing, f"{source}: {len(missing)} of {len(ids)} exemplar trace ids lead nowhere"
    figures["exemplars"] = shares
    # The check means something only if traces were dropped: most requests here are fast 2xx.
    dropped = gateway_total(gateways, DECIDED, sampled="false")
    assert dropped > 0, "no trace was dropped: the exemplar check proved nothing"


# ---------------------------------------------------------------- scale events and failures


def backends_seen(agent_metrics_url: str) -> float:
    return metric_total(scrape(agent_metrics_url), "otelcol_loadbalancer_num_backends")


def wait_backends(stack: GatewayStack, count: int) -> float:
    """Until the agent routes over `count` gateways; returns the seconds it took."""
    started = time.monotonic()
    agent = stack.tier.agents[0]
    wait_until(lambda: backends_seen(agent.metrics_url) == count, f"the agent to see {count} gateways", 30)
    return time.monotonic() - started


def wait_drained(stack: GatewayStack) -> None:
    """Until nothing is left in the agents' queues, in the gateways' sampler or in their exporters'
    queues: what will reach the backends has reached them."""

    def drained() -> bool:
        for agent in stack.tier.agents:
            if metric_total(scrape(agent.metrics_url), "otelcol_exporter_queue_size", exporter="load_balancing"):
                return False
        return not any(
            metric_total(samples, "otelcol_processor_tail_sampling_sampling_traces_on_memory")
            or metric_total(samples, "otelcol_exporter_queue_size")
            for samples in (scrape(g.metrics_url) for g in stack.tier.gateways.values() if g.process.alive())
        )

    wait_until(drained, "the tier to drain", timeout=120, interval=1)


def outcome(counts: dict[str, int], spans: int) -> dict[str, int]:
    return {
        "complete": sum(n == spans for n in counts.values()),
        "incomplete": sum(0 < n < spans for n in counts.values()),
        "absent": sum(n == 0 for n in counts.values()),
        "duplicated": sum(n > spans for n in counts.values()),
    }


def test_scaling_3_2_3_keeps_every_trace_whole(gateways: GatewayStack, figures: dict[str, Any]) -> None:
    agent, tier = gateways.tier.agents[0], gateways.tier
    jaeger = JaegerAPI(tier.jaeger.api_url)
    results = {}
    for step, resolved in (("3->2", [0, 1]), ("2->3", [0, 1, 2])):
        tier.resolve(resolved)
        noticed_s = wait_backends(gateways, len(resolved))
        per_gateway = {i: metric_total(scrape(g.metrics_url), NEW_TRACES) for i, g in tier.gateways.items()}
        # Error traces: every one is kept, so every span sent must be stored once.
        traces = plan_traces(150, error_every=1)
        send_in_pieces(agent.otlp_http_url, f"gw-scale-{step}", traces)
        wait_drained(gateways)
        wait_whole(jaeger, traces)
        got = {i: metric_total(scrape(g.metrics_url), NEW_TRACES) - per_gateway[i] for i, g in tier.gateways.items()}
        assert sum(got.values()) == len(traces), f"{step}: a trace reached two gateways ({got})"
        assert {i for i, n in got.items() if n} == set(resolved), f"{step}: routed to {got}"
        results[step] = {"agent_noticed_s": round(noticed_s, 1), **outcome(stored_span_counts(jaeger, traces), 3)}
    figures["scale"] = results


def test_a_gateway_killed_under_steady_load(gateways: GatewayStack, figures: dict[str, Any]) -> None:
    """SIGKILL one of three gateways while traces stream in; its line leaves the hosts file as
    compose's DNS drops a dead container. Every trace is an error trace, so all are kept: what
    the backends miss was lost or split."""
    agent, tier = gateways.tier.agents[0], gateways.tier
    batches: list[tuple[float, list[PlannedTrace]]] = []
    stop = threading.Event()

    def stream() -> None:
        for _ in range(30):  # ~1 s a batch, the kill after the 10th
            if stop.is_set():
                return
            batch = plan_traces(10, error_every=1)
            batches.append((time.monotonic(), batch))
            send_in_pieces(agent.otlp_http_url, "gw-kill", batch)

    sender = threading.Thread(target=stream, name="gw-kill-sender")
    sender.start()
    try:
        wait_until(lambda: len(batches) >= 10, "10 batches before the kill", timeout=60)
        killed_at = time.monotonic()
        tier.kill_gateway(2)
        tier.resolve([0, 1])
        noticed_s = wait_backends(gateways, 2)
        sender.join(timeout=120)
    finally:
        stop.set()
        sender.join(timeout=120)
    wait_drained(gateways)
    counts = stored_span_counts(JaegerAPI(tier.jaeger.api_url), [t for _, batch in batches for t in batch])
    hurt = [started - killed_at for started, batch in batches for t in batch if counts[t.trace_id] != 3]
    settled_after_s = max(hurt, default=0.0)
    figures["gateway_killed"] = {
        "traces": len(counts),
        **outcome(counts, 3),
        "agent_noticed_s": round(noticed_s, 1),
        "last_hurt_trace_started_s_after_kill": round(settled_after_s, 1),
    }
    print(f"\n[gateway-tier] gateway killed: {json.dumps(figures['gateway_killed'])}")
    # Once routing has settled nothing is lost: traces begun after the resolver noticed are whole.
    assert not [s for s in hurt if s > noticed_s + 10], f"traces hurt after routing settled: {sorted(hurt)}"
    assert outcome(counts, 3)["duplicated"] == 0
    tier.start_gateway(2)
    tier.resolve([0, 1, 2])
    wait_backends(gateways, 3)


def post_piece(url: str, traces: list[PlannedTrace]) -> int:
    headers = {"Content-Type": "application/x-protobuf"}
    return httpx.post(
        f"{url}/v1/traces", content=piece("gw-filler", traces, 0), headers=headers, timeout=10
    ).status_code


@pytest.mark.parametrize("dns", ["a silent address", "no address"])
def test_an_agent_with_no_gateway_refuses_when_full_and_the_sdk_retries(
    gateways: GatewayStack, tmp_path: Path, dns: str
) -> None:
    """No gateway answers (every replica restarting, or none in DNS yet): the agent queues,
    refuses with a retryable 503 once its queue is full, an app's SDK keeps its spans and resends
    them, and everything accepted arrives once a gateway answers."""
    # A gateway address nothing listens on yet, and names of its own: no queue left by the other case.
    tier, spare, name = gateways.tier, 5 if dns == "a silent address" else 6, f"agent-lonely-{len(dns)}"
    hosts = HostsFile(tmp_path / "lonely-hosts")
    hosts.path.write_text("")
    hosts.publish([gateway_address(spare)] if dns == "a silent address" else [])
    lonely = tier.start_agent(name, hosts=hosts, AGENT_QUEUE_SPANS="300")
    app = start_app(
        tier.spec,
        "app-b",
        tmp_path,
        agent_addresses(lonely),
        name=f"app-{name}",
        overrides={"OTEL_SERVICE_NAME": name},
    )
    try:
        # Fill its queue: 300 spans, plus the batches its consumers hold while they retry.
        accepted: list[PlannedTrace] = []
        for _ in range(40):
            batch = plan_traces(50, error_every=1)
            status = post_piece(lonely.otlp_http_url, batch)
            if status != 200:
                break
            accepted += batch
        assert status == 503, f"expected a retryable 503 once the queue is full, got {status}"
        for _ in range(20):  # 5xx: the gateways keep these traces, so all must arrive
            assert httpx.get(f"{app.url}/error_test", timeout=10).status_code == 500
        # The queue stays full while nothing answers: the SDK's export is refused too, and the SDK
        # says it will retry (opentelemetry-exporter-otlp-proto-http retries 503 with backoff).
        wait_until(
            lambda: "Transient error Service Unavailable" in app.process.output(),
            "the app's SDK to be refused and retry",
            timeout=30,
        )
        tier.start_gateway(spare)  # within the SDK's retry window
        hosts.publish([gateway_address(spare)])
        jaeger = JaegerAPI(tier.jaeger.api_url)
        wait_until(lambda: len(jaeger.service_spans(name)) >= 20, "the app's 20 spans", timeout=120, interval=1)
        wait_drained(gateways)
        counts = stored_span_counts(jaeger, accepted)
        assert set(counts.values()) == {1}, f"accepted spans lost while no gateway answered: {outcome(counts, 1)}"
    finally:
        app.process.stop()
        lonely.process.stop()
        tier.agents.remove(lonely)
        if spare in tier.gateways:
            tier.gateways.pop(spare).process.stop()


def test_a_gateway_config_with_an_invalid_policy_is_refused_with_a_readable_message(tmp_path: Path) -> None:
    """A malformed setting fails `otelcol validate`; an unknown policy type passes it (at this
    release the tail_sampling processor checks its policies only when it starts), so the gateway
    must refuse to start with the policy named."""
    files = [f"--config={REPO / 'collector' / f}" for f in ("config.yaml", "exemplars.yaml")]
    env = {
        "TRACE_SAMPLING_BASELINE_PERCENT": "10",
        "TRACE_SAMPLING_SLOW_MS": "500",
        "HOSTNAME": "g",
        "PATH": "/usr/bin:/bin",
    }
    gateway_yaml = (REPO / "collector" / "gateway.yaml").read_text()

    def run(broken_text: str, *argv: str) -> subprocess.CompletedProcess[str]:
        broken = tmp_path / "gateway.yaml"
        broken.write_text(broken_text)
        command = [str(binaries()["OTELCOL"]), *argv, *files, f"--config={broken}"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)

    malformed = run(gateway_yaml.replace("decision_wait: 10s", "decision_wait: soon"), "validate")
    assert malformed.returncode != 0 and "decision_wait" in malformed.stderr, malformed.stderr
    unknown = gateway_yaml.replace("type: latency", "type: latncy")
    # Every other address of the gateway on a free loopback port, so a start would not clash.
    ports = {
        "COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{free_port()}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(free_port()),
        "COLLECTOR_QUEUE_DIR": str(tmp_path / "queue"),
    }
    env.update(ports)
    refused = run(unknown)
    assert refused.returncode != 0, "the gateway started with an unknown policy type"
    assert "latncy" in refused.stderr and "tail_sampling" in refused.stderr, refused.stderr
