"""Log output as a log pipeline sees it: lines grouped into entries."""

import re
from collections.abc import Iterable


def group_lines(lines: Iterable[str], first_line: str) -> list[list[str]]:
    """Lines grouped as a multiline stage with `firstline: first_line` groups them (the Loki
    driver's, docker-compose.yaml): an entry starts at a line matching `first_line` and takes
    every following line that does not (a traceback). Lines before the first match form an entry
    of their own: nothing is dropped."""
    entries: list[list[str]] = []
    for line in lines:
        if re.match(first_line, line) or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    return entries
