"""wrk, the closed-loop load generator: a fixed number of connections, each sending its next
request when the last one is answered (so a slower server is offered less)."""

import math
import re
import shutil
import subprocess

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
MISSING = "wrk is missing: apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)"


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    return subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split(" [")[0]


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def wrk(url: str, concurrency: int, seconds: float) -> dict[str, float]:
    """One run: requests, seconds, throughput, p50/p90/p99 latency (ms) and errors (non-2xx/3xx
    answers plus socket errors)."""
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
