"""An open-loop request loop with latencies, and the percentiles read from it."""

import asyncio
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Result:
    started: float  # time.monotonic() when the request was sent
    latency: float  # seconds
    status: int | None  # None: no HTTP answer
    error: str | None = None


@dataclass
class RequestLoop:
    """GET `url` at `rate` per second from a background thread, open loop: a request starts on
    schedule whether or not earlier ones have answered. `stop()` waits for the last answers."""

    url: str
    rate: float
    timeout_s: float = 30
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "RequestLoop":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="request-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        if self._thread:
            self._thread.join(self.timeout_s + 10)
        return self.results

    async def _one(self, client: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            response = await client.get(self.url)
            self.results.append(Result(started, time.monotonic() - started, response.status_code))
        except httpx.HTTPError as error:
            self.results.append(Result(started, time.monotonic() - started, None, type(error).__name__))

    async def _run(self) -> None:
        tasks = set()
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=httpx.Limits(max_connections=50)) as client:
            start, index = time.monotonic(), 0
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, start + index / self.rate - time.monotonic()))
                task = asyncio.create_task(self._one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            if tasks:
                await asyncio.wait(tasks)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def window(results: list[Result], start: float, end: float) -> list[Result]:
    return [r for r in results if start <= r.started < end]
