"""Settings read once from the environment (12-factor: compose and otel.env set them)."""

import os
from dataclasses import dataclass


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    # One name source: the OTel resource's service.name is also the prometheus `app_name` label.
    app_name: str
    chain_self_url: str
    chain_app_b_url: str
    chain_app_c_url: str
    # Keep the ASGI middleware's internal `http send`/`http receive` spans (off by default).
    keep_asgi_internal_spans: bool
    # Seconds: total budget of one downstream call made by /chain.
    chain_timeout_seconds: float


def load_settings() -> Settings:
    return Settings(
        app_name=os.environ.get("OTEL_SERVICE_NAME", "app"),
        chain_self_url=os.environ.get("CHAIN_SELF_URL", "http://127.0.0.1:8000").rstrip("/"),
        chain_app_b_url=os.environ.get("CHAIN_APP_B_URL", "http://app-b:8000").rstrip("/"),
        chain_app_c_url=os.environ.get("CHAIN_APP_C_URL", "http://app-c:8000").rstrip("/"),
        keep_asgi_internal_spans=_bool("KEEP_ASGI_INTERNAL_SPANS", False),
        chain_timeout_seconds=float(os.environ.get("CHAIN_TIMEOUT_SECONDS", "10")),
    )
