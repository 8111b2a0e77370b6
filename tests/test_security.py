"""Security of the shipped stack: every container's user (compose's `user:` or its image's), no
host privileges, what the committed env files may hold, every secret file git-ignored, no key
material in git, and no debug surface published or enabled (the Collector's, Jaeger's). Host
ports on 127.0.0.1 only and read-only config mounts are tests/test_compose.py's.
"""

import re
import subprocess
from typing import Any

import pytest
import yaml

from helpers.compose_files import COMPOSE_FILE, COMPOSE_FILES, PASSWORD_FILE, load, load_raw, published
from nativestack import compose as compose_file
from nativestack.paths import REPO, read_env_file

ROOT = {"0", "root", "0:0", "root:root"}
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)

# Services with no `user:` in compose, and why that is still non-root (or has to be root).
IMAGE_USERS = {
    "app-a": "services/Dockerfile ends with `USER app` (uid 10001)",
    "app-b": "services/Dockerfile ends with `USER app` (uid 10001)",
    "app-c": "services/Dockerfile ends with `USER app` (uid 10001)",
    "prometheus": "prom/prometheus runs as nobody",
    "grafana": "grafana/grafana runs as uid 472",
    "locust": "locustio/locust runs as user locust",
    "cassandra": "the entrypoint needs root to own its data directory, then drops to cassandra",
}
# Root at start, on purpose: the volume owner's chown job, and Cassandra's entrypoint.
ROOT_AT_START = {"volume-init", "cassandra"}


def services() -> list[tuple[str, str, dict[str, Any]]]:
    """(file name, service name, spec) of every file; `${VAR}` left as text: these checks read
    structure, not versions."""
    return [(path.name, name, spec) for path in COMPOSE_FILES for name, spec in load_raw(path)["services"].items()]


def git(*args: str) -> subprocess.CompletedProcess[str]:
    if not (REPO / ".git").exists():
        pytest.fail("the repo's .git is needed to check what is tracked and ignored")
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)


# ---------------------------------------------------------------- users and privileges


def test_every_container_runs_as_a_non_root_user() -> None:
    """Compose's `user:` where it sets one, the image's own user where it does not; the two that
    start as root do so on purpose and within bounds."""
    base = load(COMPOSE_FILE)["services"]
    for name, spec in base.items():
        if name not in ROOT_AT_START:
            assert str(spec.get("user", "")) not in ROOT, f"{name} runs as root"
    without_user = {name for name, spec in base.items() if "user" not in spec}
    assert without_user == set(IMAGE_USERS), "decide (and record in IMAGE_USERS) who a new service runs as"
    # The services image is ours: its final stage must switch to a non-root user.
    dockerfile = (REPO / "services" / "Dockerfile").read_text()
    final_stage = dockerfile[dockerfile.rindex("\nFROM ") :]
    users = re.findall(r"^USER\s+(\S+)", final_stage, re.MULTILINE)
    assert users and users[-1] not in ROOT, "services/Dockerfile must end as a non-root USER"
    created = re.search(rf"useradd\b.*--uid (\d+)\b.*\b{re.escape(users[-1])}\s*$", final_stage, re.MULTILINE)
    assert created and created[1] != "0", f"USER {users[-1]} is created with a non-zero uid"
    # The Collector image keeps the contrib image's non-root user (compose also states 10001).
    collector = (REPO / "collector" / "Dockerfile").read_text()
    assert not [u for u in re.findall(r"^USER\s+(\S+)", collector, re.MULTILINE) if u in ROOT]
    # The one job that needs root (chown of the data volumes): every capability but CHOWN
    # dropped, and no network.
    init = base["volume-init"]
    assert str(init["user"]) in ROOT and init["cap_drop"] == ["ALL"] and init["cap_add"] == ["CHOWN"]
    assert init["network_mode"] == "none"
    # The owner volume-init gives the volumes is the user of the services writing them.
    owner = re.search(r"chown (\d+:\d+)", " ".join(init["command"]))
    assert owner
    shared = {mount.split(":")[0] for mount in init["volumes"]}
    for name, spec in base.items():
        for volume in spec.get("volumes", []):
            if isinstance(volume, dict) and volume.get("source") in shared and name != "volume-init":
                assert spec.get("user") == owner[1], f"{name} writes {volume['source']} as another user"
                assert volume.get("volume", {}).get("nocopy") is True, f"{name}: image content would reset the owner"


def test_no_service_gets_host_privileges() -> None:
    for file, name, spec in services():
        where = f"{file} {name}"
        assert not spec.get("privileged"), f"{where}: privileged"
        for key in ("pid", "ipc", "userns_mode", "uts", "cgroup"):
            assert spec.get(key) != "host", f"{where}: {key}: host"
        assert not spec.get("devices"), f"{where}: host devices"
        for option in spec.get("security_opt", []):
            assert "unconfined" not in option and "no-new-privileges:false" not in option, f"{where}: {option}"
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else str(volume.get("source", ""))
            assert "docker.sock" not in source, f"{where}: the Docker socket is root on the host"
            assert source not in ("/", "/etc", "/proc", "/sys", "/var/run"), f"{where}: mounts host {source}"
        added = spec.get("cap_add", [])
        # Only the one-shot volume-init job adds a capability: CHOWN, with all others dropped.
        assert not added or (name == "volume-init" and added == ["CHOWN"] and spec.get("cap_drop") == ["ALL"]), (
            f"{where}: cap_add {added}"
        )


