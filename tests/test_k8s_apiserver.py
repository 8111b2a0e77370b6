"""The Kubernetes manifests (k8s/) against a real API server: kube-apiserver and etcd built from
their Go modules (native/build.sh), run for this module in a private network namespace and
stopped by PID (tests/helpers/apiserver.py).

- every overlay passes `kubectl apply -k ... --dry-run=server --validate=strict` with no
  warning, and a misspelled field fails it;
- every pod template, created as the Pod its controller would make, is admitted by the real
  Pod Security admission at the namespace's `restricted` level, and one that breaks it is
  refused (for a Deployment the same breach is only a warning: hence the Pods);
- the agent Collector, run natively with the rendered agent config and a kubeconfig holding its
  own ServiceAccount's token (so its Role is what lets it read), routes every trace whole to one
  of the gateways that the gateways' EndpointSlice lists, and follows when the slice is changed
  through the API: 3 -> 2 -> 3 gateways.
"""

import json
import re
import socket
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from helpers.apiserver import ApiServer, start_api_server
from helpers.manifests import (
    NAMESPACE,
    OVERLAYS,
    RENDERED,
    as_pod,
    collector_args,
    container_environment,
    find,
    render,
    render_text,
    workloads,
)
from helpers.netns import NetworkNamespace, start_network_namespace
from helpers.spans import span_batch
from nativestack.gateway import HostsFile, private_hosts_launcher
from nativestack.paths import REPO, binaries
from nativestack.processes import Process, free_port, start, wait_until

API_ADDRESS = "10.244.0.1"
# Pod-like addresses for the gateway stand-ins (gateway-0, -1, -2 of the StatefulSet).
GATEWAYS = {f"gateway-{i}": f"10.244.0.{11 + i}" for i in range(3)}
GATEWAY_PORT = 4317
RESTRICTED_WARNING = re.compile(r"violate[s]? PodSecurity", re.IGNORECASE)


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkNamespace]:
    namespace = start_network_namespace(tmp_path_factory.mktemp("netns"), [API_ADDRESS, *GATEWAYS.values()])
    try:
        yield namespace
    finally:
        namespace.stop()


@pytest.fixture(scope="module")
def api(netns: NetworkNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The API server, with what exists before `kubectl apply -k` dry-runs the rest for real:
    the namespace (with the `default` ServiceAccount its controller would add) and the base's
    ServiceAccount, RBAC and gateway Service."""
    server = start_api_server(tmp_path_factory.mktemp("apiserver"), netns)
    try:
        base = render(RENDERED["base"])
        created = [
            find(base, "Namespace", NAMESPACE),
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": NAMESPACE}},
            *(o for o in base if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")),
            find(base, "Service", "gateway"),
        ]
        result = server.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(created))
        assert result.returncode == 0, result.stderr
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- dry run, strict validation


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_passes_server_side_dry_run_with_strict_validation(api: ApiServer, name: str) -> None:
    # The user's command, as is, plus the dry run.
    result = api.kubectl("apply", "-k", str(OVERLAYS[name]), "--dry-run=server", "--validate=strict")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    applied = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(applied) == len(render(OVERLAYS[name])), result.stdout


def test_server_side_dry_run_rejects_a_misspelled_field(api: ApiServer) -> None:
    manifests = render_text(OVERLAYS["single-node"])
    broken = manifests.replace("  serviceName: gateway\n", "  serviceNmae: gateway\n", 1)
    assert broken != manifests
    result = api.kubectl("apply", "-f", "-", "--dry-run=server", "--validate=strict", stdin=broken)
    assert result.returncode != 0
    assert 'unknown field "spec.serviceNmae"' in result.stderr, result.stderr


# ---------------------------------------------------------------- Pod Security admission


def pods(name: str) -> list[dict[str, Any]]:
    return [as_pod(workload) for workload in workloads(render(OVERLAYS[name]))]


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_pod_template_is_admitted_as_restricted(api: ApiServer, name: str) -> None:
    listed = pods(name)
    result = api.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(listed))
    assert result.returncode == 0, result.stderr
    assert not RESTRICTED_WARNING.search(result.stderr), result.stderr
    assert result.stdout.count("created (server dry run)") == len(listed), result.stdout


def test_a_pod_that_breaks_restricted_is_refused(api: ApiServer) -> None:
    (workload,) = [w for w in workloads(render(OVERLAYS["single-node"])) if w["metadata"]["name"] == "app-a"]
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    refused = api.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(as_pod(workload)))
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false' in refused.stderr
    # The Deployment itself is only warned about: why the test above creates Pods.
    warned = api.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(workload))
    assert warned.returncode == 0, warned.stderr
    assert 'would violate PodSecurity "restricted:latest"' in warned.stderr, warned.stderr


def test_the_agent_service_account_may_only_watch_endpoint_slices(api: ApiServer) -> None:
    agent = f"--as=system:serviceaccount:{NAMESPACE}:collector"
    for verb in ("get", "list", "watch"):
        assert (
            api.kubectl("auth", "can-i", verb, "endpointslices.discovery.k8s.io", "-n", NAMESPACE, agent).stdout.strip()
            == "yes"
        )
    for verb, resource, namespace in [
        ("create", "endpointslices.discovery.k8s.io", NAMESPACE),
        ("list", "pods", NAMESPACE),
        ("get", "secrets", NAMESPACE),
        ("list", "endpointslices.discovery.k8s.io", "default"),
    ]:
        answer = api.kubectl("auth", "can-i", verb, resource, "-n", namespace, agent).stdout.strip()
        assert answer == "no", f"{verb} {resource} in {namespace}: {answer}"


# ---------------------------------------------------------------- routing on the k8s resolver


def endpoint_slice(gateways: list[str]) -> str:
    """The gateways' EndpointSlice as the EndpointSlice controller writes it for the StatefulSet."""
    return yaml.safe_dump(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "gateway-test",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": "gateway"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "otlp-grpc", "port": GATEWAY_PORT, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": [GATEWAYS[name]], "hostname": name, "conditions": {"ready": True}} for name in gateways
            ],
        }
    )


