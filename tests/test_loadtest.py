"""The Locust mix (loadtest/locustfile.py) runs headless against the apps and calls every
endpoint of the three services by its readable name, with no failure but the designed ones.

The apps are a trio of their own, launched like the session stack's (the Dockerfile's CMD,
compose's environment, instrumented by the agent) but with their exporters set to `none`: the
session stack's Collector counts every span exactly (test_pipeline_e2e.py), and a load test
pointed at it would break those counts. Bounded: 15 s of load (every weight-2 endpoint of app-b/c is then
picked ~25 times on average), at most 90 s in all.
"""

import csv
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from app.main import app as fastapi_app
from nativestack import compose
from nativestack.apps import APP_NAMES, CONTAINER_PORT, App, locust_command, start_apps
from nativestack.processes import free_port

# The bad-input cases the mix adds to the routes (loadtest/locustfile.py ENDPOINTS).
ERROR_CASES = ("GET /items/{item_id} (not an integer: 422)", "GET /no/such/path (unknown path: 404)")
NO_EXPORT = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, App]]:
    workdir = tmp_path_factory.mktemp("loadtest-apps")
    spec = compose.load()
    ports = {name: free_port() for name in APP_NAMES}
    addresses = {f"{name}:{CONTAINER_PORT}": f"127.0.0.1:{port}" for name, port in ports.items()}
    started = start_apps(spec, workdir, addresses, ports, overrides=NO_EXPORT, prefix="loadtest-")
    try:
        yield started
    finally:
        for app in started.values():
            app.process.stop()


@pytest.fixture(scope="module")
def locust_stats(apps: dict[str, App], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    prefix = tmp_path_factory.mktemp("locust") / "run"
    argv = locust_command(
        apps,
        "--headless",
        "--users",
        "60",
        "--spawn-rate",
        "60",
        "--run-time",
        "15s",
        "--stop-timeout",
        "8",  # /random_sleep takes up to 5 s: let running requests finish
        "--wait-min",
        "0",
        "--wait-max",
        "0.1",
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, env=os.environ.copy())
    failures = Path(f"{prefix}_failures.csv")
    assert result.returncode == 0, (
        f"locust exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
        + (failures.read_text() if failures.exists() else "")
    )
    with Path(f"{prefix}_stats.csv").open() as stats:
        return {row["Name"]: row for row in csv.DictReader(stats) if row["Name"] != "Aggregated"}


def test_every_endpoint_of_every_app_was_called_by_name(locust_stats: dict[str, dict[str, str]]) -> None:
    routes = sorted(route.path for route in fastapi_app.routes if isinstance(route, APIRoute))
    assert {"/", "/chain", "/random_sleep", "/error_test", "/healthz", "/metrics"} <= set(routes)
    expected = {f"{app} GET {route}" for app in APP_NAMES for route in routes}
    expected |= {f"{app} {case}" for app in APP_NAMES for case in ERROR_CASES}
    called = {name for name, row in locust_stats.items() if int(row["Request Count"]) > 0}
    assert expected - called == set(), f"never called: {sorted(expected - called)}"
    assert called - expected == set(), f"unexpected request names: {sorted(called - expected)}"


def test_no_failure_but_the_designed_ones(locust_stats: dict[str, dict[str, str]]) -> None:
    failing = {name: row["Failure Count"] for name, row in locust_stats.items() if int(row["Failure Count"])}
    assert failing == {}
    # The designed errors were answered and counted as successes.
    for app in APP_NAMES:
        assert int(locust_stats[f"{app} GET /error_test"]["Request Count"]) > 0
        assert int(locust_stats[f"{app} GET /random_status"]["Request Count"]) > 0
