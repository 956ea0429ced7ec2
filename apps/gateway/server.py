"""The gateway's own HTTP/1.1 server: the subset of ASGI that apps.gateway.app uses, on asyncio protocols and
httptools' request parser, with nothing else on the way.

Why not uvicorn (which the gateway ran on before, and which ``manage.py gateway --server uvicorn`` still runs):
uvicorn's per-request path (scope with every key, a RequestResponseCycle, proxy-header middleware, flow control,
header regexes, a response written in two ``write`` calls) is code the gateway does not need. Measured side by
side (benchmarks/gateway.py, benchmarks/README.md), this server passes 1.26x uvicorn's requests/s to a trivial
upstream at 0.78x its CPU a request, and adds 0.02-0.03 ms less at concurrency 1 in front of MLflow.
It does what the gateway needs and no more:

- HTTP/1.1 keep-alive (idle connections closed after ``keep_alive`` seconds), HTTP/1.0 and ``Connection:
  close``; pipelined requests answered in order, one at a time;
- slow clients: a request head must arrive whole within ``keep_alive`` seconds of the connection opening or
  its last answer (else the connection is closed), and a body that stops arriving for ``keep_alive`` seconds
  gets 408 and the connection closed;
- request bodies by Content-Length or chunked (httptools decodes), streamed to ``receive()`` as they arrive,
  ``Expect: 100-continue`` answered when the app first asks for the body; request heads over
  ``MAX_HEAD_BYTES`` are refused with 431;
- a response is one ``write`` (status line, headers and body together); the app must send a Content-Length
  (the gateway always does), streaming responses are not supported;
- malformed requests get 400 and the connection is closed; an app that fails before answering gets 500;
- back-pressure: while the client does not read, no further pipelined request is started;
- graceful shutdown: stop accepting, close idle connections, let requests in flight finish (up to
  ``graceful_seconds``), then the app's own shutdown.

The ASGI scope holds ``type``, ``http_version``, ``method``, ``scheme``, ``path``, ``raw_path``, ``query_string``,
``headers`` (names lower-cased), ``client`` and ``server``: what any plain ASGI app reads first.
"""
from __future__ import annotations

import asyncio
import collections
import http
import logging
import signal
from urllib.parse import unquote

import httptools

from .upstream import set_nodelay

log = logging.getLogger("apps.gateway")

MAX_HEAD_BYTES = 64 * 1024

_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("latin-1") for status in http.HTTPStatus}


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode("latin-1")


def _simple(status: int, message: bytes) -> bytes:
    return (_status_line(status) + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(message), message))


