"""The variants the overhead phase compares, and the trio of app-a/b/c each one runs.

Every variant is the same app and gunicorn.conf.py, launched by nativestack.apps like its
container (compose's environment, wired to the stack's Collector); only the command and a few
settings differ:
  uninstrumented   plain gunicorn (the Dockerfile's CMD without the agent: no SDK at all)
  zero_code        the compose defaults: all three signals over OTLP to the Collector
  internal_spans   ... plus the http send/receive spans (KEEP_ASGI_INTERNAL_SPANS=true)
  grpc             ... every app over OTLP gRPC instead of http/protobuf
  sampled_10       ... head sampling at 10% (parentbased_traceidratio, 0.1)
  h11              ... on uvicorn's pure-Python parser instead of httptools (HTTP_PARSER=h11)
  log_correlation  ... with the logging instrumentation's record factory on (the old default)
  python_3_12/3_13 zero_code on another CPython: the app's locked packages synced into a venv of
                   that interpreter (python_venv), found like `make venv` finds .env's
  hand             loadtest/hand_instrumented.py, the reference's hand-written design
"""

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nativestack.apps import APP_NAMES, CONTAINER_PORT, SERVICES_DIR, App, container_command, start_apps
from nativestack.backends import LOOPBACK
from nativestack.paths import REPO
from nativestack.processes import Process, free_port
from nativestack.procfs import children, process_tree
from nativestack.scrape import scrape
from nativestack.stack import Stack

LOADTEST = REPO / "loadtest"


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    kind: str  # "plain" (gunicorn), "agent" (the Dockerfile's CMD) or "hand" (hand_instrumented)
    env: Mapping[str, str] = field(default_factory=dict)  # `{grpc}` becomes the Collector's gRPC URL
    # Spans per request, when known exactly: per server request (its span, plus the two
    # `http send` spans of response start and body when internal spans are kept), and per
    # /chain the httpx client spans. None: not exact (sampling), not checked.
    spans_per_server_request: int | None = None
    client_spans_per_chain: int = 3
    # The SDK exports a partial batch after this long (OTEL_BSP_SCHEDULE_DELAY; 5 s SDK default).
    flush_seconds: float = 1.0


VARIANTS = (
    Variant(
        "uninstrumented",
        "uninstrumented (plain gunicorn)",
        "plain",
        flush_seconds=0.0,
        spans_per_server_request=0,
        client_spans_per_chain=0,
    ),
    Variant("zero_code", "zero-code, all signals (compose defaults)", "agent", spans_per_server_request=1),
    Variant(
        "internal_spans",
        "zero-code + send/receive spans",
        "agent",
        {"KEEP_ASGI_INTERNAL_SPANS": "true"},
        spans_per_server_request=3,
    ),
    Variant(
        "grpc",
        "zero-code, OTLP gRPC",
        "agent",
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "{grpc}"},
        spans_per_server_request=1,
    ),
    Variant(
        "sampled_10",
        "zero-code, 10% head sampling",
        "agent",
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    ),
    Variant("h11", "zero-code on h11 (pure Python)", "agent", {"HTTP_PARSER": "h11"}, spans_per_server_request=1),
    Variant(
        "log_correlation",
        "zero-code + log record factory",
        "agent",
        {"OTEL_PYTHON_LOG_CORRELATION": "true"},
        spans_per_server_request=1,
    ),
    Variant("python_3_12", "zero-code on Python 3.12", "agent", {"BENCH_PYTHON": "3.12"}, spans_per_server_request=1),
    Variant("python_3_13", "zero-code on Python 3.13", "agent", {"BENCH_PYTHON": "3.13"}, spans_per_server_request=1),
    Variant(
        "hand",
        "hand-instrumented (reference design)",
        "hand",
        flush_seconds=5.0,
        # Its server span, two `http send` and one `http receive`: BaseHTTPMiddleware listens
        # for the client's disconnect after the response.
        spans_per_server_request=4,
        client_spans_per_chain=0,
    ),
)


def extra_variant(spec: str) -> Variant:
    """`--extra KEY:VAR=VALUE,...`: a zero-code variant with these environment overrides."""
    key, _, assignments = spec.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    shown = ",".join(f"{k}={Path(v).name}" if k == "BENCH_GUNICORN_CONF" else f"{k}={v}" for k, v in env.items())
    return Variant(key, f"zero-code + {shown}", "agent", env)


