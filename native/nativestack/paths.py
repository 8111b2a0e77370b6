"""Where things are: the repo, its .env, and the natively built binaries."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NATIVE_CACHE = REPO / ".cache" / "native"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv-style file; comments and blank lines skipped. Values are taken
    literally and must not be quoted: compose and uv strip quotes, kustomize's env files (k8s/)
    keep them, so a quoted value would differ between compose and Kubernetes."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if value[:1] in ("'", '"'):
            raise ValueError(f"{path}: unquoted values only (kustomize would keep the quotes): {raw!r}")
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
