"""docker-compose.yaml and its override files as the compose and security tests read them:
interpolated from .env only (what a fresh checkout gets), or as written."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nativestack import compose
from nativestack.paths import REPO, read_env_file

ENV = read_env_file(REPO / ".env")
COMPOSE_FILE = REPO / "docker-compose.yaml"
OVERRIDES = {
    "default-logging": REPO / "backends" / "compose.default-logging.yaml",
    "cassandra": REPO / "backends" / "compose.cassandra.yaml",
    "gateway": REPO / "backends" / "compose.gateway.yaml",
}
COMPOSE_FILES = [COMPOSE_FILE, *OVERRIDES.values()]
PASSWORD_FILE = ".secrets/grafana-admin-password"  # noqa: S105 (a path, not a password)


def load(path: Path) -> dict[str, Any]:
    """Interpolated from .env only, not this shell's environment."""
    return compose.parse(compose.interpolate(path.read_text(), ENV))


def load_raw(path: Path) -> dict[str, Any]:
    """The file as written, `${VAR}` left in place."""
    return compose.parse(path.read_text())


def all_service_specs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(file name, service name, spec) for the base file and every override."""
    for path in COMPOSE_FILES:
        for name, spec in load(path)["services"].items():
            yield path.name, name, spec


def bind_mounts(spec: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(host path, container path, read-only) of each bind mount."""
    for volume in spec.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            if parts[0].startswith((".", "/", "~")):
                yield parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
        elif volume.get("type") == "bind":
            yield volume["source"], volume["target"], bool(volume.get("read_only"))


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
