"""Alerts end to end, on a private native stack: the three apps under the Locust mix, the real
Collector, Jaeger, Prometheus loading backends/rules/ and the real Alertmanager with
backends/alertmanager.yml, its notifications delivered to a webhook in this test.

What the test run overrides, and nothing else (nativestack.stack.start_stack):
  - Prometheus scrapes and evaluates every 1 s (compose: 5-15 s), so rules see changes at once;
  - Alertmanager's group_wait and group_interval are 1 s, repeat_interval 1 h (compose, for
    pages: 30 s, 5 min and 4 h);
  - every receiver gets this test's webhook (the shipped ones deliver nowhere);
  - app-c's /chain calls a stand-in for app-b that the test can make fail.
The rules are the shipped files, every expression, threshold, window and `for:` included. So the
exporter alert takes its real two minutes (a 1-minute window, then `for: 1m`), and the fast-burn
page comes within seconds of the 5xx (no `for:`; and on a Prometheus minutes old, the 1h window
holds the same minutes as the 5m one: that the pair of windows fires at the right time is what
the promtool unit tests in backends/rules/tests/ prove, over simulated hours).

Loopback only; every process is stopped by its PID; every wait has a deadline.
"""

import signal
import time
from collections.abc import Iterator

import pytest

from helpers.clients import PrometheusAPI
from helpers.request_loop import RequestLoop
from helpers.webhook import FAST_ROUTE_TIMERS, WebhookReceiver
from nativestack.apps import locust_command, start_app
from nativestack.loopback import LoopbackServer, QuietHandler
from nativestack.processes import Process, start, wait_until
from nativestack.stack import Stack, start_stack

TEST_INTERVAL = "1s"
NORMAL_SERVICES = ("app-a", "app-b")


