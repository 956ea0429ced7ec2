"""The gateway's ASGI application: prediction clients in, model servers out. No framework, no ORM, no Django
request cycle: one object that parses the path, checks the key, the rate, the size and the signature, picks a
variant and a replica, forwards with the upstream client (apps.gateway.upstream: the native HTTP/1.1 client or
aiohttp's, by ``MODELPLANE_GATEWAY_UPSTREAM_CLIENT``), answers, and queues a prediction record.

URLs (README "Gateway"):

    POST /v1/deployments/{name}/invocations        MLflow scoring format          key
    GET  /v2/health/live | /v2/health/ready         OIP health                     -
    GET  /v2                                        OIP server metadata            -
    GET  /v2/models/{name}[/versions/{v}]           OIP model metadata             key
    GET  /v2/models/{name}[/versions/{v}]/ready     OIP model ready                key
    POST /v2/models/{name}[/versions/{v}]/infer     OIP inference                  key
    GET  /metrics                                   Prometheus                     -

Errors: /v1 answers Modelplane's ``{"error": {"code", "message", "fields"}}``; /v2 answers the protocol's
``{"error": "<message>"}``. Every response carries ``X-Request-ID`` (the client's, else a new one).
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import random
import time
from random import getrandbits

import orjson
from orjson import Fragment
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import contract
from .config import GatewayConfig
from .metrics import UNKNOWN, Metrics
from .ratelimit import RateLimiter
from .records import RecordSink
from .routing import Route, RouteTable, Variant
from .signature import InputError, check_mlflow, mlflow_to_oip_outputs, oip_metadata, oip_to_mlflow
from .sync import RouteSync
from .upstream import ConnectFailure, Disconnected, Upstream, make_upstream

log = logging.getLogger("apps.gateway")

SERVER_NAME = "modelplane-gateway"
SERVER_VERSION = "1"
MAX_REQUEST_ID = 128
MAX_ENTITY_KEY = 256
MAX_UPSTREAM_MESSAGE = 2000
MAX_CACHED_DIGESTS = 10_000

JSON = b"application/json"
NOT_JSON = {b"text/csv", b"application/x-parquet", b"application/parquet", b"application/octet-stream"}
CORS_ALLOW_HEADERS = b"authorization, content-type, x-modelplane-key, x-modelplane-console-token, " \
                     b"x-request-id, x-modelplane-entity-key"

# "No answer came back from this replica", so another replica may take the request. A connect failure
# (refused, unreachable, connect timeout) also takes the replica out for a few seconds; a connection closed
# before the answer does not (a keep-alive connection the server had just closed looks the same, and says
# nothing about the replica). Both clients of apps.gateway.upstream raise these.
CONNECT_FAILURES = (ConnectFailure,)
DISCONNECTS = (Disconnected,)


class Refused(Exception):
    """A request answered with an error before or instead of the model's answer."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None,
                 retry_after: int | None = None, close: bool = False):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.retry_after = retry_after
        self.close = close


class ClientGone(Exception):
    """The client hung up while sending its body."""


class Request:
    """What the handlers need from one HTTP request, read from the ASGI scope once."""

    __slots__ = (
        "authorization",
        "console_token",
        "content_length",
        "content_type",
        "entity_key",
        "key",
        "method",
        "origin",
        "path",
        "receive",
        "request_id",
        "scope",
        "send",
        "t0",
        "ts",
        "v2",
    )

    def __init__(self, scope, receive, send):
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method = scope["method"]
        self.path = scope["path"]
        self.t0 = time.perf_counter()
        self.ts = time.time()
        self.v2 = self.path.startswith("/v2")
        request_id = content_length = content_type = authorization = key = console = entity = origin = None
        for name, value in scope["headers"]:
            # Header names arrive lower-cased (ASGI); the first letters tell the few we read apart cheaply.
            first = name[:1]
            if first == b"c":
                if name == b"content-length":
                    content_length = value
                elif name == b"content-type":
                    content_type = value
            elif first == b"a":
                if name == b"authorization":
                    authorization = value
            elif first == b"x":
                if name == b"x-request-id":
                    request_id = value
                elif name == b"x-modelplane-key":
                    key = value
                elif name == b"x-modelplane-console-token":
                    console = value
                elif name == b"x-modelplane-entity-key":
                    entity = value
            elif first == b"o" and name == b"origin":
                origin = value
        if request_id and len(request_id) <= MAX_REQUEST_ID and request_id.isascii() \
                and request_id.replace(b"-", b"").replace(b"_", b"").replace(b".", b"").isalnum():
            self.request_id = request_id.decode()
        else:
            self.request_id = f"{getrandbits(128):032x}"  # a correlation id: random, no syscall (not a secret)
        self.content_length = content_length
        self.content_type = content_type
        self.authorization = authorization
        self.key = key
        self.console_token = console
        self.entity_key = entity.decode("utf-8", "replace")[:MAX_ENTITY_KEY] if entity else None
        self.origin = origin


