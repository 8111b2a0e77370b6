"""`make bench`: what the telemetry costs the apps, and what the Collector can carry.

One run, one machine, one load generator (wrk, closed loop, fixed concurrency):

1. Overhead. The native stack (nativestack: the real Collector, Jaeger, the Jaeger standing in
   for Tempo, the Loki stand-in, Prometheus) plus one trio of app-a/b/c per variant, each launched
   like its container (services/Dockerfile's CMD, compose's environment):
     uninstrumented   plain gunicorn, same app and gunicorn.conf.py (no agent: no SDK at all)
     zero_code        the compose defaults: all three signals over OTLP to the Collector
     internal_spans   ... plus the http send/receive spans (KEEP_ASGI_INTERNAL_SPANS=true)
     grpc             ... every app over OTLP gRPC instead of http/protobuf
     sampled_10       ... head sampling at 10% (parentbased_traceidratio, 0.1)
     hand             loadtest/hand_instrumented.py, the reference's hand-written design
   wrk drives app-a's `/` and `/chain` in alternating rounds (variant order rotated each round);
   the figure per variant is the median over rounds, and each is also given as a ratio to the
   uninstrumented app. Between runs the script waits until every span has reached both trace
   backends, so no export backlog leaks into the next run, and it counts spans on the way:
   the apps' own request counters, the Collector's accepted/sent, both Jaegers' stored.
2. Pipeline capacity: telemetrygen sends traces at increasing rates into the Collector (apps
   stopped); the highest rate with nothing refused or lost on the way to Jaeger and the Tempo
   stand-in, with the Collector's CPU (from /proc/<pid>/stat) and peak RSS.
3. Optionally (--profile), py-spy samples app-a's worker under `/` load, per variant.

Writes docs/benchmarks.json and the generated part of docs/benchmarks.md (between the
`bench:begin`/`bench:end` markers; the analysis around them is kept). Needs `make native`,
wrk, Go (telemetrygen, built once by loadtest/build_telemetrygen.sh). Every process it starts
is stopped by PID, also on Ctrl-C. Short runs: --rounds 1 --duration 3 --variants ... .
"""

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nativestack.apps import APP_NAMES, CONTAINER_PORT, SERVICES_DIR, VENV_BIN, App, app_environment, container_command
from nativestack.paths import versions
from nativestack.processes import (
    Process,
    ProcessExited,
    free_port,
    start,
    stop_everything_on_sigterm,
    wait_until,
)
from nativestack.procfs import RssSampler, children, cpu_seconds, process_tree, status_kib
from nativestack.scrape import metric_total, scrape
from nativestack.stack import Stack, start_stack

LOADTEST = Path(__file__).resolve().parent
REPO = LOADTEST.parent

DOCS = REPO / "docs"
REPORTS = REPO / "reports"
MD_BEGIN = "<!-- bench:begin (written by loadtest/bench.py: edit outside these markers) -->"
MD_END = "<!-- bench:end -->"
ENDPOINTS = ("/", "/chain")
TRACE_EXPORTERS = ("otlp_grpc/tempo", "otlp_grpc/jaeger")
CAPACITY_RATES = (2_500, 5_000, 10_000, 20_000, 30_000, 40_000, 60_000)
# telemetrygen paces each worker with a token bucket of one: one worker holds ~1k spans/s (98%
# of it), one asked for 5k gives 1.8k. So one worker per 1k spans/s.
SPANS_PER_WORKER = 1_000


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


# ---------------------------------------------------------------------------------- the apps


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


