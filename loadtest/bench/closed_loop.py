"""The overhead phase: every variant's app-a under wrk's closed loop, `/` and `/chain`, in
alternating rounds, with every span counted from the apps' request counters to both backends."""

import argparse
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx

from nativestack.apps import APP_NAMES
from nativestack.procfs import cpu_seconds
from nativestack.stack import Stack

from . import accounting
from .accounting import BACKENDS, Counts, exporter
from .launch import AppSet, Variant, request_counts
from .report import check, fmt
from .wrk import wrk

ENDPOINTS = ("/", "/chain")
# The ratios given per variant: name -> the run's figure.
RATIOS = {"throughput": "throughput_rps", "p50": "p50_ms", "p99": "p99_ms", "cpu": "cpu_us_per_request"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median over them); default 3")
    parser.add_argument("--duration", type=float, default=10, help="seconds of wrk per run; default 10")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections; default 8")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated subset of / and /chain")


@dataclass
class Run:
    variant: str
    endpoint: str
    round: int
    figures: dict[str, float]


def warm_up(app_set: AppSet, concurrency: int, endpoints: list[str]) -> None:
    """Import-time caches, connection pools and the exporters' first batches out of the way."""
    wrk(app_set.url("/"), concurrency, 2)
    if "/chain" in endpoints:
        httpx.get(app_set.url("/chain"), timeout=30).raise_for_status()


def measure(stack: Stack, app_set: AppSet, endpoint: str, args: argparse.Namespace, round_index: int) -> Run:
    variant = app_set.variant
    url = app_set.url(endpoint)
    if endpoint == "/":
        wrk(url, args.concurrency, 1)  # warm-up, not counted
        accounting.settle(stack, variant.flush_seconds + 0.5)
    names = ("app-a",) if endpoint == "/" else APP_NAMES
    requests_before = request_counts(app_set)
    counts_before = accounting.read(stack)
    cpu_before = cpu_seconds(app_set.pids(names))
    figures = wrk(url, args.concurrency, args.duration)
    cpu = cpu_seconds(app_set.pids(names)) - cpu_before  # the run's own CPU; exports after it are not in
    counts = accounting.settle(stack, variant.flush_seconds + 0.7) - counts_before
    requests_after = request_counts(app_set)
    served = {key: requests_after.get(key, 0) - requests_before.get(key, 0) for key in requests_after}
    figures["cpu_us_per_request"] = cpu / max(1, figures["requests"]) * 1e6
    figures["server_requests"] = sum(served.values())
    figures["chain_requests"] = served.get("app-a /chain", 0)
    figures["spans_accepted"] = counts.accepted
    if variant.spans_per_server_request is not None:
        figures["spans_expected"] = (
            variant.spans_per_server_request * figures["server_requests"]
            + variant.client_spans_per_chain * figures["chain_requests"]
        )
    figures["spans_refused"] = counts.refused
    for backend in BACKENDS:
        name = exporter(backend).replace("/", "_")
        figures[f"spans_sent_{name}"] = counts.sent(backend)
        figures[f"spans_send_failed_{name}"] = counts.collector.send_failed.get(exporter(backend), 0.0)
        figures[f"spans_enqueue_failed_{name}"] = counts.collector.enqueue_failed.get(exporter(backend), 0.0)
    for backend in BACKENDS:
        figures[f"spans_stored_{backend}"] = counts.stored[backend]
    print(
        f"  round {round_index + 1} {endpoint:7} {variant.key:15} {figures['throughput_rps']:8.1f} req/s"
        f"  p50 {figures['p50_ms']:7.2f} ms  p99 {figures['p99_ms']:7.2f} ms"
        f"  cpu {figures['cpu_us_per_request']:6.0f} us/req  spans {counts.accepted:.0f}",
        flush=True,
    )
    return Run(variant.key, endpoint, round_index, figures)


