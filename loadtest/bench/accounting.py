"""Span accounting at every hop of the pipeline: what the Collector accepted, refused and sent
to each trace backend (nativestack.counters), and what each backend stored."""

import time
from dataclasses import dataclass

from nativestack.counters import SpanCounters, span_counters
from nativestack.stack import Stack

# The trace backends, each fed by the Collector's exporter of the same name.
BACKENDS = ("jaeger", "tempo")
# What a Jaeger (the real one and the Tempo stand-in) counts as written to its store.
STORAGE_EXPORTER = "jaeger_storage_exporter"


def exporter(backend: str) -> str:
    return f"otlp_grpc/{backend}"


@dataclass(frozen=True)
class Counts:
    collector: SpanCounters
    stored: dict[str, float]  # backend -> spans its storage exporter wrote

    def __sub__(self, earlier: "Counts") -> "Counts":
        stored = {b: self.stored.get(b, 0.0) - earlier.stored.get(b, 0.0) for b in BACKENDS}
        return Counts(self.collector - earlier.collector, stored)

    @property
    def accepted(self) -> float:
        return self.collector.accepted

    @property
    def refused(self) -> float:
        return self.collector.refused

    def sent(self, backend: str) -> float:
        return self.collector.sent.get(exporter(backend), 0.0)

    def failed(self, backend: str) -> float:
        """Export attempts that failed, or found the queue full (retried or dropped)."""
        name = exporter(backend)
        return self.collector.send_failed.get(name, 0.0) + self.collector.enqueue_failed.get(name, 0.0)

    def unsent(self, backend: str) -> float:
        """Accepted but not (yet) sent to `backend`."""
        return self.accepted - self.sent(backend)

    def unstored(self, backend: str) -> float:
        """Sent but not (yet) stored. Negative: stored twice (an export that timed out after it
        was stored is retried)."""
        return self.sent(backend) - self.stored.get(backend, 0.0)

    def delivered(self) -> bool:
        """Every accepted span sent to and stored by both backends."""
        return all(self.unsent(b) <= 0 and self.unstored(b) <= 0 for b in BACKENDS)

    def lost(self) -> float:
        """Refused at the door, accepted but never sent, or sent but never stored."""
        return self.refused + sum(max(0.0, self.unsent(b)) + max(0.0, self.unstored(b)) for b in BACKENDS)

    def stored_twice(self) -> float:
        return sum(max(0.0, -self.unstored(b)) for b in BACKENDS)


def read(stack: Stack) -> Counts:
    backends = {"jaeger": stack.jaeger, "tempo": stack.tempo}
    stored = {b: span_counters(backends[b].metrics_url).sent.get(STORAGE_EXPORTER, 0.0) for b in BACKENDS}
    return Counts(span_counters(stack.collector.metrics_url), stored)


def settle(stack: Stack, quiet_seconds: float, timeout: float = 30.0) -> Counts:
    """Wait until the apps' last spans are in (nothing accepted for `quiet_seconds`) and every
    accepted span is in both trace backends; give up after `timeout` (that is a loss)."""
    deadline = time.monotonic() + timeout
    last = read(stack)
    changed = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = read(stack)
        if now.accepted != last.accepted:
            changed = time.monotonic()
        last = now
        if time.monotonic() - changed >= quiet_seconds and now.delivered():
            return now
    return last


def other_signal_failures(stack: Stack) -> dict[str, float]:
    """Metric points and log records the Collector refused, or failed to send or enqueue, over
    the whole run (by `<unit> <kind> <exporter>`; empty: none lost)."""
    url = stack.collector.metrics_url
    return {
        f"{unit} {name}": count
        for unit in ("metric_points", "log_records")
        for name, count in span_counters(url, unit).failures().items()
    }