class _Exchange:
    """One request and its response: the ASGI receive/send pair the app is called with."""

    __slots__ = ("body", "body_done", "conn", "continue_sent", "expect_continue", "keep_alive", "responded",
                 "scope", "started", "wake")

    def __init__(self, conn: HttpProtocol, scope: dict, keep_alive: bool, expect_continue: bool):
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.body: list[bytes] = []
        self.body_done = False
        self.wake: asyncio.Event | None = None
        self.started: tuple[int, list] | None = None
        self.responded = False

    async def receive(self) -> dict:
        conn = self.conn
        while not self.body_done and not conn.lost:
            if self.body:
                break  # hand over what has arrived
            if self.expect_continue and not self.continue_sent:
                self.continue_sent = True
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if self.wake is None:
                self.wake = asyncio.Event()
            conn.resume_reading()
            await self.wake.wait()
            self.wake.clear()
        if conn.lost or self.responded:
            return {"type": "http.disconnect"}
        body = self.body
        chunk = body[0] if len(body) == 1 else b"".join(body)
        self.body = []
        return {"type": "http.request", "body": chunk, "more_body": not self.body_done}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started is not None or self.responded:
                raise RuntimeError("http.response.start sent twice")
            self.started = (message["status"], message.get("headers") or [])
            return
        if kind != "http.response.body" or self.started is None or self.responded:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if message.get("more_body"):
            raise RuntimeError("the gateway's server does not stream responses")
        status, headers = self.started
        body = message.get("body", b"")
        parts = [_status_line(status)]
        length = None
        for name, value in headers:
            if name == b"content-length":
                length = value
            elif name == b"connection" and value.lower() == b"close":
                self.keep_alive = False
                continue
            parts += (name, b": ", value, b"\r\n")
        if length is None:
            parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        elif int(length) != len(body):
            raise RuntimeError("Content-Length does not match the body")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.responded = True
        if not self.conn.lost:
            self.conn.transport.write(b"".join(parts))


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: Server):
        self.server = server
        self.loop = server.loop
        self.app = server.app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.reading = True
        self.writable = True
        self.current: _Exchange | None = None  # the exchange the app is answering
        self.receiving: _Exchange | None = None  # the exchange whose request bytes are arriving
        self.pipeline: collections.deque[_Exchange] = collections.deque()
        self._url = b""
        self._headers: list = []
        self._head_bytes = 0
        self._head_size = 0
        self._in_head = False
        self._expect = False
        self._client = None
        self.last_active = 0.0  # the connection opened or its last answer went out
        self.body_at = 0.0  # the last bytes of the body being received arrived (or its head completed)

    # --- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        set_nodelay(transport)
        peer = transport.get_extra_info("peername")
        self._client = tuple(peer[:2]) if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        self.last_active = self.loop.time()

    def connection_lost(self, exc) -> None:
        self.lost = True
        self.server.connections.discard(self)
        for exchange in (self.current, self.receiving):
            if exchange is not None and exchange.wake is not None:
                exchange.wake.set()

    def data_received(self, data: bytes) -> None:
        if self._in_head or self.receiving is None:
            self._head_bytes += len(data)  # bytes since the last complete head (a body may be among them)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b"protocol upgrades are not supported")
            return
        except httptools.HttpParserError:
            if self._head_size > MAX_HEAD_BYTES:
                self._reject(431, b"request head too large")
            else:
                self._reject(400, b"malformed HTTP request")
            return
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
            # A head still not complete after this many bytes (httptools keeps a partial header to itself).
            self._reject(431, b"request head too large")

    def eof_received(self):
        return False

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._next()

    # --- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_head = True
        self._expect = False
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD_BYTES:
            raise ValueError("request head too large")  # httptools stops: HttpParserCallbackError, 431 above
        name = name.lower()
        self._headers.append((name, value))
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        parser = self.parser
        url = self._url
        raw_path, _, query = url.partition(b"?")
        if b"%" in raw_path:
            path = unquote(raw_path.decode("latin-1"))
        else:
            path = raw_path.decode("latin-1")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": parser.get_http_version(), "method": parser.get_method().decode("ascii"),
                 "scheme": "http", "path": path, "raw_path": raw_path, "query_string": query,
                 "root_path": "", "headers": self._headers, "client": self._client,
                 "server": self.server.sockname}
        exchange = _Exchange(self, scope, parser.should_keep_alive(), self._expect)
        self.receiving = exchange
        self.body_at = self.loop.time()
        if self.current is None and self.writable:
            self._start(exchange)
        else:
            # One request at a time: a pipelined one waits its turn, and the client's further bytes wait in the
            # socket until the queue is empty again.
            self.pipeline.append(exchange)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        self.body_at = self.loop.time()
        exchange = self.receiving
        if exchange.responded:
            return  # answered without reading the whole body (e.g. 401): the rest is dropped
        exchange.body.append(body)
        if exchange.wake is not None:
            exchange.wake.set()

    def on_message_complete(self) -> None:
        exchange = self.receiving
        self.receiving = None
        exchange.body_done = True
        if exchange.wake is not None:
            exchange.wake.set()
        if exchange.responded:
            self._next()

    # --- running the app ----------------------------------------------------------------------------------

    def _start(self, exchange: _Exchange) -> None:
        self.current = exchange
        self.server.inflight += 1
        self.loop.create_task(self._run(exchange))

    async def _run(self, exchange: _Exchange) -> None:
        try:
            await self.app(exchange.scope, exchange.receive, exchange.send)
        except Exception:
            log.exception("the gateway app failed on %s %s", exchange.scope["method"], exchange.scope["path"])
            if not exchange.responded and not self.lost:
                exchange.responded = True
                exchange.keep_alive = False
                self.transport.write(_simple(500, b"internal error"))
        finally:
            self.server.inflight -= 1
        if not exchange.responded and not self.lost:
            exchange.keep_alive = False
            self.transport.write(_simple(500, b"no response"))
        self.current = None
        if self.lost:
            return
        if not exchange.keep_alive or self.server.stopping:
            self.transport.close()
            return
        self._next()

    def _next(self) -> None:
        if self.current is not None or self.lost or not self.writable:
            return
        if self.pipeline:
            self._start(self.pipeline.popleft())
            return
        self.resume_reading()
        self.last_active = self.loop.time()

    def pause_reading(self) -> None:
        if self.reading and not self.lost:
            self.reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.reading and not self.lost:
            self.reading = True
            self.transport.resume_reading()

    def _reject(self, status: int, message: bytes) -> None:
        if self.current is None and not self.lost:
            self.transport.write(_simple(status, message))
        self.transport.close()

    # --- idle connections ---------------------------------------------------------------------------------

    def close_if_idle(self, since: float | None = None) -> None:
        """Close the connection when no request is in it (and it has been so since ``since``, if given).

        A request head that has not completed by then is dropped with it: a head must arrive whole within the
        keep-alive time after the connection opened or its last answer went out, however slowly it trickles."""
        if self.current is None and self.receiving is None and not self.lost and not self.pipeline \
                and (since is None or self.last_active <= since):
            self.transport.close()

    def close_if_stalled(self, since: float) -> None:
        """Answer 408 and close when a request's body stopped arriving (no bytes of it since ``since``) while
        the server was reading: the app waiting for it then gets ``http.disconnect``."""
        exchange = self.receiving
        if exchange is None or not self.reading or self.lost or self.body_at > since:
            return
        if self.current is None or (self.current is exchange and not exchange.responded):
            # Nobody else is writing on this connection: the client hears why it is closed.
            exchange.responded = True
            self.transport.write(_simple(408, b"request timed out: the body stopped arriving"))
        self.transport.close()