def launch(stack: Stack, variant: Variant, workdir: Path) -> AppSet:
    """app-a/b/c of one variant, wired to each other and to the stack's Collector."""
    ports = {name: free_port() for name in APP_NAMES}
    addresses = {**stack.app_addresses(), **{f"{n}:{CONTAINER_PORT}": f"127.0.0.1:{p}" for n, p in ports.items()}}
    values = {"grpc": stack.collector.otlp_grpc_url}
    started: dict[str, App] = {}
    try:
        for name in reversed(APP_NAMES):
            env = app_environment(stack.spec, name, addresses, ports[name])
            env.update({key: value.format(**values) for key, value in variant.env.items()})
            if variant.kind == "hand":  # none of the agent's settings: the module configures itself
                env = {k: v for k, v in env.items() if not k.startswith("OTEL_") or k == "OTEL_SERVICE_NAME"}
                env.update({"HAND_OTLP_ENDPOINT": stack.collector.otlp_grpc_url, "PYTHONPATH": str(LOADTEST)})
            env.update({"PORT": str(ports[name]), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"})
            process = start(f"{variant.key}-{name}", variant_command(variant), env, workdir, cwd=SERVICES_DIR)
            started[name] = App(name, process, ports[name])
        for app in started.values():
            wait_until(
                lambda app=app: app.process.alive() and httpx.get(f"{app.url}/healthz", timeout=2).status_code == 200,  # type: ignore[misc]
                f"{variant.key} {app.name} /healthz",
                timeout=60,
            )
    except BaseException:
        for app in started.values():
            app.process.stop()
        raise
    return AppSet(variant, started)


def request_counts(app_set: AppSet) -> dict[str, float]:
    """fastapi_requests_total per app and path, from each app's /metrics (neither counted nor traced)."""
    counts: dict[str, float] = {}
    for name, app in app_set.apps.items():
        samples = scrape(f"{app.url}/metrics")
        for key, value in samples.items():
            if key.startswith("fastapi_requests_total{"):
                path = re.search(r'path="([^"]*)"', key)
                counts[f"{name} {path.group(1) if path else '?'}"] = (
                    counts.get(f"{name} {path.group(1) if path else '?'}", 0) + value
                )
    return counts


# ---------------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def wrk(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "--latency", url]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    percentiles = {
        p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    }
    requests = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if not (requests and rps and "50" in percentiles and "99" in percentiles):
        raise RuntimeError(f"cannot parse wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests": int(requests.group(1)),
        "seconds": _ms(requests.group(2), requests.group(3)) / 1e3,
        "throughput_rps": float(rps.group(1)),
        "p50_ms": percentiles["50"],
        "p90_ms": percentiles.get("90", math.nan),
        "p99_ms": percentiles["99"],
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
    }


# ---------------------------------------------------------------------------------- span accounting


def pipeline_counters(stack: Stack) -> dict[str, float]:
    collector = scrape(stack.collector.metrics_url)
    counters = {
        "accepted": metric_total(collector, "otelcol_receiver_accepted_spans_total"),
        "refused": metric_total(collector, "otelcol_receiver_refused_spans_total"),
    }
    for exporter in TRACE_EXPORTERS:
        counters[f"sent {exporter}"] = metric_total(collector, "otelcol_exporter_sent_spans_total", exporter=exporter)
        for failure in ("send_failed", "enqueue_failed"):
            counters[f"{failure} {exporter}"] = metric_total(
                collector, f"otelcol_exporter_{failure}_spans_total", exporter=exporter
            )
    for name, backend in (("jaeger", stack.jaeger), ("tempo", stack.tempo)):
        samples = scrape(backend.metrics_url)
        counters[f"stored {name}"] = metric_total(
            samples, "otelcol_exporter_sent_spans_total", exporter="jaeger_storage_exporter"
        )
    return counters


def _delivered(counters: dict[str, float]) -> bool:
    """Every accepted span sent by both trace exporters and stored by both backends. A backend
    may store more than was sent: an export that timed out after it was stored is retried."""
    accepted = counters["accepted"]
    return all(counters[f"sent {e}"] >= accepted for e in TRACE_EXPORTERS) and all(
        counters[f"stored {b}"] >= counters[f"sent otlp_grpc/{b}"] for b in ("jaeger", "tempo")
    )


def settle(stack: Stack, quiet_seconds: float, timeout: float = 30.0) -> dict[str, float]:
    """Wait until the apps' last spans are in (nothing accepted for `quiet_seconds`) and every
    accepted span is in both trace backends; give up after `timeout` (that is a loss)."""
    deadline = time.monotonic() + timeout
    last = pipeline_counters(stack)
    changed = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = pipeline_counters(stack)
        if now["accepted"] != last["accepted"]:
            changed = time.monotonic()
        last = now
        if time.monotonic() - changed >= quiet_seconds and _delivered(now):
            return now
    return last


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0) - before.get(key, 0) for key in {*after, *before}}


# ---------------------------------------------------------------------------------- overhead


