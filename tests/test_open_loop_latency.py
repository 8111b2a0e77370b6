"""The open-loop benchmark's latency arithmetic (loadtest/bench/vegeta.py): every latency counts
from the request's scheduled send time, so a send the generator itself delayed is not hidden
(coordinated omission), and the percentiles are nearest-rank."""

from loadtest.bench.vegeta import Result, corrected_latencies_ms, percentile

MS = 1_000_000  # ns


def result(seq: int, sent_ms: float, latency_ms: float, code: int = 200) -> Result:
    return Result(seq=seq, sent_ns=int(sent_ms * MS), latency_ns=int(latency_ms * MS), code=code, error="")


def test_a_late_send_counts_its_delay_and_unanswered_requests_are_left_out() -> None:
    # 100 requests/s: scheduled every 10 ms. The third is sent 50 ms after its slot.
    results = [
        result(0, 0, 1),
        result(1, 10, 2),
        result(2, 70, 1),
        result(3, 30, 0, code=0),  # no answer: an error, not a latency
    ]
    assert corrected_latencies_ms(results, rate=100, skip_seconds=0) == [1.0, 2.0, 51.0]


def test_the_first_seconds_of_a_run_are_left_out() -> None:
    results = [result(seq, seq * 10, 5 if seq < 100 else 1) for seq in range(200)]  # 2 s at 100/s
    assert corrected_latencies_ms(results, rate=100, skip_seconds=1.0) == [1.0] * 100


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1..1000
    assert [percentile(values, q) for q in (50, 99, 99.9, 100)] == [500.0, 990.0, 999.0, 1000.0]
    assert percentile([7.0], 99.9) == 7.0
