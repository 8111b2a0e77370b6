"""THE "BEFORE" DESIGN, FOR `make bench` ONLY: the same app instrumented by hand, the way the
reference project's README does it. Never deployed; the benchmark (loadtest/bench) compares it with the
zero-code services (services/README.md) on the same routes.

What the reference did, and this module does:
- the SDK set up in code: a TracerProvider with a Resource, a BatchSpanProcessor at its
  defaults, and the OTLP *gRPC* span exporter;
- FastAPIInstrumentor.instrument_app with the internal `http send`/`http receive` spans kept;
- LoggingInstrumentor(set_logging_format=True): trace ids in the log lines (no OTLP log export,
  the reference shipped logs through the Docker driver; nor OTLP metrics: prometheus-client only);
- prometheus-client metrics from a BaseHTTPMiddleware, exemplar on every observation;
- /chain propagates the context with `inject(headers)` (here an httpx request hook), no client spans.
The routes, their logging and the header-size guard are services/app's own (imported).

Launch (what the benchmark runs, from services/ with loadtest/ on PYTHONPATH):
    HAND_OTLP_ENDPOINT=http://127.0.0.1:4317 OTEL_SERVICE_NAME=app-a \\
        gunicorn -c gunicorn.conf.py hand_instrumented:app
"""

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from app import main
from app.limits import RequestHeadLimitMiddleware
from app.metrics import EXCEPTIONS, REQUESTS, REQUESTS_IN_PROGRESS, REQUESTS_PROCESSING_TIME, RESPONSES, route_template

APP_NAME = main.settings.app_name
OTLP_ENDPOINT = os.environ.get("HAND_OTLP_ENDPOINT", "http://127.0.0.1:4317")


class PrometheusMiddleware(BaseHTTPMiddleware):
    """The reference's middleware: a task and a memory stream per request (BaseHTTPMiddleware)."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        method = request.method
        path = route_template(request.app.routes, request.scope)
        if path in ("/metrics", "/healthz"):
            return await call_next(request)
        REQUESTS_IN_PROGRESS.labels(method, path, APP_NAME).inc()
        REQUESTS.labels(method, path, APP_NAME).inc()
        status_code = 500
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except BaseException as exc:
            EXCEPTIONS.labels(method, path, type(exc).__name__, APP_NAME).inc()
            raise
        else:
            status_code = response.status_code
            trace_id = trace.format_trace_id(trace.get_current_span().get_span_context().trace_id)
            REQUESTS_PROCESSING_TIME.labels(method, path, APP_NAME).observe(
                time.perf_counter() - started, exemplar={"TraceID": trace_id}
            )
        finally:
            RESPONSES.labels(method, path, str(status_code), APP_NAME).inc()
            REQUESTS_IN_PROGRESS.labels(method, path, APP_NAME).dec()
        return response


async def _inject_trace_context(request: httpx.Request) -> None:
    inject(request.headers)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[main.State]:
    timeout = httpx.Timeout(main.settings.chain_timeout_seconds, connect=2.0)
    async with httpx.AsyncClient(timeout=timeout, event_hooks={"request": [_inject_trace_context]}) as http_client:
        yield {"http_client": http_client}


app = FastAPI(title=f"{APP_NAME} (hand-instrumented)", lifespan=lifespan)
app.router.routes.extend(route for route in main.app.routes if isinstance(route, APIRoute))
app.add_exception_handler(Exception, main.log_unhandled_exception)
app.add_middleware(RequestHeadLimitMiddleware)
app.add_middleware(PrometheusMiddleware)

# setting_otlp() of the reference, in the worker (gunicorn imports the app after the fork).
resource = Resource.create(attributes={"service.name": APP_NAME, "compose_service": APP_NAME})
tracer_provider = TracerProvider(resource=resource)
trace.set_tracer_provider(tracer_provider)
tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=OTLP_ENDPOINT, insecure=True)))
LoggingInstrumentor().instrument(set_logging_format=True, enable_log_auto_instrumentation=False)
# /metrics and /healthz untraced, as in the zero-code apps, so the benchmark can count spans exactly.
FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, excluded_urls="/metrics,/healthz")
