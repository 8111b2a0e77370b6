"""The Kubernetes manifests (k8s/), rendered by kustomize, checked without an API server: strict
schemas (kubeconform, offline), the repo's own config files in the ConfigMaps, every Collector
role's config valid for the built Collector, compose's images, commands, environment and mounts,
no secret values, the restricted security context, the agent's RBAC, what the NetworkPolicies
allow, and `make images` against a fake docker. tests/test_k8s_apiserver.py puts the same
manifests in front of a real API server."""

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # its schema files are all we use
import pytest
import yaml
from test_security import SECRET_WORDS

from helpers.manifests import (
    NAMESPACE,
    OVERLAYS,
    RENDERED,
    collector_args,
    config_map_data,
    config_map_mounts,
    container_environment,
    containers,
    find,
    render,
    render_text,
    workloads,
)
from nativestack import compose, gateway
from nativestack.paths import REPO, binaries, read_env_file, versions

SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
APPS = ("app-a", "app-b", "app-c")
BACKENDS = ("tempo", "jaeger", "loki", "prometheus", "alertmanager", "grafana")
# The Collector workloads, named as the compose services they play (backends/compose.gateway.yaml).
COLLECTOR_ROLES = ("collector", "gateway")
COMPOSE = compose.load_with(gateway.OVERLAY)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(directory) for name, directory in RENDERED.items()}


def app_version() -> str:
    match = re.search(r'^version = "(.+)"$', (REPO / "services" / "pyproject.toml").read_text(), re.MULTILINE)
    assert match
    return match.group(1)


# ---------------------------------------------------------------- rendering and schemas


