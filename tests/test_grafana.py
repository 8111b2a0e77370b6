"""Grafana's data sources and dashboards, proven against the real data of the native stack.

Grafana, Tempo and Loki are AGPL and never run here, so what Grafana would send is rebuilt from
the provisioning files and run against the real programs: every PromQL target (variables set to
real values) against the real Prometheus, exemplar links against the exemplars it really stored,
trace ids found by the Loki derived fields and trace-to-logs queries against the real stdout lines
and OTLP records and the traces in the real Jaeger. LogQL cannot run without Loki: it is parsed
(a strict subset, tests/helpers/grafana.py) and evaluated on the log lines Loki would hold, with
the labels each log path gets in compose.

Dashboard files are valid for the pinned Grafana (12.3) because they are generated with the
official grafana-foundation-sdk (a build from Grafana's main branch after 12.3, pinned in
services/pyproject.toml): its typed builders are checked by mypy in the generator, and here each
committed file must equal the generator's output and round-trip unchanged through the SDK's
dashboard model (a key the model does not know would be dropped), with every panel type and
query type one the SDK has a model for.
"""

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from functools import cache, partial
from typing import Any

import httpx
import pytest
import yaml
from grafana_foundation_sdk.cog import plugins, runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from helpers import grafana as gf
from helpers.clients import JaegerAPI, PrometheusAPI, Trace, otlp_log_records
from helpers.logs import group_lines
from helpers.traffic import Traffic
from nativestack import compose
from nativestack.apps import APP_NAMES
from nativestack.paths import REPO
from nativestack.processes import wait_until
from nativestack.stack import Stack

SLOW = 120  # seconds: span and service-graph metrics flush every 15 s, rate() needs two points
HOME_DASHBOARD = "fastapi-observability.json"
GRAFANA_DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
# Built-in Grafana variables, set as a dashboard would on a 15-minute range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "15m", "__auto": "1m"}
# Where Loki 3 puts an OTLP record's fields (backends/loki.yaml, and "Format considerations" in
# https://grafana.com/docs/loki/v3.7.x/send-data/otel/): resource service.name becomes the index
# label service_name; the ids and severity become structured metadata under these names.
OTLP_METADATA = {"trace_id": "traceId", "span_id": "spanId", "severity_text": "severityText"}
ZERO_TRACE_ID = "0" * 32
# A stdout line's own trace id, as services/app/logging_config.py prints it.
STDOUT_TRACE_ID = re.compile(r"\[trace_id=([0-9a-f]{32}) span_id=")


# ------------------------------------------------------------------------------------ helpers


def app_values(app: str) -> dict[str, str]:
    """Dashboard variables set to one real app (each app is tested on its own)."""
    return {**BUILTINS, "app_name": app, "service": app, "span_kind": "SPAN_KIND_SERVER"}


def promql_targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, dashboard in gf.dashboards().items():
        for panel, target in gf.targets(dashboard):
            if target["datasource"]["type"] == "prometheus":
                yield name, panel, target


def logql_targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, dashboard in gf.dashboards().items():
        for panel, target in gf.targets(dashboard):
            if target["datasource"]["type"] == "loki":
                yield name, panel, target


def poll_all(queries: dict[str, str], prometheus: PrometheusAPI) -> dict[str, list[dict[str, Any]]]:
    """Every query returns a series before the deadline, or the test fails naming the empty ones."""
    # A query Prometheus rejects fails here, not after the deadline.
    results = {key: prometheus.query(promql) for key, promql in queries.items()}

    def probe() -> bool:
        for key, promql in queries.items():
            if not results.get(key):
                results[key] = prometheus.query(promql)
        return all(results.values())

    try:
        wait_until(probe, "every query to return a series", timeout=SLOW, interval=2)
    except TimeoutError:
        empty = {key: queries[key] for key, found in results.items() if not found}
        pytest.fail(f"{len(empty)} queries returned no series:\n" + "\n".join(f"{k}: {q}" for k, q in empty.items()))
    return results


