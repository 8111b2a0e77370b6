"""Read a Prometheus text endpoint (an app's /metrics, a Collector's or Jaeger's own metrics)."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text endpoint as {'name{label="v",...}': value}, summed over nothing."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def metric_total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        series_name, _, label_text = key.partition("{")
        if series_name != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += value
    return total
