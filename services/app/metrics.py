"""Prometheus metrics at /metrics, with the reference app's names and labels.

A pure ASGI middleware (not BaseHTTPMiddleware, which costs a task and a stream per request)
counts every request except the health and metrics endpoints.

Every label value comes from a set the code fixes, never from the request as sent, so no client
can add a series (each new label value is one more series per metric, in this exposition and in
Prometheus):
  method          the HTTP method as the OTel HTTP semantic conventions record it: one of the ten
                  methods RFC 9110, 5789 and 10008 define (upper-cased), anything else `_OTHER`
                  (opentelemetry-util-http's sanitize_method, which the OTLP metrics and span
                  names go through too; OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS
                  would lift the bound on both)
  path            the matched route's template (`/items/{item_id}`), else UNMATCHED_PATH
  status_code     the status the app answered with
  exception_type  the class name of an exception the app's code raised
  app_name        the service name, from the environment
A new label must say here where its bound comes from.

With several gunicorn workers, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker
starts; prometheus-client then keeps values in shared files and /metrics aggregates every
worker. Multiprocess mode drops prometheus-client exemplars
(https://github.com/prometheus/client_python/issues/826); the OTLP metrics keep theirs.
"""

import os
import time

from opentelemetry.util.http import sanitize_method
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sampling import TailSampling
from app.telemetry import sampled_trace_id, server_span_route

UNMATCHED_PATH = "<unmatched>"
# Not application traffic: neither counted here nor traced (OTEL_PYTHON_FASTAPI_EXCLUDED_URLS).
EXCLUDED_PATHS = frozenset({"/healthz", "/metrics"})
# Exemplar label key: the same key OTLP and the Collector use.
EXEMPLAR_TRACE_ID_KEY = "trace_id"

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ

INFO = Gauge(
    "fastapi_app_info",
    "FastAPI application information.",
    ["app_name"],
    multiprocess_mode="max",
)
REQUESTS = Counter(
    "fastapi_requests",
    "Total count of requests by method and path.",
    ["method", "path", "app_name"],
)
RESPONSES = Counter(
    "fastapi_responses",
    "Total count of responses by method, path and status codes.",
    ["method", "path", "status_code", "app_name"],
)
REQUESTS_PROCESSING_TIME = Histogram(
    "fastapi_requests_duration_seconds",
    "Histogram of requests processing time by path (in seconds).",
    ["method", "path", "app_name"],
)
EXCEPTIONS = Counter(
    "fastapi_exceptions",
    "Total count of exceptions raised by path and exception type.",
    ["method", "path", "exception_type", "app_name"],
)
REQUESTS_IN_PROGRESS = Gauge(
    "fastapi_requests_in_progress",
    "Gauge of requests by method and path currently being processed.",
    ["method", "path", "app_name"],
    multiprocess_mode="livesum",
)


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The path template of the route that will serve this request, else UNMATCHED_PATH."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED_PATH))
        if match is Match.PARTIAL and partial is None:  # e.g. 405, wrong method
            partial = route
    return str(getattr(partial, "path", UNMATCHED_PATH))


class PrometheusMiddleware:
    def __init__(self, app: ASGIApp, app_name: str, tail_sampling: TailSampling) -> None:
        self.app = app
        self.app_name = app_name
        self.tail_sampling = tail_sampling

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXCLUDED_PATHS:
            await self.app(scope, receive, send)
            return

        method = sanitize_method(scope["method"])
        path = server_span_route() or route_template(scope["app"].routes, scope)
        labels = (method, path, self.app_name)
        status_code = 500  # unless the app sends another before failing

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        in_progress = REQUESTS_IN_PROGRESS.labels(*labels)
        in_progress.inc()
        REQUESTS.labels(*labels).inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            EXCEPTIONS.labels(method, path, type(exc).__name__, self.app_name).inc()
            raise
        finally:
            elapsed = time.perf_counter() - started
            trace_id = None if MULTIPROCESS else sampled_trace_id()
            # Only a trace the gateways will keep gets an exemplar: a link must lead somewhere.
            exemplar: dict[str, str] | None = None
            if trace_id and self.tail_sampling.keeps(trace_id, status_code, elapsed):
                exemplar = {EXEMPLAR_TRACE_ID_KEY: trace_id}
            REQUESTS_PROCESSING_TIME.labels(*labels).observe(elapsed, exemplar=exemplar)
            RESPONSES.labels(method, path, str(status_code), self.app_name).inc()
            in_progress.dec()


def metrics_response(request: Request) -> Response:
    """OpenMetrics (with exemplars) when the scraper asks for it, Prometheus text otherwise."""
    registry = REGISTRY
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), headers={"Content-Type": content_type})
