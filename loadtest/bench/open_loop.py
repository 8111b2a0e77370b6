"""The open-loop phase: the latency the telemetry adds at a request rate below capacity, the
latency a user of a service that is not saturated feels (vegeta.py says why a closed loop cannot
measure it).

Per path, the zero-code app-a's capacity is measured first (wrk at the closed loop's
concurrency); then vegeta offers a share of it (25%, 50%, 75%) to each variant in turn, the
variants' order rotated each round, and the rounds are pooled per variant and rate. Every variant
gets the same offered rate: the uninstrumented app, which has more headroom, is the baseline the
telemetry's addition is measured against. After each run the bench waits until the run's spans
are in both trace backends, so no export backlog leaks into the next.
"""

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nativestack.procfs import cpu_seconds
from nativestack.stack import Stack

from . import accounting
from .launch import AppSet
from .report import check, table
from .vegeta import attack, corrected_latencies_ms, percentile
from .wrk import wrk

PATHS = ("/", "/items/7")
PERCENTILES = {"p50": 50.0, "p99": 99.0, "p99.9": 99.9}
SKIP_SECONDS = 1.0  # the start of each run, while vegeta opens its connections
BASELINE = "uninstrumented"
IDLE_CORES = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--open-loop-seconds", type=float, default=15, help="seconds per rate and variant; 0 skips")
    parser.add_argument("--open-loop-rounds", type=int, default=2, help="rounds pooled per rate; default 2")
    parser.add_argument("--open-loop-shares", default="0.25,0.5,0.75", help="shares of the zero-code capacity")
    parser.add_argument(
        "--open-loop-variants", default="uninstrumented,zero_code,hand", help="variants offered each rate"
    )


@dataclass
class Sample:
    latencies_ms: list[float]
    requests: int
    errors: int  # no answer, or not a 200
    cpu_seconds: float  # app-a's, during the runs


def wait_idle(pids: list[int], timeout: float = 60.0) -> None:
    """Until the app uses under IDLE_CORES (its export threads' trickle): a rate past a variant's
    capacity leaves it a queue of requests after vegeta stops, which would slow the next run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < IDLE_CORES * 0.5:
            return
    print(f"    (still busy after {timeout:.0f} s: the next run shares the cores with it)", flush=True)


def offer(stack: Stack, app_set: AppSet, binary: Path, url: str, rate: int, seconds: float, out: Path) -> Sample:
    pids = app_set.pids(("app-a",))
    cpu_before = cpu_seconds(pids)
    results = attack(binary, url, rate, seconds, out)
    cpu = cpu_seconds(pids) - cpu_before
    accounting.settle(stack, app_set.variant.flush_seconds + 0.5)
    wait_idle(pids)
    errors = sum(1 for r in results if r.code != 200)
    return Sample(corrected_latencies_ms(results, rate, SKIP_SECONDS), len(results), errors, cpu)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    latencies = sorted(x for s in samples for x in s.latencies_ms)
    requests = sum(s.requests for s in samples)
    row: dict[str, Any] = {name: round(percentile(latencies, q), 3) for name, q in PERCENTILES.items()}
    row |= {
        "requests": requests,
        "measured": len(latencies),
        "errors": sum(s.errors for s in samples),
        "cpu_us_per_request": round(sum(s.cpu_seconds for s in samples) / max(1, requests) * 1e6, 1),
    }
    return row


def run(stack: Stack, sets: dict[str, AppSet], binary: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    keys = [k for k in args.open_loop_variants.split(",") if k in sets]
    if "zero_code" not in keys or BASELINE not in keys:
        raise SystemExit("error: the open-loop phase needs the uninstrumented and zero_code variants")
    shares = [float(s) for s in args.open_loop_shares.split(",")]
    result: dict[str, Any] = {"seconds": args.open_loop_seconds, "rounds": args.open_loop_rounds, "paths": {}}
    for path in PATHS:
        capacity = wrk(sets["zero_code"].url(path), args.concurrency, args.duration)["throughput_rps"]
        print(f"  open loop {path}: zero-code capacity {capacity:.0f} req/s", flush=True)
        points = []
        for share in shares:
            rate = max(1, round(capacity * share))
            samples: dict[str, list[Sample]] = {k: [] for k in keys}
            for round_index in range(args.open_loop_rounds):
                shift = round_index % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    out = workdir / f"vegeta-{key}.bin"
                    sample = offer(stack, sets[key], binary, sets[key].url(path), rate, args.open_loop_seconds, out)
                    samples[key].append(sample)
                    p99 = percentile(sample.latencies_ms, 99)
                    print(
                        f"    {share:4.0%} {rate:5d} req/s {key:15} p99 {p99:7.2f} ms errors {sample.errors}",
                        flush=True,
                    )
            variants = {k: summarize(v) for k, v in samples.items()}
            base = variants[BASELINE]
            added = {
                k: {name: round(row[name] - base[name], 3) for name in PERCENTILES}
                for k, row in variants.items()
                if k != BASELINE
            }
            points.append({"share": share, "rate_rps": rate, "variants": variants, "added_ms": added})
        result["paths"][path] = {"zero_code_capacity_rps": round(capacity, 1), "points": points}
    return result


def at_share(open_loop: dict[str, Any], path: str, share: float) -> dict[str, Any] | None:
    points = open_loop["paths"].get(path, {}).get("points", [])
    return next((p for p in points if math.isclose(p["share"], share)), None)


def targets(open_loop: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not open_loop:
        return []
    checks = []
    for path in PATHS:
        point = at_share(open_loop, path, 0.5)
        if point:
            added = point["added_ms"]["zero_code"]["p99"]
            checks.append(
                check(f"p99 added on {path} at 50% of capacity (open loop)", "<= 2 ms", f"{added:.2f} ms", added <= 2)
            )
        for point in open_loop["paths"].get(path, {}).get("points", []):
            zero, hand = point["variants"]["zero_code"], point["variants"].get("hand")
            if hand:
                ahead = all(zero[name] <= hand[name] for name in PERCENTILES) and (
                    zero["cpu_us_per_request"] <= hand["cpu_us_per_request"]
                )
                checks.append(
                    check(
                        f"zero-code ahead of hand-instrumented on {path} at {point['share']:.0%} (open loop)",
                        "p50, p99, p99.9 and CPU/request all <= the hand-instrumented's",
                        " / ".join(f"{zero[n]:.2f} vs {hand[n]:.2f}" for n in PERCENTILES)
                        + f" ms, {zero['cpu_us_per_request']:.0f} vs {hand['cpu_us_per_request']:.0f} us",
                        ahead,
                    )
                )
    return checks


def latency_cell(name: str, *, added: bool) -> Callable[[dict[str, Any]], str]:
    """A table cell: the row's percentile `name`, or what the telemetry added to it."""

    def cell(row: dict[str, Any]) -> str:
        if not added:
            return f"{row['row'][name]:.2f}"
        return "" if row["key"] == BASELINE else f"{row['point']['added_ms'][row['key']][name]:+.2f}"

    return cell


