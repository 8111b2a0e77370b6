"""The services' own behaviour, no Collector needed.

In-process checks go through FastAPI's TestClient; the last ones run the real container command
(the Dockerfile's CMD, from services/, with services/otel.env) on a free loopback port with the
console span exporter, and stop it by PID.
"""

import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanContext
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Receive, Scope, Send

from app.logging_config import (
    FIRST_LINE_REGEX,
    LINE_REGEX,
    LineFormatter,
    SkipLoggedExceptions,
)
from app.main import app, settings
from app.metrics import UNMATCHED_PATH
from app.telemetry import sampled_trace_id
from helpers.exposition import OPENMETRICS
from nativestack.apps import SERVICES_DIR, VENV_BIN, container_command
from nativestack.paths import read_env_file
from nativestack.processes import free_port, start, wait_until

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


# ---------------------------------------------------------------- in process


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, {"app_name": settings.app_name, **labels})
    return value or 0.0


def test_items_takes_an_integer_and_answers_422_json_otherwise(client: TestClient) -> None:
    assert client.get("/items/42", params={"q": "x"}).json() == {"item_id": 42, "q": "x"}
    response = client.get("/items/forty-two")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"][0]["loc"] == ["path", "item_id"]


def test_path_label_is_the_route_template(client: TestClient) -> None:
    labels = {"method": "GET", "path": "/items/{item_id}"}
    requests = sample("fastapi_requests_total", **labels)
    ok = sample("fastapi_responses_total", status_code="200", **labels)
    invalid = sample("fastapi_responses_total", status_code="422", **labels)
    client.get("/items/1")
    client.get("/items/2")
    client.get("/items/x")
    assert sample("fastapi_requests_total", **labels) == requests + 3
    assert sample("fastapi_responses_total", status_code="200", **labels) == ok + 2
    assert sample("fastapi_responses_total", status_code="422", **labels) == invalid + 1
    assert sample("fastapi_requests_duration_seconds_count", **labels) >= 3
    assert sample("fastapi_requests_in_progress", **labels) == 0


def test_unmatched_paths_share_one_series(client: TestClient) -> None:
    labels = {"method": "GET", "path": UNMATCHED_PATH}
    before = sample("fastapi_responses_total", status_code="404", **labels)
    paths = [f"/no-such-{uuid.uuid4().hex}" for _ in range(3)]
    for path in paths:
        assert client.get(path).status_code == 404
    assert sample("fastapi_responses_total", status_code="404", **labels) == before + 3
    exposition = client.get("/metrics").text
    assert not any(path in exposition for path in paths)


def test_wrong_method_counts_under_its_route(client: TestClient) -> None:
    labels = {"method": "POST", "path": "/"}
    before = sample("fastapi_responses_total", status_code="405", **labels)
    assert client.post("/").status_code == 405
    assert sample("fastapi_responses_total", status_code="405", **labels) == before + 1


def test_unhandled_exception_is_500_counted_and_logged_once(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    labels = {"method": "GET", "path": "/error_test"}
    exceptions = sample("fastapi_exceptions_total", exception_type="ValueError", **labels)
    errors = sample("fastapi_responses_total", status_code="500", **labels)
    with caplog.at_level(logging.INFO):
        response = client.get("/error_test")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}
    assert response.headers["connection"] == "close"  # uvicorn closes it after an unhandled exception
    assert sample("fastapi_exceptions_total", exception_type="ValueError", **labels) == exceptions + 1
    assert sample("fastapi_responses_total", status_code="500", **labels) == errors + 1
    logged = [r for r in caplog.records if r.name == "app.main" and r.exc_info]
    assert len(logged) == 1
    assert logged[0].exc_info is not None and isinstance(logged[0].exc_info[1], ValueError)
    # uvicorn's own "Exception in ASGI application" record for it would be dropped.
    assert not SkipLoggedExceptions().filter(logged[0])


def test_health_and_metrics_are_not_counted(client: TestClient) -> None:
    assert client.get("/healthz").text == "ok"
    assert client.get("/metrics").status_code == 200
    for path in ("/healthz", "/metrics"):
        assert sample("fastapi_requests_total", method="GET", path=path) == 0


def test_oversized_headers_get_431_and_are_counted(client: TestClient) -> None:
    labels = {"method": "GET", "path": "/"}
    before = sample("fastapi_responses_total", status_code="431", **labels)
    response = client.get("/", headers={"x-padding": "a" * (17 * 1024)})
    assert response.status_code == 431
    assert sample("fastapi_responses_total", status_code="431", **labels) == before + 1
    assert client.get("/", headers={"x-padding": "a" * 1024}).status_code == 200