@cache
def compose_spec() -> dict[str, Any]:
    return compose.load()


def driver_labels(service: str) -> dict[str, str]:
    """The stream labels the Loki Docker driver gives a service's stdout lines, from the compose
    file: its external labels, then its relabel config."""
    options = compose_spec()["services"][service]["logging"]["options"]
    labels = {"compose_service": service, "compose_project": "fastapi-observability", "container_name": service}
    for pair in options["loki-external-labels"].split(","):
        key, _, value = pair.partition("=")
        if "{{" not in value:
            labels[key] = value
    for rule in yaml.safe_load(options["loki-relabel-config"]):
        if rule.get("action", "replace") == "replace":
            labels[rule["target_label"]] = ";".join(labels.get(s, "") for s in rule["source_labels"])
        elif rule["action"] == "labeldrop":
            labels = {k: v for k, v in labels.items() if not re.fullmatch(rule["regex"], k)}
    return labels


def driver_entries(stack: Stack) -> list[gf.LogEntry]:
    """The apps' stdout as the driver ships it: one entry per record (a traceback continues the
    line before it: compose's multiline stage starts an entry only at its `firstline`)."""
    entries = []
    for service, app in stack.apps.items():
        options = compose_spec()["services"][service]["logging"]["options"]
        first_line = yaml.safe_load(options["loki-pipeline-stages"])[0]["multiline"]["firstline"]
        for lines in group_lines(app.process.output().splitlines(), first_line):
            entries.append(gf.LogEntry(driver_labels(service), {}, "\n".join(lines)))
    return entries


def otlp_entries(stack: Stack) -> list[gf.LogEntry]:
    """The OTLP records the Collector exported, as Loki would store them."""
    entries = []
    for record in otlp_log_records(stack.loki.records_file):
        metadata = {name: str(record[key]) for name, key in OTLP_METADATA.items() if record.get(key)}
        entries.append(
            gf.LogEntry({"service_name": record["service"]}, metadata, record["body"].get("stringValue", ""))
        )
    return entries


@cache
def sdk_runtime() -> None:
    plugins.register_default_plugins()


def chain_trace(jaeger: JaegerAPI) -> Trace:
    """A /chain trace (app-a -> app-a, app-b, app-c) stored in Jaeger."""
    traces = wait_until(lambda: jaeger.traces("app-a", "GET /chain"), "a /chain trace in Jaeger", timeout=SLOW)
    return traces[0]


# ---------------------------------------------------------------- files: generated and valid


def test_dashboard_files_are_the_generators_output() -> None:
    rendered = gf.generator().render()
    assert set(rendered) == {path.name for path in gf.DASHBOARDS_DIR.glob("*.json")}
    for name, text in rendered.items():
        assert (gf.DASHBOARDS_DIR / name).read_text() == text, f"{name} is stale: run grafana/generate_dashboards.py"


@pytest.mark.parametrize("name", sorted(gf.dashboards()))
def test_dashboard_round_trips_through_the_sdk_model(name: str) -> None:
    sdk_runtime()
    data = gf.dashboards()[name]
    again = json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))
    assert again == data  # nothing unknown to Grafana's dashboard model, nothing lost
    known_panels = set(runtime.Runtime().panelcfg_variants) | {"row"}
    known_queries = set(runtime.Runtime().dataquery_variants)
    for panel in gf.panels(data):
        assert panel["type"] in known_panels, panel["title"]
    for panel, target in gf.targets(data):
        assert target["datasource"]["type"] in known_queries, panel["title"]


