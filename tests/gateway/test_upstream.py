"""The gateway's upstream clients (apps/gateway/upstream.py) against a real loopback HTTP server written here on
asyncio + httptools: keep-alive reuse, Content-Length, chunked and close-delimited answers, a server closing an
idle connection, a kept-alive connection dropped as the next request goes out (retried on a fresh connection by
the native client), refused connections, timeouts, 1 MB bodies both ways, the per-replica connection bound.

Most cases run against both clients ("native" and "aiohttp"), since the gateway treats them alike."""
from __future__ import annotations

import asyncio
import json

import httptools
import pytest
import uvloop

from apps.gateway.upstream import ConnectFailure, Disconnected, NativeUpstream, make_upstream
from tests.gateway.support import free_port

CLIENTS = ["native", "aiohttp"]


class Server:
    """An HTTP/1.1 server whose behaviour is chosen by the path; counts connections and requests."""

    def __init__(self):
        self.connections = 0
        self.requests: list[dict] = []
        self.server = None
        self.port = None
        self.open: set = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _ServerProtocol(self), "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        self.server.close()
        for transport in list(self.open):
            transport.close()
        await asyncio.sleep(0)


class _ServerProtocol(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.served = 0

    def connection_made(self, transport):
        self.transport = transport
        self.server.connections += 1
        self.server.open.add(transport)

    def connection_lost(self, exc):
        self.server.open.discard(self.transport)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.url = b""
        self.headers = {}
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        self.served += 1
        body = b"".join(self.body)
        path = self.url.decode()
        self.server.requests.append({"path": path, "method": self.parser.get_method().decode(),
                                     "headers": self.headers, "size": len(body), "nth": self.served})
        write = self.transport.write
        loop = asyncio.get_running_loop()
        if path.endswith("/sleep"):
            return  # never answers
        if path.endswith("/drop-second") and self.served > 1:
            self.transport.close()  # as a server closing a kept-alive connection just as the request arrives
            return
        if path.endswith("/chunked"):
            write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b'{"predictions": ', b"[1, 2, 3]", b"}"):
                write(b"%x\r\n%s\r\n" % (len(piece), piece))
            write(b"0\r\n\r\n")
            return
        if path.endswith("/eof"):
            write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            self.transport.close()
            return
        if path.endswith("/half"):
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            self.transport.close()
            return
        if path.endswith("/echo"):
            answer = body
        else:
            answer = json.dumps({"path": path, "size": len(body),
                                 "content_type": self.headers.get("content-type")}).encode()
        write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (len(answer), answer))
        if path.endswith("/close-idle"):
            loop.call_later(0.05, self.transport.close)  # the server's keep-alive timeout, made short


def run(test):
    """Run ``test(server)`` in a fresh uvloop, with the server started and stopped around it."""

    async def main():
        server = await Server().start()
        try:
            return await test(server)
        finally:
            await server.stop()

    return uvloop.run(main())


def client(kind: str):
    return make_upstream(kind, connections=16, connections_per_replica=4)