@dataclass
class Run:
    variant: str
    endpoint: str
    round: int
    figures: dict[str, float]


def measure(stack: Stack, app_set: AppSet, endpoint: str, args: argparse.Namespace, round_index: int) -> Run:
    variant = app_set.variant
    url = app_set.apps["app-a"].url + endpoint
    if endpoint == "/":
        wrk(url, args.concurrency, 1)  # warm-up, not counted
        settle(stack, variant.flush_seconds + 0.5)
    names = ("app-a",) if endpoint == "/" else APP_NAMES
    requests_before = request_counts(app_set)
    counters_before = pipeline_counters(stack)
    cpu_before = cpu_seconds(app_set.pids(names))
    figures = wrk(url, args.concurrency, args.duration)
    cpu = cpu_seconds(app_set.pids(names)) - cpu_before  # the run's own CPU; exports after it are not in
    counters = delta(settle(stack, variant.flush_seconds + 0.7), counters_before)
    served = delta(request_counts(app_set), requests_before)
    figures["cpu_us_per_request"] = cpu / max(1, figures["requests"]) * 1e6
    figures["server_requests"] = sum(served.values())
    figures["chain_requests"] = served.get("app-a /chain", 0)
    figures["spans_accepted"] = counters["accepted"]
    if variant.spans_per_server_request is not None:
        figures["spans_expected"] = (
            variant.spans_per_server_request * figures["server_requests"]
            + variant.client_spans_per_chain * figures["chain_requests"]
        )
    for key in ("refused", *(f"{k} {e}" for k in ("sent", "send_failed", "enqueue_failed") for e in TRACE_EXPORTERS)):
        figures[f"spans_{key.replace(' ', '_').replace('/', '_')}"] = counters[key]
    figures["spans_stored_jaeger"] = counters["stored jaeger"]
    figures["spans_stored_tempo"] = counters["stored tempo"]
    print(
        f"  round {round_index + 1} {endpoint:7} {variant.key:15} {figures['throughput_rps']:8.1f} req/s"
        f"  p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms"
        f"  cpu {figures['cpu_us_per_request']:6.0f} us/req  spans {counters['accepted']:.0f}",
        flush=True,
    )
    return Run(variant.key, endpoint, round_index, figures)


