"""The recording and alerting rules in backends/rules/: valid for promtool, unit-tested for each
alert (backends/rules/tests/), routed and annotated as the README promises, evaluated by the
native stack's real Prometheus against real series, and refused loudly when broken."""

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from helpers.clients import PrometheusAPI
from helpers.traffic import Traffic
from nativestack.backends import native_prometheus_config
from nativestack.paths import REPO, binaries
from nativestack.processes import free_port, start, wait_until
from nativestack.stack import Stack

RULES = REPO / "backends" / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
UNIT_TESTS = sorted((RULES / "tests").glob("*.yml"))
GRAFANA_URL = "http://127.0.0.1:3000"  # where compose publishes Grafana


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [str(binaries()["PROMTOOL"]), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def rules() -> list[dict[str, Any]]:
    return [
        rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_rule_files_pass_promtool_check_rules() -> None:
    assert RULE_FILES
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", *RULE_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    assert UNIT_TESTS
    result = promtool("test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """Each alert has an evaluation where it must fire and one where it must stay quiet."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(alerts()) <= fired, f"never tested firing: {set(alerts()) - fired}"
    assert set(alerts()) <= quiet, f"never tested quiet: {set(alerts()) - quiet}"


def test_every_alert_is_routed_and_says_what_to_check() -> None:
    routes = yaml.safe_load((REPO / "backends" / "alertmanager.yml").read_text())["route"]["routes"]
    routed = {matcher for route in routes for matcher in route["matchers"]}
    dashboards = {json.loads(p.read_text())["uid"] for p in (REPO / "grafana" / "dashboards").glob("*.json")}
    pipeline = {r["alert"] for g in yaml.safe_load((RULES / "pipeline.yml").read_text())["groups"] for r in g["rules"]}
    for name, rule in alerts().items():
        assert f'severity="{rule["labels"]["severity"]}"' in routed, f"{name}: no route for its severity"
        annotations = rule["annotations"]
        assert annotations["summary"] and len(annotations["description"]) > 80, name
        uid = annotations["dashboard"].removeprefix(f"{GRAFANA_URL}/d/")
        assert uid in dashboards, f"{name}: {annotations['dashboard']} is no provisioned dashboard"
        if name in pipeline:
            assert uid == "pipeline-health", name
        else:
            assert rule["labels"]["slo"] in ("availability", "latency"), name


def broken_rules(tmp_path: Path) -> Path:
    """pipeline.yml with one parenthesis too many in CollectorQueueNearlyFull."""
    text = (RULES / "pipeline.yml").read_text()
    broken = text.replace("otelcol_exporter_queue_capacity) > 0.8", "otelcol_exporter_queue_capacity)) > 0.8")
    assert broken != text
    path = tmp_path / "pipeline.yml"
    path.write_text(broken)
    return path


def test_an_invalid_rule_file_fails_promtool_with_a_readable_message(tmp_path: Path) -> None:
    result = promtool("check", "rules", broken_rules(tmp_path))
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "FAILED" in message
    assert 'group "pipeline", rule 4, "CollectorQueueNearlyFull": could not parse expression' in message, message
    assert "unexpected right parenthesis" in message, message


def test_prometheus_refuses_to_start_with_an_invalid_rule_file(tmp_path: Path) -> None:
    """What `make up` meets: Prometheus exits at start, so its container never turns healthy
    and `docker compose up --wait` fails."""
    config = tmp_path / "prometheus.yml"
    native_prometheus_config({}, config)
    settings = yaml.safe_load(config.read_text())
    settings["rule_files"] = [str(broken_rules(tmp_path))]
    config.write_text(yaml.safe_dump(settings))
    argv = [
        str(binaries()["PROMETHEUS"]),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{free_port()}",
    ]
    process = start("prometheus-bad-rules", argv, {}, tmp_path)
    try:
        wait_until(lambda: not process.alive(), "Prometheus to exit on the invalid rule file")
    finally:
        process.stop()
    assert process.popen.returncode != 0
    log = process.output()
    assert "Error loading rule file patterns from config" in log, log[-2000:]
    assert "CollectorQueueNearlyFull" in log and "unexpected right parenthesis" in log, log[-2000:]


# ---------------------------------------------------------------- on the native stack


def test_the_native_prometheus_evaluates_every_rule_without_error(
    stack: Stack, traffic: Traffic, prometheus: PrometheusAPI
) -> None:
    def loaded() -> list[dict[str, Any]] | None:
        groups: list[dict[str, Any]] = httpx.get(f"{stack.prometheus.url}/api/v1/rules", timeout=10).json()["data"][
            "groups"
        ]
        evaluated = all(rule.get("lastEvaluation", "").startswith("20") for g in groups for rule in g["rules"])
        return groups if groups and evaluated else None

    groups = wait_until(loaded, "every rule group evaluated once", timeout=60)
    expected = {g["name"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]}
    assert {g["name"] for g in groups} == expected
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not broken, broken


def test_the_rules_read_series_the_stack_really_has(stack: Stack, traffic: Traffic, prometheus: PrometheusAPI) -> None:
    """Names, labels and label values as Prometheus stores them (a unit test with a wrong name
    would pass on its own made-up series)."""
    apps = {"app-a", "app-b", "app-c"}

    def per_app(record: str) -> set[str] | None:
        found = {series["metric"]["app_name"] for series in prometheus.query(record)}
        return found if found == apps else None

    # The apps' scraped metrics and the Collector's span metrics, matched one to one by app_name.
    for record in (
        "app_name:fastapi_requests:rate5m",
        "app_name:traces_server_spans:rate5m",
        "app_name:slo_latency_slow:ratio_rate5m",
    ):
        wait_until(functools.partial(per_app, record), f"{record} for every app", timeout=90)
    # The availability SLI's denominator; its numerator exists only once a real 5xx happened.
    assert per_app('sum by (app_name) (rate(fastapi_responses_total{path!~"/error_test|/random_status"}[5m]))')
    # The routes the SLIs leave out, under the label values the matchers name.
    for path, status in (("/error_test", "500"), ("/random_status", None), ("/io_task", None), ("/chain", None)):
        selector = f'path="{path}"' + (f', status_code="{status}"' if status else "")
        assert prometheus.query(f"fastapi_responses_total{{{selector}}}"), selector
    assert prometheus.query('fastapi_requests_duration_seconds_bucket{le="0.5"}')
    # The Collector's own metrics the pipeline alerts read, by their stored names.
    for name in (
        "otelcol_receiver_refused_spans",
        "otelcol_receiver_refused_metric_points",
        "otelcol_receiver_refused_log_records",
        "otelcol_exporter_queue_size",
        "otelcol_exporter_queue_capacity",
        "otelcol_exporter_sent_spans",
        "otelcol_exporter_sent_metric_points",
        "otelcol_exporter_sent_log_records",
    ):
        assert prometheus.query(f'{name}{{job="collector"}}'), name
    assert {s["metric"]["exporter"] for s in prometheus.query('otelcol_exporter_queue_size{job="collector"}')} == {
        "otlp_grpc/tempo",
        "otlp_grpc/jaeger",
        "otlp_http/prometheus",
        "otlp_http/loki",
    }
