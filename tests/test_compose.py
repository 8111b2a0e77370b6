"""docker-compose.yaml, its overrides and the backend configs it mounts, checked without Docker:
loaded by compose's own loader for every selection `make up` can make, every version from
`.env`, host ports on 127.0.0.1 only, read-only config mounts, a healthcheck on every service
and healthy-gated `depends_on`, memory limits, the Loki log-driver anchor, Grafana's auth, and
the commands and mounts the native stack maps. Security (users, privileges, secrets, debug
surface) is tests/test_security.py; the `make up` scripts, tests/test_make_up_scripts.py.
"""

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.logging_config import FIRST_LINE_REGEX
from helpers.compose_files import (
    COMPOSE_FILE,
    COMPOSE_FILES,
    ENV,
    OVERRIDES,
    PASSWORD_FILE,
    all_service_specs,
    bind_mounts,
    load,
    load_raw,
    published,
)
from nativestack import compose as compose_file
from nativestack.apps import APP_NAMES
from nativestack.paths import REPO, binaries

APP_HOST_PORTS = {"app-a": 8000, "app-b": 8001, "app-c": 8002}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def is_job(spec: dict[str, Any]) -> bool:
    """A one-shot container (runs, exits 0, is never restarted)."""
    return str(spec.get("restart", "")) == "no"


# ---------------------------------------------------------------- compose's own loader


def compose_selections() -> list[tuple[str, list[str]]]:
    """(label, docker compose arguments) for every selection of files and profiles `make up` and
    `make down/ps/logs` can make, built by compose/lib.sh's own compose_command: LOKI_DRIVER x
    JAEGER_STORAGE x every subset of the profiles the compose file names, and each of those
    without profiles in the two-tier TOPOLOGY too."""
    named = sorted({p for spec in load_raw(COMPOSE_FILE)["services"].values() for p in spec.get("profiles", [])})
    profile_sets = [" ".join(c) for n in range(len(named) + 1) for c in itertools.combinations(named, n)]
    script = 'source compose/lib.sh && compose_command "$1" && printf "%s\\0" "${COMPOSE[@]:2}"'
    selections = []
    for loki, storage, profiles, topology, subcommand in [
        *itertools.product(("on", "off"), ("badger", "cassandra"), profile_sets, ("single",), ("up",)),
        *itertools.product(("on", "off"), ("badger", "cassandra"), ("",), ("gateway",), ("up",)),
        *itertools.product(("on", "off"), ("badger", "cassandra"), ("",), ("single", "gateway"), ("down",)),
    ]:
        env = {
            "PATH": os.environ["PATH"],
            "LOKI_DRIVER": loki,
            "JAEGER_STORAGE": storage,
            "TOPOLOGY": topology,
            "PROFILES": profiles,
        }
        argv = subprocess.run(
            ["bash", "-c", script, "lib.sh", subcommand], cwd=REPO, env=env, capture_output=True, check=True
        ).stdout.decode()
        label = f"{subcommand} LOKI_DRIVER={loki} JAEGER_STORAGE={storage} TOPOLOGY={topology}" + (
            f" PROFILES={profiles}" if profiles else ""
        )
        selections.append((label, argv.rstrip("\0").split("\0")))
    return selections


def compose_config(*arguments: str | Path) -> subprocess.CompletedProcess[str]:
    """native/composecheck: the project loaded by compose-go as `docker compose config` loads it
    (interpolation from .env, merge tags, extends, compose's schema and consistency checks), as
    JSON. Only PATH from this shell: variables a developer has set must not change the verdict."""
    argv = [str(binaries()["COMPOSECHECK"]), *map(str, arguments)]
    return subprocess.run(argv, capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=60)


SELECTIONS = compose_selections()