def test_dashboards_layout_ids_titles_and_provider() -> None:
    boards = gf.dashboards()
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for name, board in boards.items():
        ids = [panel["id"] for panel in gf.panels(board)]
        assert len(ids) == len(set(ids)), name
        for panel in gf.panels(board):
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            # The reference dashboard's "PR 99"/"PR 90" titles are gone.
            assert not re.search(r"\bPR ?\d", panel["title"]), panel["title"]
            for target in panel.get("targets", []):
                assert target.get("refId"), panel["title"]
    # The provider reads the folder compose mounts the files into.
    spec = compose_spec()["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in spec["volumes"] if str(volume).startswith(".")}
    assert mounts[GRAFANA_DASHBOARDS_MOUNT] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert [p["options"]["path"] for p in gf.dashboard_providers()] == [GRAFANA_DASHBOARDS_MOUNT]
    assert boards[HOME_DASHBOARD]["title"] == "FastAPI Observability"
    home = spec.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home is not None:
        assert home == f"{GRAFANA_DASHBOARDS_MOUNT}/{HOME_DASHBOARD}"


def test_fastapi_dashboard_keeps_the_reference_panels_fixed() -> None:
    board = gf.dashboards()[HOME_DASHBOARD]
    variable = {v["name"]: v for v in board["templating"]["list"]}["app_name"]
    assert variable["multi"] and variable["query"] == "label_values(fastapi_app_info, app_name)"
    titles = {panel["title"]: panel for panel in gf.panels(board)}
    for title in (
        "Total requests",
        "Requests per path",
        "Requests per second by path",
        "Average request duration by path",
        "Percent of 2xx responses",
        "Percent of 5xx responses",
        "Request duration p99 by path",
        "Request duration p90 by path",
        "Requests in progress",
        "Exceptions per second by type",
        "Log lines per second by level",
        "Logs",
    ):
        assert title in titles
    assert all(t.get("exemplar") for t in titles["Request duration p99 by path"]["targets"])
    assert titles["Logs"]["type"] == "logs"


def test_every_datasource_uid_exists() -> None:
    sources = gf.datasources()
    for name, board in gf.dashboards().items():
        for where, ref in gf.datasource_refs(board):
            assert ref["uid"] in sources, f"{name} {where}: unknown uid {ref['uid']}"
            assert sources[ref["uid"]]["type"] == ref["type"], f"{name} {where}"
    links = []
    for uid, source in sources.items():
        data = source.get("jsonData", {})
        links += [(uid, "exemplar", d["datasourceUid"]) for d in data.get("exemplarTraceIdDestinations", [])]
        links += [(uid, "derived field", d["datasourceUid"]) for d in data.get("derivedFields", [])]
        for key in ("tracesToLogsV2", "tracesToMetrics", "serviceMap"):
            if key in data:
                links.append((uid, key, data[key]["datasourceUid"]))
    for uid, kind, target in links:
        assert target in sources, f"{uid} {kind} -> unknown uid {target}"
    # Each correlation the issue asks for is there.
    kinds = {(uid, kind) for uid, kind, _ in links}
    for needed in [
        ("prometheus", "exemplar"),
        ("tempo", "tracesToLogsV2"),
        ("tempo", "tracesToMetrics"),
        ("tempo", "serviceMap"),
        ("jaeger", "tracesToLogsV2"),
        ("jaeger", "tracesToMetrics"),
        ("loki", "derived field"),
    ]:
        assert needed in kinds
    assert {d["datasourceUid"] for d in sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]} == {
        "tempo",
        "jaeger",
    }
    assert {d["datasourceUid"] for d in sources["loki"]["jsonData"]["derivedFields"]} == {"tempo", "jaeger"}
    assert (
        sources["tempo"]["jsonData"]["nodeGraph"]["enabled"] and sources["jaeger"]["jsonData"]["nodeGraph"]["enabled"]
    )


def test_provisioning_escapes_every_dollar() -> None:
    # gf.datasources() raises on a single `$`; Grafana's own variables survive as `${...}`.
    sources = gf.datasources()
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["query"].count("${__span.traceId}") == 2
    assert "{${__tags}}" in sources["tempo"]["jsonData"]["tracesToLogsV2"]["query"]
    for field in sources["loki"]["jsonData"]["derivedFields"]:
        assert field["url"] == "${__value.raw}"
    for query in sources["tempo"]["jsonData"]["tracesToMetrics"]["queries"]:
        assert "$__tags" in query["query"]