def test_exposition_follows_the_accept_header(client: TestClient) -> None:
    client.get("/")
    plain = client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "fastapi_requests_total{" in plain.text
    assert "# {" not in plain.text
    openmetrics = client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert f'fastapi_app_info{{app_name="{settings.app_name}"}} 1.0' in openmetrics.text


def in_span(asgi_app: ASGIApp, provider: TracerProvider, trace_ids: list[str]) -> ASGIApp:
    """`asgi_app` with each HTTP request inside a span of `provider`, as the agent would do."""
    tracer = provider.get_tracer("unit-test")

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await asgi_app(scope, receive, send)
            return
        with tracer.start_as_current_span("request") as span:
            trace_ids.append(trace.format_trace_id(span.get_span_context().trace_id))
            await asgi_app(scope, receive, send)

    return wrapper


def test_duration_exemplar_carries_the_sampled_trace_id() -> None:
    trace_ids: list[str] = []
    with TestClient(in_span(app, TracerProvider(), trace_ids)) as traced_client:
        assert traced_client.get("/items/7").status_code == 200
        exposition = traced_client.get("/metrics", headers={"Accept": OPENMETRICS}).text
    assert len(trace_ids) == 2 and TRACE_ID.match(trace_ids[0])  # /items/7, then /metrics
    exemplar_lines = [line for line in exposition.splitlines() if f'# {{trace_id="{trace_ids[0]}"}}' in line]
    assert len(exemplar_lines) == 1
    assert exemplar_lines[0].startswith("fastapi_requests_duration_seconds_bucket{")
    assert 'path="/items/{item_id}"' in exemplar_lines[0]


def test_trace_id_for_exemplars_only_when_sampled() -> None:
    assert sampled_trace_id() is None  # no span
    with TracerProvider(sampler=ALWAYS_OFF).get_tracer("t").start_as_current_span("off"):
        assert sampled_trace_id() is None
    with TracerProvider().get_tracer("t").start_as_current_span("on") as span:
        assert sampled_trace_id() == trace.format_trace_id(span.get_span_context().trace_id)


# ---------------------------------------------------------------- the log line


def log_record(message: str, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app.main", logging.ERROR, __file__, 1, message, None, exc_info)
    record.__dict__.update(extra)
    return record


def test_line_without_trace_fields_gets_zero_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "svc-x")
    line = LineFormatter().format(log_record("hello"))
    match = re.match(LINE_REGEX, line)
    assert match, line
    assert match["trace_id"] == "0" * 32 and match["span_id"] == "0" * 16
    assert match["service"] == "svc-x" and match["level"] == "ERROR"
    assert match["logger"] == "app.main" and match["message"] == "hello"
    assert match["time"].endswith("Z")


def test_line_carries_the_current_spans_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "app-a")
    context = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=False)
    with trace.use_span(NonRecordingSpan(context)):
        line = LineFormatter().format(log_record("hi"))
    match = re.match(LINE_REGEX, line)
    assert match, line
    assert (match["trace_id"], match["span_id"], match["service"]) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "app-a",
    )


def test_traceback_groups_under_its_first_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        exc_info = sys.exc_info()
    text = LineFormatter().format(log_record("failed\nto do it", exc_info=exc_info))
    lines = text.splitlines()
    first_line = re.compile(FIRST_LINE_REGEX)
    assert [bool(first_line.match(line)) for line in lines] == [True] + [False] * (len(lines) - 1)
    assert re.match(LINE_REGEX, lines[0]) and lines[0].endswith("failed\\nto do it")
    assert lines[1] == "Traceback (most recent call last):"
    assert "ValueError: boom" in text


# ---------------------------------------------------------------- the real command


def otel_env() -> dict[str, str]:
    return read_env_file(SERVICES_DIR / "otel.env")


class Service:
    """The container command as a child process (nativestack.processes: own session, output in a
    file, stopped by PID), with services/otel.env and `overrides` as its environment."""

    def __init__(self, tmp_path: Path, **overrides: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **otel_env(),
            "PORT": str(self.port),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
            **overrides,
        }
        self.process = start(f"service-{self.port}", container_command(), env, tmp_path, cwd=SERVICES_DIR)

        def healthy() -> bool:
            self.process.ensure_alive()
            return httpx.get(f"{self.url}/healthz").status_code == 200

        wait_until(healthy, "/healthz")

    def stop(self) -> int:
        """SIGTERM to gunicorn's PID, as `docker stop` does; SIGKILL the group if it hangs."""
        return self.process.stop(timeout=30)

    def text(self) -> str:
        return self.process.output()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def factory(**overrides: str) -> Service:
        service = Service(tmp_path, **overrides)
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


