"""The Collector's own span counters as one typed value: what its receiver accepted and refused,
and what each exporter sent, failed to send or could not enqueue."""

from dataclasses import dataclass, field

from .scrape import metric_total, scrape


@dataclass(frozen=True)
class SpanCounters:
    accepted: float
    refused: float
    memory_limiter_refused: float
    sent: dict[str, float] = field(default_factory=dict)  # exporter -> spans
    send_failed: dict[str, float] = field(default_factory=dict)
    enqueue_failed: dict[str, float] = field(default_factory=dict)

    def __sub__(self, earlier: "SpanCounters") -> "SpanCounters":
        """What was counted since `earlier` (the counters only grow while the Collector runs)."""

        def since(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
            return {exporter: now.get(exporter, 0.0) - then.get(exporter, 0.0) for exporter in {*now, *then}}

        return SpanCounters(
            accepted=self.accepted - earlier.accepted,
            refused=self.refused - earlier.refused,
            memory_limiter_refused=self.memory_limiter_refused - earlier.memory_limiter_refused,
            sent=since(self.sent, earlier.sent),
            send_failed=since(self.send_failed, earlier.send_failed),
            enqueue_failed=since(self.enqueue_failed, earlier.enqueue_failed),
        )

    def failures(self) -> dict[str, float]:
        """Every non-zero refusal or failure, named `refused` or `<kind> <exporter>`."""
        found = {"refused": self.refused} if self.refused else {}
        for kind, by_exporter in (("send_failed", self.send_failed), ("enqueue_failed", self.enqueue_failed)):
            found |= {f"{kind} {exporter}": spans for exporter, spans in by_exporter.items() if spans}
        return found


def _by_exporter(samples: dict[str, float], name: str) -> dict[str, float]:
    exporters = {
        key.split('exporter="', 1)[1].split('"', 1)[0]
        for key in samples
        if key.startswith(name + "{") and 'exporter="' in key
    }
    return {exporter: metric_total(samples, name, exporter=exporter) for exporter in sorted(exporters)}


def span_counters(metrics_url: str, unit: str = "spans") -> SpanCounters:
    """Read from a Collector's own metrics endpoint (`otelcol_*_<unit>_total`, summed over the
    other labels). `unit`: spans, or the same counters of the other signals, metric_points or
    log_records."""
    samples = scrape(metrics_url)
    return SpanCounters(
        accepted=metric_total(samples, f"otelcol_receiver_accepted_{unit}_total"),
        refused=metric_total(samples, f"otelcol_receiver_refused_{unit}_total"),
        memory_limiter_refused=metric_total(samples, f"otelcol_processor_memory_limiter_refused_{unit}_total"),
        sent=_by_exporter(samples, f"otelcol_exporter_sent_{unit}_total"),
        send_failed=_by_exporter(samples, f"otelcol_exporter_send_failed_{unit}_total"),
        enqueue_failed=_by_exporter(samples, f"otelcol_exporter_enqueue_failed_{unit}_total"),
    )
