"""The apps' /metrics exposition: how to ask for OpenMetrics, and the exemplars it carries."""

import re

# The Accept header that gets OpenMetrics (the only text format with exemplars), as Prometheus
# sends it when it scrapes.
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def exemplars(exposition: str) -> list[tuple[dict[str, str], str]]:
    """(labels, trace_id) of every exemplar on a duration bucket of an OpenMetrics exposition."""
    found = []
    for line in exposition.splitlines():
        if not line.startswith("fastapi_requests_duration_seconds_bucket{"):
            continue
        series, _, exemplar = line.partition(" # ")
        match = re.match(r'\{trace_id="([0-9a-f]{32})"\}', exemplar)
        if match:
            found.append((dict(re.findall(r'(\w+)="([^"]*)"', series)), match.group(1)))
    return found
