"""Waiting for telemetry to be stored: poll until enough has arrived, or fail saying how much did."""

from collections.abc import Callable, Sized
from typing import TypeVar

from nativestack.processes import wait_until

S = TypeVar("S", bound=Sized)


def wait_for_count(fetch: Callable[[], S], count: int, what: str, timeout: float = 90, interval: float = 0.5) -> S:
    """Poll `fetch` until what it returns holds at least `count` items (spans, traces, records),
    and return that; after `timeout` s fail naming how many of the `count` arrived."""
    last: S | None = None

    def probe() -> tuple[S] | None:
        nonlocal last
        last = fetch()
        return (last,) if len(last) >= count else None

    try:
        return wait_until(probe, f"{count} {what}", timeout=timeout, interval=interval)[0]
    except TimeoutError as error:
        arrived = 0 if last is None else len(last)
        raise AssertionError(f"{arrived} of {count} {what} arrived within {timeout:.0f} s") from error