@pytest.mark.parametrize("arguments", [arguments for _, arguments in SELECTIONS], ids=[s for s, _ in SELECTIONS])
def test_compose_loads_every_selection_make_up_can_make(arguments: list[str]) -> None:
    result = compose_config(*arguments)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", "compose warns (an unset variable?)"
    project = json.loads(result.stdout)
    profiles = {arguments[i + 1] for i, arg in enumerate(arguments) if arg == "--profile"}
    files = {Path(arguments[i + 1]).name for i, arg in enumerate(arguments) if arg == "-f"}
    services = project["services"]
    declared = load(COMPOSE_FILE)["services"]
    if "compose.gateway.yaml" in files:
        declared |= {"gateway": load(OVERRIDES["gateway"])["services"]["gateway"]}
        # The agent in place of the single Collector, in front of three gateways.
        assert "--config=/etc/otelcol/agent.yaml" in services["collector"]["command"]
        assert services["gateway"]["deploy"]["replicas"] == 3
        assert "--config=/etc/otelcol/gateway.yaml" in services["gateway"]["command"]
    assert set(services) == {n for n, s in declared.items() if not s.get("profiles") or profiles & set(s["profiles"])}
    # What each override file does reaches the merged project compose would run.
    loki_driver = {name for name, spec in services.items() if spec.get("logging", {}).get("driver") == "loki"}
    assert loki_driver == (set() if "compose.default-logging.yaml" in files else set(APP_NAMES))
    jaeger_config = "jaeger-cassandra.yaml" if "compose.cassandra.yaml" in files else "jaeger.yaml"
    assert services["jaeger"]["command"] == [f"--config=/etc/jaeger/{jaeger_config}"]
    for name in APP_NAMES:  # !override replaces the whole block: no loki-* option is left to the default driver
        options = services[name]["logging"].get("options", {})
        assert loki_driver or not [key for key in options if key.startswith("loki-")], name
    for name, spec in services.items():
        for port in spec.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name}: {port} is published beyond loopback"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # compose's schema: an unknown key.
        (("\n  tempo:\n", "\n  tempo:\n    restart_policy: always\n"), "services.tempo.restart_policy false schema"),
        # compose's consistency check: a dependency on no service.
        (("      volume-init:\n", "      volume-inits:\n"), 'depends on undefined service "volume-inits"'),
        # compose's interpolation: a required variable without a value.
        (("${TEMPO_VERSION}", "${TEMPO_VERSIONS:?not in .env}"), "required variable TEMPO_VERSIONS is missing a value"),
        # compose's YAML parser: a key where a value belongs.
        (("\n  tempo:\n", "\n  tempo: x: y\n"), "mapping values are not allowed in this context"),
    ],
    ids=["schema", "consistency", "interpolation", "yaml"],
)
def test_compose_refuses_a_broken_file_with_its_own_message(
    edit: tuple[str, str], message: str, tmp_path: Path
) -> None:
    for file in (".env", "services/otel.env"):
        (tmp_path / file).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / file, tmp_path / file)
    broken = tmp_path / COMPOSE_FILE.name
    text = COMPOSE_FILE.read_text()
    assert edit[0] in text
    broken.write_text(text.replace(*edit, 1))
    result = compose_config("--project-directory", tmp_path, "-f", broken)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_interpolation_rejects_undefined_variables_and_lone_dollars() -> None:
    assert compose_file.interpolate("a ${X} ${Y:-d} $$1", {"X": "x"}) == "a x d $1"
    with pytest.raises(KeyError):
        compose_file.interpolate("${NOT_IN_ENV}", {})
    with pytest.raises(ValueError):
        compose_file.interpolate("regex (.*)$", {})


# ---------------------------------------------------------------- versions


def test_every_image_tag_comes_from_env() -> None:
    for path in COMPOSE_FILES:
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


def test_dockerfiles_take_every_version_from_compose_build_args() -> None:
    """A Dockerfile ARG with a default would drift from .env unnoticed; one compose does not pass
    would build with nothing. So: no defaults, every ARG passed as ${ARG} from .env."""
    builds = {name: spec["build"] for name, spec in load_raw(COMPOSE_FILE)["services"].items() if "build" in spec}
    assert {build["context"] for build in builds.values()} == {"./collector", "./services"}
    for name, build in builds.items():
        dockerfile = (REPO / build["context"] / build.get("dockerfile", "Dockerfile")).read_text()
        declared = re.findall(r"^ARG\s+(\S+)", dockerfile, re.MULTILINE)
        assert declared, f"{name}: its Dockerfile takes no version"
        for arg in declared:
            assert "=" not in arg, f"{name}: ARG {arg} has a default"
            assert build["args"].get(arg) == f"${{{arg}}}" and arg in ENV, f"{name}: compose must pass {arg} from .env"
        for line in dockerfile.splitlines():
            if line.startswith("FROM ") and ":" in line.split()[1]:
                assert "${" in line.split()[1].partition(":")[2], f"{name}: {line} floats or hard-codes its version"