def received(files: dict[str, Path]) -> dict[str, Counter[str]]:
    """Spans per trace id that each gateway stand-in has written so far."""
    traces: dict[str, Counter[str]] = {}
    for name, path in files.items():
        counts: Counter[str] = Counter()
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line still being written
            for resource in request.get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    counts.update(span["traceId"] for span in scope.get("spans", []))
        traces[name] = counts
    return traces


def start_gateway_standins(netns: NetworkNamespace, workdir: Path) -> tuple[list[Process], dict[str, Path]]:
    config = REPO / "native" / "standins" / "gateway-standin.yaml"
    processes, files = [], {}
    for name, address in GATEWAYS.items():
        files[name] = workdir / f"{name}.jsonl"
        env = {"GATEWAY_STANDIN_ENDPOINT": f"{address}:{GATEWAY_PORT}", "GATEWAY_STANDIN_FILE": str(files[name])}
        argv = [*netns.launcher(), str(binaries()["LOKI_STANDIN"]), f"--config={config}"]
        process = start(name, argv, env, workdir)
        processes.append(process)

        def listening(process: Process = process, address: str = address) -> bool:
            process.ensure_alive()
            netns.call(socket.create_connection, (address, GATEWAY_PORT), 1).close()
            return True

        wait_until(listening, f"{name} stand-in on {address}")
    return processes, files


def start_agent(api: ApiServer, workdir: Path) -> tuple[Process, int, int]:
    """The rendered agent (DaemonSet args, ConfigMap files, environment) on the real Collector,
    in the namespace, as its ServiceAccount. Returns the process, its OTLP/HTTP and metrics ports."""
    base = render(RENDERED["base"])
    agent = find(base, "DaemonSet", "collector")
    token = api.kubectl("create", "token", "collector", "-n", NAMESPACE, "--duration=1h")
    assert token.returncode == 0, token.stderr
    hosts = HostsFile(workdir / "agent-hosts")
    # What the cluster's DNS answers for the StatefulSet's pods (the resolver returns hostnames).
    hosts.path.write_text("".join(f"{a} {n}.gateway.{NAMESPACE}\n" for n, a in GATEWAYS.items()))
    http, metrics, health = free_port(), free_port(), free_port()
    env = {
        **container_environment(base, agent),
        "KUBECONFIG": str(api.kubeconfig("collector", token.stdout.strip())),
        # Its own ports inside the namespace; no metrics or logs backend runs here (they are
        # retried and queued, and no trace waits on them).
        "COLLECTOR_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "COLLECTOR_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http}",
        "COLLECTOR_HEALTH_ENDPOINT": f"127.0.0.1:{health}",
        "COLLECTOR_METRICS_HOST": "127.0.0.1",
        "COLLECTOR_METRICS_PORT": str(metrics),
        "COLLECTOR_ZPAGES_ENDPOINT": f"127.0.0.1:{free_port()}",
        "COLLECTOR_QUEUE_DIR": str(workdir / "agent-queue"),
        "PROMETHEUS_OTLP_ENDPOINT": "http://127.0.0.1:9/api/v1/otlp",
        "LOKI_OTLP_ENDPOINT": "http://127.0.0.1:9/otlp",
    }
    argv = [
        *api.netns.launcher(),
        *private_hosts_launcher(hosts),
        str(binaries()["OTELCOL"]),
        *collector_args(base, agent, workdir / "agent-config"),
    ]
    process = start("agent", argv, env, workdir)

    def healthy() -> bool:
        process.ensure_alive()
        return api.netns.call(httpx.get, f"http://127.0.0.1:{health}/").status_code == 200

    wait_until(healthy, "the agent's health check", timeout=60)
    return process, http, metrics


