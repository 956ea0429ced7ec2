"""The gateway's upstream clients: how a request reaches a model server and what can go wrong on the way.

Everything above this module (routing, retries, ejection, 504s, metrics) sees one small interface,
:class:`Upstream`, and three outcomes besides an answer:

- :class:`ConnectFailure`: no connection could be made (refused, unreachable, connect timeout). The app retries
  another replica and ejects this one for a few seconds.
- :class:`Disconnected`: the connection broke before a full answer came back (reset, closed, malformed). The
  app retries another replica without ejecting this one.
- :class:`TimeoutError` (the builtin): the route's deadline passed. The app answers 504.

Two implementations, chosen by ``MODELPLANE_GATEWAY_UPSTREAM_CLIENT``:

- :class:`NativeUpstream` ("native"): a minimal HTTP/1.1 client for model servers on loopback, built on
  asyncio protocols (uvloop's in the gateway) and httptools' response parser, with a keep-alive pool per replica
  URL. It exists because aiohttp's client costs ~145 us of CPU a request here, more than the rest of the gateway
  (benchmarks/README.md, "gateway.py"). It speaks just what model servers need: ``POST`` with Content-Length and
  ``Content-Type: application/json`` (MLflow's scoring server answers 500 without it), ``GET``; answers framed by
  Content-Length, chunked, or (HTTP/1.0 style) by the connection's end. No TLS, no proxies, no redirects, no
  compression, no cookies: the replicas are plain HTTP addresses the control plane wrote into the route.
- :class:`AiohttpUpstream` ("aiohttp"): the shared ``aiohttp.ClientSession`` the gateway used before, its
  exceptions mapped to the outcomes above. Kept as a fallback; "native" is the default (benchmarks/README.md).

The native pools are bounded per replica (``MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS_PER_REPLICA``); the
process-wide ``MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS`` bounds aiohttp's connector only.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from urllib.parse import urlsplit

import httptools

# Drop a connection idle this long: below uvicorn's 5 s keep-alive default (MLflow's scoring server), so the
# gateway closes an idle connection before the server does and a request rarely meets one closed under it.
KEEPALIVE_SECONDS = 4.0
# Connecting to a replica on loopback takes microseconds; past this it is not coming.
CONNECT_TIMEOUT = 2.0
# Bodies up to this size go out in one write with the head (one segment); larger ones in two writes, not copied.
JOIN_BELOW = 64 * 1024


class UpstreamError(Exception):
    """No usable answer came from the replica; ``kind`` names what happened (shown in the 503's message)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class ConnectFailure(UpstreamError):
    """No connection could be made: refused, unreachable, or not within the connect timeout."""


class Disconnected(UpstreamError):
    """The connection broke (reset, closed, unparseable answer) before the whole answer came back."""


class Response:
    """One answer: status, headers as (name, value) byte pairs in the server's spelling, the whole body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


class Upstream:
    """What the gateway needs from an upstream client; one per gateway process, made in the lifespan start."""

    name = "?"

    async def start(self) -> None:
        """Set up (inside the running event loop)."""

    async def request(self, method: str, url: str, path: str, body: bytes | None, timeout: float) -> Response:
        """``method`` ``url`` + ``path`` with ``body`` (sent as JSON when not None) within ``timeout`` seconds."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close every connection."""


def set_nodelay(transport) -> None:
    """TCP_NODELAY on a transport's socket: uvloop and asyncio set it already for TCP; cheap to be sure (a small
    head + body must not wait for Nagle). Used by the upstream client and the gateway's server."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_upstream(kind: str, *, connections: int, connections_per_replica: int) -> Upstream:
    """The client ``MODELPLANE_GATEWAY_UPSTREAM_CLIENT`` names ("native" or "aiohttp")."""
    if kind == "native":
        return NativeUpstream(connections_per_replica=connections_per_replica)
    if kind == "aiohttp":
        return AiohttpUpstream(connections=connections, connections_per_replica=connections_per_replica)
    raise ValueError(f"MODELPLANE_GATEWAY_UPSTREAM_CLIENT must be 'native' or 'aiohttp', not {kind!r}")


# --------------------------------------------------------------------------------------------------------
# The native client


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a replica, carrying one request at a time."""

    __slots__ = ("_body", "_framed", "_headers", "_headers_done", "_timer", "closed", "exchanges", "idle_at",
                 "keep_alive", "parser", "pool", "received", "transport", "waiter")

    def __init__(self, pool: _Pool):
        self.pool = pool
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self._timer = None
        self._headers: list = []
        self._body: list = []
        self._framed = False
        self._headers_done = False
        self.received = False  # any byte of the current answer arrived
        self.keep_alive = False
        self.closed = False
        self.exchanges = 0  # requests answered on this connection (0: fresh)
        self.idle_at = 0.0

    # --- asyncio.Protocol ---

    def connection_made(self, transport) -> None:
        self.transport = transport
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes nobody asked for (a server speaking out of turn): the connection cannot be trusted.
            self.transport.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Disconnected("InvalidResponse", str(exc)))
            self.transport.close()

    def eof_received(self):
        return False  # close our side too: connection_lost follows

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.pool.lost(self)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and not self._framed:
                # Neither Content-Length nor chunked: the answer ends with the connection (HTTP/1.0 style).
                self.keep_alive = False
                self._done()
            elif self.received:
                self._fail(Disconnected("ServerDisconnected", "the connection closed in the middle of the answer"))
            else:
                self._fail(Disconnected("ServerDisconnected", repr(exc) if exc else "closed before an answer"))

    # --- httptools callbacks ---

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if not self._framed:
            lower = name.lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self._done()

    # --- the exchange ---

    def send(self, head: bytes, body: bytes | None, timeout: float) -> asyncio.Future:
        loop = self.pool.loop
        self.waiter = waiter = loop.create_future()
        self._headers = []
        self._body = []
        self._framed = False
        self._headers_done = False
        self.received = False
        self._timer = loop.call_later(timeout, self._timed_out)
        if body is None:
            self.transport.write(head)
        elif len(body) < JOIN_BELOW:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
            self.transport.write(body)
        return waiter

    def _done(self) -> None:
        waiter = self.waiter
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            body = self._body
            waiter.set_result(Response(self.parser.get_status_code(), self._headers,
                                       body[0] if len(body) == 1 else b"".join(body)))

    def _fail(self, exc: BaseException) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _timed_out(self) -> None:
        self._timer = None
        # Half an answer may still come: the connection cannot carry another request.
        self._fail(TimeoutError())
        self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Keep-alive connections to one replica (host, port), at most ``limit`` open or opening at once."""

    __slots__ = ("closing", "connections", "heads", "host", "idle", "limit", "loop", "port", "prefix", "waiters")

    def __init__(self, url: str, limit: int, loop):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise Disconnected("InvalidURL", f"the native upstream client speaks plain http only: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.limit = max(1, limit)
        self.loop = loop
        self.idle: list[_Connection] = []  # most recently used last: reused first (its socket is warm)
        self.connections = 0  # open or opening
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.closing = False
        self.heads: dict[tuple, bytes] = {}  # (method, path) -> the request head up to the body's headers

    async def acquire(self, deadline: float, fresh: bool = False) -> _Connection:
        """An idle connection (unless ``fresh``), else a new one, else the next one released."""
        idle = self.idle
        if not fresh:
            now = self.loop.time()
            while idle:
                connection = idle.pop()
                if connection.closed:
                    continue
                if now - connection.idle_at > KEEPALIVE_SECONDS:
                    connection.close()
                    continue
                return connection
        while self.connections >= self.limit:
            # Every connection is busy: wait for one to come back (or a slot to free), within the deadline.
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._pass_on(waiter.result())  # handed over as we gave up: not ours to keep
                else:
                    waiter.cancel()
                raise
            if handed is not None and not handed.closed:
                # Just released after a full answer: not a connection the server may have closed meanwhile.
                return handed
        remaining = deadline - self.loop.time()
        if remaining <= 0:
            raise TimeoutError
        self.connections += 1
        made: list[_Connection] = []

        def factory() -> _Connection:
            made.append(_Connection(self))
            return made[0]

        try:
            async with asyncio.timeout(min(CONNECT_TIMEOUT, remaining)):
                _, connection = await self.loop.create_connection(factory, self.host, self.port)
        except BaseException as exc:
            if not (made and made[0].transport is not None):
                # Otherwise the protocol saw its transport, and its connection_lost frees the slot.
                self._slot_freed()
            if isinstance(exc, TimeoutError):
                raise ConnectFailure("ConnectionTimeoutError", f"no connection to {self.host}:{self.port} "
                                     f"within {min(CONNECT_TIMEOUT, remaining):g} s") from None
            if isinstance(exc, OSError):
                raise ConnectFailure(type(exc).__name__, str(exc)) from None
            raise
        return connection

    def release(self, connection: _Connection) -> None:
        """Back to the pool after a complete answer, or closed if it cannot carry another request."""
        connection.waiter = None
        if connection.closed:
            return
        if not connection.keep_alive or self.closing:
            connection.close()  # connection_lost frees the slot
            return
        connection.exchanges += 1
        self._pass_on(connection)

    def _pass_on(self, connection: _Connection | None) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        if connection is not None:
            connection.idle_at = self.loop.time()
            self.idle.append(connection)

    def lost(self, connection: _Connection) -> None:
        """A connection closed (by either side): its slot is free."""
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        self._slot_freed()

    def _slot_freed(self) -> None:
        self.connections -= 1
        # A waiter may now open a connection of its own.
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def sweep(self, now: float) -> None:
        """Close connections idle past the keep-alive time (the server would soon close them anyway)."""
        for connection in [c for c in self.idle if now - c.idle_at > KEEPALIVE_SECONDS]:
            connection.close()

    def close(self) -> None:
        self.closing = True
        for connection in list(self.idle):
            connection.close()
        self.idle.clear()


class NativeUpstream(Upstream):
    """HTTP/1.1 over keep-alive connections, one pool per replica URL (module docstring)."""

    name = "native"

    def __init__(self, connections_per_replica: int = 128):
        self.connections_per_replica = connections_per_replica
        self.pools: dict[str, _Pool] = {}
        self.loop = None
        self._sweeper = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._sweeper = self.loop.call_later(KEEPALIVE_SECONDS / 2, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for url, pool in list(self.pools.items()):
            pool.sweep(now)
            if pool.connections == 0 and not pool.waiters:
                # A replica no longer used (or idle): forget it, so replicas come and go without a leak.
                del self.pools[url]
        self._sweeper = self.loop.call_later(KEEPALIVE_SECONDS / 2, self._sweep)

    def _head(self, pool: _Pool, method: str, path: str, length: int | None) -> bytes:
        key = (method, path)
        start = pool.heads.get(key)
        if start is None:
            host = pool.host if pool.port == 80 else f"{pool.host}:{pool.port}"
            if ":" in pool.host:
                host = f"[{pool.host}]:{pool.port}"
            start = (f"{method} {pool.prefix}{path} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Accept: application/json\r\n").encode("latin-1")
            if len(pool.heads) < 100:
                pool.heads[key] = start
        if length is None:
            return start + b"\r\n"
        return start + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length

    async def request(self, method: str, url: str, path: str, body: bytes | None, timeout: float) -> Response:
        loop = self.loop or asyncio.get_running_loop()
        pool = self.pools.get(url)
        if pool is None:
            if self.loop is None:
                await self.start()
            pool = self.pools[url] = _Pool(url, self.connections_per_replica, loop)
        deadline = loop.time() + timeout
        head = self._head(pool, method, path, None if body is None and method == "GET" else len(body or b""))
        fresh = False
        while True:
            connection = await pool.acquire(deadline, fresh)
            reused = connection.exchanges > 0
            if connection.closed:  # lost between the pool and here
                if reused and not fresh:
                    fresh = True
                    continue
                raise Disconnected("ServerDisconnected", "closed before the request was sent")
            remaining = deadline - loop.time()
            if remaining <= 0:
                pool.release(connection)
                raise TimeoutError
            waiter = connection.send(head, body, remaining)
            try:
                response = await waiter
            except Disconnected:
                connection.waiter = None
                if reused and not connection.received and not fresh:
                    # A kept-alive connection the server had closed (or was closing) as we wrote to it: says
                    # nothing about the replica. Once more on a new connection.
                    fresh = True
                    continue
                raise
            except BaseException:
                # Timed out, or the gateway's task was cancelled mid-answer: the connection is unusable.
                connection.waiter = None
                connection.close()
                raise
            pool.release(connection)
            return response

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        await asyncio.sleep(0)  # let the transports close


# --------------------------------------------------------------------------------------------------------
# The aiohttp client (the default before the native one; MODELPLANE_GATEWAY_UPSTREAM_CLIENT=aiohttp)


class AiohttpUpstream(Upstream):
    """A shared ``aiohttp.ClientSession``; its exceptions mapped to :class:`ConnectFailure`/:class:`Disconnected`."""

    name = "aiohttp"
    HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

    def __init__(self, connections: int = 512, connections_per_replica: int = 128):
        import aiohttp

        self.aiohttp = aiohttp
        self.connections = connections
        self.connections_per_replica = connections_per_replica
        self.session = None
        self._urls: dict[tuple, object] = {}
        # "No answer came back from this replica": a connect failure (refused, unreachable, connect timeout)
        # also takes the replica out for a few seconds; a connection closed before the answer does not (a
        # keep-alive connection the server had just closed looks the same, and says nothing about the replica).
        self.connect_failures = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
        self.disconnects = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)

    async def start(self) -> None:
        aiohttp = self.aiohttp
        connector = aiohttp.TCPConnector(
            limit=self.connections, limit_per_host=self.connections_per_replica,
            keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300, enable_cleanup_closed=False)
        self.session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False,
            skip_auto_headers=("User-Agent",), raise_for_status=False)

    def _url(self, url: str, path: str):
        key = (url, path)
        built = self._urls.get(key)
        if built is None:
            from yarl import URL

            # Built once: aiohttp takes a yarl URL as is, where a string would be parsed on every request.
            built = self._urls[key] = URL(url.rstrip("/") + path, encoded=False)
        return built

    async def request(self, method: str, url: str, path: str, body: bytes | None, timeout: float) -> Response:
        if self.session is None:
            await self.start()
        aiohttp = self.aiohttp
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, CONNECT_TIMEOUT))
        try:
            async with self.session.request(method, self._url(url, path), data=body, headers=self.HEADERS,
                                            timeout=limits) as response:
                answer = await response.read()
                return Response(response.status, list(response.raw_headers), answer)
        except self.connect_failures as exc:
            raise ConnectFailure(type(exc).__name__, str(exc)) from None
        except self.disconnects as exc:
            raise Disconnected(type(exc).__name__, str(exc)) from None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
