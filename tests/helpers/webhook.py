"""A stand-in pager on loopback: receives Alertmanager's webhook notifications
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) and lets a test wait
for an alert in them."""

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from nativestack.loopback import LoopbackServer, QuietHandler
from nativestack.processes import wait_until

# Alertmanager route timers for a test run (native_alertmanager_config): a notification leaves
# a second after its alert arrives, instead of the shipped 30 s to 5 min.
FAST_ROUTE_TIMERS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}


@dataclass(frozen=True)
class Notified:
    """One alert as one notification carried it."""

    received: float  # time.monotonic()
    receiver: str  # the Alertmanager receiver the route chose
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]


class WebhookReceiver(LoopbackServer):
    def __init__(self) -> None:
        self.notified: list[Notified] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                receiver._record(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler, "webhook")

    @property
    def url(self) -> str:
        return f"{super().url}/alerts"

    def _record(self, body: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            for alert in body["alerts"]:
                self.notified.append(
                    Notified(now, body["receiver"], alert["status"], alert["labels"], alert["annotations"])
                )

    def alerts(self, status: str | None = None, **labels: str) -> list[Notified]:
        """Every alert received (with `status`, when given) whose labels include `labels`."""
        with self._lock:
            return [
                n
                for n in self.notified
                if status in (None, n.status) and all(n.labels.get(k) == v for k, v in labels.items())
            ]

    def wait_for(self, status: str, timeout: float, **labels: str) -> Notified:
        def arrived() -> Notified | None:
            found = self.alerts(status, **labels)
            return found[0] if found else None

        return wait_until(arrived, f"a {status} notification of {labels}", timeout=timeout, interval=0.5)
