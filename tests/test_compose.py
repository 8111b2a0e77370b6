"""docker-compose.yaml, its overrides, the backend configs it mounts and the `make up` scripts,
checked without Docker (issue 3 item 4-5, issue 6 item 7): valid against the Compose
Specification's schema after `.env` interpolation, every version from `.env`, host ports on
127.0.0.1 only, read-only config mounts, a healthcheck on every service and healthy-gated
`depends_on`, memory limits, the Loki log-driver anchor, Grafana's auth, no published debug
endpoint, git-ignored secrets, and the scripts behind `make up/down` run against a fake `docker`.
"""

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from nativestack import compose as compose_file
from nativestack.paths import REPO, read_env_file

SHARED = REPO.parent / "shared"
SCHEMA = SHARED / "schemas" / "compose-spec.json"
COMPOSE_FILE = REPO / "docker-compose.yaml"
OVERRIDES = {
    "default-logging": REPO / "backends" / "compose.default-logging.yaml",
    "cassandra": REPO / "backends" / "compose.cassandra.yaml",
}
APPS = ("app-a", "app-b", "app-c")
APP_HOST_PORTS = {"app-a": 8000, "app-b": 8001, "app-c": 8002}
PASSWORD_FILE = ".secrets/grafana-admin-password"  # noqa: S105 (a path, not a password)
# The first line of every app log record (services/app/logging_config.py prints it this way).
FIRSTLINE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"

# ---------------------------------------------------------------- loading, as compose does

ENV = read_env_file(REPO / ".env")


def load(path: Path) -> dict[str, Any]:
    """Interpolated from .env only (not this shell's environment): what a fresh checkout gets."""
    return compose_file.parse(compose_file.interpolate(path.read_text(), ENV))