# ---------------------------------------------------------------- secrets


def test_committed_env_holds_only_versions() -> None:
    values = read_env_file(REPO / ".env")
    assert values
    for key, value in values.items():
        assert not SECRET_WORDS.search(key), f".env: {key} looks like a credential; .env is committed"
        assert key.endswith("_VERSION"), f".env: {key} is not a version; only versions belong in .env"
        assert re.fullmatch(r"v?\d+(\.\d+){1,3}", value), f".env: {key}={value!r} is not a plain version"


def test_service_env_file_holds_no_credentials() -> None:
    """services/otel.env is committed and reaches every app container (compose `env_file`)."""
    values = read_env_file(REPO / "services" / "otel.env")
    for key, value in values.items():
        assert not SECRET_WORDS.search(key), f"otel.env: {key}"
        # OTLP headers are where a vendor token would go (OTEL_EXPORTER_OTLP_HEADERS=...).
        assert not key.endswith("_HEADERS"), f"otel.env: {key}: exporter headers carry credentials"
        assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"otel.env: {key} has credentials in a URL"


def test_every_declared_secret_file_is_git_ignored_and_untracked() -> None:
    """The secret files compose mounts, and `.secrets/` where `make up` writes them."""
    tracked = set(git("ls-files").stdout.split())
    declared = []
    for path in COMPOSE_FILES:
        for name, secret in (load_raw(path).get("secrets") or {}).items():
            if "file" in secret:
                declared.append((name, str(secret["file"]).removeprefix("./")))
    assert ("grafana_admin_password", PASSWORD_FILE) in declared
    assert git("check-ignore", "-q", ".secrets/").returncode == 0, ".secrets/ is not git-ignored"
    assert not [file for file in tracked if file.startswith(".secrets/")], ".secrets/ has tracked files"
    for name, file in declared:
        assert git("check-ignore", "-q", file).returncode == 0, f"secret {name}: {file} is not git-ignored"
        assert file not in tracked, f"secret {name}: {file} is committed"


def test_no_key_material_is_tracked() -> None:
    tracked = git("ls-files").stdout.split()
    risky_names = re.compile(r"(^|/)(\.secrets/|id_(rsa|dsa|ecdsa|ed25519)\b|.*\.(pem|key|p12|pfx|jks)$|\.env\..+)")
    assert not [f for f in tracked if risky_names.search(f)]
    # Built from pieces so this file does not match itself.
    begin = "-----BEGIN"
    patterns = [
        re.compile(begin + r" (RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
        re.compile(r"\bAKIA" + r"[0-9A-Z]{16}\b"),  # AWS access key id
        re.compile(r"\bgh[pousr]_" + r"[A-Za-z0-9]{36}\b"),  # GitHub token
        re.compile(r"\bglsa_" + r"[A-Za-z0-9]{32}_[0-9a-f]{8}\b"),  # Grafana service-account token
    ]
    for file in tracked:
        path = REPO / file
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        for pattern in patterns:
            assert not pattern.search(text), f"{file} holds something like a credential ({pattern.pattern[:20]}...)"


# ---------------------------------------------------------------- debug surface


DEBUG_EXTENSIONS = ("zpages", "pprof", "remotetap", "expvar")


def test_collector_debug_surface_is_unpublished_loopback_only_and_logs_no_payloads() -> None:
    """zpages and pprof are neither published nor reachable beyond the container's loopback, and
    nothing prints payloads: no debug exporter, logs at info or above."""
    services = load(COMPOSE_FILE)["services"]
    for name, spec in services.items():
        for _, host, container in published(spec):
            assert container not in (55679, 1777) and host not in (55679, 1777), f"{name} publishes a debug endpoint"
    assert sorted(c for _, _, c in published(services["collector"])) == [4317, 4318]
    text = (REPO / "collector" / "config.yaml").read_text()
    assert re.search(r"zpages:\s*\n(?:\s*#.*\n)*\s*endpoint: \$\{env:[A-Z_]+:-127\.0\.0\.1:55679\}", text)
    config = yaml.safe_load(compose_file.with_env_defaults(text))
    assert "pprof" not in config["service"]["extensions"]
    for name, settings in (config.get("extensions") or {}).items():
        if name.split("/")[0] in DEBUG_EXTENSIONS:
            endpoint = str((settings or {}).get("endpoint", ""))
            assert endpoint.startswith(("127.0.0.1:", "localhost:")), f"{name} listens on {endpoint or 'its default'}"
    # The debug exporter prints every span, attribute and log body to the Collector's stdout.
    for pipeline, spec in config["service"]["pipelines"].items():
        assert not [e for e in spec["exporters"] if e.split("/")[0] in ("debug", "logging")], pipeline
    # The Collector's own logs stay at info: debug level logs payload details.
    assert config["service"]["telemetry"]["logs"]["level"] in ("info", "warn", "error")


@pytest.mark.parametrize("config", ["jaeger.yaml", "jaeger-cassandra.yaml"])
def test_jaeger_enables_no_debug_extension(config: str) -> None:
    document = yaml.safe_load(compose_file.with_env_defaults((REPO / "backends" / config).read_text()))
    enabled = document["service"]["extensions"]
    assert not [e for e in enabled if e.split("/")[0] in DEBUG_EXTENSIONS], enabled
    for pipeline, spec in document["service"]["pipelines"].items():
        assert not [e for e in spec["exporters"] if e.split("/")[0] in ("debug", "logging")], pipeline
