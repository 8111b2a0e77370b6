"""The three services, launched exactly as their containers run them: the Dockerfile's CMD,
from services/, with the environment compose gives the container (services/otel.env plus the
service's `environment:`), compose hostnames swapped for native loopback addresses."""

import json
import os
import re
from collections.abc import Mapping, Sequence
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


def app_environment(
    spec: dict[str, Any], service: str, addresses: Mapping[str, str], port: int, *, agent_settings: bool = True
) -> dict[str, str]:
    """Compose's environment for `service`, each `host:port` of `addresses` replaced by its native
    address; the app's own `127.0.0.1:8000` becomes its native port. `agent_settings=False` drops
    the OTEL_* settings the agent reads (all but OTEL_SERVICE_NAME): for a command without the
    agent that configures telemetry itself."""
    swaps = {**addresses, f"127.0.0.1:{CONTAINER_PORT}": f"127.0.0.1:{port}"}
    env = {}
    for key, value in compose.service_environment(spec, service).items():
        if not agent_settings and key.startswith("OTEL_") and key != "OTEL_SERVICE_NAME":
            continue
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
    command: Sequence[str] | None = None,
    agent_settings: bool = True,
) -> App:
    """`service` as its container runs it, or with another `command` (default: the Dockerfile's
    CMD) run the same way; `overrides` win over compose's environment."""
    port = port or free_port()
    env = {
        **app_environment(spec, service, addresses, port, agent_settings=agent_settings),
        "PORT": str(port),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        **overrides,
    }
    argv = container_command() if command is None else command
    app = App(service, start(name or service, argv, env, workdir, cwd=SERVICES_DIR), port)

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
    command: Sequence[str] | None = None,
    agent_settings: bool = True,
) -> dict[str, App]:
    """app-a, app-b and app-c on `ports`, app-a (which calls the others) last; if one fails to
    start, the ones already running are stopped. `command`, `agent_settings`: see start_app."""
    started: dict[str, App] = {}
    try:
        for service in reversed(APP_NAMES):
            started[service] = start_app(
                spec,
                service,
                workdir,
                addresses,
                port=ports[service],
                overrides=overrides,
                name=prefix + service,
                command=command,
                agent_settings=agent_settings,
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
