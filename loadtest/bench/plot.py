"""The open-loop phase as a picture: latency versus offered rate, p50 and p99 of every variant,
one panel per path (docs/benchmarks-latency.png, embedded in docs/benchmarks.md)."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a CI machine or over ssh
import matplotlib.pyplot as plt

COLOURS = {"uninstrumented": "#1f77b4", "zero_code": "#d62728", "hand": "#7f7f7f"}


def latency_versus_rate(open_loop: dict[str, Any], path: Path) -> Path:
    paths = open_loop["paths"]
    figure, axes = plt.subplots(1, len(paths), figsize=(5.5 * len(paths), 4.2), squeeze=False)
    for axis, (endpoint, entry) in zip(axes[0], paths.items(), strict=True):
        rates = [point["rate_rps"] for point in entry["points"]]
        for key in entry["points"][0]["variants"]:
            colour = COLOURS.get(key, "#2ca02c")
            for name, style in (("p50", "-"), ("p99", "--")):
                values = [point["variants"][key][name] for point in entry["points"]]
                axis.plot(rates, values, style, marker="o", color=colour, label=f"{key} {name}")
        axis.set_title(f"{endpoint} on app-a (zero-code capacity {entry['zero_code_capacity_rps']:.0f} req/s)")
        axis.set_xlabel("offered rate (req/s, constant: open loop)")
        axis.set_ylabel("latency (ms, from the scheduled send)")
        axis.set_yscale("log")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
