"""docker-compose.yaml as docker compose sees it: `${VAR}` interpolated from .env, and compose's
merge tags (`!override`, `!reset`) read.

nativestack takes the apps' environment and the backends' command-line flags from here, so the
native processes run with what compose would give the containers; tests/test_compose.py runs its
policy checks through the same loader, and has compose's own (native/composecheck) judge the
file's validity.
"""

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .paths import REPO, read_env_file

COMPOSE_FILE = REPO / "docker-compose.yaml"
_DOLLAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|)")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's interpolation: `$$`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`.
    A lone `$` is an error (compose would read it as a variable): a literal is written `$$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        if name is None:
            line = text.count("\n", 0, match.start()) + 1
            context = text[match.start() : match.start() + 20]
            raise ValueError(f"line {line}: a lone `$` (write `$$` for a literal dollar): {context!r}")
        value = variables.get(name)
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        if value is None or (op == ":?" and not value):
            raise KeyError(f"${{{name}}} is used but not defined in .env ({arg or 'no default'})")
        return value

    return _DOLLAR.sub(replace, text)


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus compose's merge tags `!override` and `!reset`."""


def with_env_defaults(text: str) -> str:
    """A Collector or Jaeger config's `${env:NAME:-default}` replaced by its default: the config
    as compose runs it, which sets none of those variables."""
    return re.sub(r"\$\{env:[A-Z_]+:-([^}]*)\}", r"\1", text)


def _construct_tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


ComposeLoader.add_constructor("!override", _construct_tagged)
ComposeLoader.add_constructor("!reset", _construct_tagged)


def parse(text: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.load(text, Loader=ComposeLoader)  # noqa: S506 (a SafeLoader subclass)
    return document


def load(path: Path = COMPOSE_FILE, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The file interpolated as `docker compose` would: .env, then the environment, then `extra`."""
    variables = {**read_env_file(REPO / ".env"), **os.environ, **(extra or {})}
    return parse(interpolate(path.read_text(), variables))


def load_with(*overlays: Path) -> dict[str, Any]:
    """docker-compose.yaml with override files applied, as `docker compose -f ... -f ...`."""
    spec = load()
    for overlay in overlays:
        for name, service in load(overlay)["services"].items():
            spec["services"][name] = merge_service(spec["services"].get(name, {}), service)
    return spec


def _env_files(service: dict[str, Any]) -> list[Any]:
    files = service.get("env_file", [])
    return [files] if isinstance(files, str | dict) else list(files)


def _target(volume: Any) -> str:
    """A volume's container path, long syntax or `source:target[:mode]`."""
    return str(volume["target"]) if isinstance(volume, dict) else str(volume).split(":")[1]


def merge_service(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge rules for the keys nativestack reads: `command` is replaced, `volumes`
    merge by container path, `env_file` entries are appended, `environment` merges (the override
    wins); other keys are replaced."""
    merged = {**base, **override}
    volumes = {_target(v): v for v in [*base.get("volumes", []), *override.get("volumes", [])]}
    if volumes:
        merged["volumes"] = list(volumes.values())
    env_files = _env_files(base) + [f for f in _env_files(override) if f not in _env_files(base)]
    if env_files:
        merged["env_file"] = env_files
    if "environment" in base or "environment" in override:
        merged["environment"] = {**base.get("environment", {}), **override.get("environment", {})}
    return merged


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
