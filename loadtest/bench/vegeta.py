"""vegeta, the open-loop load generator: it sends at a constant rate whatever the server does
(adding workers while answers are slow), and records every request with its sequence number,
send time, latency and status.

A closed loop (wrk) sends a connection's next request only when the last one is answered, so a
stalled server is offered fewer requests and the ones it delayed are never measured as late
(coordinated omission). Here each latency is counted from the moment the schedule said to send
the request (`seq / rate` after the first), so a send that vegeta itself had to delay counts too.
"""

import csv
import io
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    seq: int
    sent_ns: int  # Unix time the request was sent
    latency_ns: int  # from sending to the end of the answer
    code: int  # 0: no answer (error set)
    error: str


def attack(binary: Path, url: str, rate: int, seconds: float, output: Path) -> list[Result]:
    """GET `url` at `rate` requests/s for `seconds`; every result, in sequence order."""
    argv = [
        str(binary),
        "attack",
        f"-rate={rate}/1s",
        f"-duration={seconds:g}s",
        "-timeout=10s",
        "-max-body=0",  # the bodies are not read back: keep the result file small
        f"-output={output}",
    ]
    subprocess.run(argv, input=f"GET {url}\n", text=True, capture_output=True, timeout=seconds + 60, check=True)
    encoded = subprocess.run(
        [str(binary), "encode", "--to", "csv", str(output)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # Columns: timestamp (ns), code, latency (ns), bytes out, bytes in, error, body, attack, seq, ...
    results = [
        Result(seq=int(row[8]), sent_ns=int(row[0]), latency_ns=int(row[2]), code=int(row[1]), error=row[5])
        for row in csv.reader(io.StringIO(encoded))
        if row
    ]
    return sorted(results, key=lambda r: r.seq)


def corrected_latencies_ms(results: list[Result], rate: int, skip_seconds: float) -> list[float]:
    """Each answered request's latency from its scheduled send time, in ms, sorted; the first
    `skip_seconds` of the schedule (connections being opened) left out."""
    if not results:
        return []
    start = results[0].sent_ns  # seq 0 is sent when the schedule starts
    interval_ns = 1e9 / rate
    latencies = []
    for result in results:
        scheduled = start + result.seq * interval_ns
        if result.code == 0 or scheduled - start < skip_seconds * 1e9:
            continue
        late = max(0.0, result.sent_ns - scheduled)
        latencies.append((late + result.latency_ns) / 1e6)
    return sorted(latencies)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = math.ceil(round(len(sorted_values) * q / 100, 9))  # rounded first: 99.9% of 1000 is 999
    return sorted_values[max(1, rank) - 1]
