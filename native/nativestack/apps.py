"""The three services, launched exactly as their containers run them: the Dockerfile's CMD,
from services/, with the environment compose gives the container (services/otel.env plus the
service's `environment:`), compose hostnames swapped for native loopback addresses."""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import compose
from .paths import REPO
from .processes import Process, free_port, start, wait_until

SERVICES_DIR = REPO / "services"
VENV_BIN = SERVICES_DIR / ".venv" / "bin"
APP_NAMES = ("app-a", "app-b", "app-c")
CONTAINER_PORT = 8000


def container_command() -> list[str]:
    """The Dockerfile's CMD (exec form), the one command every container runs."""
    match = re.search(r"^CMD\s+(\[.*\])\s*$", (SERVICES_DIR / "Dockerfile").read_text(), re.MULTILINE)
    if not match:
        raise ValueError("services/Dockerfile has no single-line exec-form CMD [...]")
    command: list[str] = json.loads(match.group(1))
    return command


@dataclass
class App:
    name: str
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def app_environment(spec: dict[str, Any], service: str, addresses: Mapping[str, str], port: int) -> dict[str, str]:
    """Compose's environment for `service`, each `host:port` of `addresses` replaced by its native
    address; the app's own `127.0.0.1:8000` becomes its native port."""
    swaps = {**addresses, f"127.0.0.1:{CONTAINER_PORT}": f"127.0.0.1:{port}"}
    env = {}
    for key, value in compose.service_environment(spec, service).items():
        for compose_address, native_address in swaps.items():
            value = value.replace(compose_address, native_address)
        env[key] = value
    return env


def start_app(
    spec: dict[str, Any],
    service: str,
    workdir: Path,
    addresses: Mapping[str, str],
    *,
    port: int | None = None,
    overrides: Mapping[str, str] = {},
    name: str | None = None,
) -> App:
    port = port or free_port()
    env = {
        **app_environment(spec, service, addresses, port),
        "PORT": str(port),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        **overrides,
    }
    app = App(service, start(name or service, container_command(), env, workdir, cwd=SERVICES_DIR), port)

    def healthy() -> bool:
        app.process.ensure_alive()
        return httpx.get(f"{app.url}/healthz", timeout=2).status_code == 200

    wait_until(healthy, f"{service} /healthz", timeout=60)
    return app


def start_apps(
    spec: dict[str, Any],
    workdir: Path,
    addresses: Mapping[str, str],
    ports: Mapping[str, int],
    *,
    overrides: Mapping[str, str] = {},
    prefix: str = "",
) -> dict[str, App]:
    """app-a, app-b and app-c on `ports`, app-a (which calls the others) last; if one fails to
    start, the ones already running are stopped."""
    started: dict[str, App] = {}
    try:
        for service in reversed(APP_NAMES):
            started[service] = start_app(
                spec, service, workdir, addresses, port=ports[service], overrides=overrides, name=prefix + service
            )
    except BaseException:
        for app in started.values():
            app.process.stop()
        raise
    return started


def locust_command(apps: dict[str, App], *options: str) -> list[str]:
    """loadtest/locustfile.py against these apps (app-a is the host), plus Locust `options`."""
    return [
        str(VENV_BIN / "locust"),
        "-f",
        str(REPO / "loadtest" / "locustfile.py"),
        "--host",
        apps["app-a"].url,
        "--app-b-url",
        apps["app-b"].url,
        "--app-c-url",
        apps["app-c"].url,
        *options,
    ]
