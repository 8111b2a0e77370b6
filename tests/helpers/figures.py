"""Figures the fault tests measure (outage lengths, latencies, memory), printed with `pytest -s`
and kept in reports/reliability.json (git-ignored) for docs/reliability.md to quote from a run.
The repo's rule is no timing assertions: these are recorded, never asserted."""

import json
import time
from typing import Any

from nativestack.paths import REPO

FIGURES_FILE = REPO / "reports" / "reliability.json"


def record(figures: dict[str, Any], case: str, **values: Any) -> None:
    figures[case] = {**values, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(f"\n[reliability] {case}: {json.dumps(values, sort_keys=True)}")


def save(recorded: dict[str, Any]) -> None:
    """Merge `recorded` into the figures file: other modules' cases stay."""
    FIGURES_FILE.parent.mkdir(exist_ok=True)
    previous = json.loads(FIGURES_FILE.read_text()) if FIGURES_FILE.exists() else {}
    FIGURES_FILE.write_text(json.dumps(previous | recorded, indent=2, sort_keys=True) + "\n")
