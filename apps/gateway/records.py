"""Prediction records (apps.gateway.contract, part 2): buffered in memory, written to the Redis stream in
batches by a background task.

The request path only appends a dict to a deque; it never awaits Redis. A flusher wakes every
``record_flush_seconds`` (or as soon as ``record_batch`` records wait), serialises them with orjson and sends
them in one round trip per batch (a Lua script running ``XADD ... MAXLEN ~`` per record). While Redis is away the records stay in the
buffer, which is bounded: past ``record_buffer`` the oldest are dropped, counted in
``modelplane_gateway_records_dropped_total`` and logged (once when dropping starts, and in the summary when
Redis is back). Nothing is dropped silently.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("apps.gateway")

# One XADD per record, in one script call per batch. Why not a pipeline of XADDs: redis-py packs each command
# and parses each reply in Python (~100 us a record on this machine, as much as forwarding the request itself);
# one EVALSHA with the batch as arguments costs a few microseconds a record. Redis runs the script atomically,
# ~1 ms per 1 000 records. The script is cached by SHA; after a Redis restart redis-py loads it again.
XADD_MANY = """
local maxlen = ARGV[1]
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'r', ARGV[i])
end
return #ARGV - 1
"""


def redis_client(url: str, **kwargs) -> Redis:
    """A Redis client that fails fast: the gateway handles an outage itself (keeps serving, retries later),
    so redis-py's own retries would only hold a failing call up."""
    return Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2, socket_timeout=5,
                          socket_keepalive=True, **kwargs)


class RecordSink:
    """The bounded buffer of prediction records and the task that drains it into the stream."""

    def __init__(self, *, redis_url: str, stream: str, maxlen: int, buffer_max: int, batch: int,
                 flush_seconds: float, metrics):
        self.redis_url = redis_url
        self.stream = stream
        self.maxlen = maxlen
        self.buffer: collections.deque = collections.deque()
        self.buffer_max = buffer_max
        self.batch = batch
        self.flush_seconds = flush_seconds
        self.metrics = metrics
        self.dropped = 0
        self.sent = 0
        self._dropped_in_outage = 0
        self._outage_since: float | None = None
        self._wake = asyncio.Event()
        self._client: Redis | None = None
        self._xadd_many = None

    def emit(self, record: dict) -> None:
        """Queue one record (called on the request path: no I/O)."""
        buffer = self.buffer
        if len(buffer) >= self.buffer_max:
            buffer.popleft()
            self._drop(1)
        buffer.append(record)
        if len(buffer) >= self.batch:
            self._wake.set()

    def _drop(self, count: int) -> None:
        if not self.dropped or (self._outage_since is not None and not self._dropped_in_outage):
            log.warning("prediction record buffer full (%d records): dropping the oldest records until Redis "
                        "takes them again (counted in modelplane_gateway_records_dropped_total)", self.buffer_max)
        self.dropped += count
        self._dropped_in_outage += count
        self.metrics.records_dropped.inc(count)

    async def run(self) -> None:
        """Drain the buffer until cancelled."""
        self._client = redis_client(self.redis_url)
        backoff = 0.2
        try:
            while True:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that arrives
                # as the event fires, and shutdown would then wait for this task forever.
                try:
                    async with asyncio.timeout(self.flush_seconds):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    await self.flush()
                except (TimeoutError, RedisError, OSError) as exc:
                    if self._outage_since is None:
                        self._outage_since = time.monotonic()
                        self._dropped_in_outage = 0
                        log.warning("cannot write prediction records to Redis (%r): keeping them in memory "
                                    "(up to %d) and retrying", exc, self.buffer_max)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if self._outage_since is not None:
                    log.warning("prediction records reach Redis again after %.1f s; %d dropped meanwhile",
                                time.monotonic() - self._outage_since, self._dropped_in_outage)
                    self._outage_since = None
                backoff = 0.2
        finally:
            client, self._client = self._client, None
            await client.aclose()

    async def flush(self) -> None:
        """Write everything buffered, a batch per round trip. A batch that fails goes back to the front."""
        buffer = self.buffer
        client = self._client
        if self._xadd_many is None:
            self._xadd_many = client.register_script(XADD_MANY)
        dumps = orjson.dumps
        while buffer:
            count = min(len(buffer), self.batch)
            batch = [buffer.popleft() for _ in range(count)]
            try:
                await self._xadd_many(keys=[self.stream],
                                      args=[self.maxlen, *(dumps(record, default=str) for record in batch)],
                                      client=client)
            except BaseException:
                self._requeue(batch)
                raise
            self.sent += count
            self.metrics.records_sent.inc(count)

    def _requeue(self, batch: list) -> None:
        # Synchronous (no await between pop and put back), so no record of the request path slips in between.
        room = self.buffer_max - len(self.buffer)
        if room < len(batch):
            overflow = len(batch) - max(room, 0)
            batch = batch[overflow:]
            self._drop(overflow)
        self.buffer.extendleft(reversed(batch))

    async def close(self, timeout: float = 2.0) -> None:
        """A last flush at shutdown, bounded in time; what cannot be written is logged as lost."""
        if not self.buffer:
            return
        client = redis_client(self.redis_url)
        self._client = client
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("shutting down with %d prediction records not written to Redis (%r)", len(self.buffer), exc)
        finally:
            await client.aclose()
