"""docker-compose.yaml as docker compose sees it: `${VAR}` interpolated from .env.

The harness takes the apps' environment and the backends' command-line flags from here,
so the native processes run with what compose would give the containers.
"""

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .paths import REPO, read_env_file

COMPOSE_FILE = REPO / "docker-compose.yaml"
_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


class UndefinedVariable(KeyError):
    pass


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's interpolation: `$$`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = variables.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if value is None or (op == ":?" and not value):
            raise UndefinedVariable(f"${{{name}}} is not set ({arg or 'no default'})")
        return value

    return _VARIABLE.sub(replace, text)


def load(path: Path = COMPOSE_FILE, extra: dict[str, str] | None = None) -> dict[str, Any]:
    variables = {**read_env_file(REPO / ".env"), **os.environ, **(extra or {})}
    document: dict[str, Any] = yaml.safe_load(interpolate(path.read_text(), variables))
    return document


def service_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    """The service's env_file entries, then its `environment:` (which wins, as in compose)."""
    spec = compose["services"][service]
    env: dict[str, str] = {}
    env_files = spec.get("env_file", [])
    for entry in [env_files] if isinstance(env_files, str | dict) else env_files:
        file = entry["path"] if isinstance(entry, dict) else entry
        env.update(read_env_file(REPO / file))
    environment = spec.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({key: "" if value is None else str(value) for key, value in environment.items()})
    return env


def service_command(compose: dict[str, Any], service: str) -> list[str]:
    command = compose["services"][service].get("command", [])
    return command.split() if isinstance(command, str) else [str(arg) for arg in command]