class Server:
    """Listens, runs the app's start-up, serves until SIGTERM/SIGINT, then shuts down gracefully."""

    def __init__(self, app, *, host: str, port: int, keep_alive: float = 65.0, graceful_seconds: float = 10.0,
                 backlog: int = 2048):
        self.app = app
        self.host = host
        self.port = port
        self.keep_alive = keep_alive
        self.graceful_seconds = graceful_seconds
        self.backlog = backlog
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connections: set[HttpProtocol] = set()
        self.inflight = 0
        self.stopping = False
        self.sockname = None
        self._stop = None

    def run(self) -> None:
        import uvloop

        uvloop.run(self.serve())

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.app.startup()
        try:
            server = await self.loop.create_server(lambda: HttpProtocol(self), self.host, self.port,
                                                   backlog=self.backlog, reuse_address=True)
        except BaseException:
            await self.app.shutdown()
            raise
        self.sockname = server.sockets[0].getsockname()[:2]
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self._stop.set)
        sweeper = self.loop.create_task(self._sweep_idle())
        try:
            await self._stop.wait()
        finally:
            self.stopping = True
            sweeper.cancel()
            server.close()
            for conn in list(self.connections):
                conn.close_if_idle()
            deadline = self.loop.time() + self.graceful_seconds
            while self.inflight and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.transport.close()
            await self.app.shutdown()

    async def _sweep_idle(self) -> None:
        # One sweep for every connection instead of a timer armed and cancelled on each request: a connection
        # is closed between keep_alive and keep_alive + the sweep's period after its last answer.
        period = max(0.05, min(1.0, self.keep_alive / 4))
        while True:
            await asyncio.sleep(period)
            since = self.loop.time() - self.keep_alive
            for conn in list(self.connections):
                conn.close_if_idle(since)
                conn.close_if_stalled(since)
