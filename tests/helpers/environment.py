"""Settings for SDK objects built inside the test process."""

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


@contextmanager
def environment(overrides: Mapping[str, str]) -> Iterator[None]:
    """`overrides` in this process' os.environ for the block: for SDK objects built in-process,
    which read their settings from the environment."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
