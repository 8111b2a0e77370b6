"""Bad input to the Collector: garbage and oversized payloads posted to its OTLP endpoints get a
4xx, and the Collector keeps serving."""

import httpx
import pytest

from nativestack.stack import Stack

SIGNALS = ["traces", "metrics", "logs"]


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-protobuf", b"\xff\xfe not a protobuf \x00\x01"),
        ("application/json", b'{"resourceSpans": [ {"broken'),
        ("text/plain", b"hello"),
    ],
)
def test_garbage_gets_4xx_and_collector_stays_healthy(
    stack: Stack, signal: str, content_type: str, body: bytes
) -> None:
    response = httpx.post(
        f"{stack.collector.otlp_http_url}/v1/{signal}", content=body, headers={"Content-Type": content_type}, timeout=10
    )
    assert 400 <= response.status_code < 500, response.text
    assert httpx.get(stack.collector.health_url, timeout=5).status_code == 200


def test_oversized_payload_is_refused_and_collector_stays_healthy(stack: Stack) -> None:
    body = b"\x0a" + b"\xff" * (25 * 1024 * 1024)  # > the receiver's 20 MiB default body limit
    try:
        status = httpx.post(
            f"{stack.collector.otlp_http_url}/v1/traces",
            content=body,
            headers={"Content-Type": "application/x-protobuf"},
            timeout=30,
        ).status_code
    except httpx.TransportError:
        status = 413  # the server may also cut the upload short: still a refusal, not a crash
    assert 400 <= status < 500
    assert httpx.get(stack.collector.health_url, timeout=5).status_code == 200
    assert stack.collector.process.alive()