def console_spans(text: str) -> list[dict[str, Any]]:
    """The JSON objects ConsoleSpanExporter printed among the log lines."""
    decoder = json.JSONDecoder()
    spans = []
    for match in re.finditer(r"^\{$", text, re.MULTILINE):
        span, _ = decoder.raw_decode(text, match.start())
        spans.append(span)
    return spans


def test_real_command_traces_logs_and_flushes_on_sigterm(service_factory: Callable[..., Service]) -> None:
    # The batch delay is far longer than the test: only the SIGTERM flush can print the spans.
    service = service_factory(
        OTEL_SERVICE_NAME="unit-app",
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    remote_trace, remote_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with httpx.Client(base_url=service.url) as http:
        assert http.get("/").status_code == 200
        assert http.get("/items/1", headers={"traceparent": f"00-{remote_trace}-{remote_span}-01"}).status_code == 200
        hostile = {"traceparent": "00-" + "z" * 32 + "-" + "0" * 16 + "-01", "baggage": ";;;===%%%," * 500}
        assert http.get("/items/2", headers=hostile).status_code == 200
        assert http.get("/error_test").status_code == 500
        assert http.get("/healthz").status_code == 200
        exposition = http.get("/metrics", headers={"Accept": OPENMETRICS}).text
    assert service.stop() == 0

    output = service.text()
    spans = console_spans(output)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert set(by_name) == {"GET /", "GET /items/{item_id}", "GET /error_test"}, "no send/receive, health or metrics"
    assert all(span["resource"]["attributes"]["service.name"] == "unit-app" for span in spans)
    propagated, fresh = sorted(
        by_name["GET /items/{item_id}"], key=lambda s: s["context"]["trace_id"] != f"0x{remote_trace}"
    )
    assert propagated["context"]["trace_id"] == f"0x{remote_trace}" and propagated["parent_id"] == f"0x{remote_span}"
    assert fresh["parent_id"] is None and fresh["context"]["trace_id"] != "0x" + "0" * 32
    (error,) = by_name["GET /error_test"]
    assert error["status"]["status_code"] == "ERROR"
    assert [event["name"] for event in error["events"]] == ["exception"]

    span_trace_ids = {span["context"]["trace_id"][2:] for span in spans}
    exemplars = set(re.findall(r'# \{trace_id="([0-9a-f]{32})"\}', exposition))
    assert exemplars and exemplars <= span_trace_ids

    log_lines = [line for line in output.splitlines() if re.match(FIRST_LINE_REGEX, line)]
    assert log_lines and all(re.match(LINE_REGEX, line) for line in log_lines), log_lines
    hello = [re.match(LINE_REGEX, line) for line in log_lines if line.endswith("] Hello World")]
    assert len(hello) == 1 and hello[0] is not None
    assert f"0x{hello[0]['trace_id']}" == by_name["GET /"][0]["context"]["trace_id"]
    assert hello[0]["service"] == "unit-app"
    unhandled = [line for line in log_lines if "Unhandled exception on GET /error_test" in line]
    assert len(unhandled) == 1 and f"trace_id={error['context']['trace_id'][2:]}" in unhandled[0]
    assert output.splitlines().count("Traceback (most recent call last):") == 1, "one traceback, not uvicorn's second"
    assert not [line for line in log_lines if "uvicorn.access" in line or "baggage" in line]


def test_worker_start_freezes_the_app_and_shortens_the_gil_switch_interval() -> None:
    """gunicorn.conf.py's post_worker_init, run after the app is imported as in a worker: the
    import-time objects leave the garbage collector's view and the GIL is handed over every
    1 ms (docs/benchmarks.md, p99). A fresh interpreter: both settings are process-wide."""
    script = (
        "import gc, runpy, sys; import app.main; "
        "runpy.run_path('gunicorn.conf.py')['post_worker_init'](None); "
        "print(gc.get_freeze_count(), sys.getswitchinterval())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=SERVICES_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    frozen, interval = result.stdout.split()
    assert int(frozen) > 10_000, "the app's import-time objects are frozen"
    assert float(interval) == 0.001
