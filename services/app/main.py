"""The FastAPI app: lifespan, routes and middleware. Run it as documented in services/README.md.

No tracer, meter or logger setup here: `opentelemetry-instrument` configures all of it from
OTEL_* variables, and the httpx instrumentation carries the trace context across /chain's
calls. app/telemetry.py holds the few OTel calls the agent cannot make.
"""

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from app.limits import RequestHeadLimitMiddleware
from app.logging_config import mark_logged
from app.metrics import INFO, PrometheusMiddleware, metrics_response
from app.sampling import load_tail_sampling
from app.settings import load_settings
from app.telemetry import flush_telemetry, instrument_fastapi

logger = logging.getLogger(__name__)
settings = load_settings()

# About 30 ms of pure-Python work on one core: bounded, and run in the threadpool (sync route).
CPU_TASK_ITERATIONS = 1_000_000
# At shutdown, after in-flight requests finish; within gunicorn's graceful_timeout (25 s).
FLUSH_TIMEOUT_SECONDS = 10.0


class State(TypedDict):
    http_client: httpx.AsyncClient


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[State]:
    timeout = httpx.Timeout(settings.chain_timeout_seconds, connect=2.0)
    # Drop idle connections before gunicorn's 5 s keep-alive closes them under a reused request.
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http_client:
        logger.info("%s started", settings.app_name)
        yield {"http_client": http_client}
    logger.info("%s stopping: flushing telemetry", settings.app_name)
    await asyncio.to_thread(flush_telemetry, FLUSH_TIMEOUT_SECONDS)


# Telemetry owner: contrib's FastAPI instrumentation (instrument_fastapi below). FastAPI's
# built-in OpenTelemetry support is switched off here so it can never add a second set of
# server spans, metrics or exporters (it also steps aside on its own when contrib is active).
app = FastAPI(
    title=settings.app_name,
    lifespan=lifespan,
    telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
)
# Outermost last: every request, refused ones included, is counted.
app.add_middleware(RequestHeadLimitMiddleware)
app.add_middleware(PrometheusMiddleware, app_name=settings.app_name, tail_sampling=load_tail_sampling())
instrument_fastapi(app, keep_asgi_internal_spans=settings.keep_asgi_internal_spans)
INFO.labels(app_name=settings.app_name).set(1)


@app.exception_handler(Exception)
async def log_unhandled_exception(request: Request, exc: Exception) -> Response:
    # Runs while the request's span is current, so the traceback carries its trace id.
    logger.exception("Unhandled exception on %s %s", request.method, request.url.path)
    mark_logged(exc)
    # The exception still propagates (so the span records it) and uvicorn then closes the
    # connection: say so, or a keep-alive client races the close with its next request.
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500, headers={"Connection": "close"})


@app.get("/")
async def read_root() -> dict[str, str]:
    logger.info("Hello World")
    return {"Hello": "World"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, int | str | None]:
    logger.info("items %d", item_id)
    return {"item_id": item_id, "q": q}


@app.get("/io_task")
async def io_task() -> str:
    await asyncio.sleep(1)
    logger.info("io task")
    return "IO bound task finish!"


@app.get("/cpu_task")
def cpu_task() -> str:
    # A sync route runs in the threadpool: the event loop keeps serving other requests.
    sum(i * i for i in range(CPU_TASK_ITERATIONS))
    logger.info("cpu task")
    return "CPU bound task finish!"


@app.get("/random_status")
async def random_status(response: Response) -> dict[str, str]:
    response.status_code = random.choice([200, 200, 300, 400, 500])
    logger.info("random status %d", response.status_code)
    return {"path": "/random_status"}


@app.get("/random_sleep")
async def random_sleep() -> dict[str, str]:
    await asyncio.sleep(random.uniform(0, 5))
    logger.info("random sleep")
    return {"path": "/random_sleep"}


@app.get("/error_test")
async def error_test() -> dict[str, str]:
    raise ValueError("value error")


@app.get("/chain")
async def chain(request: Request) -> dict[str, str]:
    http_client: httpx.AsyncClient = request.state.http_client
    targets = [
        f"{settings.chain_self_url}/",
        f"{settings.chain_app_b_url}/io_task",
        f"{settings.chain_app_c_url}/cpu_task",
    ]
    for url in targets:
        try:
            response = await http_client.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            logger.warning("chain call to %s failed: %r", url, exc)
            raise HTTPException(status_code=502, detail=f"chain call to {url} failed") from exc
    logger.info("chain finished")
    return {"path": "/chain"}


@app.get("/healthz", include_in_schema=False)
async def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return metrics_response(request)
