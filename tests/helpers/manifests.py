"""The Kubernetes manifests as kustomize renders them (the kustomize built into the kubectl that
native/build.sh builds: `kubectl apply -k` renders exactly the same), and what tests ask of them."""

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from nativestack.paths import REPO, binaries

K8S = REPO / "k8s"
# Every overlay a user applies; the base is rendered too (it is what both share).
OVERLAYS = {
    "single-node": K8S / "overlays" / "single-node",
    "external-backends": K8S / "overlays" / "external-backends",
}
RENDERED = {"base": K8S / "base", **OVERLAYS}
NAMESPACE = "fastapi-observability"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def render_text(directory: Path) -> str:
    """`kubectl kustomize DIR`, with kustomize's default load restrictor."""
    result = subprocess.run(
        [str(binaries()["KUBECTL"]), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise AssertionError(f"kustomize {directory} failed:\n{result.stderr}")
    return result.stdout


def render(directory: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render_text(directory)) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] in WORKLOAD_KINDS)


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, container) for every container of every workload."""
    for workload in workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield workload["metadata"]["name"], container


def as_pod(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload's pod template as the Pod its controller would create."""
    template = workload["spec"]["template"]
    name = workload["metadata"]["name"]
    metadata = {**template.get("metadata", {}), "name": f"{name}-template", "namespace": NAMESPACE}
    spec = dict(template["spec"])
    if workload["kind"] == "StatefulSet":
        # The controller turns each volumeClaimTemplate into a PVC the pod mounts by name.
        claims = [
            {"name": c["metadata"]["name"], "persistentVolumeClaim": {"claimName": f"{c['metadata']['name']}-{name}-0"}}
            for c in workload["spec"].get("volumeClaimTemplates", [])
        ]
        spec["volumes"] = [*spec.get("volumes", []), *claims]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def config_map_data(objects: list[dict[str, Any]], prefix: str) -> dict[str, str]:
    """The data of the generated ConfigMap named `prefix-<hash>`."""
    (found,) = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].rsplit("-", 1)[0] == prefix]
    data: dict[str, str] = found.get("data", {})
    return data


def config_map_mounts(objects: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """Container path -> file content, for every file the workload mounts from a ConfigMap."""
    spec = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files: dict[str, str] = {}
    for mount in spec["containers"][0].get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        sources = [s["configMap"] for s in volume.get("projected", {}).get("sources", []) if "configMap" in s]
        for config_map in [volume["configMap"]] if "configMap" in volume else sources:
            data = find(objects, "ConfigMap", config_map["name"])["data"]
            paths = {item["key"]: item["path"] for item in config_map.get("items", [])} or {key: key for key in data}
            files |= {f"{mount['mountPath']}/{path}": data[key] for key, path in paths.items()}
    return files


def container_environment(objects: list[dict[str, Any]], workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would set it: envFrom ConfigMaps, then env,
    with downward-API fields resolved (labels, the namespace and the pod name)."""
    template = workload["spec"]["template"]
    container = template["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= find(objects, "ConfigMap", source["configMapRef"]["name"]).get("data", {})
    pod = {
        "metadata.namespace": NAMESPACE,
        "metadata.name": f"{workload['metadata']['name']}-0",
        **{f"metadata.labels['{k}']": v for k, v in template["metadata"]["labels"].items()},
    }
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            env[variable["name"]] = pod[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def collector_args(objects: list[dict[str, Any]], workload: dict[str, Any], root: Path) -> list[str]:
    """The Collector workload's args for a native run: every file it mounts from a ConfigMap
    written under `root` at its container path, and each `--config=` pointed there."""
    files = config_map_mounts(objects, workload)
    for path, content in files.items():
        local = root / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(content)
    args: list[str] = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    for arg in args:
        path = arg.removeprefix("--config=")
        if path not in files:
            raise AssertionError(f"{workload['metadata']['name']} reads {path}, which it does not mount")
    return [f"--config={root / arg.removeprefix('--config=').lstrip('/')}" for arg in args]