class Dependency(LoopbackServer):
    """A stand-in for app-b as app-c's /chain sees it: answers 200, or 503 once `failing`."""

    def __init__(self) -> None:
        self.failing = False
        dependency = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.send_response(503 if dependency.failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__(Handler, "dependency")


@pytest.fixture(scope="module")
def dependency() -> Iterator[Dependency]:
    stand_in = Dependency()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def alerting(
    tmp_path_factory: pytest.TempPathFactory, webhook: WebhookReceiver, dependency: Dependency
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerting")
    running = start_stack(workdir, webhook_url=webhook.url, interval=TEST_INTERVAL, timings=FAST_ROUTE_TIMERS)
    try:
        # app-c again, in place, its /chain calling the stand-in instead of app-b.
        running.apps["app-c"].process.stop()
        running.apps["app-c"] = start_app(
            running.spec,
            "app-c",
            workdir,
            running.app_addresses(),
            port=running.app_ports["app-c"],
            overrides={"CHAIN_APP_B_URL": dependency.url},
            name="app-c-with-stand-in",
        )
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def locust(alerting: Stack) -> Iterator[Process]:
    """The Locust mix (designed failures included) for the whole module, ~8 requests/s."""
    options = ("--users", "6", "--spawn-rate", "6", "--wait-min", "0.2", "--wait-max", "1")
    argv = locust_command(alerting.apps, "--headless", *options, "--run-time", "10m", "--only-summary")
    process = start("locust", argv, {}, alerting.workdir)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def prometheus(alerting: Stack) -> PrometheusAPI:
    return PrometheusAPI(alerting.prometheus.url)


def value(prometheus: PrometheusAPI, promql: str) -> float:
    result = prometheus.query(promql)
    return float(result[0]["value"][1]) if result else 0.0


def unfiltered_burn(prometheus: PrometheusAPI, service: str) -> float:
    """The service's 5xx share over 5 minutes in budgets (0.1%), designed failures counted."""
    selector = f'app_name="{service}"'
    ratio = value(
        prometheus,
        f'sum(rate(fastapi_responses_total{{{selector}, status_code=~"5.."}}[5m]))'
        f" / sum(rate(fastapi_responses_total{{{selector}}}[5m]))",
    )
    return ratio / 0.001


def test_a_5xx_burst_pages_for_its_service_while_normal_traffic_pages_nobody(
    alerting: Stack, locust: Process, prometheus: PrometheusAPI, webhook: WebhookReceiver, dependency: Dependency
) -> None:
    started = time.monotonic()
    wait_until(
        lambda: len(prometheus.query("app_name:fastapi_requests:rate5m > 0")) == 3, "Locust traffic on every app", 90
    )
    # A dependency of app-c fails: every /chain of app-c answers 502, the mix's and these.
    dependency.failing = True
    burst = RequestLoop(f"{alerting.apps['app-c'].url}/chain", rate=1).start()
    try:
        page = webhook.wait_for("firing", 90, alertname="SLOAvailabilityFastBurn", app_name="app-c")
        paged_after = time.monotonic() - started
    finally:
        burst.stop()
        dependency.failing = False
    assert page.receiver == "page"
    assert page.labels["severity"] == "page" and page.labels["slo"] == "availability"
    assert burst.results and all(r.status == 502 for r in burst.results), burst.results[:5]
    # The other services keep the normal mix until their designed failures alone, were they
    # counted, would have paged (above 14.4x, when the fast burn fires within seconds).
    wait_until(
        lambda: all(unfiltered_burn(prometheus, service) > 14.4 for service in NORMAL_SERVICES),
        "designed failures at a page-worthy rate on every normal service",
        timeout=240,
        interval=1,
    )
    locust.ensure_alive()
    for service in NORMAL_SERVICES:
        pages = [n for n in webhook.alerts(app_name=service) if n.labels["severity"] == "page"]
        assert not pages, pages
        assert not prometheus.query(f'ALERTS{{app_name="{service}", slo="availability"}}')
    # A latency ticket is no page: on a machine whose cores other work shares, it can be real.
    tickets = sorted({(n.labels["alertname"], n.labels["app_name"]) for n in webhook.alerts(severity="ticket")})
    burns = {service: round(unfiltered_burn(prometheus, service)) for service in NORMAL_SERVICES}
    print(
        f"\n[alerting] fast-burn page for app-c {paged_after:.0f} s after the test started; no page for"
        f" {', '.join(NORMAL_SERVICES)} over {time.monotonic() - started:.0f} s, their designed failures"
        f" at {burns} x the budget; tickets: {tickets or 'none'}"
    )


def test_jaeger_stopped_under_load_pages_its_exporter_then_resolves(
    alerting: Stack, locust: Process, prometheus: PrometheusAPI, webhook: WebhookReceiver
) -> None:
    jaeger = 'exporter="otlp_grpc/jaeger"'
    wait_until(lambda: value(prometheus, f"rate(otelcol_exporter_sent_spans{{{jaeger}}}[10s])"), "spans to Jaeger", 60)
    collector = f"127.0.0.1:{alerting.collector.metrics_port}"
    stopped = time.monotonic()
    alerting.jaeger.process.signal(signal.SIGSTOP)
    try:
        fired = webhook.wait_for("firing", 240, alertname="CollectorExporterStalled", exporter="otlp_grpc/jaeger")
    finally:
        alerting.jaeger.process.signal(signal.SIGCONT)
    resumed = time.monotonic()
    resolved = webhook.wait_for("resolved", 120, alertname="CollectorExporterStalled", exporter="otlp_grpc/jaeger")
    locust.ensure_alive()
    assert fired.receiver == "page"
    assert fired.labels == {
        "alertname": "CollectorExporterStalled",
        "exporter": "otlp_grpc/jaeger",
        "instance": collector,
        "job": "collector",
        "severity": "page",
    }
    assert fired.annotations["dashboard"].endswith("/d/pipeline-health")
    # Its shipped `for:` and window, not a shortcut: two minutes with nothing delivered.
    assert fired.received - stopped >= 110
    # The healthy exporters beside it never stalled.
    assert {n.labels["exporter"] for n in webhook.alerts(alertname="CollectorExporterStalled")} == {"otlp_grpc/jaeger"}
    print(
        f"\n[alerting] Jaeger stopped: stall page after {fired.received - stopped:.0f} s;"
        f" resumed: resolved after {resolved.received - resumed:.0f} s"
    )
