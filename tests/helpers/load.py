"""Bounded concurrent load from a background thread, loopback only.

At most `total` requests within `budget_s` seconds, `concurrency` at a time, then it stops by
itself. It keeps requests in flight while a test signals the server, and counts what came back.
"""

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

from nativestack.processes import wait_until

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class BoundedLoad:
    def __init__(
        self,
        url: str,
        *,
        total: int = 300,
        concurrency: int = 8,
        budget_s: float = 30.0,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if urlsplit(url).hostname not in LOOPBACK_HOSTS:
            raise ValueError(f"load is for loopback addresses only, not {url}")
        self.url = url
        self.total = total
        self.concurrency = concurrency
        self.budget_s = budget_s
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        self.statuses: Counter[int] = Counter()  # answered requests by status code
        self.errors: Counter[str] = Counter()  # unanswered requests by httpx error type
        self._issued = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="bounded-load", daemon=True)

    def start(self) -> "BoundedLoad":
        self._thread.start()
        return self

    @property
    def answered(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    @property
    def in_flight(self) -> int:
        """Requests sent (or being sent) and not yet answered or failed."""
        with self._lock:
            return self._in_flight

    def wait_answered(self, count: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.answered >= count or not self._thread.is_alive(), f"{count} answers", timeout)
        if self.answered < count:
            raise AssertionError(f"load ended with {self.answered} answers, wanted {count}: {self.errors}")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the load to end (it always does: bounded count, budget and per-request timeout)."""
        self._thread.join(self.budget_s + self.timeout_s + 5 if timeout is None else timeout)
        if self._thread.is_alive():
            raise TimeoutError("bounded load did not stop")

    async def _main(self) -> None:
        deadline = time.monotonic() + self.budget_s
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits, headers=self.headers) as client:
            await asyncio.gather(*(self._worker(client, deadline) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self._lock:
                if self._issued >= self.total:
                    return
                self._issued += 1
                self._in_flight += 1
            try:
                response = await client.get(self.url)
                with self._lock:
                    self.statuses[response.status_code] += 1
            except httpx.HTTPError as error:
                with self._lock:
                    self.errors[type(error).__name__] += 1
            finally:
                with self._lock:
                    self._in_flight -= 1
