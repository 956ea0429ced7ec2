"""The gateway's own HTTP/1.1 server (apps/gateway/server.py), over raw sockets against ``manage.py gateway``:
keep-alive, pipelining, 100-continue, chunked bodies, a body answered before it has all arrived, HTTP/1.0,
malformed and oversized heads, idle connections, slow clients, a graceful stop that lets a request in flight
finish, and ``--server uvicorn`` serving the same app.
"""
from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httptools
import pytest

from tests.gateway.support import GatewayProcess, call, key_for, publish, route_doc, variant, wait_until

ONE_ROW = json.dumps({"dataframe_split": {"columns": ["amount", "age"], "data": [[12.5, 40]]}}).encode()


class Response:
    def __init__(self):
        self.headers: dict[str, str] = {}
        self.body = b""
        self.status = 0


class Conn:
    """One raw client connection; one response parser for all its responses (pipelined ones too)."""

    def __init__(self, url: str):
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.parser = httptools.HttpResponseParser(self)
        self.current: Response | None = None
        self.complete: list[Response] = []

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.current = Response()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.current.status = self.parser.get_status_code()
        self.complete.append(self.current)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> Response:
        while not self.complete:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed before a whole response")
            self.parser.feed_data(data)
        return self.complete.pop(0)

    def read_raw(self, size: int = 65536) -> bytes:
        return self.sock.recv(size)

    def closed(self, wait: float = 5.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request(path: str, body: bytes | None = None, *, method: str | None = None, headers: dict | None = None,
            version: str = "1.1") -> bytes:
    method = method or ("POST" if body is not None else "GET")
    lines = [f"{method} {path} HTTP/{version}", "Host: gateway"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@pytest.fixture
def route(gateway, rc, upstream, unique):
    name = unique("srv")
    publish(rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10,
               "route applied")
    return name


def key_header(name: str) -> dict:
    return {"Authorization": f"Bearer {key_for(name)}", "Content-Type": "application/json"}


def test_keep_alive_answers_several_requests_on_one_connection(gateway, route):
    conn = Conn(gateway.url)
    try:
        for _ in range(3):
            conn.send(request(f"/v1/deployments/{route}/invocations", ONE_ROW, headers=key_header(route)))
            answer = conn.read()
            assert answer.status == 200, answer.body
            assert json.loads(answer.body)["predictions"] == [0]
            assert answer.headers["content-length"] == str(len(answer.body))
            assert "connection" not in answer.headers
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(gateway, route):
    conn = Conn(gateway.url)
    try:
        ids = ["first-1", "second-2", "third-3"]
        conn.send(b"".join(request(f"/v1/deployments/{route}/invocations", ONE_ROW,
                                   headers={**key_header(route), "X-Request-ID": rid}) for rid in ids))
        got = [conn.read() for _ in ids]
        assert [r.status for r in got] == [200, 200, 200]
        assert [r.headers["x-request-id"] for r in got] == ids
    finally:
        conn.close()


def test_expect_100_continue_is_answered_before_the_body(gateway, route):
    conn = Conn(gateway.url)
    try:
        head = request(f"/v1/deployments/{route}/invocations", ONE_ROW,
                       headers={**key_header(route), "Expect": "100-continue"})
        conn.send(head[: -len(ONE_ROW)])  # the head alone: the client waits for 100 Continue
        assert conn.read_raw().startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.send(ONE_ROW)
        answer = conn.read()
        assert answer.status == 200 and json.loads(answer.body)["received"] == json.loads(ONE_ROW)
    finally:
        conn.close()


def test_a_chunked_body_is_read_whole(gateway, route):
    conn = Conn(gateway.url)
    try:
        head = (f"POST /v1/deployments/{route}/invocations HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n"
                f"Authorization: Bearer {key_for(route)}\r\n\r\n").encode()
        half = len(ONE_ROW) // 2
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (ONE_ROW[:half], ONE_ROW[half:]))
        conn.send(head)
        time.sleep(0.05)  # the body arrives after the app started and asked for it
        conn.send(chunks + b"0\r\n\r\n")
        answer = conn.read()
        assert answer.status == 200, answer.body
        assert json.loads(answer.body)["received"] == json.loads(ONE_ROW)
    finally:
        conn.close()


def test_an_answer_before_the_whole_body_keeps_the_connection_usable(gateway, route):
    """A wrong key is refused before the body is read; the rest of that body is dropped, not taken for the
    next request."""
    conn = Conn(gateway.url)
    try:
        refused = request(f"/v1/deployments/{route}/invocations", ONE_ROW,
                          headers={"Authorization": "Bearer mpk_wrong", "Content-Type": "application/json"})
        conn.send(refused[: -len(ONE_ROW) + 5])
        answer = conn.read()
        assert answer.status == 401 and json.loads(answer.body)["error"]["code"] == "unauthorized"
        conn.send(refused[-len(ONE_ROW) + 5:])
        conn.send(request(f"/v1/deployments/{route}/invocations", ONE_ROW, headers=key_header(route)))
        assert conn.read().status == 200
    finally:
        conn.close()


def test_http_1_0_and_connection_close_end_the_connection_after_the_answer(gateway):
    for raw in (request("/v2/health/live", version="1.0"),
                request("/v2/health/live", headers={"Connection": "close"})):
        conn = Conn(gateway.url)
        try:
            conn.send(raw)
            answer = conn.read()
            assert answer.status == 200 and answer.headers["connection"] == "close"
            assert conn.closed()
        finally:
            conn.close()


def test_a_payload_over_the_limit_closes_the_connection(gateway, rc, upstream, unique):
    name = unique("srv")
    publish(rc, route_doc(name, [variant("blue", [upstream.urls["a"]])], max_payload_bytes=100))
    wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10, "route")
    conn = Conn(gateway.url)
    try:
        body = b"[" + b"1," * 200 + b"1]"
        conn.send(request(f"/v1/deployments/{name}/invocations", body, headers=key_header(name)))
        answer = conn.read()
        assert answer.status == 413 and answer.headers["connection"] == "close"
        assert conn.closed()
    finally:
        conn.close()


