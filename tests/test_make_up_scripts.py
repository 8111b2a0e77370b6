"""The scripts behind `make up/down/logs/ps/clean` (compose/), run against a fake `docker` that
logs every call: the Loki driver plugin for the daemon's architecture, the generated Grafana
password, the files and profiles each make option selects, and a readable error for each
missing prerequisite."""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from helpers.compose_files import COMPOSE_FILES, ENV, PASSWORD_FILE
from nativestack.paths import REPO


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
    for path in [REPO / ".env", *COMPOSE_FILES]:
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
