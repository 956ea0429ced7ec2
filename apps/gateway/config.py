"""The gateway's settings, read once from Django's settings when ``manage.py gateway`` starts.

The hot path reads this plain object, never ``django.conf.settings`` (a lazy object with a lookup per access).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import contract


@dataclass(frozen=True)
class GatewayConfig:
    """What one gateway process needs to know; every field comes from a ``MODELPLANE_GATEWAY_*`` setting."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    routes_key: str = contract.ROUTES_KEY
    routes_channel: str = contract.ROUTES_CHANNEL
    predictions_stream: str = contract.PREDICTIONS_STREAM
    predictions_maxlen: int = contract.PREDICTIONS_STREAM_MAXLEN
    full_reload_seconds: float = contract.FULL_RELOAD_SECONDS
    console_secret: bytes = b""
    cors_origins: tuple[str, ...] = field(default_factory=tuple)
    record_buffer: int = 100_000
    record_batch: int = 1000
    record_flush_seconds: float = 0.1
    eject_seconds: float = 5.0
    upstream_connections: int = 512
    upstream_connections_per_replica: int = 128
    upstream_client: str = "native"

    @classmethod
    def from_settings(cls, settings) -> GatewayConfig:
        return cls(
            redis_url=settings.MODELPLANE_GATEWAY_REDIS_URL,
            routes_key=settings.MODELPLANE_GATEWAY_ROUTES_KEY,
            routes_channel=settings.MODELPLANE_GATEWAY_ROUTES_CHANNEL,
            predictions_stream=settings.MODELPLANE_GATEWAY_PREDICTIONS_STREAM,
            full_reload_seconds=float(settings.MODELPLANE_GATEWAY_FULL_RELOAD_SECONDS),
            console_secret=contract.console_secret(),
            cors_origins=tuple(settings.MODELPLANE_GATEWAY_CORS_ORIGINS),
            record_buffer=int(settings.MODELPLANE_GATEWAY_RECORD_BUFFER),
            eject_seconds=float(settings.MODELPLANE_GATEWAY_EJECT_SECONDS),
            upstream_connections=int(settings.MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS),
            upstream_connections_per_replica=int(settings.MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS_PER_REPLICA),
            upstream_client=str(getattr(settings, "MODELPLANE_GATEWAY_UPSTREAM_CLIENT", "native")).strip().lower(),
        )