def test_a_large_body_arriving_with_its_head_is_not_taken_for_a_large_head(gateway, route):
    rows = [[12.5, 40]] * 20_000  # ~200 KB, sent with the head in one write
    body = json.dumps({"dataframe_split": {"columns": ["amount", "age"], "data": rows}}).encode()
    assert len(body) > 150_000
    conn = Conn(gateway.url)
    try:
        conn.send(request(f"/v1/deployments/{route}/invocations", body, headers=key_header(route)))
        answer = conn.read()
        assert answer.status == 200, answer.body[:200]
        assert len(json.loads(answer.body)["received"]["dataframe_split"]["data"]) == 20_000
    finally:
        conn.close()


@pytest.mark.parametrize("raw, status", [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET /v2/health/live HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"GET /v2/health/live HTTP/1.1\r\nHost: g\r\nX-Big: " + b"a" * 70_000, 431),  # never ends
])
def test_malformed_or_oversized_heads_are_refused_and_the_connection_closed(gateway, raw, status):
    conn = Conn(gateway.url)
    try:
        conn.send(raw)
        answer = conn.read()
        assert answer.status == status
        assert conn.closed()
    finally:
        conn.close()
    assert call(gateway.url, "/v2/health/live").status == 200  # the server itself is fine


def test_idle_connections_are_closed_after_the_keep_alive_and_a_stop_lets_a_request_finish(redis_server, upstream,
                                                                                           unique):
    gateway = GatewayProcess(redis_server.url, args=("--keep-alive", "1"))
    try:
        idle = Conn(gateway.url)
        idle.send(request("/v2/health/live"))
        assert idle.read().status == 200
        started = time.monotonic()
        assert idle.closed(wait=5)
        assert 0.5 < time.monotonic() - started < 4.5
        idle.close()

        name = unique("srv")
        slow = upstream.urls["a"] + "/sleep/1.5"
        client = redis_server.client()
        publish(client, route_doc(name, [variant("blue", [slow])]))
        client.close()
        wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10, "route")
        conn = Conn(gateway.url)
        answers = []
        reader = threading.Thread(target=lambda: answers.append(conn.read()))
        conn.send(request(f"/v1/deployments/{name}/invocations", ONE_ROW, headers=key_header(name)))
        reader.start()
        time.sleep(0.5)  # the request is at the model server
        gateway.popen.send_signal(signal.SIGTERM)
        reader.join(10)
        assert answers and answers[0].status == 200, "the request in flight was answered"
        assert gateway.popen.wait(15) == 0
        conn.close()
    finally:
        gateway.close()


def test_slow_clients_a_trickled_head_is_dropped_and_a_stalled_body_gets_408(redis_server, upstream, unique):
    gateway = GatewayProcess(redis_server.url, args=("--keep-alive", "1"))
    try:
        name = unique("srv")
        client = redis_server.client()
        publish(client, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
        client.close()
        wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10, "route")

        # A body that stops arriving: 408, and the connection closed, about keep-alive seconds later.
        stalled = Conn(gateway.url)
        whole = request(f"/v1/deployments/{name}/invocations", ONE_ROW, headers=key_header(name))
        started = time.monotonic()
        stalled.send(whole[:-10])
        answer = stalled.read()
        assert answer.status == 408
        assert b"body stopped arriving" in answer.body
        assert 0.5 < time.monotonic() - started < 4.5
        assert stalled.closed()
        stalled.close()

        # A head sent a few bytes at a time, each within the keep-alive time: closed all the same.
        trickled = Conn(gateway.url)
        head = request("/v2/health/live")[:-2]
        started = time.monotonic()
        with pytest.raises(OSError):
            for i in range(0, len(head), 4):
                trickled.send(head[i:i + 4])
                time.sleep(0.3)
                if time.monotonic() - started > 8:
                    break
            trickled.send(b"\r\n")
            trickled.read()
        assert time.monotonic() - started < 6
        trickled.close()

        # The server itself carries on.
        assert call(gateway.url, "/v2/health/live").status == 200
    finally:
        gateway.close()


def test_the_uvicorn_option_serves_the_same_app(redis_server, upstream, unique):
    gateway = GatewayProcess(redis_server.url, args=("--server", "uvicorn"))
    try:
        assert "(uvicorn server;" in gateway.log.read_text()
        name = unique("srv")
        client = redis_server.client()
        publish(client, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
        client.close()
        path = f"/v1/deployments/{name}/invocations"
        wait_until(lambda: call(gateway.url, path, ONE_ROW, key=key_for(name)).status == 200, 10, "route")
        answer = call(gateway.url, path, ONE_ROW, key=key_for(name))
        assert answer.headers["x-modelplane-variant"] == "blue"
        assert call(gateway.url, path, ONE_ROW, key="mpk_wrong").status == 401
    finally:
        gateway.close()
