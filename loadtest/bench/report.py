"""The run's report: docs/benchmarks.json, and the generated part of docs/benchmarks.md (between
the markers; the analysis written around them is kept). Each phase renders its own section."""

import importlib.metadata
import json
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nativestack.paths import REPO, versions

DOCS = REPO / "docs"
REPORTS = REPO / "reports"
MD_BEGIN = "<!-- bench:begin (written by `make bench`, loadtest/bench: edit outside these markers) -->"
MD_END = "<!-- bench:end -->"
PACKAGES = (
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi",
    "fastapi",
    "starlette",
    "uvicorn",
    "gunicorn",
    "prometheus-client",
)


def check(name: str, wanted: str, measured: Any, met: bool) -> dict[str, Any]:
    """One line of the targets table."""
    return {"target": name, "wanted": wanted, "measured": measured, "met": met}


def table(columns: dict[str, Callable[[dict[str, Any]], Any]], rows: list[dict[str, Any]]) -> list[str]:
    """A right-aligned markdown table: one column per heading, each cell what its function gives."""
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---:" for _ in columns) + " |"]
    return lines + ["| " + " | ".join(str(cell(row)) for cell in columns.values()) + " |" for row in rows]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


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


def software(tools: dict[str, str]) -> dict[str, str]:
    """The stack's pinned versions, the load tools' (`tools`) and the app's Python packages."""
    pinned = versions()
    return {
        "otelcol (built from collector/manifest.yaml)": pinned["OTELCOL_VERSION"],
        "jaeger": pinned["JAEGER_VERSION"],
        "prometheus": pinned["PROMETHEUS_VERSION"],
        **tools,
        **{package: importlib.metadata.version(package) for package in PACKAGES},
    }


def header(result: dict[str, Any]) -> list[str]:
    settings, host = result["settings"], result["machine"]
    return [
        MD_BEGIN,
        "",
        f"Run of {result['date']} on {host['cpu']}, {host['cores']} cores, "
        f"{host['memory_gib']} GiB, Linux {host['kernel']}; load average before the run "
        f"{' / '.join(f'{x:.2f}' for x in result['load_average_before'])} (1/5/15 min), after "
        f"{' / '.join(f'{x:.2f}' for x in result['load_average_after'])}. "
        f"wrk, 1 thread, {settings['concurrency']} connections, {settings['duration_s']:g} s per run, "
        f"{settings['rounds']} alternating rounds, medians; one gunicorn worker per app "
        f"(WEB_CONCURRENCY=1); {settings['minutes']:.1f} min in all.",
        "",
    ]


def markdown(result: dict[str, Any], sections: list[str]) -> str:
    lines = [*header(result), *sections]
    lines += ["### Targets", "", "| target | wanted | measured | met |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['wanted']} | {fmt(t['measured'])} | {'yes' if t['met'] else 'NO'} |")
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "", MD_END]
    return "\n".join(lines)


def write_docs(result: dict[str, Any], sections: list[str]) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    path = DOCS / "benchmarks.md"
    generated = markdown(result, sections)
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{MD_BEGIN}\n{MD_END}\n"
    if MD_BEGIN in text and MD_END in text:
        head, _, rest = text.partition(MD_BEGIN)
        _, _, tail = rest.partition(MD_END)
        text = head + generated + tail
    else:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    path.write_text(text)


def write_trial(result: dict[str, Any]) -> Path:
    """--no-write: the figures in reports/ (git-ignored), docs/ left alone."""
    REPORTS.mkdir(exist_ok=True)
    path = REPORTS / "benchmarks-trial.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
