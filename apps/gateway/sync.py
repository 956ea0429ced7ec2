"""Keeps the gateway's routing table in step with Redis (apps.gateway.contract, part 1).

One background task: subscribe to ``ROUTES_CHANNEL`` first, then read the whole ``ROUTES_KEY`` hash (so no
change published in between is missed), then apply each published name (HMGET of the names that arrived
together) and read the whole hash again every ``full_reload_seconds``. Any Redis error ends that connection:
the table is kept as it is, the outage is logged once, and the task reconnects with a backoff (0.2 s doubling
to 5 s), reading the whole hash again once connected, since messages published meanwhile were lost.

The gateway starts without Redis: it answers /v2/health/live at once and /v2/health/ready once a first table
has been read.
"""
from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from .records import redis_client
from .routing import RouteTable

log = logging.getLogger("apps.gateway")


class RouteSync:
    """The task that reads and follows the routing table in Redis."""

    def __init__(self, *, redis_url: str, key: str, channel: str, full_reload_seconds: float, table: RouteTable,
                 metrics):
        self.redis_url = redis_url
        self.key = key
        self.channel = channel
        self.full_reload_seconds = full_reload_seconds
        self.table = table
        self.metrics = metrics
        self.outage_since: float | None = None
        self.changes = 0  # published changes applied (for tests and logs)

    async def run(self) -> None:
        backoff = 0.2
        while True:
            client = redis_client(self.redis_url, decode_responses=True)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                outcome = await self.full_reload(client)
                self.metrics.redis_up.set(1)
                if self.outage_since is not None:
                    log.warning("Redis reachable again after %.1f s: routing table read again (%d routes; %s)",
                                time.monotonic() - self.outage_since, len(self.table.routes), outcome)
                    self.outage_since = None
                else:
                    log.info("routing table read from Redis: %d routes (%s)", len(self.table.routes), outcome)
                backoff = 0.2
                await self.follow(client, pubsub)
            except (TimeoutError, RedisError, OSError) as exc:
                self.metrics.redis_up.set(0)
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    log.warning("Redis at %s unreachable (%r): serving with the last routing table (%d routes, "
                                "read %s); reconnecting", self.redis_url.split("@")[-1], exc,
                                len(self.table.routes),
                                f"{time.time() - self.table.loaded_at:.0f} s ago" if self.table.loaded
                                else "never")
            finally:
                await _quietly(pubsub.aclose())
                await _quietly(client.aclose())
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def follow(self, client, pubsub) -> None:
        """Apply published changes until Redis fails; read the whole hash every full_reload_seconds."""
        next_full = time.monotonic() + self.full_reload_seconds
        while True:
            wait = max(0.0, min(1.0, next_full - time.monotonic()))
            message = await pubsub.get_message(timeout=wait)
            names = set()
            while message is not None:
                if message.get("type") == "message" and message.get("data"):
                    names.add(message["data"])
                message = await pubsub.get_message(timeout=0)
            if names:
                await self.reload_names(client, sorted(names))
            if time.monotonic() >= next_full:
                await self.full_reload(client)
                next_full = time.monotonic() + self.full_reload_seconds

    async def full_reload(self, client) -> dict:
        stored = await client.hgetall(self.key)
        outcome = self.table.replace_all(stored)
        if outcome.get("kept"):
            log.warning("the routes hash %r is empty in Redis: keeping the %d routes held (Redis may have lost "
                        "its data; the control plane publishes them again)", self.key, outcome["kept"])
        return outcome

    async def reload_names(self, client, names: list[str]) -> None:
        documents = await client.hmget(self.key, names)
        for name, raw in zip(names, documents, strict=True):
            result = self.table.apply(name, raw)
            self.changes += 1
            log.info("route %r: %s (published change)", name, result)


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except Exception:  # noqa: BLE001, S110 - closing a connection to a Redis that is gone
        pass
