"""Redis going away under the gateway: it keeps serving with its last routing table, buffers the prediction
records, and once Redis is back it reads the table again, applies what is published, and delivers the records
it held. Also: a gateway started while Redis is down is live at once and ready once Redis answers.

Each test has its own redis-server (killed with SIGKILL and restarted on the same port, no persistence, as a
crashed cache would come back: empty) and its own gateway.
"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from apps.gateway import contract
from tests.gateway.support import (
    GatewayProcess,
    RedisServer,
    call,
    free_port,
    http_status,
    key_for,
    publish,
    route_doc,
    variant,
    wait_until,
)

BODY = {"inputs": [[1.0, 2.0]]}


def test_redis_killed_and_restarted_under_load(upstream):
    redis_server = RedisServer()
    gateway = GatewayProcess(redis_server.url, MODELPLANE_GATEWAY_FULL_RELOAD_SECONDS="2")
    try:
        name = "under-load"
        rc = redis_server.client()
        doc = route_doc(name, [variant("blue", [upstream.urls["a"]])])
        publish(rc, doc)
        path = f"/v1/deployments/{name}/invocations"
        wait_until(lambda: call(gateway.url, path, BODY, key=key_for(name)).status == 200, 10, "route applied")

        async def load():
            """Concurrency 8 throughout; Redis is killed after 1.5 s and restarted 3 s later."""
            phase = {"now": "before"}
            results = {"before": [], "outage": [], "after": []}
            stop = asyncio.Event()

            async def worker(session):
                while not stop.is_set():
                    async with session.post(gateway.url + path, json=BODY,
                                            headers={"Authorization": f"Bearer {key_for(name)}"}) as response:
                        await response.read()
                        results[phase["now"]].append((response.status, response.headers["X-Request-ID"]))
                    await asyncio.sleep(0.005)

            async with aiohttp.ClientSession() as session:
                workers = [asyncio.create_task(worker(session)) for _ in range(8)]
                await asyncio.sleep(1.5)
                redis_server.kill()
                phase["now"] = "outage"
                await asyncio.sleep(3.0)
                buffered = gateway.metric("modelplane_gateway_records_buffered")
                redis_up = gateway.metric("modelplane_gateway_redis_up")
                phase["now"] = "after"
                await asyncio.to_thread(redis_server.restart)
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*workers)
            return results, buffered, redis_up

        results, buffered, redis_up = asyncio.run(load())
        failed = {phase: [s for s, _ in got if s != 200] for phase, got in results.items()}
        print(f"\nRedis killed under load: before {len(results['before'])}, during the outage "
              f"{len(results['outage'])}, after {len(results['after'])} requests; failed {failed}; "
              f"records buffered during the outage: {buffered:.0f}")
        assert all(len(got) > 20 for got in results.values()), {k: len(v) for k, v in results.items()}
        assert failed == {"before": [], "outage": [], "after": []}
        assert redis_up == 0
        assert buffered >= len(results["outage"]) * 0.9

        # The restarted Redis is empty; the gateway kept its table. A route change published now is applied.
        rc = redis_server.client()
        publish(rc, {**doc, "generation": 2, "variants": [variant("green", [upstream.urls["b"]])]})
        wait_until(lambda: call(gateway.url, path, BODY, key=key_for(name)).json.get("replica") == "b", 15,
                   "the route change published after the restart is applied")

        # Every request answered while Redis was away is in the new stream (the buffer was delivered).
        outage_ids = {request_id for _, request_id in results["outage"]}

        def delivered():
            ids = {json.loads(f[b"r"])["request_id"] for _, f in rc.xrange(contract.PREDICTIONS_STREAM)}
            return outage_ids <= ids

        wait_until(delivered, 15, "the records buffered during the outage reach the restarted Redis")
        assert gateway.metric("modelplane_gateway_records_dropped_total") == 0
        assert gateway.metric("modelplane_gateway_redis_up") == 1
    finally:
        gateway.close()
        redis_server.close()


def test_gateway_starts_without_redis_live_at_once_ready_once_redis_answers(upstream):
    port = free_port()
    gateway = GatewayProcess(f"redis://127.0.0.1:{port}/0", wait_ready=False)
    redis_server = None
    try:
        assert http_status(gateway.url + "/v2/health/live") == 200
        assert http_status(gateway.url + "/v2/health/ready") == 503
        assert call(gateway.url, "/v1/deployments/x/invocations", BODY, key="mpk_x").status == 404
        redis_server = RedisServer(port=port)
        publish(redis_server.client(), route_doc("late", [variant("blue", [upstream.urls["a"]])]))
        # Reconnect backoff is at most 5 s.
        wait_until(lambda: http_status(gateway.url + "/v2/health/ready") == 200, 15, "ready once Redis answers")
        wait_until(lambda: call(gateway.url, "/v1/deployments/late/invocations", BODY,
                                key=key_for("late")).status == 200, 10, "the route is served")
        log = gateway.log.read_text()
        # The outage was logged once, not once per reconnect attempt.
        assert log.count("unreachable") == 1, log
    finally:
        gateway.close()
        if redis_server is not None:
            redis_server.close()


def test_records_beyond_the_buffer_are_dropped_oldest_first_and_counted(upstream):
    port = free_port()
    redis_server = RedisServer(port=port)
    gateway = GatewayProcess(redis_server.url, MODELPLANE_GATEWAY_RECORD_BUFFER="50")
    try:
        publish(redis_server.client(), route_doc("small-buffer", [variant("blue", [upstream.urls["a"]])]))
        path = "/v1/deployments/small-buffer/invocations"
        wait_until(lambda: call(gateway.url, path, BODY, key=key_for("small-buffer")).status == 200, 10, "route")
        # The one record so far (the call that answered 200) written, not merely taken out of the buffer: a batch
        # in flight when Redis dies goes back into the buffer and would count among the 80 below.
        wait_until(lambda: gateway.metric("modelplane_gateway_records_sent_total") >= 1
                   and gateway.metric("modelplane_gateway_records_buffered") == 0, 5, "records so far written")
        redis_server.kill()
        time.sleep(0.5)
        ids = [call(gateway.url, path, BODY, key=key_for("small-buffer")).headers["x-request-id"]
               for _ in range(80)]
        assert gateway.metric("modelplane_gateway_records_dropped_total") == 30
        assert gateway.metric("modelplane_gateway_records_buffered") == 50
        redis_server.restart()
        rc = redis_server.client()

        def stored():
            got = [json.loads(f[b"r"])["request_id"] for _, f in rc.xrange(contract.PREDICTIONS_STREAM)]
            return got if len(got) >= 50 else None

        got = wait_until(stored, 15, "the buffered records arrive")
        assert got == ids[30:], "the 50 newest records, in order"
        assert "dropping the oldest records" in gateway.log.read_text()
    finally:
        gateway.close()
        redis_server.close()
