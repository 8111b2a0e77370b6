"""One stdout line format for gunicorn, uvicorn and the app, applied by gunicorn's logconfig_dict.

A line looks like:

    2026-11-25T21:30:00.123Z INFO [app.main] [trace_id=<32 hex> span_id=<16 hex> service=app-a] message

Ids are all zeros outside a request. A traceback follows on the next lines; none of them
starts with a timestamp, so FIRST_LINE_REGEX groups it with the line that started it (the
Loki driver's multiline stage in compose uses the same regex).

The trace fields are the current span's, read by the formatter itself while the record is
written (the log call's own thread and context); without the agent the API's invalid span
gives zeros. Why not the logging instrumentation's record factory
(OTEL_PYTHON_LOG_CORRELATION=true): it puts otelTraceID/otelSpanID/otelTraceSampled/
otelServiceName on every record, and the OTLP handler exports them as attributes that repeat
the record's own trace context and the resource
(https://github.com/open-telemetry/opentelemetry-python-contrib/issues/5071): more CPU and
bytes on every record, for nothing. The OTel LoggingHandler that exports the same records over
OTLP sits on the root logger; the instrumentation wraps logging.config.dictConfig so that
handler survives this config.
"""

import logging
import os
import time
from typing import Any

from opentelemetry import trace

# A new log entry starts with a line matching this; other lines continue the previous entry.
FIRST_LINE_REGEX = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"

# One whole first line, field by field (for tests and log pipelines).
LINE_REGEX = (
    r"^(?P<time>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z) (?P<level>[A-Z]+) "
    r"\[(?P<logger>[^\]]+)\] "
    r"\[trace_id=(?P<trace_id>[0-9a-f]{32}) span_id=(?P<span_id>[0-9a-f]{16}) "
    r"service=(?P<service>[^\]]*)\] (?P<message>.*)$"
)

LOG_FORMAT = (
    "%(asctime)s %(levelname)s [%(name)s] [trace_id=%(trace_id)s span_id=%(span_id)s service=%(service)s] %(message)s"
)

# Attribute set on an exception once the app has logged it with its traceback.
_LOGGED_MARKER = "_app_logged_traceback"


class LineFormatter(logging.Formatter):
    """LOG_FORMAT in UTC with milliseconds, with the current span's ids (zeros outside one)."""

    def __init__(self) -> None:
        self._service = os.environ.get("OTEL_SERVICE_NAME", "")
        super().__init__(fmt=LOG_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = trace.get_current_span().get_span_context()
        values = {
            **record.__dict__,
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "service": self._service,
            # Keep the entry's first line one line; only a traceback may follow.
            "message": str(record.message).rstrip("\n").replace("\n", "\\n"),
        }
        return LOG_FORMAT % values


def mark_logged(exc: BaseException) -> None:
    """Remember that the app logged this exception (inside its span, with trace ids)."""
    setattr(exc, _LOGGED_MARKER, True)


class SkipLoggedExceptions(logging.Filter):
    """Drop uvicorn's second traceback ("Exception in ASGI application") for an exception the
    app already logged: uvicorn logs it after the request's span has ended, without trace ids."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, _LOGGED_MARKER, False)


def logging_config(app_level: str = "INFO") -> dict[str, Any]:
    """The dictConfig for gunicorn's `logconfig_dict` (the master applies it before forking)."""
    return {
        "version": 1,
        # Keep loggers created before this runs (the OTel SDK's, the agent's).
        "disable_existing_loggers": False,
        "filters": {"skip_logged_exceptions": {"()": SkipLoggedExceptions}},
        "formatters": {"line": {"()": LineFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stdout",
            }
        },
        # Libraries speak at WARNING and above unless listed below.
        "root": {"level": "WARNING", "handlers": ["stdout"]},
        "loggers": {
            "app": {"level": app_level},
            # Start-up, worker and shutdown lines. Everything propagates to the root logger,
            # whose handlers (stdout and OTel's LoggingHandler) write and export it.
            "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
            "uvicorn.error": {
                "level": "INFO",
                "handlers": [],
                "propagate": True,
                "filters": ["skip_logged_exceptions"],
            },
            # No per-request access lines: traces and metrics carry that (the uvicorn worker
            # copies gunicorn.access's level to uvicorn.access).
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            "uvicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            # One line per outgoing /chain call is noise; warnings still show.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            # The SDK's own records go to stdout only: exporting "export failed" records
            # through the failing exporter feeds the queue it is trying to drain. With the
            # Collector down this prints one WARNING per export retry and signal (backing off,
            # well under one line a second whatever the request rate), naming the endpoint.
            "opentelemetry": {"level": "WARNING", "handlers": ["stdout"], "propagate": False},
            # Malformed traceparent/baggage headers are ignored (a fresh trace starts); their
            # warnings would echo attacker-sized header values into the log on every request.
            "opentelemetry.baggage.propagation": {"level": "ERROR"},
            "opentelemetry.trace.propagation.tracecontext": {"level": "ERROR"},
        },
    }