class Gateway:
    """The ASGI application (one per process); its lifespan starts the routing-table and record tasks."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.table = RouteTable()
        self.metrics = Metrics()
        self.limiter = RateLimiter()
        self.sink = RecordSink(redis_url=config.redis_url, stream=config.predictions_stream,
                               maxlen=config.predictions_maxlen, buffer_max=config.record_buffer,
                               batch=config.record_batch, flush_seconds=config.record_flush_seconds,
                               metrics=self.metrics)
        self.sync = RouteSync(redis_url=config.redis_url, key=config.routes_key, channel=config.routes_channel,
                              full_reload_seconds=config.full_reload_seconds, table=self.table,
                              metrics=self.metrics)
        self.metrics.watch(self.table, self.sink)
        self.cors = {origin.encode() for origin in config.cors_origins}
        self.upstream: Upstream = make_upstream(
            config.upstream_client, connections=config.upstream_connections,
            connections_per_replica=config.upstream_connections_per_replica)
        self.tasks: list[asyncio.Task] = []
        self._digests: dict[bytes, str] = {}

    # --- lifespan -------------------------------------------------------------------------------------

    async def startup(self) -> None:
        await self.upstream.start()
        log.info("upstream client: %s", self.upstream.name)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._supervised("routing table", self.sync.run)),
                      loop.create_task(self._supervised("prediction records", self.sink.run))]
        # What start-up made (modules, Django's settings, the clients: ~50 000 objects) lives as long as the
        # process: moved out of the collector's sight, a full collection walks only what requests leave behind
        # instead of pausing every request in flight for tens of milliseconds.
        gc.collect()
        gc.freeze()

    async def _supervised(self, what: str, run) -> None:
        # The tasks handle Redis themselves; this only keeps a bug from silently ending one of them.
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the %s task failed; restarting it in 1 s", what)
                await asyncio.sleep(1.0)

    async def shutdown(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=5)
        await self.sink.close()
        await self.upstream.close()

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- dispatch -------------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.handle(Request(scope, receive, send))
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def handle(self, req: Request) -> None:
        try:
            await self.dispatch(req)
        except Refused as refused:
            await self.send_error(req, refused)
        except ClientGone:
            pass
        except Exception:
            log.exception("unexpected error answering %s %s (request %s)", req.method, req.path, req.request_id)
            await self.send_error(req, Refused(500, "internal_error",
                                               f"the gateway failed on this request; quote request id "
                                               f"{req.request_id}"))

    async def dispatch(self, req: Request) -> None:
        path = req.path
        method = req.method
        if method == "OPTIONS" and self.cors:
            return await self.preflight(req)
        parts = path.strip("/").split("/")
        if parts[0] == "v1":
            if len(parts) == 4 and parts[1] == "deployments" and parts[3] == "invocations":
                self._only(req, "POST")
                return await self.predict(req, parts[2], None)
        elif parts[0] == "v2":
            if len(parts) == 1:
                self._only(req, "GET")
                return await self.send_json(req, 200, {"name": SERVER_NAME, "version": SERVER_VERSION,
                                                       "extensions": []})
            if parts[1] == "health" and len(parts) == 3 and parts[2] in ("live", "ready"):
                self._only(req, "GET")
                return await self.health(req, parts[2])
            if parts[1] == "models" and len(parts) >= 3:
                name = parts[2]
                rest = parts[3:]
                version = None
                if len(rest) >= 2 and rest[0] == "versions":
                    version, rest = rest[1], rest[2:]
                if not rest:
                    self._only(req, "GET")
                    return await self.model_metadata(req, name, version)
                if rest == ["ready"]:
                    self._only(req, "GET")
                    return await self.model_ready(req, name, version)
                if rest == ["infer"]:
                    self._only(req, "POST")
                    return await self.predict(req, name, version)
        elif parts == ["metrics"]:
            self._only(req, "GET")
            body = generate_latest(self.metrics.registry)
            return await self.send(req, 200, body, CONTENT_TYPE_LATEST.encode())
        raise Refused(404, "not_found", f"no such endpoint: {req.method} {path}")

    @staticmethod
    def _only(req: Request, method: str) -> None:
        if req.method != method:
            raise Refused(405, "method_not_allowed", f"{req.path} accepts {method} only")

    # --- health and metadata --------------------------------------------------------------------------

    async def health(self, req: Request, which: str) -> None:
        if which == "live" or self.table.loaded:
            return await self.send(req, 200, b"", None)
        # Not ready: no routing table read yet (Redis not reached since start).
        return await self.send(req, 503, b"", None, extra=[(b"retry-after", b"1")])

    def _route(self, req: Request, name: str) -> Route:
        route = self.table.get(name)
        if route is None:
            self.metrics.count(UNKNOWN, 404)
            raise Refused(404, "not_found", f"no deployment named {name!r}")
        self.authenticate(req, route)
        return route

    async def model_metadata(self, req: Request, name: str, version: str | None) -> None:
        route = self._route(req, name)
        variant = self._version(route, version) if version is not None else route.primary
        versions = sorted({str(v.model_version) for v in route.variants if v.weight > 0 or version is not None})
        document = oip_metadata(name, versions, variant.signature if variant is not None else None)
        self.metrics.count(route.name, 200)
        await self.send_json(req, 200, document)

    async def model_ready(self, req: Request, name: str, version: str | None) -> None:
        route = self._route(req, name)
        now = time.monotonic()
        if version is not None:
            variant = self._version(route, version)
            ready = route.serving and variant.pick(now) is not None
        else:
            ready = route.ready(now)
        if ready:
            return await self.send(req, 200, b"", None)
        return await self.send(req, 503, b"", None, extra=[(b"retry-after", str(route.retry_after(now)).encode())])

    @staticmethod
    def _version(route: Route, version: str) -> Variant:
        variant = route.variant_for_version(version)
        if variant is None:
            raise Refused(404, "not_found", f"deployment {route.name!r} serves no model version {version!r}")
        return variant

    # --- authentication -------------------------------------------------------------------------------

    def authenticate(self, req: Request, route: Route) -> object:
        """The identity rate limits count against: a deployment key's id, or the console for this route."""
        key = req.key
        if key is None and req.authorization is not None:
            scheme, _, credentials = req.authorization.partition(b" ")
            if scheme.lower() == b"bearer":
                key = credentials.strip()
        if key:
            # A key's SHA-256 is a pure function of it: kept for keys that were valid somewhere (a cold OpenSSL
            # digest costs ~25 us at low rates). Validity is still decided below, by the route's current keys.
            digest = self._digests.get(key)
            if digest is None:
                digest = hashlib.sha256(key).hexdigest()
                if digest in route.keys:
                    if len(self._digests) >= MAX_CACHED_DIGESTS:
                        self._digests.clear()
                    self._digests[key] = digest
            if digest in route.keys:
                return ("key", route.keys[digest])
        elif req.console_token:
            token = req.console_token.decode("ascii", "replace")
            if contract.console_token_valid(token, route.name, secret=self.config.console_secret):
                return ("console", route.name)
            self.metrics.count(route.name, 401)
            raise Refused(401, "unauthorized", "the console token is invalid or expired")
        self.metrics.count(route.name, 401)
        if key:
            raise Refused(401, "unauthorized", f"the key is not valid for deployment {route.name!r}")
        raise Refused(401, "unauthorized", "a deployment key is required: send `Authorization: Bearer mpk_...` "
                                           "or `X-Modelplane-Key: mpk_...`")

    # --- prediction -----------------------------------------------------------------------------------

    async def predict(self, req: Request, name: str, version: str | None) -> None:
        route = self.table.get(name)
        if route is None:
            self.metrics.count(UNKNOWN, 404)
            raise Refused(404, "not_found", f"no deployment named {name!r}")
        identity = self.authenticate(req, route)
        # From here on the request belongs to a known deployment: whatever happens is recorded.
        record = {"request_id": req.request_id, "deployment_id": route.deployment_id, "deployment": route.name,
                  "variant": None, "model_version": None, "ts": req.ts, "latency_ms": 0.0, "status": 0,
                  "sampled": False, "inputs": None, "outputs": None, "entity_key": req.entity_key,
                  "error": None}
        sampled = route.sampling_rate >= 1.0 or (route.sampling_rate > 0.0
                                                 and random.random() < route.sampling_rate)
        try:
            status, body, headers = await self._predict(req, route, version, identity, record, sampled)
        except Refused as refused:
            record["error"] = refused.message[:200]
            self._finish(req, route, record, refused.status, sampled)
            raise
        # The answer goes out first: the bookkeeping below then overlaps the client reading it.
        await self.send(req, status, body, JSON, extra=headers)
        self._finish(req, route, record, status, sampled)

    def _finish(self, req: Request, route: Route, record: dict, status: int, sampled: bool) -> None:
        record["status"] = status
        record["latency_ms"] = round((time.perf_counter() - req.t0) * 1000.0, 3)
        record["sampled"] = sampled
        if not sampled:
            record["inputs"] = record["outputs"] = None
        self.metrics.count(route.name, status)
        self.sink.emit(record)

    async def _predict(self, req: Request, route: Route, version: str | None, identity, record: dict,
                       sampled: bool):
        if route.rate is not None:
            wait = self.limiter.take(identity, route.rate[0], route.rate[1], time.monotonic())
            if wait:
                raise Refused(429, "rate_limited",
                              f"rate limit of {route.rate[0]:g} requests/s (burst {route.rate[1]:g}) exceeded "
                              "for this key", retry_after=max(1, int(wait + 0.999)))
        if not route.serving:
            raise Refused(503, "not_serving", f"deployment {route.name!r} is not serving", retry_after=5)
        limit = route.max_payload_bytes
        if req.content_length is not None:
            try:
                declared = int(req.content_length)
            except ValueError:
                raise Refused(400, "bad_request", "Content-Length is not a number") from None
            if declared > limit:
                raise Refused(413, "payload_too_large",
                              f"the body is {declared} bytes; deployment {route.name!r} accepts at most {limit}",
                              close=True)
        if req.content_type is not None:
            # The body is read as JSON whatever the Content-Type says (OIP clients often send none, curl sends
            # a form type), except for the other formats MLflow's scoring server knows: the gateway speaks JSON.
            mime = req.content_type.split(b";", 1)[0].strip().lower()
            if mime in NOT_JSON or mime.startswith(b"multipart/"):
                raise Refused(415, "unsupported_media_type",
                              f"the gateway accepts JSON bodies only; got Content-Type "
                              f"{req.content_type.decode('latin-1')!r}")
        raw = await self.read_body(req, limit)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Refused(400, "invalid_json", f"the body is not valid JSON: {exc}",
                          {"body": ["not valid JSON"]}) from None
        if sampled:
            # Records keep the JSON they carry as bytes (orjson.Fragment): a buffered record is then a flat dict
            # the garbage collector does not track, so records waiting for the flusher never make the
            # collector walk a 100-row payload's objects (gen-2 pauses of 30-80 ms at sampling 1.0 before).
            record["inputs"] = Fragment(raw)

        if version is not None:
            variant = self._version(route, version)
            first = variant.pick(time.monotonic())
            if first is None:
                raise Refused(503, "no_ready_replica", f"model version {version} of {route.name!r} has no ready "
                              "replica", retry_after=route.retry_after(time.monotonic()))
        else:
            variant, first = self._pick(route, time.monotonic())
        record["variant"] = variant.name
        record["model_version"] = variant.model_version

        upstream_body = self._translate(req, variant, raw, payload)
        if sampled:
            record["inputs"] = Fragment(upstream_body)
        deadline = req.t0 + route.timeout_seconds
        replica = first
        attempt = 0
        while True:
            attempt += 1
            try:
                status, answer = await self._forward(route, variant, replica, upstream_body, deadline)
                break
            except CONNECT_FAILURES + DISCONNECTS as exc:
                failed = replica.state
                if isinstance(exc, CONNECT_FAILURES):
                    failed.ejected_until = time.monotonic() + self.config.eject_seconds
                    log.warning("replica %s of %s/%s refused the connection (%s): ejected for %.0f s",
                                failed.url, route.name, variant.name, exc.kind,
                                self.config.eject_seconds)
                if attempt > 1:
                    raise Refused(503, "upstream_unavailable", f"no model server of {route.name!r} answered "
                                  f"(tried 2 replicas; last: {exc.kind})",
                                  retry_after=route.retry_after(time.monotonic())) from None
                retry = self._retry_target(route, variant, failed, version is not None)
                if retry is None:
                    raise Refused(503, "upstream_unavailable", f"the model server of {route.name!r} did not "
                                  f"answer ({exc.kind}) and no other replica is ready",
                                  retry_after=route.retry_after(time.monotonic())) from None
                if retry[0] is not variant:
                    try:
                        upstream_body = self._translate(req, retry[0], raw, payload)
                    except Refused:
                        raise Refused(503, "upstream_unavailable", f"the model server of {route.name!r} did "
                                      "not answer and no other replica of its model version is ready",
                                      retry_after=route.retry_after(time.monotonic())) from None
                    variant = retry[0]
                    record["variant"] = variant.name
                    record["model_version"] = variant.model_version
                    if sampled:
                        record["inputs"] = Fragment(upstream_body)
                replica = retry[1]
                self.metrics.retries.labels(route.name).inc()
            except TimeoutError:
                self.metrics.upstream_failures.labels(route.name, "timeout").inc()
                raise Refused(504, "upstream_timeout", f"the model server did not answer within "
                              f"{route.timeout_seconds:g} s") from None
        return self._answer(req, route, variant, status, answer, record, sampled, payload)

    def _pick(self, route: Route, now: float):
        variant = route.pick_variant()
        if variant is None:
            raise Refused(503, "no_ready_replica", f"deployment {route.name!r} has no variant taking traffic",
                          retry_after=5)
        replica = variant.pick(now)
        if replica is None:
            # The drawn variant has no replica to take it: another weighted variant takes the request.
            for other in route.weighted:
                if other is not variant and (replica := other.pick(now)) is not None:
                    return other, replica
            raise Refused(503, "no_ready_replica", f"deployment {route.name!r} has no ready replica",
                          retry_after=route.retry_after(now))
        return variant, replica

    @staticmethod
    def _retry_target(route: Route, variant: Variant, failed, pinned: bool):
        """Another replica of the same variant, else (unless a version was asked for) of another variant."""
        now = time.monotonic()
        replica = variant.pick(now, exclude=failed)
        if replica is not None:
            return variant, replica
        if pinned:
            return None
        for other in route.weighted:
            if other is not variant and (replica := other.pick(now, exclude=failed)) is not None:
                return other, replica
        return None

    def _translate(self, req: Request, variant: Variant, raw: bytes, payload):
        """The body for the model server (valid JSON), checked against the variant's signature."""
        try:
            if req.v2:
                return orjson.dumps(oip_to_mlflow(payload, variant.signature))
            check_mlflow(payload, variant.signature)
            return raw
        except InputError as exc:
            raise Refused(400, "invalid_input", exc.message, exc.fields) from None

    async def _forward(self, route: Route, variant: Variant, replica, body: bytes, deadline: float):
        state = replica.state
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError
        state.inflight += 1
        state.picks += 1
        started = time.perf_counter()
        try:
            response = await self.upstream.request("POST", state.url, "/invocations", body, remaining)
        except CONNECT_FAILURES:
            self.metrics.upstream_failures.labels(route.name, "connect").inc()
            raise
        except DISCONNECTS:
            self.metrics.upstream_failures.labels(route.name, "disconnect").inc()
            raise
        finally:
            state.inflight -= 1
        self.metrics.upstream(route.name, variant.name, time.perf_counter() - started)
        return response.status, response.body

    def _answer(self, req: Request, route: Route, variant: Variant, status: int, answer: bytes, record: dict,
                sampled: bool, payload):
        headers = [(b"x-modelplane-variant", variant.name.encode()),
                   (b"x-modelplane-model-version", str(variant.model_version).encode())]
        if 200 <= status < 300:
            if sampled or req.v2:
                try:
                    parsed = orjson.loads(answer)
                except orjson.JSONDecodeError:
                    raise Refused(502, "model_server_error", "the model server answered with a body that is not "
                                  "JSON") from None
                record["outputs"] = Fragment(answer)  # checked above: valid JSON
                if req.v2:
                    request_id = payload.get("id") if isinstance(payload, dict) else None
                    body = orjson.dumps({
                        "model_name": route.name, "model_version": str(variant.model_version),
                        "id": request_id if isinstance(request_id, str) else req.request_id,
                        "outputs": mlflow_to_oip_outputs(parsed)})
                    return 200, body, headers
            return 200, answer, headers
        message = _upstream_message(answer)
        if 400 <= status < 500:
            raise Refused(status, "model_rejected_input", f"the model server refused the input: {message}")
        if status == 504:
            raise Refused(504, "upstream_timeout", f"the model server timed out: {message}")
        if status == 503:
            raise Refused(503, "upstream_unavailable", f"the model server is unavailable: {message}", retry_after=1)
        raise Refused(502, "model_server_error", f"the model server failed ({status}): {message}")

    async def read_body(self, req: Request, limit: int) -> bytes:
        """The whole body, refused with 413 as soon as it passes ``limit`` (also when sent chunked)."""
        receive = req.receive
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise Refused(413, "payload_too_large", f"the body is over {limit} bytes", close=True)
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refused(413, "payload_too_large",
                              f"the body is over {limit} bytes, the most this deployment accepts", close=True)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # --- responses ------------------------------------------------------------------------------------

    async def preflight(self, req: Request) -> None:
        if req.origin not in self.cors:
            return await self.send(req, 403, b"", None)
        await self.send(req, 204, b"", None, extra=[
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
            (b"access-control-max-age", b"600")])

    async def send_error(self, req: Request, refused: Refused) -> None:
        if req.v2:
            document = {"error": refused.message}
        else:
            document = {"error": {"code": refused.code, "message": refused.message, "fields": refused.fields}}
        extra = []
        if refused.retry_after is not None:
            extra.append((b"retry-after", str(refused.retry_after).encode()))
        if refused.close:
            # The rest of the body was not read: the connection cannot carry another request.
            extra.append((b"connection", b"close"))
        await self.send(req, refused.status, orjson.dumps(document), JSON, extra=extra)

    async def send_json(self, req: Request, status: int, document) -> None:
        await self.send(req, status, orjson.dumps(document), JSON)

    async def send(self, req: Request, status: int, body: bytes, content_type: bytes | None,
                   extra: list | None = None) -> None:
        headers = [(b"content-length", str(len(body)).encode()), (b"x-request-id", req.request_id.encode())]
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if extra:
            headers.extend(extra)
        if req.origin is not None and req.origin in self.cors:
            headers += [(b"access-control-allow-origin", req.origin), (b"vary", b"Origin"),
                        (b"access-control-expose-headers",
                         b"x-request-id, x-modelplane-variant, x-modelplane-model-version, retry-after")]
        await req.send({"type": "http.response.start", "status": status, "headers": headers})
        await req.send({"type": "http.response.body", "body": body})


def _upstream_message(answer: bytes) -> str:
    """The model server's own words from an error answer (MLflow: ``{"error_code", "message"}``), short."""
    try:
        document = orjson.loads(answer)
    except orjson.JSONDecodeError:
        text = answer.decode("utf-8", "replace").strip()
    else:
        if isinstance(document, dict):
            text = str(document.get("message") or document.get("error") or document.get("detail") or document)
            if document.get("error_code"):
                text = f"{document['error_code']}: {text}"
        else:
            text = str(document)
    return text if len(text) <= MAX_UPSTREAM_MESSAGE else text[:MAX_UPSTREAM_MESSAGE] + "..."