def summarize(runs: list[Run], variants: list[Variant]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for endpoint in ENDPOINTS:
        rows: dict[str, dict[str, Any]] = {}
        for variant in variants:
            mine = [r.figures for r in runs if r.variant == variant.key and r.endpoint == endpoint]
            if not mine:
                continue
            row: dict[str, Any] = {"title": variant.title}
            for key in ("throughput_rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_request"):
                row[key] = round(statistics.median(f[key] for f in mine), 3)
            row["errors"] = sum(int(f["errors"]) for f in mine)
            row["rounds"] = mine
            rows[variant.key] = row
        base = rows.get("uninstrumented")
        for row in rows.values():
            if base:
                row["throughput_ratio"] = round(row["throughput_rps"] / base["throughput_rps"], 3)
                row["p50_ratio"] = round(row["p50_ms"] / base["p50_ms"], 2)
                row["p99_ratio"] = round(row["p99_ms"] / base["p99_ms"], 2)
                row["cpu_ratio"] = round(row["cpu_us_per_request"] / base["cpu_us_per_request"], 2)
        table[endpoint] = rows
    return table


def span_losses(runs: list[Run], sets: dict[str, AppSet], final: dict[str, float]) -> dict[str, Any]:
    """Loss at every hop: SDK (exact variants: expected vs accepted, any variant: the SDK's
    'Queue full' warnings), Collector (refused, failed, accepted vs sent), backends (stored)."""
    per_variant: dict[str, defaultdict[str, float]] = {}
    for run in runs:
        entry = per_variant.setdefault(run.variant, defaultdict(float))
        for key in ("spans_accepted", "spans_expected", "spans_stored_jaeger", "spans_stored_tempo"):
            if key in run.figures:
                entry[key] += run.figures[key]
    for key, app_set in sets.items():
        logs = "".join(process.output() for process in app_set.processes())
        entry = per_variant.setdefault(key, defaultdict(float))
        entry["sdk_queue_full_warnings"] = logs.count("Queue full, dropping")
        entry["sdk_export_failure_warnings"] = len(re.findall(r"Failed to export|Transient error", logs))
    accepted = final["accepted"]
    collector = {
        "accepted": accepted,
        "refused": final["refused"],
        **{f"lost to {e}": accepted - final[f"sent {e}"] for e in TRACE_EXPORTERS},
        **{f"failed {e}": final[f"send_failed {e}"] + final[f"enqueue_failed {e}"] for e in TRACE_EXPORTERS},
        **{f"not stored in {b}": final[f"sent otlp_grpc/{b}"] - final[f"stored {b}"] for b in ("jaeger", "tempo")},
    }
    sdk_lost = sum(
        max(0.0, v["spans_expected"] - v["spans_accepted"]) for v in per_variant.values() if "spans_expected" in v
    )
    total_lost = (
        sdk_lost
        + collector["refused"]
        + sum(max(0.0, collector[f"lost to {e}"]) for e in TRACE_EXPORTERS)
        + sum(max(0.0, collector[f"not stored in {b}"]) for b in ("jaeger", "tempo"))
        + sum(v.get("sdk_queue_full_warnings", 0) for v in per_variant.values())
    )
    return {"per_variant": {k: dict(v) for k, v in per_variant.items()}, "collector": collector, "lost": total_lost}


# ---------------------------------------------------------------------------------- capacity


def telemetrygen_binary() -> Path:
    result = subprocess.run(
        [str(LOADTEST / "build_telemetrygen.sh")], capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(f"loadtest/build_telemetrygen.sh failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def capacity(stack: Stack, binary: Path, workdir: Path, seconds: float, rates: tuple[int, ...]) -> dict[str, Any]:
    pid = stack.collector.process.pid
    steps: list[dict[str, Any]] = []
    for rate in rates:
        workers = max(1, math.ceil(rate / SPANS_PER_WORKER))
        before = pipeline_counters(stack)
        cpu_before = cpu_seconds([pid])
        backends_before = cpu_seconds([stack.jaeger.process.pid, stack.tempo.process.pid])
        started = time.monotonic()
        argv = [
            str(binary),
            "traces",
            "--otlp-endpoint",
            f"127.0.0.1:{stack.collector.grpc_port}",
            "--otlp-insecure",
            "--workers",
            str(workers),
            "--rate",
            f"{rate / workers:g}",  # spans per second per worker (parent and child each count)
            "--child-spans",
            "1",
            "--batch-size",
            "1000",
            "--duration",
            f"{seconds:g}s",
            "--service",
            "bench-capacity",
        ]
        generator = start(f"telemetrygen-{rate}", argv, {}, workdir)
        try:
            with RssSampler(pid, interval=0.25) as rss, contextlib.suppress(subprocess.TimeoutExpired):
                generator.popen.wait(timeout=seconds + 60)  # telemetrygen stops after --duration
        finally:
            generator.stop()
        generated_for = time.monotonic() - started
        after = settle(stack, 1.0, timeout=20)
        cpu = cpu_seconds([pid]) - cpu_before
        backends_cpu = cpu_seconds([stack.jaeger.process.pid, stack.tempo.process.pid]) - backends_before
        counts = delta(after, before)
        generated = 2 * sum(int(n) for n in re.findall(r'"traces":\s*(\d+)', generator.output()))
        accepted = counts["accepted"]
        # Refused at the door, accepted but never sent, or sent but never stored.
        lost = (
            counts["refused"]
            + sum(max(0.0, accepted - counts[f"sent {e}"]) for e in TRACE_EXPORTERS)
            + sum(max(0.0, counts[f"sent otlp_grpc/{b}"] - counts[f"stored {b}"]) for b in ("jaeger", "tempo"))
        )
        duplicates = sum(max(0.0, counts[f"stored {b}"] - counts[f"sent otlp_grpc/{b}"]) for b in ("jaeger", "tempo"))
        step: dict[str, Any] = {
            "target_spans_per_s": rate,
            "generated_spans": generated,
            "accepted_spans": accepted,
            "achieved_spans_per_s": round(accepted / seconds),
            "refused_spans": counts["refused"],
            **{f"sent_{e.split('/')[1]}": counts[f"sent {e}"] for e in TRACE_EXPORTERS},
            "stored_jaeger": counts["stored jaeger"],
            "stored_tempo": counts["stored tempo"],
            "lost_spans": lost,
            "duplicated_spans": duplicates,
            "generator_dropped_spans": max(0, generated - accepted) if counts["refused"] == 0 else None,
            "collector_cpu_cores": round(cpu / generated_for, 3),
            "collector_cpu_us_per_span": round(cpu / max(1, accepted) * 1e6, 2),
            "collector_peak_rss_mib": round(rss.peak, 1),
            "backends_cpu_cores": round(backends_cpu / generated_for, 3),
        }
        steps.append(step)
        print(
            f"  capacity {rate:>6} spans/s: accepted {accepted:.0f}, lost {lost:.0f}, "
            f"collector {step['collector_cpu_cores']:.2f} cores, peak RSS {step['collector_peak_rss_mib']} MiB, "
            f"both Jaegers {step['backends_cpu_cores']:.2f} cores, {duplicates:.0f} stored twice",
            flush=True,
        )
        previous = steps[-2]["achieved_spans_per_s"] if len(steps) > 1 else 0
        if lost or step["achieved_spans_per_s"] < 1.05 * previous:
            break  # lossy, or more was asked and no more arrived: the steps so far tell the answer
    sustained = [s for s in steps if not s["lost_spans"]]
    at_10k = next((s for s in steps if s["target_spans_per_s"] == 10_000), None)
    return {
        "seconds_per_step": seconds,
        "steps": steps,
        "max_lossless_spans_per_s": max((s["achieved_spans_per_s"] for s in sustained), default=0),
        "collector_cpu_cores_at_10k": at_10k["collector_cpu_cores"] if at_10k else None,
        "collector_peak_rss_mib": max((s["collector_peak_rss_mib"] for s in steps), default=0),
        "collector_hwm_rss_mib": round(status_kib(pid, "VmHWM") / 1024, 1),
    }


# ---------------------------------------------------------------------------------- profiles


def profile(stack: Stack, app_set: AppSet, args: argparse.Namespace) -> dict[str, Any]:
    """py-spy samples app-a's worker (threads holding the GIL) during a `/` run."""
    REPORTS.mkdir(exist_ok=True)
    raw = REPORTS / f"bench-profile-{app_set.variant.key}.txt"
    output = raw.with_suffix(".log")
    sink = output.open("wb")
    spy = subprocess.Popen(
        [
            str(VENV_BIN / "py-spy"),
            "record",
            "--pid",
            str(app_set.worker_pid("app-a")),
            "--gil",
            "--threads",
            "--rate",
            "250",
            "--full-filenames",
            "--duration",
            f"{args.duration:g}",
            "--format",
            "raw",
            "--output",
            str(raw),
        ],
        stdout=sink,
        stderr=subprocess.STDOUT,
    )
    sink.close()

    def attached() -> bool:
        if spy.poll() is not None:
            raise ProcessExited(f"py-spy exited {spy.returncode}: {output.read_text()}")
        return "Sampling process" in output.read_text()  # printed once it is attached

    try:
        wait_until(attached, "py-spy to attach", timeout=15, interval=0.05)
        wrk(app_set.apps["app-a"].url + "/", args.concurrency, args.duration)
        spy.wait(timeout=args.duration + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait()
    settle(stack, app_set.variant.flush_seconds + 0.7)
    return summarize_profile(raw)


# A sample is charged to the innermost frame of its stack that belongs to one of these
# (file-path fragments, first match wins); generic stdlib frames (abc, typing...) are skipped.
PROFILE_CATEGORIES = (
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
    ("server: uvicorn, h11, asyncio", ("uvicorn/", "h11/", "httptools/", "asyncio/", "selectors.py", "socket.py")),
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


def _frame_file(frame: str) -> str:
    match = re.search(r"\(([^()]*?)(?::\d+)?\)$", frame)
    return match.group(1) if match else frame


def _category(frames: list[str]) -> str:
    for frame in reversed(frames[1:]):  # frames[0] is the thread
        path = _frame_file(frame)
        if any(generic in path for generic in _GENERIC_FRAMES):
            continue
        for label, fragments in PROFILE_CATEGORIES:
            if any(fragment in path for fragment in fragments):
                return label
    return "other"


def summarize_profile(raw: Path) -> dict[str, Any]:
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
    if not total:
        return {"samples": 0, "file": str(raw.relative_to(REPO)), "share_by_thread": {}, "share_by_category": {}}
    return {
        "samples": total,
        "file": str(raw.relative_to(REPO)),
        "share_by_thread": {k: round(v / total, 3) for k, v in threads.most_common()},
        "share_by_category": {k: round(v / total, 3) for k, v in categories.most_common()},
    }


# ---------------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    memory = re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(int(memory.group(1)) / 2**20, 1) if memory else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def software(binary: Path | None) -> dict[str, str]:
    pinned = versions()
    found = {
        "otelcol (built from collector/manifest.yaml)": pinned["OTELCOL_VERSION"],
        "jaeger": pinned["JAEGER_VERSION"],
        "prometheus": pinned["PROMETHEUS_VERSION"],
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(" [")[0],
    }
    if binary:
        found["telemetrygen"] = binary.parent.name.removeprefix("telemetrygen-")
    for package in (
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-fastapi",
        "fastapi",
        "starlette",
        "uvicorn",
        "gunicorn",
        "prometheus-client",
    ):
        found[package] = importlib.metadata.version(package)
    return found


def targets(
    table: dict[str, dict[str, dict[str, Any]]], losses: dict[str, Any], cap: dict[str, Any] | None
) -> list[dict[str, Any]]:
    root = table.get("/", {})
    zero = root.get("zero_code", {})
    chain = table.get("/chain", {})
    checks = []

    def check(name: str, target: str, measured: Any, met: bool | None) -> None:
        checks.append({"target": name, "wanted": target, "measured": measured, "met": met})

    if zero:
        check(
            "zero-code throughput on /",
            ">= 0.6 of uninstrumented",
            zero.get("throughput_ratio"),
            zero.get("throughput_ratio", 0) >= 0.6,
        )
        check("zero-code p99 on /", "<= 3x uninstrumented", zero.get("p99_ratio"), zero.get("p99_ratio", math.inf) <= 3)
    for endpoint, rows in (("/", root), ("/chain", chain)):
        z, h = rows.get("zero_code"), rows.get("hand")
        if z and h:
            # /chain's rate is set by app-b's 1 s sleep: a tie within 2% counts there.
            check(
                f"zero-code ahead of hand-instrumented on {endpoint}",
                "throughput >= and p99 <= the hand-instrumented's",
                f"{z['throughput_rps']:.1f} vs {h['throughput_rps']:.1f} req/s, p99 {z['p99_ms']:.1f} vs {h['p99_ms']:.1f} ms, "
                f"CPU {z['cpu_us_per_request']:.0f} vs {h['cpu_us_per_request']:.0f} us/req",
                z["throughput_rps"] >= 0.98 * h["throughput_rps"] and z["p99_ms"] <= h["p99_ms"],
            )
    check("spans lost at the benchmark's load", "0", losses["lost"], losses["lost"] == 0)
    if cap:
        step = next((s for s in cap["steps"] if s["target_spans_per_s"] == 10_000), None)
        check(
            "Collector fans out 10k spans/s",
            "<= 0.5 core, nothing lost",
            f"{step['collector_cpu_cores']:.2f} cores at {step['achieved_spans_per_s']} spans/s, {step['lost_spans']:.0f} lost"
            if step
            else None,
            step is not None and step["collector_cpu_cores"] <= 0.5 and step["lost_spans"] == 0,
        )
    return checks


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        MD_BEGIN,
        "",
        f"Run of {result['date']} on {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory_gib']} GiB, Linux {result['machine']['kernel']}; load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in result['load_average_before'])} (1/5/15 min), after "
        f"{' / '.join(f'{x:.2f}' for x in result['load_average_after'])}. "
        f"wrk, 1 thread, {result['settings']['concurrency']} connections, {result['settings']['duration_s']:g} s per run, "
        f"{result['settings']['rounds']} alternating rounds, medians; one gunicorn worker per app "
        f"(WEB_CONCURRENCY=1); {result['settings']['minutes']:.1f} min in all.",
        "",
    ]
    for endpoint, rows in result["overhead"].items():
        lines += [
            f"### `{endpoint}` on app-a"
            + (" (calls app-a `/`, app-b `/io_task` 1 s, app-c `/cpu_task`)" if endpoint == "/chain" else ""),
            "",
            "| variant | req/s | throughput ratio | p50 ms | p99 ms | p99 ratio | CPU us/req |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows.values():
            lines.append(
                f"| {row['title']} | {row['throughput_rps']:.1f} | {_fmt(row.get('throughput_ratio'))} | {row['p50_ms']:.2f} "
                f"| {row['p99_ms']:.2f} | {_fmt(row.get('p99_ratio'))} | {row['cpu_us_per_request']:.0f} |"
            )
        lines.append("")
    losses = result["spans"]
    lines += [
        "### Spans",
        "",
        "| variant | accepted by the Collector | expected from the apps' request counters | stored in Jaeger | stored in the Tempo stand-in | SDK 'Queue full' warnings |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, entry in losses["per_variant"].items():
        lines.append(
            f"| {key} | {entry.get('spans_accepted', 0):.0f} | {_fmt(entry.get('spans_expected'), 0)} | {entry.get('spans_stored_jaeger', 0):.0f} "
            f"| {entry.get('spans_stored_tempo', 0):.0f} | {entry.get('sdk_queue_full_warnings', 0)} |"
        )
    collector = losses["collector"]
    lines += [
        "",
        f"Collector over the whole run: {collector['accepted']:.0f} spans accepted, {collector['refused']:.0f} refused, "
        + ", ".join(f"{collector[f'lost to {e}']:.0f} not sent to {e}" for e in TRACE_EXPORTERS)
        + ", "
        + ", ".join(f"{collector[f'not stored in {b}']:.0f} not stored in {b}" for b in ("jaeger", "tempo"))
        + f". **Spans lost: {losses['lost']:.0f}.**",
        "",
    ]
    cap = result.get("capacity")
    if cap:
        lines += [
            "### Pipeline capacity (telemetrygen -> Collector -> Jaeger + Tempo stand-in)",
            "",
            f"{cap['seconds_per_step']:g} s per step, traces of 2 spans over OTLP gRPC, apps stopped. "
            f"**Highest rate with nothing lost: {cap['max_lossless_spans_per_s']} spans/s.**",
            "",
            "| target spans/s | accepted | achieved spans/s | refused | lost | stored twice | Collector CPU (cores) | CPU us/span | peak RSS MiB | both Jaegers' CPU (cores) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for s in cap["steps"]:
            lines.append(
                f"| {s['target_spans_per_s']} | {s['accepted_spans']:.0f} | {s['achieved_spans_per_s']} | {s['refused_spans']:.0f} "
                f"| {s['lost_spans']:.0f} | {s['duplicated_spans']:.0f} | {s['collector_cpu_cores']:.2f} | {s['collector_cpu_us_per_span']:.1f} "
                f"| {s['collector_peak_rss_mib']} | {s['backends_cpu_cores']:.2f} |"
            )
        lines.append("")
    if result.get("profiles"):
        lines += ["### Where app-a's worker spends its GIL time under `/` load (py-spy)", ""]
        for key, prof in result["profiles"].items():
            threads = ", ".join(f"{label} {share:.0%}" for label, share in prof["share_by_thread"].items())
            shares = ", ".join(f"{label} {share:.0%}" for label, share in prof["share_by_category"].items())
            lines.append(f"- **{key}** ({prof['samples']} samples; by thread: {threads}): {shares}")
        lines.append("")
    lines += ["### Targets", "", "| target | wanted | measured | met |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['wanted']} | {_fmt(t['measured'])} | {'yes' if t['met'] else 'NO'} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "", MD_END]
    return "\n".join(lines)


def write_reports(result: dict[str, Any]) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    path = DOCS / "benchmarks.md"
    generated = markdown(result)
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MD_BEGIN}\n{MD_END}\n"
    if MD_BEGIN in text and MD_END in text:
        head, _, rest = text.partition(MD_BEGIN)
        _, _, tail = rest.partition(MD_END)
        text = head + generated + tail
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------- main


@contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    stack = start_stack(workdir)
    try:
        yield stack
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median over them); default 3")
    parser.add_argument("--duration", type=float, default=10, help="seconds of wrk per run; default 10")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections; default 8")
    parser.add_argument("--variants", default=",".join(v.key for v in VARIANTS), help="comma-separated subset")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated subset of / and /chain")
    parser.add_argument("--capacity-seconds", type=float, default=10, help="seconds per capacity step; 0 skips it")
    parser.add_argument("--capacity-rates", default=",".join(str(r) for r in CAPACITY_RATES), help="spans/s steps")
    parser.add_argument(
        "--profile", default="zero_code,hand", help="variants to profile with py-spy (comma-separated; '' for none)"
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY:VAR=VALUE,...",
        help="an extra zero-code variant with these env overrides (trying settings; BENCH_GUNICORN_CONF=path swaps gunicorn.conf.py)",
    )
    parser.add_argument("--no-write", action="store_true", help="write reports/benchmarks-trial.json, not docs/")
    args = parser.parse_args()
    stop_everything_on_sigterm()
    if not shutil.which("wrk"):
        print(
            "error: wrk is missing: apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)", file=sys.stderr
        )
        return 1

    variants = [v for v in VARIANTS if v.key in args.variants.split(",")]
    for spec in args.extra:
        key, _, assignments = spec.partition(":")
        env = dict(item.split("=", 1) for item in assignments.split(",") if item)
        shown = ",".join(f"{k}={Path(v).name}" if k == "BENCH_GUNICORN_CONF" else f"{k}={v}" for k, v in env.items())
        variants.append(Variant(key, f"zero-code + {shown}", "agent", env))
    endpoints = [e for e in ENDPOINTS if e in args.endpoints.split(",")]
    binary = telemetrygen_binary() if args.capacity_seconds > 0 else None
    load_before = os.getloadavg()
    began = time.monotonic()
    print(
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; starting the native stack",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    sets: dict[str, AppSet] = {}
    runs: list[Run] = []
    profiles: dict[str, Any] = {}
    cap = None
    try:
        with running_stack(workdir) as stack:
            try:
                for variant in variants:
                    if variant.key == "zero_code":  # the stack's own apps: exactly compose, scraped by Prometheus
                        sets[variant.key] = AppSet(variant, dict(stack.apps))
                    else:
                        sets[variant.key] = launch(stack, variant, workdir)
                    app_set = sets[variant.key]
                    wrk(app_set.apps["app-a"].url + "/", args.concurrency, 2)
                    if "/chain" in endpoints:
                        httpx.get(app_set.apps["app-a"].url + "/chain", timeout=30).raise_for_status()
                print(f"{len(sets)} variants up; {args.rounds} rounds", flush=True)
                settle(stack, 5.5)
                for round_index in range(args.rounds):
                    order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
                    for endpoint in endpoints:
                        for variant in order:
                            runs.append(measure(stack, sets[variant.key], endpoint, args, round_index))
                for key in [k for k in args.profile.split(",") if k in sets]:
                    profiles[key] = profile(stack, sets[key], args)
                    print(f"  profile {key}: {profiles[key]['share_by_category']}", flush=True)
                final = settle(stack, 1.0)
            finally:
                for app_set in sets.values():
                    if app_set.variant.key != "zero_code":
                        for process in app_set.processes():
                            process.stop()
            losses = span_losses(runs, sets, final)
            for app in stack.apps.values():
                app.process.stop()
            if binary:
                rates = tuple(int(r) for r in args.capacity_rates.split(","))
                cap = capacity(stack, binary, workdir, args.capacity_seconds, rates)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = summarize(runs, variants)
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": software(binary),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "generator": "wrk -t1 (closed loop)",
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "web_concurrency": 1,
            "minutes": (time.monotonic() - began) / 60,
        },
        "overhead": table,
        "spans": losses,
        "capacity": cap,
        "profiles": profiles,
    }
    result["targets"] = targets(table, losses, cap)
    for check in result["targets"]:
        print(
            f"target {check['target']}: wanted {check['wanted']}, measured {check['measured']}: {'met' if check['met'] else 'MISSED'}"
        )
    if not args.no_write:
        write_reports(result)
        print("wrote docs/benchmarks.json and docs/benchmarks.md")
    else:
        REPORTS.mkdir(exist_ok=True)
        (REPORTS / "benchmarks-trial.json").write_text(json.dumps(result, indent=2) + "\n")
        print("wrote reports/benchmarks-trial.json (docs/ left alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
