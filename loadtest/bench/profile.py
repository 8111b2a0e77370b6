"""The profile phase (--profile): py-spy samples app-a's worker (threads holding the GIL) under
wrk's `/` load, per variant, and charges each sample to what its stack was doing."""

import argparse
import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from nativestack.apps import VENV_BIN
from nativestack.paths import REPO
from nativestack.processes import ProcessExited, wait_until
from nativestack.stack import Stack

from . import accounting
from .launch import AppSet
from .wrk import wrk

REPORTS = REPO / "reports"

# A sample is charged to the innermost frame of its stack that belongs to one of these
# (file-path fragments, first match wins); generic stdlib frames (abc, typing...) are skipped.
CATEGORIES = (
    (
        "OTLP encoding and export",
        ("opentelemetry/exporter/", "opentelemetry/proto/", "google/protobuf/", "requests/", "urllib3/", "grpc/"),
    ),
    ("OTel instrumentation (ASGI middleware, log hook)", ("opentelemetry/instrumentation/",)),
    ("OTel SDK log records", ("opentelemetry/sdk/_logs/", "opentelemetry/_logs/")),
    ("OTel SDK metrics", ("opentelemetry/sdk/metrics/", "opentelemetry/metrics/")),
    ("OTel API/SDK spans and context", ("opentelemetry/",)),
    ("prometheus-client", ("prometheus_client/", "app/metrics.py", "hand_instrumented.py")),
    ("logging: records, formatting, stdout", ("logging/", "app/logging_config.py")),
    ("BaseHTTPMiddleware (hand-instrumented only)", ("starlette/middleware/base.py",)),
    (
        "server: uvicorn, its HTTP parser, asyncio",
        ("uvicorn/", "h11/", "httptools/", "asyncio/", "selectors.py", "socket.py"),
    ),
    ("FastAPI, Starlette, pydantic, the app", ("fastapi/", "starlette/", "pydantic", "anyio/", "app/")),
)
_GENERIC_FRAMES = (
    "<frozen",
    "/typing.py",
    "/abc.py",
    "/contextlib.py",
    "/functools.py",
    "/enum.py",
    "/threading.py",
    "/weakref.py",
    "/_weakrefset.py",
    "/re/",
    "/copy.py",
    "/inspect.py",
    "/dataclasses.py",
    "/types.py",
    "/random.py",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default="zero_code,hand", help="variants to profile with py-spy (comma-separated; '' for none)"
    )


def run(stack: Stack, app_set: AppSet, duration: float, concurrency: int) -> dict[str, Any]:
    """py-spy on app-a's worker for one `/` run of `duration` s at `concurrency`."""
    REPORTS.mkdir(exist_ok=True)
    raw = REPORTS / f"bench-profile-{app_set.variant.key}.txt"
    output = raw.with_suffix(".log")
    argv = [str(VENV_BIN / "py-spy"), "record", "--pid", str(app_set.worker_pid("app-a")), "--gil", "--threads"]
    argv += [
        "--rate",
        "250",
        "--full-filenames",
        "--duration",
        f"{duration:g}",
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    with output.open("wb") as sink:
        spy = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)

    def attached() -> bool:
        if spy.poll() is not None:
            raise ProcessExited(f"py-spy exited {spy.returncode}: {output.read_text()}")
        return "Sampling process" in output.read_text()  # printed once it is attached

    try:
        wait_until(attached, "py-spy to attach", timeout=15, interval=0.05)
        wrk(app_set.url("/"), concurrency, duration)
        spy.wait(timeout=duration + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    accounting.settle(stack, app_set.variant.flush_seconds + 0.7)
    return summarize(raw)


def _frame_file(frame: str) -> str:
    match = re.search(r"\(([^()]*?)(?::\d+)?\)$", frame)
    return match.group(1) if match else frame


def _category(frames: list[str]) -> str:
    for frame in reversed(frames[1:]):  # frames[0] is the thread
        path = _frame_file(frame)
        if any(generic in path for generic in _GENERIC_FRAMES):
            continue
        for label, fragments in CATEGORIES:
            if any(fragment in path for fragment in fragments):
                return label
    return "other"


def summarize(raw: Path) -> dict[str, Any]:
    """py-spy's raw output (`thread (tid): name;frame;...;leaf count` per line) by thread, and by
    the category of the innermost recognised frame."""
    threads: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        threads[frames[0].partition(": ")[2] or frames[0]] += count
        categories[_category(frames)] += count
    return {
        "samples": total,
        "file": str(raw.relative_to(REPO)),
        "share_by_thread": {k: round(v / total, 3) for k, v in threads.most_common()},
        "share_by_category": {k: round(v / total, 3) for k, v in categories.most_common()},
    }


def markdown(profiles: dict[str, Any]) -> list[str]:
    if not profiles:
        return []
    lines = ["### Where app-a's worker spends its GIL time under `/` load (py-spy)", ""]
    for key, prof in profiles.items():
        threads = ", ".join(f"{label} {share:.0%}" for label, share in prof["share_by_thread"].items())
        shares = ", ".join(f"{label} {share:.0%}" for label, share in prof["share_by_category"].items())
        lines.append(f"- **{key}** ({prof['samples']} samples; by thread: {threads}): {shares}")
    return [*lines, ""]