def markdown(open_loop: dict[str, Any] | None, plot: Path | None) -> list[str]:
    if not open_loop:
        return []
    lines = [
        "### Latency at a given rate (open loop: vegeta, coordinated omission corrected)",
        "",
        f"vegeta offers each rate for {open_loop['seconds']:g} s per variant in {open_loop['rounds']} alternating "
        f"rounds (pooled; the first {SKIP_SECONDS:g} s of each run left out); every latency counts from the "
        "request's scheduled send time. The rates are shares of the zero-code app's capacity on that path "
        "(wrk, closed loop). *Added*: zero-code minus uninstrumented at the same rate. *CPU us/req*: app-a's "
        "CPU during the run over its requests; at a lower rate the export threads' and the event loop's "
        "per-wake-up costs are shared by fewer requests.",
        "",
    ]
    if plot:
        lines += [f"![latency versus offered rate, p50 and p99]({plot.name})", ""]
    for path, entry in open_loop["paths"].items():
        lines += [f"`{path}` on app-a, zero-code capacity {entry['zero_code_capacity_rps']:.0f} req/s:", ""]
        rows = [
            {"point": point, "key": key, "row": row}
            for point in entry["points"]
            for key, row in point["variants"].items()
        ]
        columns = {
            "share": lambda r: f"{r['point']['share']:.0%}",
            "req/s": lambda r: r["point"]["rate_rps"],
            "variant": lambda r: r["key"],
            **{f"{n} ms": latency_cell(n, added=False) for n in PERCENTILES},
            **{f"added {n} ms": latency_cell(n, added=True) for n in PERCENTILES},
            "CPU us/req": lambda r: f"{r['row']['cpu_us_per_request']:.0f}",
            "errors": lambda r: r["row"]["errors"],
            "measured": lambda r: r["row"]["measured"],
        }
        lines += [*table(columns, rows), ""]
    return lines
