"""backends/alertmanager.yml on the real Alertmanager (built from its module at the .env
version): alerts posted to its API are routed by severity and inhibited as the file says. The
only changes to the shipped file are a webhook to this test on every receiver and 1 s route
timers (nativestack.backends.native_alertmanager_config)."""

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from helpers.webhook import FAST_ROUTE_TIMERS, WebhookReceiver
from nativestack import compose
from nativestack.backends import Alertmanager, start_alertmanager
from nativestack.paths import REPO, binaries
from nativestack.processes import free_port, wait_until


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, webhook: WebhookReceiver) -> Iterator[Alertmanager]:
    running = start_alertmanager(
        compose.load(), tmp_path_factory.mktemp("alertmanager"), webhook.url, FAST_ROUTE_TIMERS
    )
    yield running
    running.process.stop()


def post(alertmanager: Alertmanager, *alerts: dict[str, str]) -> None:
    """Alerts as Prometheus sends them: labels, and an end 5 minutes out (it resends before)."""
    ends = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    body = [{"labels": labels, "annotations": {"summary": "test"}, "endsAt": ends} for labels in alerts]
    httpx.post(f"{alertmanager.url}/api/v2/alerts", json=body, timeout=10).raise_for_status()


def test_pages_and_tickets_reach_their_receivers(alertmanager: Alertmanager, webhook: WebhookReceiver) -> None:
    post(
        alertmanager,
        {"alertname": "RoutePage", "severity": "page"},
        {"alertname": "RouteTicket", "severity": "ticket"},
        {"alertname": "RouteUnknown"},  # no severity: the root route's receiver
    )
    assert webhook.wait_for("firing", 30, alertname="RoutePage").receiver == "page"
    assert webhook.wait_for("firing", 30, alertname="RouteTicket").receiver == "ticket"
    assert webhook.wait_for("firing", 30, alertname="RouteUnknown").receiver == "ticket"


def test_an_slo_page_inhibits_the_same_slos_ticket_only(alertmanager: Alertmanager, webhook: WebhookReceiver) -> None:
    post(
        alertmanager,
        {"alertname": "SLOAvailabilityFastBurn", "severity": "page", "slo": "availability", "app_name": "inh-a"},
        {"alertname": "SLOAvailabilitySlowBurn", "severity": "ticket", "slo": "availability", "app_name": "inh-a"},
        {"alertname": "SLOLatencySlowBurn", "severity": "ticket", "slo": "latency", "app_name": "inh-a"},
        {"alertname": "SLOAvailabilitySlowBurn", "severity": "ticket", "slo": "availability", "app_name": "inh-b"},
    )

    # Alertmanager's own view: only inh-a's availability ticket is muted, by the page.
    def inhibited() -> dict[tuple[str, str], bool] | None:
        alerts = httpx.get(f"{alertmanager.url}/api/v2/alerts", params={"filter": 'app_name=~"inh-.*"'}).json()
        states = {(a["labels"]["alertname"], a["labels"]["app_name"]): bool(a["status"]["inhibitedBy"]) for a in alerts}
        return states if len(states) == 4 else None

    assert wait_until(inhibited, "the four alerts in Alertmanager") == {
        ("SLOAvailabilityFastBurn", "inh-a"): False,
        ("SLOAvailabilitySlowBurn", "inh-a"): True,
        ("SLOLatencySlowBurn", "inh-a"): False,
        ("SLOAvailabilitySlowBurn", "inh-b"): False,
    }
    webhook.wait_for("firing", 30, alertname="SLOAvailabilitySlowBurn", app_name="inh-b")
    webhook.wait_for("firing", 30, alertname="SLOLatencySlowBurn", app_name="inh-a")
    # Posted together, grouped alike: by the time the uninhibited tickets arrived, so would it have.
    assert not webhook.alerts(alertname="SLOAvailabilitySlowBurn", app_name="inh-a")


def test_the_collector_down_mutes_every_missing_spans_alert(
    alertmanager: Alertmanager, webhook: WebhookReceiver
) -> None:
    post(
        alertmanager,
        {"alertname": "ScrapeTargetDown", "severity": "page", "job": "collector", "instance": "collector:8888"},
        {"alertname": "ServiceSpansMissing", "severity": "page", "app_name": "spans-a"},
    )
    webhook.wait_for("firing", 30, alertname="ScrapeTargetDown", job="collector")
    alerts = httpx.get(f"{alertmanager.url}/api/v2/alerts", params={"filter": 'app_name="spans-a"'}).json()
    assert [bool(a["status"]["inhibitedBy"]) for a in alerts] == [True]
    assert not webhook.alerts(alertname="ServiceSpansMissing")


def test_alertmanager_refuses_an_invalid_config(tmp_path: Path) -> None:
    """The same validation stops `make up`: the container exits and never turns healthy."""
    broken = tmp_path / "alertmanager.yml"
    broken.write_text((REPO / "backends" / "alertmanager.yml").read_text().replace("receiver: page", "receiver: pager"))
    argv = [
        str(binaries()["ALERTMANAGER"]),
        f"--config.file={broken}",
        f"--storage.path={tmp_path}",
        f"--web.listen-address=127.0.0.1:{free_port()}",
        "--cluster.listen-address=",
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert 'error loading configuration file: undefined receiver \\"pager\\" used in route' in result.stderr, (
        result.stderr
    )
