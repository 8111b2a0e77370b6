"""Where things are: the repo, its .env, and the natively built binaries."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE_CACHE = REPO / ".cache" / "native"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv-style file; comments and blank lines skipped. A value in single
    quotes is taken literally without them, as docker compose and a POSIX shell take it; double
    quotes are refused (compose and the shell expand and unescape them differently)."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if value.startswith('"'):
            raise ValueError(f"{path}: use single quotes, not double: {raw!r}")
        if value.startswith("'"):
            if len(value) < 2 or not value.endswith("'") or "'" in value[1:-1]:
                raise ValueError(f"{path}: one single-quoted value, nothing after it: {raw!r}")
            value = value[1:-1]
        values[key.strip()] = value
    return values


def versions() -> dict[str, str]:
    return read_env_file(REPO / ".env")


def binaries() -> dict[str, Path]:
    """Paths written by native/build.sh (run `make native` first)."""
    listing = NATIVE_CACHE / "binaries.env"
    if not listing.exists():
        raise FileNotFoundError(f"{listing} is missing: run `make native` to build the test binaries")
    return {name: Path(path) for name, path in read_env_file(listing).items()}