@pytest.mark.parametrize("kind", CLIENTS)
def test_keep_alive_reuses_one_connection_and_sends_json(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            for i in range(5):
                response = await upstream.request("POST", server.url + "/model", "/invocations",
                                                  b'{"inputs": [%d]}' % i, 5.0)
                assert response.status == 200
                assert json.loads(response.body) == {"path": "/model/invocations", "size": len(b'{"inputs": [0]}'),
                                                     "content_type": "application/json"}
                assert (b"Content-Type", b"application/json") in response.headers
        finally:
            await upstream.close()
        assert server.connections == 1
        assert [r["nth"] for r in server.requests] == [1, 2, 3, 4, 5]
        assert all(r["method"] == "POST" and r["headers"]["content-length"] == "15" for r in server.requests)

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_get_without_body(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            response = await upstream.request("GET", server.url, "/ping", None, 5.0)
        finally:
            await upstream.close()
        assert response.status == 200
        assert server.requests[0]["method"] == "GET" and server.requests[0]["path"] == "/ping"
        assert server.requests[0]["size"] == 0

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_chunked_and_close_delimited_answers(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            chunked = await upstream.request("POST", server.url, "/chunked", b"{}", 5.0)
            again = await upstream.request("POST", server.url, "/chunked", b"{}", 5.0)
            eof = await upstream.request("POST", server.url, "/eof", b"{}", 5.0)
            after = await upstream.request("POST", server.url, "/ok", b"{}", 5.0)
        finally:
            await upstream.close()
        assert chunked.status == 200 and json.loads(chunked.body) == {"predictions": [1, 2, 3]}
        assert again.body == chunked.body
        assert eof.status == 200 and eof.body == b"until the end"
        assert after.status == 200
        # Chunked answers keep the connection; the close-delimited one ends it: the next request opens another.
        assert [r["nth"] for r in server.requests] == [1, 2, 3, 1]

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_server_closing_an_idle_connection(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            first = await upstream.request("POST", server.url, "/close-idle", b"{}", 5.0)
            await asyncio.sleep(0.2)  # the server has closed the kept-alive connection meanwhile
            second = await upstream.request("POST", server.url, "/close-idle", b"{}", 5.0)
        finally:
            await upstream.close()
        assert first.status == second.status == 200
        assert server.connections == 2

    run(test)


def test_native_retries_a_kept_alive_connection_dropped_under_the_request():
    async def test(server):
        upstream = NativeUpstream(connections_per_replica=4)
        await upstream.start()
        try:
            first = await upstream.request("POST", server.url, "/drop-second", b"{}", 5.0)
            # The server drops the kept-alive connection when this request arrives on it, without an answer:
            # the client sends it again on a new connection, no error reaches the caller.
            second = await upstream.request("POST", server.url, "/drop-second", b"{}", 5.0)
        finally:
            await upstream.close()
        assert first.status == second.status == 200
        assert server.connections == 2
        assert [r["nth"] for r in server.requests] == [1, 2, 1]

    run(test)


def test_native_a_fresh_connection_dropped_is_a_disconnect():
    async def test(server):
        upstream = NativeUpstream(connections_per_replica=4)
        await upstream.start()
        try:
            with pytest.raises(Disconnected) as caught:
                await upstream.request("POST", server.url, "/half", b"{}", 5.0)
            assert caught.value.kind == "ServerDisconnected"
            # The pool is not poisoned: the next request gets a new connection.
            assert (await upstream.request("POST", server.url, "/ok", b"{}", 5.0)).status == 200
        finally:
            await upstream.close()

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_cut_answer_is_a_disconnect(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            with pytest.raises(Disconnected):
                await upstream.request("POST", server.url, "/half", b"{}", 5.0)
        finally:
            await upstream.close()

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_refused_connection_is_a_connect_failure(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            with pytest.raises(ConnectFailure):
                await upstream.request("POST", f"http://127.0.0.1:{free_port()}", "/invocations", b"{}", 5.0)
        finally:
            await upstream.close()

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_timeout_raises_timeout_error_and_the_pool_recovers(kind):
    async def test(server):
        upstream = client(kind)
        await upstream.start()
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            with pytest.raises(TimeoutError):
                await upstream.request("POST", server.url, "/sleep", b"{}", 0.3)
            assert loop.time() - started < 3.0  # the timeout, not some default
            assert (await upstream.request("POST", server.url, "/ok", b"{}", 5.0)).status == 200
        finally:
            await upstream.close()
        assert server.connections == 2  # the timed-out connection was not reused

    run(test)


@pytest.mark.parametrize("kind", CLIENTS)
def test_one_megabyte_body_both_ways(kind):
    payload = json.dumps({"inputs": ["x" * 1000] * 1048}).encode()
    assert len(payload) > 1_048_576

    async def test(server):
        upstream = client(kind)
        await upstream.start()
        try:
            response = await upstream.request("POST", server.url, "/echo", payload, 10.0)
        finally:
            await upstream.close()
        assert response.status == 200
        assert response.body == payload
        assert server.requests[0]["size"] == len(payload)

    run(test)


def test_native_pool_is_bounded_per_replica_and_concurrent_requests_all_answer():
    async def test(server):
        upstream = NativeUpstream(connections_per_replica=3)
        await upstream.start()
        try:
            answers = await asyncio.gather(*(upstream.request("POST", server.url, "/ok", b"{}", 5.0)
                                             for _ in range(40)))
            # Waiting for a busy pool counts against the deadline: a request that cannot get a connection in
            # time times out (the connections are all held by never-answered requests here).
            hung = [asyncio.ensure_future(upstream.request("POST", server.url, "/sleep", b"{}", 1.0))
                    for _ in range(3)]
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await upstream.request("POST", server.url, "/ok", b"{}", 0.2)
            for task in hung:
                with pytest.raises(TimeoutError):
                    await task
            assert (await upstream.request("POST", server.url, "/ok", b"{}", 5.0)).status == 200
        finally:
            await upstream.close()
        assert all(a.status == 200 for a in answers)
        assert server.connections == 3 + 1  # 3 for the 40 requests (and the hung ones), 1 after the timeouts
        assert max(r["nth"] for r in server.requests) > 1  # connections were reused

    run(test)


def test_unknown_client_name_is_refused():
    with pytest.raises(ValueError, match="MODELPLANE_GATEWAY_UPSTREAM_CLIENT"):
        make_upstream("httpx", connections=1, connections_per_replica=1)