def run(stack: Stack, sets: dict[str, AppSet], args: argparse.Namespace) -> list[Run]:
    """Every round: each endpoint, each variant, the variants' order rotated by one per round."""
    endpoints = [e for e in ENDPOINTS if e in args.endpoints.split(",")]
    for app_set in sets.values():
        warm_up(app_set, args.concurrency, endpoints)
    print(f"{len(sets)} variants up; {args.rounds} rounds", flush=True)
    accounting.settle(stack, 5.5)
    variants = list(sets.values())
    runs = []
    for round_index in range(args.rounds):
        shift = round_index % len(variants)
        for endpoint in endpoints:
            for app_set in variants[shift:] + variants[:shift]:
                runs.append(measure(stack, app_set, endpoint, args, round_index))
    return runs


def paired_ratio(runs: list[Run], key: str, baseline: str, endpoint: str, figure: str) -> float | None:
    """The median over rounds of `key`'s figure divided by `baseline`'s in the same round: runs of
    one round are minutes apart at most, so a machine whose speed drifts over the run (a shared
    VM's does, by tens of percent) moves both sides of each ratio alike."""
    by_round = {r.round: r.figures[figure] for r in runs if r.variant == baseline and r.endpoint == endpoint}
    ratios = [
        r.figures[figure] / by_round[r.round]
        for r in runs
        if r.variant == key and r.endpoint == endpoint and by_round.get(r.round)
    ]
    return statistics.median(ratios) if ratios else None