def test_logql_targets_parse_and_select_labels_both_log_paths_have() -> None:
    # Stream labels: service_name on both paths (OTLP: resource service.name, an index label in
    # backends/loki.yaml; driver: compose's relabel), log_source only on driver lines.
    driver = {label for service in APP_NAMES for label in driver_labels(service)}
    assert {"service_name", "log_source"} <= driver
    assert "service.name" in (REPO / "backends" / "loki.yaml").read_text()
    stream_labels = {"service_name", "log_source"}
    found = 0
    for name, panel, target in logql_targets():
        query = gf.parse_logql(gf.interpolate(target["expr"], app_values("app-a")))
        assert query.stream_labels() <= stream_labels, f"{name} {panel['title']}"
        assert set(query.grouping) <= stream_labels | set(OTLP_METADATA), f"{name} {panel['title']}"
        found += 1
    assert found >= 2  # the log panel and the log-rate panel


# ------------------------------------------------------------------------ against real data


def label_values(prometheus: PrometheusAPI, label: str, selector: str) -> list[str]:
    url = f"{prometheus.url}/api/v1/label/{label}/values"
    found: list[str] = httpx.get(url, params={"match[]": selector}, timeout=10).json()["data"]
    return found


def test_variable_queries_return_the_apps(stack: Stack, traffic: Traffic, prometheus: PrometheusAPI) -> None:
    expected = {
        "app_name": set(APP_NAMES),
        "service": set(APP_NAMES),
        "span_kind": {"SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"},
    }
    for board in gf.dashboards().values():
        for variable in board.get("templating", {}).get("list", []):
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
            assert match, variable["query"]
            selector = gf.interpolate(match.group(1), {"service": "|".join(APP_NAMES)})
            probe = partial(label_values, prometheus, match.group(2), selector)
            wanted = expected[variable["name"]]
            wait_until(lambda: wanted <= set(probe()), f"values of ${variable['name']}", timeout=SLOW)  # noqa: B023


@pytest.mark.parametrize("app", APP_NAMES)
def test_every_promql_target_returns_series(
    app: str, stack: Stack, traffic: Traffic, prometheus: PrometheusAPI
) -> None:
    queries = {
        f"{name} / {panel['title']} / {target['refId']}": gf.interpolate(target["expr"], app_values(app))
        for name, panel, target in promql_targets()
    }
    assert len(queries) >= 30
    poll_all(queries, prometheus)


def test_counters_are_shown_through_rate_or_increase(stack: Stack, traffic: Traffic, prometheus: PrometheusAPI) -> None:
    """The reference dashboard showed raw counters; here every counter (as Prometheus' own
    metadata types it) and every histogram series is read through rate() or increase()."""
    names = {metric for _, _, target in promql_targets() for metric in gf.metric_names(target["expr"])}
    metadata = httpx.get(f"{prometheus.url}/api/v1/metadata", timeout=10).json()["data"]
    checked = 0
    for metric in sorted(names):
        family = re.sub(r"_(bucket|sum|count|total)$", "", metric)
        types = {entry["type"] for entry in metadata.get(metric, []) + metadata.get(family, [])}
        cumulative = (
            "counter" in types or "histogram" in types or metric.endswith(("_total", "_bucket", "_sum", "_count"))
        )
        if not cumulative:
            continue
        checked += 1
        for _, panel, target in promql_targets():
            assert not gf.counter_uses_outside_rate(target["expr"], metric), f"{panel['title']}: raw counter {metric}"
    assert checked >= 15


