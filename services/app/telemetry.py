"""The only OpenTelemetry API calls in app code: what `opentelemetry-instrument` cannot do.

Everything else (providers, exporters, resource, sampling, propagation, httpx and logging
instrumentation) is configured by the agent from the OTEL_* variables in services/otel.env.
"""

import logging
import threading
import time
from typing import Literal

from fastapi import FastAPI
from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE

logger = logging.getLogger(__name__)

# OpenTelemetryMiddleware's per-message spans for `http receive` / `http send`.
_ASGI_INTERNAL_SPANS: list[Literal["receive", "send"]] = ["receive", "send"]


def instrument_fastapi(app: FastAPI, *, keep_asgi_internal_spans: bool) -> None:
    """Instrument the app with contrib's FastAPI instrumentation, minus the internal ASGI spans.

    Why the agent cannot: no OTEL_* variable maps to `exclude_spans`
    (https://github.com/open-telemetry/opentelemetry-python-contrib/issues/831), so
    otel.env disables the agent's FastAPI instrumentation
    (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi) and it is applied here instead.
    OTEL_PYTHON_FASTAPI_EXCLUDED_URLS still applies: instrument_app reads it when
    `excluded_urls` is not passed.
    """
    if not isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        # Plain `gunicorn` (no agent): stay truly uninstrumented, the benchmark baseline.
        return
    if getattr(app, "_is_instrumented_by_opentelemetry", False):
        logger.warning(
            "FastAPI was instrumented by the agent, so http send/receive spans are kept: "
            "set OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fastapi to drop them"
        )
        return
    FastAPIInstrumentor.instrument_app(app, exclude_spans=None if keep_asgi_internal_spans else _ASGI_INTERNAL_SPANS)


def sampled_trace_id() -> str | None:
    """The current span's trace id (32 hex digits) when it is sampled, else None.

    Why the agent cannot: it attaches exemplars to OTel SDK metrics only; the prometheus-client
    histogram at /metrics needs the trace id handed to it.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return trace.format_trace_id(context.trace_id)


def server_span_route() -> str | None:
    """The route template (`http.route`) the FastAPI instrumentation put on the current server
    span, when that span is recording; None otherwise (uninstrumented, unsampled, or no route
    matched).

    Why the agent cannot: the instrumentation walks the route table to name the span, and the
    app's prometheus-client metrics need the same template; reading it back spares a second
    walk per request. The API's Span has no attribute getter: `attributes` is the SDK span's,
    read duck-typed, so any other span means None and the app walks the routes itself.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    attributes = getattr(span, "attributes", None)
    route = attributes.get(HTTP_ROUTE) if attributes is not None else None
    return route if isinstance(route, str) else None


def flush_telemetry(timeout_seconds: float, *, shutdown: bool = False) -> bool:
    """Export every buffered span, metric point and log record now; give up after the timeout.

    Why the agent cannot: it flushes from atexit, but uvicorn re-raises SIGTERM after its
    graceful shutdown (https://github.com/Kludex/uvicorn/pull/1600), the worker dies by signal
    and atexit never runs: every buffered span, metric point and log record would be lost.
    The SDK's force_flush ignores its timeout
    (https://github.com/open-telemetry/opentelemetry-python/issues/4568) and, with the Collector
    down, retries each batch for OTEL_EXPORTER_OTLP_TIMEOUT: a daemon thread with a deadline
    keeps shutdown bounded. Returns False when the deadline passed.
    """
    providers: list[object] = [
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    ]
    threads = []
    for provider in providers:
        flush = getattr(provider, "shutdown" if shutdown else "force_flush", None)
        if callable(flush):  # the API's no-op and proxy providers have neither
            # One thread each: a provider stuck on a dead Collector does not hold up the others.
            thread = threading.Thread(target=flush, name="telemetry-flush", daemon=True)
            thread.start()
            threads.append(thread)
    deadline = time.monotonic() + timeout_seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        logger.warning(
            "telemetry flush did not finish within %.0f s (is the Collector reachable?): "
            "unsent spans, metrics and logs are dropped",
            timeout_seconds,
        )
        return False
    return True
