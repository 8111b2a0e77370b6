"""The two-tier capacity phase, beside the single Collector's: telemetrygen into one agent in front
of three tail-sampling gateways (the configs `make up TOPOLOGY=gateway` runs), at the same rising
rates. Per step: spans/s with nothing lost between the agent and the gateways, CPU per span of the
agent and of the gateways together, and the share of spans stored after sampling."""

import argparse
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from nativestack.counters import span_counters
from nativestack.gateway import Tier, start_tier
from nativestack.pipeline import MetricsSink
from nativestack.processes import start, wait_until
from nativestack.procfs import cpu_seconds
from nativestack.scrape import metric_total, scrape

from .capacity import RATE_COLUMNS, rising, telemetrygen_argv
from .report import table

# Each gateway holds a trace for its 10 s decision wait: a step is settled after that.
DECISION_WAIT_S = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tier-capacity-seconds", type=float, default=10, help="seconds per two-tier step; 0 skips it")


def _totals(tier: Tier) -> dict[str, float]:
    agent = span_counters(tier.agents[0].metrics_url)
    gateways = [scrape(g.metrics_url) for g in tier.gateways.values()]
    return {
        "accepted": agent.accepted,
        "refused": agent.refused,
        "at_gateways": sum(metric_total(g, "otelcol_receiver_accepted_spans_total") for g in gateways),
        "stored": metric_total(scrape(tier.jaeger.metrics_url), "otelcol_exporter_sent_spans_total"),
    }


def _settled(tier: Tier) -> bool:
    """Nothing queued at the agent, held by a sampler or queued for a backend."""
    if metric_total(scrape(tier.agents[0].metrics_url), "otelcol_exporter_queue_size", exporter="load_balancing"):
        return False
    return not any(
        metric_total(g, "otelcol_processor_tail_sampling_sampling_traces_on_memory")
        or metric_total(g, "otelcol_exporter_queue_size")
        for g in (scrape(gateway.metrics_url) for gateway in tier.gateways.values())
    )


def step(tier: Tier, binary: Path, workdir: Path, seconds: float, rate: int) -> dict[str, Any]:
    agent_pid = tier.agents[0].process.pid
    gateway_pids = [g.process.pid for g in tier.gateways.values()]
    before = _totals(tier)
    agent_cpu, gateways_cpu = cpu_seconds([agent_pid]), cpu_seconds(gateway_pids)
    endpoint = f"127.0.0.1:{tier.agents[0].grpc_port}"
    generator = start(f"telemetrygen-tier-{rate}", telemetrygen_argv(binary, endpoint, rate, seconds), {}, workdir)
    started = time.monotonic()
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            generator.popen.wait(timeout=seconds + 60)
    finally:
        generator.stop()
    generated_for = time.monotonic() - started
    wait_until(lambda: _settled(tier), "the tier to settle", timeout=DECISION_WAIT_S + 60, interval=1)
    after = _totals(tier)
    delta = {key: after[key] - before[key] for key in after}
    agent_cpu, gateways_cpu = cpu_seconds([agent_pid]) - agent_cpu, cpu_seconds(gateway_pids) - gateways_cpu
    accepted = max(1.0, delta["accepted"])
    return {
        "target_spans_per_s": rate,
        "accepted_spans": delta["accepted"],
        "achieved_spans_per_s": round(delta["accepted"] / seconds),
        "refused_spans": delta["refused"],
        "lost_spans": delta["accepted"] - delta["at_gateways"],
        "stored_share": round(delta["stored"] / accepted, 3),
        "agent_cpu_cores": round(agent_cpu / generated_for, 3),
        "agent_cpu_us_per_span": round(agent_cpu / accepted * 1e6, 2),
        "gateways_cpu_cores": round(gateways_cpu / generated_for, 3),
        "gateways_cpu_us_per_span": round(gateways_cpu / accepted * 1e6, 2),
    }


def _describe(r: dict[str, Any]) -> str:
    return (
        f"accepted {r['accepted_spans']:.0f}, lost {r['lost_spans']:.0f}, agent {r['agent_cpu_cores']:.2f} + "
        f"gateways {r['gateways_cpu_cores']:.2f} cores, stored {r['stored_share']:.1%}"
    )


def run(binary: Path, workdir: Path, seconds: float, rates: tuple[int, ...]) -> dict[str, Any]:
    sink = MetricsSink()  # Prometheus' OTLP receiver, answered without the cost of a Prometheus
    try:
        with start_tier(workdir / "tier", sink.url) as tier:
            steps = rising("two-tier", rates, lambda rate: step(tier, binary, workdir, seconds, rate), _describe)
    finally:
        sink.stop()
    lossless = [s for s in steps if not s["lost_spans"] and not s["refused_spans"]]
    return {
        "seconds_per_step": seconds,
        "steps": steps,
        "max_lossless_spans_per_s": max((s["achieved_spans_per_s"] for s in lossless), default=0),
    }


def markdown(tier: dict[str, Any] | None, single: dict[str, Any] | None) -> list[str]:
    if not tier:
        return []
    single_max = single["max_lossless_spans_per_s"] if single else None
    lines = [
        "### Two-tier capacity (telemetrygen -> agent -> 3 tail-sampling gateways -> Jaeger + Tempo stand-in)",
        "",
        f"Same generator and rates as above, {tier['seconds_per_step']:g} s per step. **Highest rate with nothing "
        f"lost: {tier['max_lossless_spans_per_s']} spans/s** (the single Collector: {single_max} spans/s). "
        "Lost = accepted by the agent but not by a gateway; stored = the share the gateways kept (10% baseline: "
        "telemetrygen's traces are fast and error-free).",
        "",
    ]
    columns = {
        **RATE_COLUMNS,
        "stored": lambda s: f"{s['stored_share']:.1%}",
        "agent cores": lambda s: f"{s['agent_cpu_cores']:.2f}",
        "agent us/span": lambda s: f"{s['agent_cpu_us_per_span']:.1f}",
        "gateways cores": lambda s: f"{s['gateways_cpu_cores']:.2f}",
        "gateways us/span": lambda s: f"{s['gateways_cpu_us_per_span']:.1f}",
    }
    lines += table(columns, tier["steps"])
    return [*lines, ""]