def test_exemplar_destinations_match_the_stored_exemplars(
    stack: Stack, traffic: Traffic, prometheus: PrometheusAPI, jaeger: JaegerAPI, tempo: JaegerAPI
) -> None:
    destinations = gf.datasources()["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    exemplar_targets = [(panel, target) for _, panel, target in promql_targets() if target.get("exemplar")]
    assert len(exemplar_targets) >= 4  # p99, p90, OTel SDK p95, span-metrics p95
    for panel, target in exemplar_targets:
        expr = gf.interpolate(target["expr"], app_values("app-a"))
        found = wait_until(partial(prometheus.exemplars, expr), f"exemplars for {panel['title']}", timeout=SLOW)
        exemplars = [exemplar for series in found for exemplar in series["exemplars"]]
        for destination in destinations:
            assert all(destination["name"] in exemplar["labels"] for exemplar in exemplars), panel["title"]
        # The link leads somewhere: the trace is in both backends.
        trace_id = exemplars[-1]["labels"][destinations[0]["name"]]
        for api in (jaeger, tempo):
            wait_until(partial(api.trace, trace_id), f"exemplar trace {trace_id}", timeout=SLOW)


def test_loki_text_derived_fields_extract_real_trace_ids(
    stack: Stack, traffic: Traffic, jaeger: JaegerAPI, tempo: JaegerAPI
) -> None:
    fields = [
        f for f in gf.datasources()["loki"]["jsonData"]["derivedFields"] if f.get("matcherType", "regex") == "regex"
    ]
    assert {f["datasourceUid"] for f in fields} == {"tempo", "jaeger"}
    entries = driver_entries(stack)
    otlp = otlp_entries(stack)
    sampled: dict[str, set[str]] = defaultdict(set)
    for field in fields:
        pattern = re.compile(field["matcherRegex"])
        for entry in entries:
            own = STDOUT_TRACE_ID.search(entry.line)
            match = pattern.search(entry.line)
            if own is None or own.group(1) == ZERO_TRACE_ID:
                assert match is None, f"link for a line outside any request: {entry.line}"
            else:
                assert match and match.group(1) == own.group(1), entry.line
                sampled[entry.labels["service_name"]].add(own.group(1))
        # OTLP bodies carry no id in the text: no false link there.
        assert not any(pattern.search(e.line) for e in otlp)
    assert set(sampled) == set(APP_NAMES)
    for ids in sampled.values():
        for trace_id in sorted(ids)[:3]:
            for api in (jaeger, tempo):
                wait_until(partial(api.trace, trace_id), f"trace {trace_id} from a log line", timeout=SLOW)


def test_otlp_log_records_carry_the_trace_id_the_label_field_reads(
    stack: Stack, traffic: Traffic, jaeger: JaegerAPI
) -> None:
    fields = [f for f in gf.datasources()["loki"]["jsonData"]["derivedFields"] if f.get("matcherType") == "label"]
    assert {f["datasourceUid"] for f in fields} == {"tempo", "jaeger"}
    assert {f["matcherRegex"] for f in fields} == {"^trace_id$"}
    entries = wait_until(
        lambda: [e for e in otlp_entries(stack) if e.metadata.get("trace_id", ZERO_TRACE_ID).strip("0")],
        "OTLP log records with a trace id",
        timeout=SLOW,
    )
    assert {e.labels["service_name"] for e in entries} == set(APP_NAMES)
    for entry in entries[:5]:
        assert re.fullmatch(r"[0-9a-f]{32}", entry.metadata["trace_id"])
        wait_until(partial(jaeger.trace, entry.metadata["trace_id"]), "trace of an OTLP record", timeout=SLOW)


@pytest.mark.parametrize("uid", ["tempo", "jaeger"])
def test_traces_to_logs_finds_the_trace_on_both_log_paths(
    uid: str, stack: Stack, traffic: Traffic, jaeger: JaegerAPI
) -> None:
    settings = gf.datasources()[uid]["jsonData"]["tracesToLogsV2"]
    assert settings["customQuery"] and settings["datasourceUid"] == "loki"
    trace = chain_trace(jaeger)
    wait_until(lambda: otlp_entries(stack), "OTLP log records", timeout=SLOW)
    entries = driver_entries(stack) + otlp_entries(stack)
    for span in trace.spans:
        # Jaeger's API carries the service.name resource attribute as the process serviceName;
        # Tempo hands it to Grafana as the span's `service.name` tag.
        tags = {**span.resource, "service.name": span.service}
        mapped = [f'{tag.get("value") or tag["key"]}="{tags[tag["key"]]}"' for tag in settings.get("tags", [])]
        query_text = gf.interpolate(
            settings["query"],
            {"__tags": ", ".join(mapped), "__span.traceId": trace.trace_id, "__trace.traceId": trace.trace_id},
        )
        query = gf.parse_logql(query_text)
        kept = gf.evaluate(query, entries)
        paths = {"docker_driver" if e.labels.get("log_source") == "docker_driver" else "otlp" for e, _ in kept}
        assert paths == {"docker_driver", "otlp"}, f"{span.service} {span.name}: {query_text}"
        for entry, _ in kept:
            assert trace.trace_id in entry.line or entry.metadata.get("trace_id") == trace.trace_id
        services = {e.labels["service_name"] for e, _ in kept}
        assert span.service in services
    # The mapped tags are attributes real spans carry, and name labels the logs really have.
    for tag in settings.get("tags", []):
        assert tag["key"] == "service.name", tag  # the only mapping: present on every span
        assert {span.service for span in trace.spans} == set(APP_NAMES)
        for service in APP_NAMES:
            assert compose.service_environment(compose_spec(), service)["OTEL_SERVICE_NAME"] == service
            assert driver_labels(service)["service_name"] == service


@pytest.mark.parametrize("uid", ["tempo", "jaeger"])
def test_traces_to_metrics_queries_return_series(
    uid: str, stack: Stack, traffic: Traffic, prometheus: PrometheusAPI, jaeger: JaegerAPI
) -> None:
    settings = gf.datasources()[uid]["jsonData"]["tracesToMetrics"]
    assert settings["datasourceUid"] == "prometheus" and len(settings["queries"]) == 3
    span = next(span for span in chain_trace(jaeger).spans if span.service == "app-a")
    tags = {**span.resource, "service.name": span.service}  # see the traces-to-logs test
    for tag in settings["tags"]:
        assert tag["key"] in tags, f"{tag['key']} is on no real span of {uid}"
    matchers = ", ".join(f'{tag.get("value") or tag["key"]}="{tags[tag["key"]]}"' for tag in settings["tags"])
    queries = {q["name"]: gf.interpolate(q["query"], {**BUILTINS, "__tags": matchers}) for q in settings["queries"]}
    poll_all(queries, prometheus)


def test_service_map_metrics_exist(stack: Stack, traffic: Traffic, prometheus: PrometheusAPI) -> None:
    """Tempo's service map reads these from its serviceMap data source (Prometheus)."""
    assert gf.datasources()["tempo"]["jsonData"]["serviceMap"]["datasourceUid"] == "prometheus"
    found = poll_all(
        {
            "requests": "sum by (client, server) (rate(traces_service_graph_request_total[15m]))",
            "server latency": "sum by (client, server, le) (rate(traces_service_graph_request_server_seconds_bucket[15m]))",
            "client latency": "sum by (client, server, le) (rate(traces_service_graph_request_client_seconds_bucket[15m]))",
        },
        prometheus,
    )
    edges = {(s["metric"]["client"], s["metric"]["server"]) for s in found["requests"]}
    assert {("app-a", "app-b"), ("app-a", "app-c")} <= edges  # /chain's calls


def test_log_panels_select_real_otlp_records(stack: Stack, traffic: Traffic) -> None:
    entries = wait_until(lambda: otlp_entries(stack), "OTLP log records", timeout=SLOW) + driver_entries(stack)
    for name, panel, target in logql_targets():
        query = gf.parse_logql(gf.interpolate(target["expr"], app_values("app-a")))
        kept = gf.evaluate(query, entries)
        assert kept, f"{name} {panel['title']}"
        # The OTLP copy only (driver lines would show every record twice).
        assert all(entry.labels.get("log_source") != "docker_driver" for entry, _ in kept)
        assert {entry.labels["service_name"] for entry, _ in kept} == {"app-a"}
        for entry, labels in kept:
            for label in query.grouping:
                assert labels.get(label), f"{panel['title']}: no {label} on {entry}"