def backends_seen(api: ApiServer, metrics_port: int) -> int | None:
    """How many gateways the agent's resolver currently routes to (its own metric)."""
    text = api.netns.call(httpx.get, f"http://127.0.0.1:{metrics_port}/metrics").text
    match = re.search(r"^otelcol_loadbalancer_num_backends\{[^}]*\} (\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def send_traces(api: ApiServer, http_port: int, traces: int) -> dict[str, int]:
    """`traces` new traces of 3 spans through the agent's OTLP/HTTP; trace id -> spans sent."""
    sent: dict[str, int] = {}
    for _ in range(traces // 20):
        body, _ = span_batch("k8s-routing", traces=20, spans_per_trace=3)
        request = ExportTraceServiceRequest.FromString(body)
        for span in request.resource_spans[0].scope_spans[0].spans:
            sent[span.trace_id.hex()] = sent.get(span.trace_id.hex(), 0) + 1
        response = api.netns.call(
            httpx.post,
            f"http://127.0.0.1:{http_port}/v1/traces",
            content=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200, response.text
    return sent


def wait_for_whole_traces(files: dict[str, Path], sent: dict[str, int]) -> dict[str, set[str]]:
    """Poll until every sent trace is in; then each must be at exactly one gateway, whole.
    Returns gateway -> the trace ids it got."""

    def arrived() -> dict[str, Counter[str]] | None:
        now = received(files)
        total = sum(counts[t] for counts in now.values() for t in sent)
        return now if total >= sum(sent.values()) else None

    traces = wait_until(arrived, f"{sum(sent.values())} spans at the gateways", timeout=60, interval=0.5)
    where: dict[str, set[str]] = defaultdict(set)
    for trace_id, spans in sent.items():
        holders = {name: counts[trace_id] for name, counts in traces.items() if counts[trace_id]}
        assert holders == {next(iter(holders)): spans}, f"trace {trace_id} split or duplicated: {holders}"
        where[next(iter(holders))].add(trace_id)
    return where


def test_the_agent_routes_whole_traces_to_the_gateways_its_endpoint_slice_lists(api: ApiServer, tmp_path: Path) -> None:
    started: list[Process] = []
    try:
        standins, files = start_gateway_standins(api.netns, tmp_path)
        started += standins
        applied = api.kubectl("apply", "-f", "-", stdin=endpoint_slice(list(GATEWAYS)))
        assert applied.returncode == 0, applied.stderr
        agent, http_port, metrics_port = start_agent(api, tmp_path)
        started.append(agent)

        for step, gateways in enumerate([list(GATEWAYS), ["gateway-0", "gateway-1"], list(GATEWAYS)]):
            applied = api.kubectl("apply", "-f", "-", stdin=endpoint_slice(gateways))
            assert applied.returncode == 0, applied.stderr
            wait_until(lambda: backends_seen(api, metrics_port) == len(gateways), f"the agent to see {gateways}")  # noqa: B023 (called at once)
            before = received(files)
            where = wait_for_whole_traces(files, send_traces(api, http_port, traces=200))
            # Every listed gateway got a share; one taken out of the slice got nothing new.
            assert set(where) == set(gateways), f"step {step}: {dict((k, len(v)) for k, v in where.items())}"
            for name in set(GATEWAYS) - set(gateways):
                assert received(files)[name] == before[name], f"{name} got spans after it left the slice"
    finally:
        for process in reversed(started):
            process.stop()
