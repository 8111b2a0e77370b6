"""`python -m loadtest.bench` (what `make bench` runs): the phases in order, then the report.
See the package's docstring (loadtest/bench/__init__.py) for what each phase measures."""

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nativestack.paths import REPO
from nativestack.processes import stop_everything_on_sigterm
from nativestack.stack import start_stack

from . import accounting, capacity, closed_loop, go_tools, open_loop, plot, profile, report, tier_capacity, wrk
from .accounting import settle
from .launch import VARIANTS, AppSet, extra_variant, launch, stop


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="`make bench`: what the telemetry costs the apps, and what the Collector can carry.",
        epilog="The phases and what each measures: loadtest/bench/__init__.py.",
    )
    parser.add_argument("--variants", default=",".join(v.key for v in VARIANTS), help="comma-separated subset")
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="KEY:VAR=VALUE,...",
        help="an extra zero-code variant with these env overrides (trying settings; BENCH_GUNICORN_CONF=path swaps gunicorn.conf.py)",
    )
    parser.add_argument("--no-write", action="store_true", help="write reports/benchmarks-trial.json, not docs/")
    for phase in (closed_loop, open_loop, profile, capacity, tier_capacity):
        phase.add_arguments(parser)
    return parser.parse_args()


def main() -> int:
    args = arguments()
    stop_everything_on_sigterm()
    if not wrk.available():
        print(f"error: {wrk.MISSING}", file=sys.stderr)
        return 1
    variants = [v for v in VARIANTS if v.key in args.variants.split(",")]
    variants += [extra_variant(spec) for spec in args.extra]
    binary = go_tools.binary("telemetrygen") if args.capacity_seconds > 0 or args.tier_capacity_seconds > 0 else None
    attacker = go_tools.binary("vegeta") if args.open_loop_seconds > 0 else None
    load_before = os.getloadavg()
    began = time.monotonic()
    print(f"load average {' '.join(f'{x:.2f}' for x in load_before)}; starting the native stack", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    sets: dict[str, AppSet] = {}
    profiles: dict[str, Any] = {}
    cap = tier = opened = None
    try:
        with start_stack(workdir) as stack:
            try:
                for variant in variants:
                    sets[variant.key] = launch(stack, variant, workdir)
                runs = closed_loop.run(stack, sets, args)
                if attacker:
                    opened = open_loop.run(stack, sets, attacker, workdir, args)
                for key in [k for k in args.profile.split(",") if k in sets]:
                    profiles[key] = profile.run(stack, sets[key], args.duration, args.concurrency)
                    print(f"  profile {key}: {profiles[key]['share_by_category']}", flush=True)
                final = settle(stack, 1.0)
            finally:
                for app_set in sets.values():
                    stop(app_set)
            losses = closed_loop.span_losses(runs, sets, final)
            losses["other_signals"] = accounting.other_signal_failures(stack)
            for app in stack.apps.values():  # the capacity phase runs with the apps stopped
                app.process.stop()
            rates = tuple(int(r) for r in args.capacity_rates.split(","))
            if binary and args.capacity_seconds > 0:
                cap = capacity.run(stack, binary, workdir, args.capacity_seconds, rates)
        if binary and args.tier_capacity_seconds > 0:  # after the stack is gone: its own Jaegers
            tier = tier_capacity.run(binary, workdir, args.tier_capacity_seconds, rates)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = closed_loop.summarize(runs, variants)
    tools = {
        "wrk": wrk.version(),
        **({"telemetrygen": binary.parent.name.removeprefix("telemetrygen-")} if binary else {}),
        **({"vegeta": attacker.parent.name.removeprefix("vegeta-")} if attacker else {}),
    }
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": report.machine(),
        "versions": report.software(tools),
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
        "open_loop": opened,
        "spans": losses,
        "capacity": cap,
        "tier_capacity": tier,
        "profiles": profiles,
        "targets": closed_loop.targets(table, losses) + open_loop.targets(opened) + capacity.targets(cap),
    }
    for check in result["targets"]:
        met = "met" if check["met"] else "MISSED"
        print(f"target {check['target']}: wanted {check['wanted']}, measured {check['measured']}: {met}")
    picture = None
    if opened:
        folder = report.REPORTS if args.no_write else report.DOCS
        folder.mkdir(exist_ok=True)
        picture = plot.latency_versus_rate(opened, folder / "benchmarks-latency.png")
        print(f"wrote {picture.relative_to(REPO)}")
    if args.no_write:
        print(f"wrote {report.write_trial(result).relative_to(REPO)} (docs/ left alone)")
    else:
        sections = (
            open_loop.markdown(opened, picture)
            + closed_loop.markdown(table, losses)
            + capacity.markdown(cap)
            + tier_capacity.markdown(tier, cap)
            + profile.markdown(profiles)
        )
        report.write_docs(result, sections)
        print("wrote docs/benchmarks.json and docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
