"""One trace backend's outage under a steady span load, as the fault tests of Jaeger (on Badger
or on Cassandra) run it: spans into the Collector before, during and after; what the Tempo
stand-in held meanwhile, what waited in the Collector's Jaeger queue, and what both stores hold
once Jaeger has caught up."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nativestack.backends import Collector, Jaeger
from nativestack.counters import span_counters
from nativestack.scrape import metric_total, scrape

from .spans import Sent, Stored, generate, wait_for_spans


@dataclass
class OutageRun:
    sent: tuple[Sent, Sent, Sent]  # before, during, after the outage
    ids: list[str]  # every accepted span id
    tempo_during: Stored  # the Tempo stand-in's contents before the backend came back
    queued: float  # spans in the Collector's Jaeger queue at the end of the outage
    outage_s: float
    caught_up_s: float  # from the backend's return to every span in Jaeger
    jaeger: Stored
    tempo: Stored
    failures: dict[str, float]  # the Collector's refusals and send/enqueue failures

    def figures(self) -> dict[str, Any]:
        return {
            "outage_s": round(self.outage_s, 1),
            "spans_sent": sum(sent.spans for sent in self.sent),
            "spans_accepted": len(self.ids),
            "tempo_spans_at_end_of_outage": self.tempo_during.copies,
            "jaeger_queue_at_end_of_outage": self.queued,
            "jaeger_caught_up_after_s": round(self.caught_up_s, 1),
            "spans_in_jaeger": self.jaeger.copies,
            "spans_in_tempo": self.tempo.copies,
            "collector_refusals": self.failures,
        }


class TracePipeline(Protocol):
    """A Collector in front of Jaeger and the Tempo stand-in (nativestack's Stack or Pipeline)."""

    collector: Collector
    jaeger: Jaeger
    tempo: Jaeger


def spans_through_an_outage(
    pipeline: TracePipeline,
    *,
    service: str,
    rate: float,
    down_s: float,
    stop: Callable[[], object],
    start: Callable[[], object],
) -> OutageRun:
    """`rate` spans/s of `service` for 3 s; `stop()`; spans until `down_s` s after the stop
    began; `start()`; 3 s more. Jaeger and the Tempo stand-in are read through their APIs."""
    url = f"{pipeline.collector.otlp_http_url}/v1/traces"
    collector_metrics_url, tempo_url = pipeline.collector.metrics_url, pipeline.tempo.api_url
    before = generate(url, service, spans_per_s=rate, duration_s=3)
    t_down = time.monotonic()
    stop()
    during = generate(url, service, spans_per_s=rate, duration_s=max(1.0, t_down + down_s - time.monotonic()))
    ids = before.accepted_ids + during.accepted_ids
    tempo_during = wait_for_spans(tempo_url, service, len(ids), timeout=30)
    queued = metric_total(scrape(collector_metrics_url), "otelcol_exporter_queue_size", exporter="otlp_grpc/jaeger")
    start()
    t_up = time.monotonic()
    after = generate(url, service, spans_per_s=rate, duration_s=3)
    ids += after.accepted_ids
    jaeger = wait_for_spans(pipeline.jaeger.api_url, service, len(ids), timeout=120)
    t_caught_up = time.monotonic()
    tempo = wait_for_spans(tempo_url, service, len(ids), timeout=30)
    failures = span_counters(collector_metrics_url).failures()
    return OutageRun(
        (before, during, after), ids, tempo_during, queued, t_up - t_down, t_caught_up - t_up, jaeger, tempo, failures
    )


def assert_nothing_lost_or_duplicated(run: OutageRun) -> None:
    """Every request answered 200; the Tempo stand-in had everything sent before the backend
    came back, once; Jaeger's share waited in the queue; both stores end with every span once;
    the Collector refused and dropped nothing."""
    for sent in run.sent:
        assert set(sent.statuses) == {200} and not sent.errors, (sent.statuses, sent.errors)
    before, during, _ = run.sent
    assert run.tempo_during.copies == len(run.tempo_during.ids) == before.accepted + during.accepted
    assert run.queued > 0, "Jaeger's share should have waited in the Collector's queue"
    assert run.jaeger.ids == run.tempo.ids == set(run.ids)
    assert run.jaeger.copies == run.tempo.copies == len(run.ids), "duplicates"
    assert not run.failures, run.failures
