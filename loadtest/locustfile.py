"""A realistic mix over every endpoint of app-a, app-b and app-c, error paths included.

Each request is named "<app> GET <route template>[ (<case>)]", e.g. "app-a GET /items/{item_id}"
or "app-b GET /items/{item_id} (not an integer: 422)", so Locust's table reads like the apps'
own `path` label. The responses an endpoint is designed to give count as successes (the 500 of
/error_test, the 3xx/4xx/5xx of /random_status, the 422 and 404 of the bad-input paths): the
failure count is then only what nobody intended (timeouts, refused connections, a /chain 502).

app-a is Locust's host (`--host`); app-b and app-c are called by absolute URL:
    --app-b-url / APP_B_URL   (default http://app-b:8000, the compose service)
    --app-c-url / APP_C_URL   (default http://app-c:8000)
Think time between a user's requests: --wait-min/--wait-max seconds (WAIT_MIN/WAIT_MAX,
default 0.5-2 s). Run it with `make load` or `make load-headless` (loadtest/README.md).
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from locust import FastHttpUser, TaskSet, events

APP_NAMES = ("app-a", "app-b", "app-c")


@dataclass(frozen=True)
class Endpoint:
    route: str  # the route template, as the apps label it
    weight: int  # per app; see APP_WEIGHT
    expected: frozenset[int]  # statuses this request is designed to get
    case: str = ""  # names a bad-input variant of a route
    path: Callable[[], str] | None = None  # what to request, when it is not `route` itself

    def name(self, app: str) -> str:
        return f"{app} GET {self.route}" + (f" ({self.case})" if self.case else "")


def _item_path() -> str:
    item_id = random.randint(1, 10_000)
    return f"/items/{item_id}?q=search" if random.random() < 0.3 else f"/items/{item_id}"


OK = frozenset({200})
# Relative weights of one app's requests: mostly cheap reads, some slow and failing ones.
ENDPOINTS = (
    Endpoint("/", 20, OK),
    Endpoint("/items/{item_id}", 15, OK, path=_item_path),
    Endpoint("/items/{item_id}", 2, frozenset({422}), case="not an integer: 422", path=lambda: "/items/abc"),
    Endpoint("/io_task", 6, OK),
    Endpoint("/cpu_task", 3, OK),
    Endpoint("/random_status", 8, frozenset({200, 300, 400, 500})),
    Endpoint("/random_sleep", 3, OK),
    Endpoint("/error_test", 2, frozenset({500})),
    Endpoint("/chain", 3, OK),
    Endpoint("/no/such/path", 2, frozenset({404}), case="unknown path: 404"),
    # What probes and scrapers call: neither traced nor counted by the apps, but served.
    Endpoint("/healthz", 2, OK),
    Endpoint("/metrics", 2, OK),
)
# app-a is the front door (its /chain calls the other two); app-b and app-c get less direct traffic.
APP_WEIGHT = {"app-a": 2, "app-b": 1, "app-c": 1}


def _options(parser: Any) -> None:
    parser.add_argument("--app-b-url", env_var="APP_B_URL", default="http://app-b:8000", help="app-b's base URL")
    parser.add_argument("--app-c-url", env_var="APP_C_URL", default="http://app-c:8000", help="app-c's base URL")
    parser.add_argument("--wait-min", env_var="WAIT_MIN", default="0.5", help="shortest think time, s")
    parser.add_argument("--wait-max", env_var="WAIT_MAX", default="2", help="longest think time, s")


events.init_command_line_parser.add_listener(_options)  # type: ignore[no-untyped-call]  # untyped upstream


def _task(app: str, endpoint: Endpoint) -> Callable[["AppsUser"], None]:
    name = endpoint.name(app)

    def request(user: "AppsUser") -> None:
        path = endpoint.path() if endpoint.path else endpoint.route
        with user.client.get(user.base_url(app) + path, name=name, catch_response=True) as response:
            if response.status_code in endpoint.expected:
                response.success()
            else:
                expected = "/".join(str(status) for status in sorted(endpoint.expected))
                response.failure(f"status {response.status_code}, expected {expected}")

    request.__name__ = name
    return request


# One task per app and endpoint, with its weight.
TASKS = [(_task(app, endpoint), APP_WEIGHT[app] * endpoint.weight) for app in APP_NAMES for endpoint in ENDPOINTS]


class AppsUser(FastHttpUser):
    """One user browsing the three apps with think time; every endpoint in the mix."""

    # Generous: /random_sleep takes up to 5 s and /chain over 1 s, more under load.
    network_timeout = 30.0
    connection_timeout = 5.0
    # Weighted by repetition (what Locust makes of a {task: weight} dict anyway).
    tasks: list[TaskSet | Callable[..., Any]] = [  # noqa: RUF012 (Locust reads it from the class)
        task for task, weight in TASKS for _ in range(weight)
    ]

    def base_url(self, app: str) -> str:
        options = self.environment.parsed_options
        if app == "app-a" or options is None:
            return ""  # relative: Locust's host
        url: str = getattr(options, f"{app.replace('-', '_')}_url")
        return url.rstrip("/")

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        low, high = (0.5, 2.0) if options is None else (float(options.wait_min), float(options.wait_max))
        return random.uniform(low, max(low, high))