@pytest.mark.parametrize("name", RENDERED)
def test_renders_with_kustomize_defaults_into_one_namespace(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    objects = rendered[name]
    assert find(objects, "Namespace", NAMESPACE)
    for obj in objects:
        if obj["kind"] not in ("Namespace",):
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fastapi-observability"


def offline_schemas(tmp_path: Path) -> Path:
    """kubernetes-validate's strict schemas for our Kubernetes minor, their `$ref`s made absolute
    file URLs (as shipped they point at /api/..., which kubeconform cannot find offline and then
    reports "could not find schema" instead of checking)."""
    minor = ".".join(versions()["KUBERNETES_VERSION"].split(".")[:2])
    source = SCHEMAS / f"v{minor}.0-local-strict"
    target = tmp_path / "schemas"
    target.mkdir()
    definitions = f"file://{target}/_definitions.json"
    for schema in source.glob("*.json"):
        (target / schema.name).write_text(schema.read_text().replace('"/api/_definitions.json', f'"{definitions}'))
    return target


def kubeconform(schemas: Path, manifests: str) -> subprocess.CompletedProcess[str]:
    argv = [
        str(binaries()["KUBECONFORM"]),
        "-strict",
        "-summary",
        f"-kubernetes-version={versions()['KUBERNETES_VERSION']}",
        f"-schema-location={schemas}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
        "-",
    ]
    return subprocess.run(argv, input=manifests, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return offline_schemas(tmp_path_factory.mktemp("kubeconform"))


@pytest.mark.parametrize("name", RENDERED)
def test_kubeconform_strict_offline(schemas: Path, name: str) -> None:
    manifests = render_text(RENDERED[name])
    result = kubeconform(schemas, manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    count = manifests.count("\nkind: ") + manifests.startswith("kind: ")
    # Every object checked against a schema: none skipped, none without one.
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def test_kubeconform_rejects_a_misspelled_field(schemas: Path) -> None:
    manifests = render_text(OVERLAYS["single-node"])
    broken = manifests.replace("readOnlyRootFilesystem: true", "readOnlyRootFilesytem: true", 1)
    assert broken != manifests
    result = kubeconform(schemas, broken)
    assert result.returncode != 0
    assert "readOnlyRootFilesytem" in result.stdout, result.stdout


# ---------------------------------------------------------------- one source: the repo's files


def test_config_maps_carry_the_repo_files_unchanged(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["single-node"]
    collector = config_map_data(objects, "otelcol-config")
    assert collector == {name: (REPO / "collector" / name).read_text() for name in collector}
    assert set(collector) >= {"config.yaml", "exemplars.yaml", "agent.yaml", "gateway.yaml"}
    assert config_map_data(objects, "sampling") == read_env_file(REPO / "collector" / "sampling.env")
    assert config_map_data(objects, "otel-env") == read_env_file(REPO / "services" / "otel.env")
    for backend, file in [("tempo", "tempo.yaml"), ("jaeger", "jaeger.yaml"), ("loki", "loki.yaml")]:
        assert config_map_data(objects, f"{backend}-config") == {file: (REPO / "backends" / file).read_text()}
    assert config_map_data(objects, "prometheus-config") == {
        "prometheus.yml": (REPO / "backends" / "prometheus.yml").read_text()
    }
    dashboards = config_map_data(objects, "grafana-dashboards")
    assert dashboards == {p.name: p.read_text() for p in (REPO / "grafana" / "dashboards").glob("*.json")}


def compose_bind_mounts(service: str) -> dict[str, str]:
    """Container path -> content of every repo file compose bind-mounts into `service`."""
    files: dict[str, str] = {}
    for volume in COMPOSE["services"][service].get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if not source.startswith("./"):
            continue
        path, target = REPO / source, rest.split(":")[0]
        # A directory mount's files; not backends/rules/tests (promtool's unit tests, mounted along
        # by compose's directory mount, never read by Prometheus).
        inside = (
            []
            if path.is_file()
            else sorted(p for p in path.rglob("*") if p.is_file() and "tests" not in p.relative_to(path).parts)
        )
        for file in [path] if path.is_file() else inside:
            files[target if path.is_file() else f"{target}/{file.relative_to(path)}"] = file.read_text()
    return files


@pytest.mark.parametrize("service", [*BACKENDS, "collector", "gateway"])
def test_workloads_mount_the_files_compose_mounts(rendered: dict[str, list[dict[str, Any]]], service: str) -> None:
    objects = rendered["single-node"]
    (workload,) = [w for w in workloads(objects) if w["metadata"]["name"] == service]
    mounted = config_map_mounts(objects, workload)
    expected = compose_bind_mounts(service)
    assert expected
    for path, content in expected.items():
        assert mounted.get(path) == content, f"{service}: {path} is not the repo's file"


@pytest.mark.parametrize("service", [*BACKENDS, "collector", "gateway"])
def test_workloads_run_the_compose_command(rendered: dict[str, list[dict[str, Any]]], service: str) -> None:
    (workload,) = [w for w in workloads(rendered["single-node"]) if w["metadata"]["name"] == service]
    args = workload["spec"]["template"]["spec"]["containers"][0].get("args", [])
    expected = compose.service_command(COMPOSE, service)
    if service == "collector":
        # The agent's one addition: the k8s resolver in place of agent.yaml's dns one.
        expected = [*expected, "--config=/etc/otelcol/resolver-k8s.yaml"]
    assert args == expected


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_collector_config_in_a_config_map_passes_otelcol_validate(
    rendered: dict[str, list[dict[str, Any]]], name: str, tmp_path: Path
) -> None:
    objects = rendered[name]
    in_use: set[str] = set()
    for role in COLLECTOR_ROLES:
        (workload,) = [w for w in workloads(objects) if w["metadata"]["name"] == role]
        args = collector_args(objects, workload, tmp_path / role)
        in_use |= {arg.rsplit("/", 1)[1] for arg in args}
        env = {"PATH": "/usr/bin:/bin", **container_environment(objects, workload)}
        result = subprocess.run(
            [str(binaries()["OTELCOL"]), "validate", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{name}/{role}: {result.stderr}"
    assert set(config_map_data(objects, "otelcol-config")) == in_use, "a file in the ConfigMap no role reads"


# ---------------------------------------------------------------- what compose gives each service


@pytest.mark.parametrize("app", APPS)
def test_apps_get_the_environment_compose_gives_them(rendered: dict[str, list[dict[str, Any]]], app: str) -> None:
    objects = rendered["single-node"]
    # `make up TOPOLOGY=gateway`: the apps behind an agent, with the shared sampling thresholds.
    assert container_environment(objects, find(objects, "Deployment", app)) == compose.service_environment(COMPOSE, app)


def test_grafana_gets_the_environment_compose_gives_it(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["single-node"]
    env = container_environment(objects, find(objects, "StatefulSet", "grafana"))
    # The one addition: console logging, as the root filesystem is read-only.
    assert env == {**compose.service_environment(COMPOSE, "grafana"), "GF_LOG_MODE": "console"}


def test_images_are_the_ones_compose_runs_and_builds(rendered: dict[str, list[dict[str, Any]]]) -> None:
    images = {name: c["image"] for name, c in containers(rendered["single-node"])}
    for backend in BACKENDS:
        assert images[backend] == COMPOSE["services"][backend]["image"], backend
    # What `make images` builds (k8s/images.sh): the app's version, and the Collector's release.
    for app in APPS:
        assert images[app] == f"fastapi-observability/app:{app_version()}"
    for collector in COLLECTOR_ROLES:
        assert images[collector] == f"fastapi-observability/collector:{versions()['OTELCOL_VERSION']}"


def test_external_backends_changes_only_the_endpoints(rendered: dict[str, list[dict[str, Any]]]) -> None:
    base, external = rendered["base"], rendered["external-backends"]
    endpoints = config_map_data(external, "backend-endpoints")
    assert set(endpoints) == {
        "TEMPO_OTLP_ENDPOINT",
        "JAEGER_OTLP_ENDPOINT",
        "PROMETHEUS_OTLP_ENDPOINT",
        "LOKI_OTLP_ENDPOINT",
    }
    for variable in endpoints:
        assert f"${{env:{variable}:-" in (REPO / "collector" / "config.yaml").read_text(), variable
    assert config_map_data(base, "backend-endpoints") == {}

    def without_endpoints(objects: list[dict[str, Any]]) -> str:
        text = yaml.safe_dump_all([o for o in objects if not o["metadata"]["name"].startswith("backend-endpoints")])
        return re.sub(r"backend-endpoints-[a-z0-9]+", "backend-endpoints", text)

    assert without_endpoints(base) == without_endpoints(external)


# ---------------------------------------------------------------- hardening


def test_no_rendered_manifest_carries_a_secret_value(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for name, objects in rendered.items():
        assert not [o for o in objects if o["kind"] == "Secret"], f"{name} ships a Secret"
        for obj in objects:
            if obj["kind"] == "ConfigMap":
                for key in obj.get("data", {}):
                    assert not SECRET_WORDS.search(key), f"{name}: ConfigMap {obj['metadata']['name']}: {key}"
        for workload, container in containers(objects):
            for variable in container.get("env", []):
                if SECRET_WORDS.search(variable["name"]):
                    # A path to a mounted Secret file, or a reference: never the value itself.
                    assert variable["name"].endswith("__FILE") or "value" not in variable, f"{workload}: {variable}"
    grafana = find(rendered["single-node"], "StatefulSet", "grafana")["spec"]["template"]["spec"]
    secrets = [v["secret"]["secretName"] for v in grafana["volumes"] if "secret" in v]
    assert secrets == ["grafana-admin"]  # the Secret the README has you create


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_is_hardened(rendered: dict[str, list[dict[str, Any]]], name: str) -> None:
    """The restricted Pod Security Standard's fields (the API server's admission enforces the
    standard itself: tests/test_k8s_apiserver.py), plus a read-only root filesystem, requests
    and a memory limit."""
    for workload in workloads(rendered[name]):
        spec = workload["spec"]["template"]["spec"]
        label = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, label
        assert spec["securityContext"]["runAsUser"] != 0, label
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        # Only the agent talks to the API server (its gateway resolver).
        assert spec.get("automountServiceAccountToken", True) is (label == "collector"), label
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }, label
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), label
            assert "memory" in container["resources"]["limits"], label
            assert container.get("readinessProbe") and container.get("livenessProbe"), label


def test_the_agent_may_only_watch_endpoint_slices(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["base"]
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    assert {(o["kind"], o["metadata"]["name"]) for o in roles} == {
        ("Role", "collector-gateway-resolver"),
        ("RoleBinding", "collector-gateway-resolver"),
    }
    assert find(objects, "Role", "collector-gateway-resolver")["rules"] == [
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}
    ]
    binding = find(objects, "RoleBinding", "collector-gateway-resolver")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "collector", "namespace": NAMESPACE}]
    assert find(objects, "DaemonSet", "collector")["spec"]["template"]["spec"]["serviceAccountName"] == "collector"


# ---------------------------------------------------------------- NetworkPolicies, evaluated


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"the evaluator reads matchLabels only: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def admits(policies: list[dict[str, Any]], source: dict[str, str], target: dict[str, str], port: int) -> bool:
    """NetworkPolicy ingress semantics for pods of one namespace: a pod selected by no policy
    accepts everything; otherwise some rule of a selecting policy must match source and port."""
    selecting = [p for p in policies if selects(p["spec"]["podSelector"], target)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers is not None:
                assert all(set(peer) == {"podSelector"} for peer in peers), "peers in this namespace only"
                if not any(selects(peer["podSelector"], source) for peer in peers):
                    continue
            if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
                continue
            return True
    return False


# (from, to, port, allowed): the pipeline's paths, and the shortcuts it must not have.
PATHS = [
    ("app-a", "collector", 4318, True),
    ("app-c", "collector", 4317, True),
    ("gateway", "collector", 4317, False),
    ("grafana", "collector", 4318, False),
    ("collector", "gateway", 4317, True),
    ("app-a", "gateway", 4317, False),
    ("gateway", "tempo", 4317, True),
    ("gateway", "jaeger", 4317, True),
    ("collector", "tempo", 4317, False),
    ("collector", "jaeger", 4317, False),
    ("app-a", "tempo", 4317, False),
    ("app-a", "jaeger", 4317, False),
    ("collector", "loki", 3100, True),
    ("gateway", "loki", 3100, True),
    ("app-a", "loki", 3100, False),
    ("collector", "prometheus", 9090, True),
    ("gateway", "prometheus", 9090, True),
    ("app-a", "prometheus", 9090, False),
    ("grafana", "tempo", 3200, True),
    ("grafana", "jaeger", 16686, True),
    ("grafana", "loki", 3100, True),
    ("grafana", "prometheus", 9090, True),
    ("jaeger", "prometheus", 9090, True),
    ("prometheus", "app-a", 8000, True),
    ("prometheus", "collector", 8888, True),
    ("prometheus", "gateway", 8888, True),
    ("prometheus", "jaeger", 8888, True),
    ("app-a", "app-b", 8000, True),
    ("app-b", "grafana", 3000, True),
    ("app-a", "gateway", 8888, False),
]


@pytest.mark.parametrize(("source", "target", "port", "allowed"), PATHS)
def test_network_policies_allow_exactly_the_pipeline(
    rendered: dict[str, list[dict[str, Any]]], source: str, target: str, port: int, allowed: bool
) -> None:
    objects = rendered["single-node"]
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    labels = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads(objects)}
    assert admits(policies, labels[source], labels[target], port) is allowed


# ---------------------------------------------------------------- make images

FAKE_DOCKER = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
"""


@pytest.mark.parametrize("registry", ["", "registry.example.com/team/"])
def test_make_images_builds_what_compose_builds(tmp_path: Path, registry: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(log)}
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "images", f"REGISTRY={registry}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    prefix = f"{registry.rstrip('/')}/fastapi-observability" if registry else "fastapi-observability"
    app, collector = f"{prefix}/app:{app_version()}", f"{prefix}/collector:{versions()['OTELCOL_VERSION']}"
    # compose's build sections: the same contexts, Dockerfiles and build args.
    built = {}
    for service, image in (("app-a", app), ("collector", collector)):
        build = COMPOSE["services"][service]["build"]
        args = " ".join(f"--build-arg {k}={v}" for k, v in build["args"].items())
        context = (REPO / build["context"]).resolve()
        built[service] = f"build {args} -t {image} -f {context / build['dockerfile']} {context}"
    pushes = [f"push {app}", f"push {collector}"] if registry else []
    assert calls == [built["app-a"], built["collector"], *pushes]
    if registry:
        assert f"newName: {prefix}/app" in result.stdout
    # The names it builds are the ones the manifests use.
    base = (REPO / "k8s" / "base" / "kustomization.yaml").read_text()
    assert f"- name: fastapi-observability/app\n    newTag: {app_version()}" in base