@dataclass
class AppSet:
    variant: Variant
    apps: dict[str, App]

    def pids(self, names: tuple[str, ...] = APP_NAMES) -> list[int]:
        return [pid for name in names for pid in process_tree(self.apps[name].process.pid)]

    def worker_pid(self, name: str) -> int:
        workers = children(self.apps[name].process.pid)
        if len(workers) != 1:
            raise RuntimeError(f"{self.variant.key} {name}: expected one gunicorn worker, found {workers}")
        return workers[0]

    def processes(self) -> list[Process]:
        return [app.process for app in self.apps.values()]

    def url(self, endpoint: str) -> str:
        """app-a's `endpoint`: every phase drives app-a (which calls app-b and app-c on /chain)."""
        return self.apps["app-a"].url + endpoint


def variant_command(variant: Variant) -> list[str]:
    command = container_command()  # opentelemetry-instrument gunicorn ... app.main:app
    if "BENCH_GUNICORN_CONF" in variant.env:  # --extra trials of another gunicorn config
        command = [variant.env["BENCH_GUNICORN_CONF"] if arg == "gunicorn.conf.py" else arg for arg in command]
    if command[0] != "opentelemetry-instrument":
        raise RuntimeError(f"services/Dockerfile's CMD no longer starts with opentelemetry-instrument: {command}")
    if variant.kind == "agent":
        return command
    plain = command[1:]
    if variant.kind == "hand":
        return [*plain[:-1], "hand_instrumented:app"]
    return plain


def interpreter(version: str) -> str:
    """What uv should run for CPython `version` ("3.12"): pyenv's newest install of it when pyenv
    is there (uv does not look into pyenv's versions, and pyenv's shims run only the selected
    one), else the version itself for uv to find on PATH. uv never downloads one here."""
    if pyenv := shutil.which("pyenv"):
        found = subprocess.run([pyenv, "prefix", version], capture_output=True, text=True, check=False)
        if found.returncode != 0:  # `prefix` takes exact versions; `latest` maps 3.12 to one
            latest = subprocess.run([pyenv, "latest", version], capture_output=True, text=True, check=False)
            found = subprocess.run(
                [pyenv, "prefix", latest.stdout.strip()], capture_output=True, text=True, check=False
            )
        if found.returncode == 0:
            return str(Path(found.stdout.strip()) / "bin" / "python")
    return version


def python_venv(version: str) -> Path:
    """The app's locked runtime packages (no dev groups, as in the image) in a venv of CPython
    `version`, under .cache/bench/ (git-ignored), kept in step with services/uv.lock."""
    venv = REPO / ".cache" / "bench" / f"venv-{version}"
    argv = ["uv", "sync", "--project", str(SERVICES_DIR), "--frozen", "--no-dev", "--python", interpreter(version)]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"cannot make a Python {version} venv for the bench ({' '.join(argv)}):\n{result.stderr}")
    return venv


def launch(stack: Stack, variant: Variant, workdir: Path) -> AppSet:
    """app-a/b/c of one variant, wired to each other and to the stack's Collector."""
    if variant.key == "zero_code":  # the stack's own apps: exactly compose, scraped by Prometheus
        return AppSet(variant, dict(stack.apps))
    ports = {name: free_port() for name in APP_NAMES}
    addresses = {**stack.app_addresses(), **{f"{n}:{CONTAINER_PORT}": f"{LOOPBACK}:{p}" for n, p in ports.items()}}
    overrides = {key: value.format(grpc=stack.collector.otlp_grpc_url) for key, value in variant.env.items()}
    if "BENCH_PYTHON" in variant.env:  # the variant's interpreter and packages come first on PATH
        overrides["PATH"] = f"{python_venv(variant.env['BENCH_PYTHON']) / 'bin'}{os.pathsep}{os.environ['PATH']}"
    if variant.kind == "hand":  # the module configures its SDK itself, from these
        overrides |= {"HAND_OTLP_ENDPOINT": stack.collector.otlp_grpc_url, "PYTHONPATH": str(LOADTEST)}
    apps = start_apps(
        stack.spec,
        workdir,
        addresses,
        ports,
        overrides=overrides,
        prefix=f"{variant.key}-",
        command=variant_command(variant),
        agent_settings=variant.kind != "hand",
    )
    return AppSet(variant, apps)


def stop(app_set: AppSet) -> None:
    """Stop a variant's trio; the zero-code one is the stack's own (the stack stops it)."""
    if app_set.variant.key != "zero_code":
        for process in app_set.processes():
            process.stop()


def request_counts(app_set: AppSet) -> dict[str, float]:
    """fastapi_requests_total per `<app> <path>`, from each app's /metrics (neither counted nor traced)."""
    counts: dict[str, float] = {}
    for name, app in app_set.apps.items():
        for key, value in scrape(f"{app.url}/metrics").items():
            if key.startswith("fastapi_requests_total{"):
                path = re.search(r'path="([^"]*)"', key)
                label = f"{name} {path.group(1) if path else '?'}"
                counts[label] = counts.get(label, 0) + value
    return counts