def summarize(runs: list[Run], variants: list[Variant]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per endpoint and variant: medians over the rounds, and paired ratios (paired_ratio) to the
    uninstrumented app and to the zero-code one (the levers' measure)."""
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
            for name, figure in RATIOS.items():
                for baseline, suffix in (("uninstrumented", "ratio"), ("zero_code", "vs_zero_code")):
                    ratio = paired_ratio(runs, variant.key, baseline, endpoint, figure)
                    if ratio is not None:
                        row[f"{name}_{suffix}"] = round(ratio, 3)
            row["rounds"] = mine
            rows[variant.key] = row
        if rows:  # an endpoint left out (--endpoints) gets no empty table
            table[endpoint] = rows
    return table


def span_losses(runs: list[Run], sets: dict[str, AppSet], final: Counts) -> dict[str, Any]:
    """Loss at every hop: SDK (exact variants: expected vs accepted, any variant: the SDK's
    'Queue full' warnings), Collector (refused, failed, accepted vs sent), backends (stored).
    `final`: the counts over the whole run."""
    per_variant: dict[str, defaultdict[str, float]] = {}
    for run_ in runs:
        entry = per_variant.setdefault(run_.variant, defaultdict(float))
        for key in ("spans_accepted", "spans_expected", *(f"spans_stored_{b}" for b in BACKENDS)):
            if key in run_.figures:
                entry[key] += run_.figures[key]
    for key, app_set in sets.items():
        logs = "".join(process.output() for process in app_set.processes())
        entry = per_variant.setdefault(key, defaultdict(float))
        entry["sdk_queue_full_warnings"] = logs.count("Queue full, dropping")
        entry["sdk_export_failure_warnings"] = len(re.findall(r"Failed to export|Transient error", logs))
    collector = {
        "accepted": final.accepted,
        "refused": final.refused,
        **{f"lost to {exporter(b)}": final.unsent(b) for b in BACKENDS},
        **{f"failed {exporter(b)}": final.failed(b) for b in BACKENDS},
        **{f"not stored in {b}": final.unstored(b) for b in BACKENDS},
    }
    sdk_lost = sum(
        max(0.0, v["spans_expected"] - v["spans_accepted"]) for v in per_variant.values() if "spans_expected" in v
    )
    queue_full = sum(v.get("sdk_queue_full_warnings", 0) for v in per_variant.values())
    return {
        "per_variant": {k: dict(v) for k, v in per_variant.items()},
        "collector": collector,
        "lost": sdk_lost + final.lost() + queue_full,
    }


def targets(table: dict[str, dict[str, dict[str, Any]]], losses: dict[str, Any]) -> list[dict[str, Any]]:
    root, chain = table.get("/", {}), table.get("/chain", {})
    zero = root.get("zero_code", {})
    checks = []
    base = root.get("uninstrumented")
    if zero and base:
        # The telemetry's own CPU against the request's own: machine speed cancels out.
        own = base["cpu_us_per_request"]
        added = zero["cpu_us_per_request"] - own
        checks.append(
            check(
                "telemetry's CPU per request on / (zero-code minus uninstrumented)",
                "<= the uninstrumented request's own CPU",
                f"+{added:.0f} us on {own:.0f} us ({added / own:.2f}x)",
                added <= own,
            )
        )
    if zero:
        ratio, p99 = zero.get("throughput_ratio"), zero.get("p99_ratio")
        checks.append(check("zero-code throughput on /", ">= 0.6 of uninstrumented", ratio, (ratio or 0) >= 0.6))
        checks.append(check("zero-code p99 on /", "<= 3x uninstrumented", p99, p99 is not None and p99 <= 3))
    for endpoint, rows in (("/", root), ("/chain", chain)):
        z, h = rows.get("zero_code"), rows.get("hand")
        if z and h:
            # /chain's rate is set by app-b's 1 s sleep: a tie within 2% counts there.
            checks.append(
                check(
                    f"zero-code ahead of hand-instrumented on {endpoint}",
                    "throughput >= and p99 <= the hand-instrumented's",
                    f"{z['throughput_rps']:.1f} vs {h['throughput_rps']:.1f} req/s, p99 {z['p99_ms']:.1f} vs {h['p99_ms']:.1f} ms, "
                    f"CPU {z['cpu_us_per_request']:.0f} vs {h['cpu_us_per_request']:.0f} us/req",
                    z["throughput_rps"] >= 0.98 * h["throughput_rps"] and z["p99_ms"] <= h["p99_ms"],
                )
            )
    checks.append(check("spans lost at the benchmark's load", "0", losses["lost"], losses["lost"] == 0))
    others = losses["other_signals"]
    sdk_failures = sum(v.get("sdk_export_failure_warnings", 0) for v in losses["per_variant"].values())
    checks.append(
        check(
            "metric points and log records lost",
            "0 refused or failed in the Collector, 0 SDK export failures",
            ", ".join(f"{k} {v:.0f}" for k, v in others.items()) or f"none; SDK export failures {sdk_failures}",
            not others and sdk_failures == 0,
        )
    )
    return checks


def markdown(overhead: dict[str, dict[str, dict[str, Any]]], losses: dict[str, Any]) -> list[str]:
    lines = []
    for endpoint, rows in overhead.items():
        lines += [
            f"### `{endpoint}` on app-a"
            + (" (calls app-a `/`, app-b `/io_task` 1 s, app-c `/cpu_task`)" if endpoint == "/chain" else ""),
            "",
            "| variant | req/s | throughput ratio | vs zero-code | p50 ms | p99 ms | p99 ratio | CPU us/req | CPU vs zero-code |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows.values():
            lines.append(
                f"| {row['title']} | {row['throughput_rps']:.1f} | {fmt(row.get('throughput_ratio'))} "
                f"| {fmt(row.get('throughput_vs_zero_code'))} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                f"| {fmt(row.get('p99_ratio'))} | {row['cpu_us_per_request']:.0f} | {fmt(row.get('cpu_vs_zero_code'))} |"
            )
        lines.append("")
    lines += [
        "### Spans",
        "",
        "| variant | accepted by the Collector | expected from the apps' request counters | stored in Jaeger | stored in the Tempo stand-in | SDK 'Queue full' warnings |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, entry in losses["per_variant"].items():
        lines.append(
            f"| {key} | {entry.get('spans_accepted', 0):.0f} | {fmt(entry.get('spans_expected'), 0)} | {entry.get('spans_stored_jaeger', 0):.0f} "
            f"| {entry.get('spans_stored_tempo', 0):.0f} | {entry.get('sdk_queue_full_warnings', 0)} |"
        )
    collector = losses["collector"]
    lines += [
        "",
        f"Collector over the whole run: {collector['accepted']:.0f} spans accepted, {collector['refused']:.0f} refused, "
        + ", ".join(f"{collector[f'lost to {exporter(b)}']:.0f} not sent to {exporter(b)}" for b in BACKENDS)
        + ", "
        + ", ".join(f"{collector[f'not stored in {b}']:.0f} not stored in {b}" for b in BACKENDS)
        + f". **Spans lost: {losses['lost']:.0f}.**",
        "",
    ]
    return lines