def test_makefile_and_ci_read_python_and_uv_versions_from_env() -> None:
    for variable in ("PYTHON_VERSION", "UV_VERSION"):
        printed = subprocess.run(
            ["make", "-s", "--no-print-directory", "--eval", "print-%: ; @echo $($*)", f"print-{variable}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        assert printed.stdout.strip() == ENV[variable]
    for path in (REPO / "Makefile", REPO / ".ci" / "run"):
        text = path.read_text()
        assert not [v for v in (ENV["PYTHON_VERSION"], ENV["UV_VERSION"]) if v in text], (
            f"{path.name} repeats a version"
        )
    assert re.search(r"UV_VERSION=.*\.env", (REPO / ".ci" / "run").read_text()), ".ci/run installs the uv .env pins"
    assert "--python $(PYTHON_VERSION)" in (REPO / "Makefile").read_text(), "the test venv runs the image's Python"


def test_locust_image_is_the_version_the_python_lock_pins() -> None:
    pins = re.findall(r'"locust==([^"]+)"', (REPO / "services" / "pyproject.toml").read_text())
    assert pins == [ENV["LOCUST_VERSION"]]


def test_loki_driver_plugin_version_is_pinned_in_env() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", ENV["LOKI_DOCKER_DRIVER_VERSION"])
    assert "LOKI_DOCKER_DRIVER_VERSION" in (REPO / "compose" / "up.sh").read_text()


# ---------------------------------------------------------------- mounts and ports


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


def test_host_ports_bind_loopback_only() -> None:
    for file, name, spec in all_service_specs():
        assert spec.get("network_mode") != "host", f"{file} {name}: host networking bypasses the port bindings"
        for ip, host, container in published(spec):
            assert ip == "127.0.0.1", f"{file} {name}: port {container} published on {ip or 'every interface'}"
            assert host, f"{file} {name}: port {container} gets a random host port"


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
        services = base | load(OVERRIDES["gateway"])["services"] if file == OVERRIDES["gateway"].name else base
        for dependency, condition in depends.items():
            assert dependency in services, f"{file} {name}: unknown dependency {dependency}"
            expected = "service_completed_successfully" if is_job(services[dependency]) else "service_healthy"
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
    for name in APP_NAMES:
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
    for name in APP_NAMES:
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
    # A record starts at the line services/app/logging_config.py begins each record with.
    assert stages[0]["multiline"]["firstline"] == FIRST_LINE_REGEX
    first = re.compile(FIRST_LINE_REGEX)
    assert first.match("2026-11-25T21:30:00.123Z INFO [app.main] [trace_id=ab span_id=cd service=app-a] hello")
    assert not first.match('  File "/app/main.py", line 3, in chain')
    relabel = yaml.safe_load(options["loki-relabel-config"])
    assert {"source_labels": ["compose_service"], "target_label": "service_name"} in relabel
    # Loki publishes the port the driver pushes to, on loopback.
    assert ("127.0.0.1", 3100, 3100) in list(published(compose["services"]["loki"]))


def test_default_logging_override_replaces_the_driver_for_every_app(compose: dict[str, Any]) -> None:
    override = load(OVERRIDES["default-logging"])["services"]
    uses_loki = {n for n, s in compose["services"].items() if s.get("logging", {}).get("driver") == "loki"}
    assert set(override) == uses_loki == set(APP_NAMES)
    text = OVERRIDES["default-logging"].read_text()
    assert text.count("logging: !override") == len(APP_NAMES), "a plain merge would keep the loki-* options"
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
