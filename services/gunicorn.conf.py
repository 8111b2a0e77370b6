"""gunicorn settings, read by the master before it forks the workers.

Launch (from services/, the Dockerfile's CMD):
    opentelemetry-instrument gunicorn -c gunicorn.conf.py app.main:app
"""

import gc
import os
import shutil
import sys
import tempfile
from typing import Any

from app.logging_config import logging_config

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# uvicorn's worker on a bounded HTTP/1.1 protocol (HTTP_PARSER), with a deadline for each request
# and a well-formed request target (app/server.py: what uvicorn 0.54 has no setting for).
worker_class = "app.server.UvicornWorker"

# One worker per container by default: prometheus-client keeps its exemplars only in
# single-process mode, so scale with replicas. WEB_CONCURRENCY > 1 switches to
# prometheus-client's multiprocess mode (below): counts stay right, exemplars go.
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))

# Under `docker stop` (SIGTERM): in-flight requests finish (/random_sleep takes up to 5 s),
# then the lifespan shutdown flushes telemetry. Give the container's stop grace period more.
graceful_timeout = 25
timeout = 30
keepalive = 5
# Open connections (or requests in progress) per worker; past it, requests get a 503 (uvicorn's
# limit_concurrency, passed on by app/server.py). Each held connection costs the worker ~4 KiB
# (990 half-sent requests: +4.2 MiB RSS) and a descriptor: 1000 stay within 256 MiB and under the
# common 1024 open-files soft limit.
worker_connections = 1000

# Request lines stay off (accesslog None): spans and metrics carry them.
accesslog = None
logconfig_dict = logging_config(os.environ.get("LOG_LEVEL", "INFO").strip().upper())

# gunicorn >= 25.1 opens a control socket under $HOME by default; nothing here uses it.
control_socket_disable = True
# The worker heartbeat file: on tmpfs where there is one (containers), not on overlayfs.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (gunicorn's advice)

if workers > 1:
    # Set before any worker imports prometheus-client (fresh per start: stale files skew counts).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-multiproc-")


def post_worker_init(worker: Any) -> None:
    # The uvicorn worker points uvicorn's loggers at gunicorn's handlers with propagate=False;
    # send them to the root logger instead, where the stdout and OTel LoggingHandler sit.
    import logging

    for name in ("uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True

    # Event-loop stalls under load (docs/benchmarks.md, "p99"). The app, the SDK and their ~66k
    # import-time objects are loaded by now: freeze them out of the collector's view, so a full
    # collection walks only what requests and telemetry buffers allocate (up to 173 ms before, 5-33 after).
    gc.freeze()
    # The export threads encode batches in Python: hand the GIL back to the event loop after
    # 1 ms instead of the default 5 ms.
    sys.setswitchinterval(0.001)


def child_exit(server: Any, worker: Any) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        # Drop the dead worker's live gauges (fastapi_requests_in_progress).
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    # The master's own telemetry (gunicorn's lines): the SDK's atexit shutdown waits up to
    # 30 s per provider when the Collector is down; a bounded shutdown first makes it a no-op.
    from app.telemetry import flush_telemetry

    flush_telemetry(5.0, shutdown=True)
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir and workers > 1:
        shutil.rmtree(multiproc_dir, ignore_errors=True)