def load_raw(path: Path) -> dict[str, Any]:
    """The file as written, `${VAR}` left in place."""
    return compose_file.parse(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def all_service_specs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(file label, service name, spec) for the base file and every override."""
    for name, spec in load(COMPOSE_FILE)["services"].items():
        yield "docker-compose.yaml", name, spec
    for path in OVERRIDES.values():
        for name, spec in load(path)["services"].items():
            yield path.name, name, spec


def is_job(spec: dict[str, Any]) -> bool:
    """A one-shot container (runs, exits 0, is never restarted)."""
    return str(spec.get("restart", "")) == "no"


# ---------------------------------------------------------------- the schema


def test_compose_files_are_valid_against_the_compose_spec_schema() -> None:
    if not SCHEMA.exists():
        pytest.fail(f"{SCHEMA} is missing: the shared folder must sit beside the repo, at <repo>/../shared")
    import json

    schema = json.loads(SCHEMA.read_text())
    # The file names draft-07 (as a URL jsonschema does not recognise without its `#`).
    assert "draft-07" in schema["$schema"]
    validator = jsonschema.Draft7Validator(schema)
    for path in [COMPOSE_FILE, *OVERRIDES.values()]:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(path))]
        assert not errors, f"{path.name}:\n" + "\n".join(errors)


def test_interpolation_rejects_undefined_variables_and_lone_dollars() -> None:
    assert compose_file.interpolate("a ${X} ${Y:-d} $$1", {"X": "x"}) == "a x d $1"
    with pytest.raises(KeyError):
        compose_file.interpolate("${NOT_IN_ENV}", {})
    with pytest.raises(ValueError):
        compose_file.interpolate("regex (.*)$", {})


# ---------------------------------------------------------------- versions


def test_every_image_tag_comes_from_env() -> None:
    for path in [COMPOSE_FILE, *OVERRIDES.values()]:
        for name, spec in load_raw(path)["services"].items():
            if "image" in spec:
                repository, _, tag = str(spec["image"]).rpartition(":")
                assert repository and "${" not in repository, f"{name}: {spec['image']}"
                variables = re.findall(r"\$\{([A-Z0-9_]+)\}", tag)
                assert variables, f"{name}: the tag of {spec['image']} must be a ${{VAR}} from .env"
                assert all(v in ENV for v in variables), f"{name}: {spec['image']} uses a variable .env lacks"
                assert ":-" not in tag, f"{name}: no defaults for versions, .env is the one source"
            if "build" in spec:
                for arg, value in spec["build"].get("args", {}).items():
                    if arg.endswith("_VERSION"):
                        assert value == f"${{{arg}}}" and arg in ENV, (
                            f"{name}: build arg {arg} must be ${{{arg}}} from .env"
                        )


def test_dockerfiles_take_their_base_versions_from_build_args() -> None:
    for dockerfile in [REPO / "collector" / "Dockerfile", REPO / "services" / "Dockerfile"]:
        text = dockerfile.read_text()
        for line in text.splitlines():
            if line.startswith("FROM "):
                image = line.split()[1]
                if ":" in image:
                    assert "${" in image.partition(":")[2], f"{dockerfile}: {line} floats or hard-codes its version"


def test_locust_image_is_the_version_the_python_lock_pins() -> None:
    pins = re.findall(r'"locust==([^"]+)"', (REPO / "services" / "pyproject.toml").read_text())
    assert pins == [ENV["LOCUST_VERSION"]]


def test_loki_driver_plugin_version_is_pinned_in_env() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", ENV["LOKI_DOCKER_DRIVER_VERSION"])
    assert "LOKI_DOCKER_DRIVER_VERSION" in (REPO / "compose" / "up.sh").read_text()


# ---------------------------------------------------------------- mounts, ports, users


def bind_mounts(spec: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(host path, container path, read-only) of each bind mount."""
    for volume in spec.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if parts[0].startswith((".", "/", "~")):
                yield parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"], bool(volume.get("read_only"))


def test_bind_mounts_exist_in_the_repo_and_are_read_only() -> None:
    for file, name, spec in all_service_specs():
        for source, target, read_only in bind_mounts(spec):
            assert source.startswith("./"), f"{file} {name}: {source} is outside the repo"
            relative = source[2:].rstrip("/")
            assert (REPO / relative).exists(), f"{file} {name}: {source} does not exist"
            assert read_only, f"{file} {name}: config mount {source}:{target} must be :ro"
        for env_file in [spec["env_file"]] if isinstance(spec.get("env_file"), str) else spec.get("env_file", []):
            assert (REPO / env_file).exists(), f"{name}: env_file {env_file} does not exist"


def test_data_lives_in_declared_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            if isinstance(volume, str):
                source = volume.split(":")[0]
                named = not source.startswith((".", "/", "~"))
            else:
                source, named = volume.get("source", ""), volume.get("type") == "volume"
            if named:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    for data in ("prometheus-data", "tempo-data", "loki-data", "jaeger-badger", "grafana-data", "collector-queue"):
        assert data in used, data


def published(spec: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    for port in spec.get("ports", []):
        if isinstance(port, dict):
            yield str(port.get("host_ip", "")), int(port.get("published", 0)), int(port["target"])
        else:
            match = re.fullmatch(
                r"(?:(?P<ip>[\d.]+):)?(?:(?P<host>\d+):)?(?P<container>\d+)(?:/(?:tcp|udp))?", str(port)
            )
            assert match, f"unparsed port {port!r}"
            yield match["ip"] or "", int(match["host"] or 0), int(match["container"])


def test_host_ports_bind_loopback_only() -> None:
    for file, name, spec in all_service_specs():
        assert spec.get("network_mode") != "host", f"{file} {name}: host networking bypasses the port bindings"
        for ip, host, container in published(spec):
            assert ip == "127.0.0.1", f"{file} {name}: port {container} published on {ip or 'every interface'}"
            assert host, f"{file} {name}: port {container} gets a random host port"


def test_collector_debug_endpoints_are_not_published(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        for _, host, container in published(spec):
            assert container not in (55679, 1777) and host not in (55679, 1777), f"{name} publishes a debug endpoint"
    assert sorted(c for _, _, c in published(services["collector"])) == [4317, 4318]
    config = (REPO / "collector" / "config.yaml").read_text()
    assert re.search(r"zpages:\s*\n(?:\s*#.*\n)*\s*endpoint: \$\{env:[A-Z_]+:-127\.0\.0\.1:55679\}", config)
    assert "pprof" not in yaml.safe_load(config)["service"]["extensions"]


def test_containers_run_non_root(services: dict[str, dict[str, Any]]) -> None:
    root_users = {"0", "root", "0:0", "root:root"}
    # The one job that needs root (chown of the data volumes), with every capability but CHOWN
    # dropped and no network.
    init = services["volume-init"]
    assert str(init["user"]) in root_users and init["cap_drop"] == ["ALL"] and init["cap_add"] == ["CHOWN"]
    assert init["network_mode"] == "none"
    # Cassandra's entrypoint needs root to own its data directory, then drops to `cassandra`.
    root_at_start = {"volume-init", "cassandra"}
    for name, spec in services.items():
        if name not in root_at_start:
            assert str(spec.get("user", "")) not in root_users, f"{name} runs as root"
    # The owner volume-init gives the volumes is the user of the services writing them.
    owner = re.search(r"chown (\d+:\d+)", " ".join(init["command"]))
    assert owner
    shared = {mount.split(":")[0] for mount in init["volumes"]}
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            if isinstance(volume, dict) and volume.get("source") in shared and name != "volume-init":
                assert spec.get("user") == owner[1], f"{name} writes {volume['source']} as another user"
                assert volume.get("volume", {}).get("nocopy") is True, f"{name}: image content would reset the owner"


# ---------------------------------------------------------------- health, order, limits


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    base = load(COMPOSE_FILE)["services"]
    cassandra = load(OVERRIDES["cassandra"])["services"]
    adopted = set()
    for file, name, spec in all_service_specs():
        full = base.get(name, {}) | spec
        if not is_job(full):
            test = full.get("healthcheck", {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL") and not full["healthcheck"].get("disable"), (
                f"{name}: no healthcheck"
            )
        depends = spec.get("depends_on", {})
        assert isinstance(depends, dict), f"{file} {name}: depends_on must name a condition for each dependency"
        for dependency, condition in depends.items():
            assert dependency in base, f"{file} {name}: unknown dependency {dependency}"
            expected = "service_completed_successfully" if is_job(base[dependency]) else "service_healthy"
            assert condition.get("condition") == expected, f"{file} {name} -> {dependency}: {expected}"
            if expected == "service_completed_successfully":
                adopted.add(dependency)
            # A service that runs by default must not need one that only a profile starts.
            if not base.get(name, {}).get("profiles") and file == COMPOSE_FILE.name:
                assert not base[dependency].get("profiles"), f"{name} depends on profile-only {dependency}"
    # `up --wait` accepts a job's exit only if a long-running service waits for it.
    assert adopted == {name for name, spec in base.items() if is_job(spec)}
    assert "cassandra" in cassandra["jaeger"]["depends_on"]


def test_memory_limits_and_restart_policy(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        limit = spec.get("mem_limit") or spec.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory")
        assert limit, f"{name}: no memory limit"
        assert is_job(spec) or spec.get("restart") == "unless-stopped", f"{name}: restart policy"


def test_profiles(services: dict[str, dict[str, Any]]) -> None:
    assert services["locust"]["profiles"] == ["load"]
    assert services["cassandra"]["profiles"] == ["cassandra"]
    assert "./loadtest:/mnt/locust:ro" in services["locust"]["volumes"]
    command = services["locust"]["command"]
    assert command[command.index("--host") + 1] == "http://app-a:8000"
    assert [p for p in published(services["locust"])] == [("127.0.0.1", 8089, 8089)]


# ---------------------------------------------------------------- the apps and their logs


def test_apps_follow_the_service_contract(services: dict[str, dict[str, Any]]) -> None:
    for name in APPS:
        spec = services[name]
        environment = spec["environment"]
        assert spec["env_file"] == "services/otel.env"
        assert (
            spec["build"]["context"] == "./services"
            and spec["build"]["args"]["PYTHON_VERSION"] == ENV["PYTHON_VERSION"]
        )
        assert environment["OTEL_SERVICE_NAME"] == name
        assert environment["CHAIN_APP_B_URL"] == "http://app-b:8000"
        assert environment["CHAIN_APP_C_URL"] == "http://app-c:8000"
        assert environment["CHAIN_SELF_URL"] == "http://127.0.0.1:8000"
        assert environment["WEB_CONCURRENCY"] == "1"
        assert [p for p in published(spec)] == [("127.0.0.1", APP_HOST_PORTS[name], 8000)]
        assert "/healthz" in " ".join(spec["healthcheck"]["test"])
        allowed = {"OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "WEB_CONCURRENCY"}
        assert {k for k in environment if not k.startswith("CHAIN_")} <= allowed, "other OTEL_* belong in otel.env"
    assert services["app-a"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert services["app-b"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" not in services["app-a"]["environment"]
    assert services["app-c"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    assert services["app-c"]["environment"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"


def duration_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", value)
    assert match, value
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_apps_log_through_the_loki_driver_anchor(compose: dict[str, Any]) -> None:
    anchor = compose["x-logging"]
    for name in APPS:
        # The same object, not a copy: every app takes the anchor itself.
        assert compose["services"][name]["logging"] is anchor, name
    assert anchor["driver"] == "loki"
    options = anchor["options"]
    assert all(isinstance(v, str) for v in options.values()), "log-opts must be strings"
    assert options["loki-url"] == "http://127.0.0.1:3100/loki/api/v1/push"
    assert options["mode"] == "non-blocking" and options["max-buffer-size"]
    assert 1 <= int(options["loki-retries"]) <= 5
    assert duration_seconds(options["loki-timeout"]) <= 10
    assert duration_seconds(options["loki-max-backoff"]) <= 10
    assert int(options["loki-batch-size"]) > 0
    stages = yaml.safe_load(options["loki-pipeline-stages"])
    assert stages[0]["multiline"]["firstline"] == FIRSTLINE
    first = re.compile(FIRSTLINE)
    assert first.match("2026-11-25T21:30:00.123Z INFO [app.main] [trace_id=ab span_id=cd service=app-a] hello")
    assert not first.match('  File "/app/main.py", line 3, in chain')
    relabel = yaml.safe_load(options["loki-relabel-config"])
    assert {"source_labels": ["compose_service"], "target_label": "service_name"} in relabel
    # Loki publishes the port the driver pushes to, on loopback.
    assert ("127.0.0.1", 3100, 3100) in list(published(compose["services"]["loki"]))


def test_default_logging_override_replaces_the_driver_for_every_app(compose: dict[str, Any]) -> None:
    override = load(OVERRIDES["default-logging"])["services"]
    uses_loki = {n for n, s in compose["services"].items() if s.get("logging", {}).get("driver") == "loki"}
    assert set(override) == uses_loki == set(APPS)
    text = OVERRIDES["default-logging"].read_text()
    assert text.count("logging: !override") == len(APPS), "a plain merge would keep the loki-* options"
    for spec in override.values():
        assert spec["logging"]["driver"] == "json-file"
        assert not [k for k in spec["logging"]["options"] if k.startswith("loki-")]


# ---------------------------------------------------------------- Grafana and secrets


def test_grafana_auth_and_admin_password(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    environment = grafana["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    assert grafana["secrets"] == ["grafana_admin_password"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"  # noqa: S105
    assert compose["secrets"]["grafana_admin_password"]["file"] == f"./{PASSWORD_FILE}"
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    # No credential literal anywhere: only *__FILE indirections.
    for name, spec in compose["services"].items():
        for key in spec.get("environment", {}):
            if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key):
                assert key.endswith("__FILE"), f"{name}: {key} holds a credential in the compose file"


def test_secrets_are_git_ignored() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.fail("git and the repo's .git are needed to check the ignore rules")
    for path in (".secrets/", PASSWORD_FILE):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert result.returncode == 0, f"{path} is not git-ignored"
    tracked = subprocess.run(["git", "ls-files", ".secrets"], cwd=REPO, capture_output=True, text=True, check=True)
    assert not tracked.stdout.strip(), ".secrets/ has tracked files"


# ---------------------------------------------------------------- what the native stack reads


def test_commands_and_mounts_the_native_stack_maps(services: dict[str, dict[str, Any]]) -> None:
    """nativestack maps `--flag=<container path>` back to the repo through the bind mounts."""

    def mount_of(service: str, container_path: str) -> str:
        return {target: source for source, target, _ in bind_mounts(services[service])}[container_path]

    assert services["collector"]["command"] == ["--config=/etc/otelcol/config.yaml"]
    assert mount_of("collector", "/etc/otelcol/config.yaml") == "./collector/config.yaml"
    assert services["jaeger"]["command"] == ["--config=/etc/jaeger/jaeger.yaml"]
    assert mount_of("jaeger", "/etc/jaeger/jaeger.yaml") == "./backends/jaeger.yaml"
    flags = services["prometheus"]["command"]
    for flag in (
        "--config.file=/etc/prometheus/prometheus.yml",
        "--enable-feature=exemplar-storage",
        "--web.enable-otlp-receiver",
        "--storage.tsdb.path=/prometheus",
    ):
        assert flag in flags
    assert mount_of("prometheus", "/etc/prometheus/prometheus.yml") == "./backends/prometheus.yml"
    assert all(re.fullmatch(r"--[a-z.-]+(=\S+)?", flag) for flag in flags), "nativestack reads --flag[=value] only"


# ---------------------------------------------------------------- backend configs


def test_tempo_config_is_tempo_3_monolithic_without_span_metrics(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((REPO / "backends" / "tempo.yaml").read_text())
    for removed in ("ingester", "ingester_client", "compactor", "metrics_generator_client"):
        assert removed not in config, f"Tempo 3.0 refuses the 2.x `{removed}` block"
    assert "-target=all" in services["tempo"]["command"]
    protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols == {"grpc": {"endpoint": "0.0.0.0:4317"}, "http": {"endpoint": "0.0.0.0:4318"}}
    assert set(config["overrides"]) == {"defaults"}, "scoped overrides only"
    assert config["overrides"]["defaults"]["metrics_generator"]["processors"] == []
    assert "metrics_generator" not in config, "span metrics and service graphs come from the Collector only"
    assert config["storage"]["trace"]["backend"] == "local"
    data = "/var/tempo"
    assert config["storage"]["trace"]["local"]["path"].startswith(data)
    assert config["storage"]["trace"]["wal"]["path"].startswith(data)
    assert any(isinstance(v, dict) and v["target"] == data for v in services["tempo"]["volumes"])
    retention = config["backend_scheduler"]["provider"]["compaction"]["compaction"]["block_retention"]
    assert retention == config["backend_worker"]["compaction"]["block_retention"]


def test_loki_config_takes_otlp_with_structured_metadata(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((REPO / "backends" / "loki.yaml").read_text())
    assert config["limits_config"]["allow_structured_metadata"] is True
    schemas = config["schema_config"]["configs"]
    assert schemas[-1]["schema"] == "v13" and schemas[-1]["store"] == "tsdb"
    assert schemas[-1]["object_store"] == "filesystem"
    assert config["compactor"]["retention_enabled"] is True and config["limits_config"]["retention_period"]
    index_labels = [
        attribute
        for rule in config["limits_config"]["otlp_config"]["resource_attributes"]["attributes_config"]
        if rule["action"] == "index_label"
        for attribute in rule["attributes"]
    ]
    assert "service.name" in index_labels
    assert config["server"]["http_listen_port"] == 3100
    assert config["common"]["path_prefix"] == "/loki"
    assert any(isinstance(v, dict) and v["target"] == "/loki" for v in services["loki"]["volumes"])


def test_jaeger_cassandra_variant(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(compose_file.with_env_defaults((REPO / "backends" / "jaeger-cassandra.yaml").read_text()))
    badger = yaml.safe_load(compose_file.with_env_defaults((REPO / "backends" / "jaeger.yaml").read_text()))
    cassandra = config["extensions"]["jaeger_storage"]["backends"]["cassandra_store"]["cassandra"]
    assert cassandra["schema"]["create"] is True, "Jaeger v2 creates its schema: no schema job"
    # Jaeger v2 replicates to every data center (tests/test_jaeger_cassandra.py reads the keyspace).
    assert cassandra["schema"]["replication_factor"] == 1 and "datacenter" not in cassandra["schema"]
    assert cassandra["connection"]["servers"] == ["cassandra:9042"]
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == "cassandra_store"
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] == "cassandra_store"
    # Same ports as the Badger config, so the collector, Prometheus and Grafana need no change.
    assert config["extensions"]["healthcheckv2"]["http"]["endpoint"].endswith(":13133")
    assert config["extensions"]["jaeger_query"]["http"]["endpoint"].endswith(":16686")
    assert config["receivers"] == badger["receivers"]
    override = load(OVERRIDES["cassandra"])["services"]["jaeger"]
    assert override["command"] == ["--config=/etc/jaeger/jaeger-cassandra.yaml"]
    assert "./backends/jaeger-cassandra.yaml:/etc/jaeger/jaeger-cassandra.yaml:ro" in override["volumes"]


# ---------------------------------------------------------------- make targets and their scripts


def test_make_targets_exist_with_help() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("up", "down", "logs", "ps", "clean"):
        assert re.search(rf"^{target}:.*## \S", makefile, re.MULTILINE), f"make {target} is missing or has no help"
    for script in ("up.sh", "run.sh", "lib.sh"):
        path = REPO / "compose" / script
        assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0, script
        if script != "lib.sh":
            assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


FAKE_DOCKER = """#!/usr/bin/env bash
# Answers what compose/*.sh ask of docker; logs every call.
printf '%s\\n' "$*" >> "$FAKE_DOCKER_LOG"
case "$*" in
"compose version --short") [ -n "$FAKE_COMPOSE_VERSION" ] || exit 1; echo "$FAKE_COMPOSE_VERSION" ;;
info) exit 0 ;;
"info --format "*) echo "$FAKE_DAEMON_PLATFORM" ;;
"plugin inspect loki --format {{.Enabled}}") [ -n "$FAKE_PLUGIN" ] || exit 1; echo true ;;
"plugin inspect loki --format {{.PluginReference}}") echo "$FAKE_PLUGIN" ;;
"plugin install "*) exit 0 ;;
"volume inspect "*) exit 1 ;;
compose*) exit 0 ;;
*) echo "fake docker: unexpected call: $*" >&2; exit 99 ;;
esac
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A copy of what the scripts read (they locate the repo from their own path), and a fake
    `docker` first on PATH."""
    root = tmp_path / "repo"
    (root / "backends").mkdir(parents=True)
    shutil.copytree(REPO / "compose", root / "compose")
    for path in [REPO / ".env", COMPOSE_FILE, *OVERRIDES.values()]:
        shutil.copy2(path, root / path.relative_to(REPO))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    return tmp_path


def run_script(
    sandbox: Path, script: str, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = sandbox / "docker.log"
    log.write_text("")
    variables = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GRAFANA_ADMIN_PASSWORD", "PROFILES", "LOKI_DRIVER", "JAEGER_STORAGE")
    }
    variables |= {
        "PATH": f"{sandbox / 'bin'}:{os.environ['PATH']}",
        "FAKE_DOCKER_LOG": str(log),
        "FAKE_COMPOSE_VERSION": "2.29.7",
        "FAKE_DAEMON_PLATFORM": "linux/x86_64",
        "FAKE_PLUGIN": "",
    }
    variables |= env
    result = subprocess.run(
        ["bash", str(sandbox / "repo" / "compose" / script), *args],
        capture_output=True,
        text=True,
        env=variables,
        timeout=30,
        check=False,
    )
    return result, log.read_text().splitlines()


def test_make_up_installs_the_driver_generates_the_password_and_waits(sandbox: Path) -> None:
    result, calls = run_script(sandbox, "up.sh")
    assert result.returncode == 0, result.stderr
    version = ENV["LOKI_DOCKER_DRIVER_VERSION"]
    assert f"plugin install grafana/loki-docker-driver:{version}-amd64 --alias loki --grant-all-permissions" in calls
    root = sandbox / "repo"
    up = [c for c in calls if c.startswith("compose ") and " up " in c]
    assert up == [
        f"compose --project-directory {root} -f {root}/docker-compose.yaml up -d --build --wait --wait-timeout 300"
    ]
    password = (root / PASSWORD_FILE).read_text()
    assert re.fullmatch(r"[0-9a-f]{36}", password)
    assert stat.S_IMODE((root / ".secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / PASSWORD_FILE).stat().st_mode) == 0o644
    assert password in result.stdout
    for url in ("http://127.0.0.1:3000", "http://127.0.0.1:16686", "http://127.0.0.1:9090", "http://127.0.0.1:8000"):
        assert url in result.stdout
    # A second run keeps the password and does not print it again.
    again, _ = run_script(sandbox, "up.sh", FAKE_PLUGIN=f"docker.io/grafana/loki-docker-driver:{version}-amd64")
    assert again.returncode == 0 and (root / PASSWORD_FILE).read_text() == password
    assert password not in again.stdout


def test_make_up_options_select_files_profiles_and_password(sandbox: Path) -> None:
    result, calls = run_script(
        sandbox,
        "up.sh",
        LOKI_DRIVER="off",
        JAEGER_STORAGE="cassandra",
        PROFILES="load",
        GRAFANA_ADMIN_PASSWORD="chosen-one",  # noqa: S106 (a test value)
    )
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith("plugin")], "LOKI_DRIVER=off must not touch the plugin"
    root = sandbox / "repo"
    (up,) = [c for c in calls if c.startswith("compose ") and " up " in c]
    assert f"-f {root}/backends/compose.default-logging.yaml" in up
    assert f"-f {root}/backends/compose.cassandra.yaml --profile cassandra" in up
    assert "--profile load" in up
    assert (root / PASSWORD_FILE).read_text() == "chosen-one"
    assert "http://127.0.0.1:8089" in result.stdout


def test_make_up_picks_the_daemon_architecture_and_explains_failures(sandbox: Path) -> None:
    _, calls = run_script(sandbox, "up.sh", FAKE_DAEMON_PLATFORM="linux/aarch64")
    assert any(
        c.endswith(f"loki-docker-driver:{ENV['LOKI_DOCKER_DRIVER_VERSION']}-arm64 --alias loki --grant-all-permissions")
        for c in calls
    )
    other, _ = run_script(sandbox, "up.sh", FAKE_DAEMON_PLATFORM="linux/s390x")
    assert other.returncode != 0 and "LOKI_DRIVER=off" in other.stderr
    old, _ = run_script(sandbox, "up.sh", FAKE_COMPOSE_VERSION="2.20.3")
    assert old.returncode != 0 and "docker compose v2 >= 2.24.4 is required" in old.stderr
    none, calls = run_script(sandbox, "up.sh", FAKE_COMPOSE_VERSION="")
    assert none.returncode != 0 and "docker compose v2 is required" in none.stderr
    assert not [c for c in calls if " up " in c]


def test_make_down_and_ps_cover_every_profile(sandbox: Path) -> None:
    result, calls = run_script(sandbox, "run.sh", "down", "--volumes")
    assert result.returncode == 0, result.stderr
    assert calls[-1].endswith("--profile load --profile cassandra down --volumes")
