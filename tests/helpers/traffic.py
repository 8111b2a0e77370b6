"""Bounded traffic against the native apps, and how many spans it must produce."""

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx

# Requests per app and path for one round. /random_sleep waits up to 5 s: few of those.
PLAN: dict[str, int] = {
    "/": 6,
    "/items/7": 3,
    "/io_task": 2,
    "/cpu_task": 2,
    "/random_status": 6,
    "/random_sleep": 1,
    "/error_test": 2,
    "/chain": 3,
    "/items/not-a-number": 2,  # 422
    "/no/such/path": 2,  # 404
}
# Spans one request makes with send/receive spans off: its server span, and for /chain also
# 3 httpx client spans and the server spans of app-a's `/`, app-b's /io_task, app-c's /cpu_task.
SPANS_PER_REQUEST = {"/chain": 7}


@dataclass
class Traffic:
    responses: Counter[tuple[str, str, int]] = field(default_factory=Counter)  # (app, path, status)

    def requests(self, path: str | None = None, app: str | None = None) -> int:
        return sum(n for (a, p, _), n in self.responses.items() if path in (None, p) and app in (None, a))

    def expected_spans(self) -> int:
        return sum(n * SPANS_PER_REQUEST.get(path, 1) for (_, path, _), n in self.responses.items())


async def _send(client: httpx.AsyncClient, app: str, url: str, path: str, traffic: Traffic) -> None:
    response = await client.get(url + path)
    traffic.responses[(app, path, response.status_code)] += 1


async def _round(app_urls: dict[str, str], plan: dict[str, int], traffic: Traffic) -> None:
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(
            *(
                _send(client, app, url, path, traffic)
                for app, url in app_urls.items()
                for path, count in plan.items()
                for _ in range(count)
            )
        )


def drive(app_urls: dict[str, str], plan: dict[str, int] = PLAN) -> Traffic:
    """One bounded round of `plan` against every app, concurrently; returns what was answered."""
    traffic = Traffic()
    asyncio.run(_round(app_urls, plan, traffic))
    return traffic
