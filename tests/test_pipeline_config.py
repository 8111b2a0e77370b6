"""The pipeline's configs are valid for the real programs at the pinned versions, the manifest
matches the config, and a broken config fails fast with a readable error."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from nativestack import compose, gateway
from nativestack.backends import compose_argv, native_prometheus_config
from nativestack.paths import REPO, binaries, versions

COLLECTOR_CONFIG = REPO / "collector" / "config.yaml"
MANIFEST = REPO / "collector" / "manifest.yaml"
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")


def run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, env=env)


# Each Collector role with the config files compose gives it: the single Collector, and the
# two-tier topology's agent (the overlay's `collector`) and gateway.
ROLES = {
    "single": compose_argv(compose.load(), "collector"),
    "agent": compose_argv(compose.load_with(gateway.OVERLAY), "collector"),
    "gateway": compose_argv(compose.load_with(gateway.OVERLAY), "gateway"),
}
# What compose's env_file gives the agent and the gateways; HOSTNAME is set by the runtime.
ROLE_ENV = {
    **compose.service_environment(compose.load_with(gateway.OVERLAY), "gateway"),
    "HOSTNAME": "gateway-0",
    "PATH": "/usr/bin:/bin",
}


@pytest.mark.parametrize("role", ROLES)
def test_otelcol_validate_passes(role: str) -> None:
    result = run(binaries()["OTELCOL"], "validate", *ROLES[role], env=ROLE_ENV)
    assert result.returncode == 0, result.stderr


def test_manifest_lists_exactly_the_components_the_configs_use() -> None:
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for files in ROLES.values():
        for flag in files:
            config = yaml.safe_load(Path(flag.removeprefix("--config=")).read_text())
            for kind in KINDS:
                used[kind] |= {name.split("/")[0] for name in config.get(kind) or {}}
    listed = subprocess.run([binaries()["OTELCOL"], "components"], capture_output=True, text=True, check=True)
    built = yaml.safe_load(listed.stdout)
    for kind in KINDS:
        assert {c["name"] for c in built.get(kind, [])} == used[kind], kind


def test_manifest_and_image_share_one_collector_version() -> None:
    version = versions()["OTELCOL_VERSION"]
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["dist"]["version"] == version
    core_stable = f"v1.{int(version.split('.')[1]) - 94}.{version.split('.')[2]}"
    for kind in (*KINDS, "providers"):
        for entry in manifest.get(kind, []):
            module, module_version = entry["gomod"].split()
            assert module_version in (f"v{version}", core_stable), module
    # Compose builds collector/Dockerfile (the contrib image plus a probe) with this build arg.
    assert (
        "FROM otel/opentelemetry-collector-contrib:${OTELCOL_VERSION}"
        in (REPO / "collector" / "Dockerfile").read_text()
    )
    assert "OTELCOL_VERSION: ${OTELCOL_VERSION}" in (REPO / "docker-compose.yaml").read_text()


def test_broken_collector_config_fails_fast_with_a_readable_error(tmp_path: Path) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text(COLLECTOR_CONFIG.read_text().replace("limit_mib:", "limit_mb:"))
    result = run(binaries()["OTELCOL"], "validate", f"--config={broken}")
    assert result.returncode != 0
    assert "limit_mb" in result.stderr and "memory_limiter" in result.stderr


def test_collector_config_with_unknown_component_fails(tmp_path: Path) -> None:
    broken = tmp_path / "config.yaml"
    broken.write_text(COLLECTOR_CONFIG.read_text().replace("exporters: [otlp_http/loki]", "exporters: [loki]"))
    result = run(binaries()["OTELCOL"], "validate", f"--config={broken}")
    assert result.returncode != 0
    assert re.search(r"loki.*not (configured|found)|references exporter \"loki\"", result.stderr), result.stderr


def test_promtool_check_config_passes_on_the_shipped_and_native_configs(tmp_path: Path) -> None:
    shipped = run(binaries()["PROMTOOL"], "check", "config", "--syntax-only", REPO / "backends" / "prometheus.yml")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    native = tmp_path / "prometheus.yml"
    native_prometheus_config({"app-a:8000": "127.0.0.1:1"}, native)
    checked = run(binaries()["PROMTOOL"], "check", "config", native)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("config", ["backends/jaeger.yaml", "native/standins/loki-standin.yaml"])
def test_backend_configs_validate(config: str) -> None:
    binary = binaries()["JAEGER" if "jaeger" in config else "LOKI_STANDIN"]
    env = {"LOKI_STANDIN_ENDPOINT": "127.0.0.1:1", "LOKI_STANDIN_FILE": "/dev/null", "PATH": "/usr/bin:/bin"}
    result = run(binary, "validate", f"--config={REPO / config}", env=env)
    assert result.returncode == 0, result.stderr
