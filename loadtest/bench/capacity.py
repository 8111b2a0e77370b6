"""The capacity phase: telemetrygen sends traces into the Collector at increasing rates (the
apps stopped), until spans are lost or more asked brings no more; per step, what arrived where,
the Collector's CPU (from /proc/<pid>/stat) and peak RSS."""

import argparse
import contextlib
import math
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nativestack.processes import start
from nativestack.procfs import RssSampler, cpu_seconds, status_kib
from nativestack.stack import Stack

from . import accounting
from .accounting import BACKENDS
from .report import check, table

RATES = (2_500, 5_000, 10_000, 20_000, 30_000, 40_000, 60_000)
# telemetrygen paces each worker with a token bucket of one: one worker holds ~1k spans/s (98%
# of it), one asked for 5k gives 1.8k. So one worker per 1k spans/s.
SPANS_PER_WORKER = 1_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--capacity-seconds", type=float, default=10, help="seconds per capacity step; 0 skips it")
    parser.add_argument("--capacity-rates", default=",".join(str(r) for r in RATES), help="spans/s steps")


def telemetrygen_argv(binary: Path, endpoint: str, rate: int, seconds: float) -> list[str]:
    workers = max(1, math.ceil(rate / SPANS_PER_WORKER))
    return [
        str(binary),
        "traces",
        "--otlp-endpoint",
        endpoint,
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


def step(stack: Stack, binary: Path, workdir: Path, seconds: float, rate: int) -> dict[str, Any]:
    pid = stack.collector.process.pid
    backend_pids = [stack.jaeger.process.pid, stack.tempo.process.pid]
    before = accounting.read(stack)
    cpu_before, backends_before = cpu_seconds([pid]), cpu_seconds(backend_pids)
    started = time.monotonic()
    generator = start(
        f"telemetrygen-{rate}",
        telemetrygen_argv(binary, f"127.0.0.1:{stack.collector.grpc_port}", rate, seconds),
        {},
        workdir,
    )
    try:
        with RssSampler(pid, interval=0.25) as rss, contextlib.suppress(subprocess.TimeoutExpired):
            generator.popen.wait(timeout=seconds + 60)  # telemetrygen stops after --duration
    finally:
        generator.stop()
    generated_for = time.monotonic() - started
    counts = accounting.settle(stack, 1.0, timeout=20) - before
    cpu = cpu_seconds([pid]) - cpu_before
    backends_cpu = cpu_seconds(backend_pids) - backends_before
    generated = 2 * sum(int(n) for n in re.findall(r'"traces":\s*(\d+)', generator.output()))
    accepted = counts.accepted
    return {
        "target_spans_per_s": rate,
        "generated_spans": generated,
        "accepted_spans": accepted,
        "achieved_spans_per_s": round(accepted / seconds),
        "refused_spans": counts.refused,
        **{f"sent_{b}": counts.sent(b) for b in BACKENDS},
        **{f"stored_{b}": counts.stored[b] for b in BACKENDS},
        "lost_spans": counts.lost(),
        "duplicated_spans": counts.stored_twice(),
        "generator_dropped_spans": max(0, generated - accepted) if counts.refused == 0 else None,
        "collector_cpu_cores": round(cpu / generated_for, 3),
        "collector_cpu_us_per_span": round(cpu / max(1, accepted) * 1e6, 2),
        "collector_peak_rss_mib": round(rss.peak, 1),
        "backends_cpu_cores": round(backends_cpu / generated_for, 3),
    }


def rising(
    label: str, rates: tuple[int, ...], step: Callable[[int], dict[str, Any]], describe: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """`step` at each rate in turn, printing what `describe` says of it, until one loses spans, or
    more asked brings no more: the steps so far tell the answer."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        steps.append(step(rate))
        print(f"  {label} {rate:>6} spans/s: {describe(steps[-1])}", flush=True)
        previous = steps[-2]["achieved_spans_per_s"] if len(steps) > 1 else 0
        last = steps[-1]
        if last["lost_spans"] or last["achieved_spans_per_s"] < 1.05 * previous:
            break
    return steps


def run(stack: Stack, binary: Path, workdir: Path, seconds: float, rates: tuple[int, ...]) -> dict[str, Any]:
    def describe(r: dict[str, Any]) -> str:
        return (
            f"accepted {r['accepted_spans']:.0f}, lost {r['lost_spans']:.0f}, collector {r['collector_cpu_cores']:.2f} "
            f"cores, peak RSS {r['collector_peak_rss_mib']} MiB, both Jaegers {r['backends_cpu_cores']:.2f} cores, "
            f"{r['duplicated_spans']:.0f} stored twice"
        )

    steps = rising("capacity", rates, lambda rate: step(stack, binary, workdir, seconds, rate), describe)
    sustained = [s for s in steps if not s["lost_spans"]]
    at_10k = next((s for s in steps if s["target_spans_per_s"] == 10_000), None)
    return {
        "seconds_per_step": seconds,
        "steps": steps,
        "max_lossless_spans_per_s": max((s["achieved_spans_per_s"] for s in sustained), default=0),
        "collector_cpu_cores_at_10k": at_10k["collector_cpu_cores"] if at_10k else None,
        "collector_peak_rss_mib": max((s["collector_peak_rss_mib"] for s in steps), default=0),
        "collector_hwm_rss_mib": round(status_kib(stack.collector.process.pid, "VmHWM") / 1024, 1),
    }


def targets(cap: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not cap:
        return []
    at = next((s for s in cap["steps"] if s["target_spans_per_s"] == 10_000), None)
    measured = (
        f"{at['collector_cpu_cores']:.2f} cores at {at['achieved_spans_per_s']} spans/s, {at['lost_spans']:.0f} lost"
        if at
        else None
    )
    met = at is not None and at["collector_cpu_cores"] <= 0.5 and at["lost_spans"] == 0
    return [check("Collector fans out 10k spans/s", "<= 0.5 core, nothing lost", measured, met)]


# The first columns of both capacity tables: what was asked, what arrived, what did not.
RATE_COLUMNS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "target spans/s": lambda s: s["target_spans_per_s"],
    "accepted": lambda s: f"{s['accepted_spans']:.0f}",
    "achieved spans/s": lambda s: s["achieved_spans_per_s"],
    "refused": lambda s: f"{s['refused_spans']:.0f}",
    "lost": lambda s: f"{s['lost_spans']:.0f}",
}


def markdown(cap: dict[str, Any] | None) -> list[str]:
    if not cap:
        return []
    lines = [
        "### Pipeline capacity (telemetrygen -> Collector -> Jaeger + Tempo stand-in)",
        "",
        f"{cap['seconds_per_step']:g} s per step, traces of 2 spans over OTLP gRPC, apps stopped. "
        f"**Highest rate with nothing lost: {cap['max_lossless_spans_per_s']} spans/s.**",
        "",
    ]
    columns = {
        **RATE_COLUMNS,
        "stored twice": lambda s: f"{s['duplicated_spans']:.0f}",
        "Collector CPU (cores)": lambda s: f"{s['collector_cpu_cores']:.2f}",
        "CPU us/span": lambda s: f"{s['collector_cpu_us_per_span']:.1f}",
        "peak RSS MiB": lambda s: s["collector_peak_rss_mib"],
        "both Jaegers' CPU (cores)": lambda s: f"{s['backends_cpu_cores']:.2f}",
    }
    lines += table(columns, cap["steps"])
    return [*lines, ""]
