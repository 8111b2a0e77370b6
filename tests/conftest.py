"""Session fixtures: the native stack (real Collector, Jaeger, Prometheus, the three apps
launched as their containers run them) and one bounded round of traffic through it."""

from collections.abc import Iterator
from typing import Any

import pytest

from helpers import figures as figures_file
from helpers.clients import JaegerAPI, PrometheusAPI
from helpers.traffic import Traffic, drive
from helpers.webhook import WebhookReceiver
from nativestack.processes import stop_everything_on_sigterm
from nativestack.stack import Stack, start_stack


def pytest_configure(config: pytest.Config) -> None:
    stop_everything_on_sigterm()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def traffic(stack: Stack) -> Traffic:
    return drive({name: app.url for name, app in stack.apps.items()})


@pytest.fixture(scope="session")
def jaeger(stack: Stack) -> JaegerAPI:
    return JaegerAPI(stack.jaeger.api_url)


@pytest.fixture(scope="session")
def tempo(stack: Stack) -> JaegerAPI:
    """The Tempo stand-in's API (a second Jaeger)."""
    return JaegerAPI(stack.tempo.api_url)


@pytest.fixture(scope="session")
def prometheus(stack: Stack) -> PrometheusAPI:
    return PrometheusAPI(stack.prometheus.url)


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, Any]]:
    """What a fault-test module measured, merged into reports/reliability.json at its end."""
    recorded: dict[str, Any] = {}
    yield recorded
    figures_file.save(recorded)


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    """A stand-in pager for the module's Alertmanager (tests/helpers/webhook.py)."""
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()
