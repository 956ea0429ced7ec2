"""The gateway as a real process (``manage.py gateway``) in front of a fake model server (fake_upstream.py):
authentication, refusals and their statuses, routing (weights, least outstanding, retries), timeouts, the
protocol translations and the prediction records it writes to Redis.

Routes are published the control plane's way (HSET + PUBLISH) into a redis-server of the session's own.
"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from apps.gateway import contract
from tests.gateway.support import call, free_port, key_for, publish, route_doc, variant, wait_until

AMOUNT_AGE = {"inputs": [{"name": "amount", "type": "double", "required": True},
                         {"name": "age", "type": "long", "required": True}],
              "outputs": [{"type": "long"}], "params": None}


def live_route(gateway, rc, doc) -> dict:
    """Publish ``doc`` and wait until the gateway answers for it (a new deployment name)."""
    publish(rc, doc)
    path = f"/v2/models/{doc['name']}"
    wait_until(lambda: call(gateway.url, path, key=key_for(doc["name"])).status != 404, 10,
               f"the gateway knows {doc['name']}")
    return doc


def invocations(name: str) -> str:
    return f"/v1/deployments/{name}/invocations"


ONE_ROW = {"dataframe_split": {"columns": ["amount", "age"], "data": [[12.5, 40]]}}


# --- health, metadata, metrics ---------------------------------------------------------------------------


def test_health_server_metadata_and_metrics_need_no_key(gateway):
    assert call(gateway.url, "/v2/health/live").status == 200
    assert call(gateway.url, "/v2/health/ready").status == 200
    server = call(gateway.url, "/v2")
    assert server.status == 200 and server.json == {"name": "modelplane-gateway", "version": "1", "extensions": []}
    metrics = call(gateway.url, "/metrics")
    assert metrics.status == 200 and b"modelplane_gateway_routing_table_age_seconds" in metrics.body
    assert metrics.headers["x-request-id"]


def test_model_metadata_and_ready_come_from_the_route(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], version=3,
                                                     signature=AMOUNT_AGE)]))
    meta = call(gateway.url, f"/v2/models/{name}", key=key_for(name))
    assert meta.status == 200
    assert meta.json == {"name": name, "versions": ["3"], "platform": "mlflow",
                         "inputs": [{"name": "amount", "datatype": "FP64", "shape": [-1]},
                                    {"name": "age", "datatype": "INT64", "shape": [-1]}],
                         "outputs": [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]}
    assert call(gateway.url, f"/v2/models/{name}/ready", key=key_for(name)).status == 200
    assert call(gateway.url, f"/v2/models/{name}/versions/3/ready", key=key_for(name)).status == 200
    assert call(gateway.url, f"/v2/models/{name}/versions/9/ready", key=key_for(name)).status == 404
    # Per-model endpoints need the key.
    assert call(gateway.url, f"/v2/models/{name}").status == 401


def test_a_route_published_as_not_serving_is_not_ready_and_answers_503(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])], serving=False))
    ready = call(gateway.url, f"/v2/models/{name}/ready", key=key_for(name))
    assert ready.status == 503 and ready.headers["retry-after"]
    answer = call(gateway.url, invocations(name), ONE_ROW, key=key_for(name))
    assert answer.status == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json["error"]["code"] == "not_serving"


# --- authentication ---------------------------------------------------------------------------------------


def test_unknown_deployment_is_404_in_each_protocols_shape(gateway):
    v1 = call(gateway.url, invocations("no-such-deployment"), ONE_ROW, key="mpk_x")
    assert v1.status == 404
    assert v1.json["error"]["code"] == "not_found" and "no-such-deployment" in v1.json["error"]["message"]
    v2 = call(gateway.url, "/v2/models/no-such-deployment/infer", {"inputs": []}, key="mpk_x")
    assert v2.status == 404
    assert set(v2.json) == {"error"} and "no-such-deployment" in v2.json["error"]


def test_keys_bearer_header_wrong_and_missing(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    assert call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).status == 200
    assert call(gateway.url, invocations(name), ONE_ROW,
                headers={"X-Modelplane-Key": key_for(name)}).status == 200
    wrong = call(gateway.url, invocations(name), ONE_ROW, key="mpk_test_wrong-secret")
    assert wrong.status == 401 and wrong.json["error"]["code"] == "unauthorized"
    missing = call(gateway.url, invocations(name), ONE_ROW)
    assert missing.status == 401 and "Authorization: Bearer" in missing.json["error"]["message"]
    # Another deployment's key does not open this one.
    other = unique()
    live_route(gateway, rc, route_doc(other, [variant("blue", [upstream.urls["a"]])]))
    assert call(gateway.url, invocations(name), ONE_ROW, key=key_for(other)).status == 401
    v2 = call(gateway.url, f"/v2/models/{name}/infer", {"inputs": []})
    assert v2.status == 401 and isinstance(v2.json["error"], str)


def test_a_revoked_key_stops_working_once_the_route_is_republished(gateway, rc, upstream, unique):
    name = unique()
    doc = live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    assert call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).status == 200
    publish(rc, {**doc, "generation": 2, "keys": []})
    wait_until(lambda: call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).status == 401, 10,
               "the revoked key is refused")


def test_a_key_that_worked_for_one_deployment_is_refused_by_another(gateway, rc, upstream, unique):
    first, second = unique(), unique()
    live_route(gateway, rc, route_doc(first, [variant("blue", [upstream.urls["a"]])]))
    live_route(gateway, rc, route_doc(second, [variant("blue", [upstream.urls["a"]])]))
    for _ in range(2):  # the second time the key's digest is the gateway's remembered one
        assert call(gateway.url, invocations(first), ONE_ROW, key=key_for(first)).status == 200
        refused = call(gateway.url, invocations(second), ONE_ROW, key=key_for(first))
        assert refused.status == 401 and refused.json["error"]["code"] == "unauthorized"


def test_console_token_for_this_deployment_only_and_only_for_a_while(gateway, rc, upstream, unique):
    from django.conf import settings

    name, other = unique(), unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    # The test process signs with the same settings as the gateway (controlplane.settings.test, same SECRET_KEY).
    assert not settings.MODELPLANE_GATEWAY_CONSOLE_SECRET
    header = contract.CONSOLE_TOKEN_HEADER
    fresh = contract.console_token_make(name)
    assert call(gateway.url, invocations(name), ONE_ROW, headers={header: fresh}).status == 200
    stale = contract.console_token_make(name, now=time.time() - contract.CONSOLE_TOKEN_SECONDS - 5)
    assert call(gateway.url, invocations(name), ONE_ROW, headers={header: stale}).status == 401
    elsewhere = contract.console_token_make(other)
    assert call(gateway.url, invocations(name), ONE_ROW, headers={header: elsewhere}).status == 401
    forged = fresh[:-4] + ("0000" if not fresh.endswith("0000") else "1111")
    assert call(gateway.url, invocations(name), ONE_ROW, headers={header: forged}).status == 401


# --- refusals ---------------------------------------------------------------------------------------------


def test_payload_over_the_routes_limit_is_413_by_content_length_and_by_counting(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])], max_payload_bytes=2000))
    big = json.dumps({"inputs": [1.0] * 1000}).encode()
    assert len(big) > 2000
    declared = call(gateway.url, invocations(name), big, key=key_for(name))
    assert declared.status == 413
    assert declared.json["error"]["code"] == "payload_too_large" and "2000" in declared.json["error"]["message"]
    chunked = call(gateway.url, invocations(name), big, key=key_for(name), chunked=True)
    assert chunked.status == 413
    small = json.dumps({"inputs": [1.0] * 10}).encode()
    assert call(gateway.url, invocations(name), small, key=key_for(name), chunked=True).status == 200


def test_rate_limit_per_key_answers_429_with_retry_after(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])],
                                      rate_limit={"requests_per_second": 0.2, "burst": 3}))
    statuses = [call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = call(gateway.url, invocations(name), ONE_ROW, key=key_for(name))
    assert refused.status == 429
    assert refused.json["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 5


def test_bad_json_and_signature_mismatches_are_400_naming_the_column(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], signature=AMOUNT_AGE)]))
    bad_json = call(gateway.url, invocations(name), b"{not json", key=key_for(name))
    assert bad_json.status == 400 and bad_json.json["error"]["code"] == "invalid_json"

    missing = call(gateway.url, invocations(name), {"dataframe_records": [{"age": 3}]}, key=key_for(name))
    assert missing.status == 400
    assert missing.json["error"]["code"] == "invalid_input"
    assert missing.json["error"]["message"].startswith("missing required column `amount`")
    assert list(missing.json["error"]["fields"]) == ["amount"]

    wrong_type = call(gateway.url, invocations(name),
                      {"dataframe_split": {"columns": ["amount", "age"], "data": [[1.0, 2], [2.0, "x"]]}},
                      key=key_for(name))
    assert wrong_type.status == 400
    assert wrong_type.json["error"]["message"] == '`age`: expected long, got string "x" (row 1)'

    neither = call(gateway.url, invocations(name), {"rows": []}, key=key_for(name))
    assert neither.status == 400 and "dataframe_split" in neither.json["error"]["message"]

    v2 = call(gateway.url, f"/v2/models/{name}/infer",
              {"inputs": [{"name": "amount", "shape": [1], "datatype": "BYTES", "data": ["a lot"]},
                          {"name": "age", "shape": [1], "datatype": "INT64", "data": [3]}]}, key=key_for(name))
    assert v2.status == 400
    assert v2.json == {"error": "`amount`: expected double, got datatype BYTES"}

    csv = call(gateway.url, invocations(name), b"amount,age\n1,2\n", key=key_for(name),
               headers={"Content-Type": "text/csv"})
    assert csv.status == 415


def test_wrong_method_and_unknown_paths(gateway):
    assert call(gateway.url, "/v2/health/live", b"{}").status == 405
    assert call(gateway.url, "/v1/deployments/x/invocations").status == 405
    assert call(gateway.url, "/nowhere").status == 404


# --- forwarding -----------------------------------------------------------------------------------------


def test_mlflow_body_goes_through_as_sent_with_json_content_type(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], version=7,
                                                     signature=AMOUNT_AGE)]))
    answer = call(gateway.url, invocations(name), ONE_ROW, key=key_for(name),
                  headers={"X-Request-ID": "client-chosen-id-1"})
    assert answer.status == 200
    assert answer.json["received"] == ONE_ROW
    assert answer.json["content_type"] == "application/json"
    assert answer.headers["x-request-id"] == "client-chosen-id-1"
    assert answer.headers["x-modelplane-variant"] == "blue"
    assert answer.headers["x-modelplane-model-version"] == "7"


def test_oip_infer_without_content_type_translates_both_ways(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], version=2,
                                                     signature=AMOUNT_AGE)]))
    request = {"id": "req-42", "inputs": [
        {"name": "amount", "shape": [2], "datatype": "FP64", "data": [10.0, 20.5]},
        {"name": "age", "shape": [2, 1], "datatype": "INT64", "data": [[30], [40]]}]}
    answer = call(gateway.url, f"/v2/models/{name}/infer", request, key=key_for(name))  # no Content-Type
    assert answer.status == 200
    # 200: the fake model server, like MLflow's, refuses a body sent without Content-Type: application/json.
    assert answer.json == {"model_name": name, "model_version": "2", "id": "req-42",
                           "outputs": [{"name": "predictions", "shape": [1], "datatype": "INT64", "data": [0]}]}
    record = wait_for_record(rc, answer.headers["x-request-id"])
    assert record["inputs"] == {"dataframe_split": {"columns": ["amount", "age"], "data": [[10.0, 30], [20.5, 40]]}}


def test_oip_tensor_without_signature_goes_as_inputs(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    request = {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}
    # What the model server was sent is in the record (the OIP answer carries the predictions only).
    answer = call(gateway.url, f"/v2/models/{name}/infer", request, key=key_for(name))
    assert answer.status == 200 and answer.json["id"] == answer.headers["x-request-id"]
    record = wait_for_record(rc, answer.headers["x-request-id"])
    assert record["inputs"] == {"inputs": [[1, 2, 3], [4, 5, 6]]}


def test_versions_path_sends_to_that_model_version(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], version=3, weight=100),
                                             variant("green", [upstream.urls["b"]], version=4, weight=0)]))
    request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    for _ in range(5):
        answer = call(gateway.url, f"/v2/models/{name}/versions/4/infer", request, key=key_for(name))
        assert answer.status == 200 and answer.json["model_version"] == "4"
        assert answer.headers["x-modelplane-variant"] == "green"
    assert call(gateway.url, f"/v2/models/{name}/versions/5/infer", request, key=key_for(name)).status == 404


def test_model_servers_4xx_reaches_the_client_with_its_message(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"] + "/status/422"])]))
    answer = call(gateway.url, invocations(name), ONE_ROW, key=key_for(name))
    assert answer.status == 422
    assert answer.json["error"]["code"] == "model_rejected_input"
    assert "replica a says no" in answer.json["error"]["message"]
    v2 = call(gateway.url, f"/v2/models/{name}/infer",
              {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, key=key_for(name))
    assert v2.status == 422 and "replica a says no" in v2.json["error"]


def test_slow_model_server_is_a_504_after_the_routes_timeout(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"] + "/sleep/5"])],
                                      timeout_seconds=0.5))
    answer = call(gateway.url, invocations(name), ONE_ROW, key=key_for(name))
    assert answer.status == 504
    assert answer.json["error"]["code"] == "upstream_timeout"


def test_no_ready_replica_and_all_replicas_down_are_503_with_retry_after(gateway, rc, upstream, unique):
    not_ready = unique()
    live_route(gateway, rc, route_doc(not_ready, [variant("blue", [upstream.urls["a"]], ready=False)]))
    answer = call(gateway.url, invocations(not_ready), ONE_ROW, key=key_for(not_ready))
    assert answer.status == 503 and answer.json["error"]["code"] == "no_ready_replica"
    assert int(answer.headers["retry-after"]) >= 1

    down = unique()
    dead = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    live_route(gateway, rc, route_doc(down, [variant("blue", dead)]))
    first = call(gateway.url, invocations(down), ONE_ROW, key=key_for(down))
    assert first.status == 503 and first.json["error"]["code"] == "upstream_unavailable"
    assert int(first.headers["retry-after"]) >= 1
    # Both replicas refused and are now ejected: the next request is refused at once, without trying them.
    second = call(gateway.url, invocations(down), ONE_ROW, key=key_for(down))
    assert second.status == 503 and second.json["error"]["code"] == "no_ready_replica"
    assert 1 <= int(second.headers["retry-after"]) <= 3


def test_a_refused_connection_is_retried_on_another_replica(gateway, rc, upstream, unique):
    name = unique()
    dead = f"http://127.0.0.1:{free_port()}"
    live_route(gateway, rc, route_doc(name, [variant("blue", [dead, upstream.urls["b"]])]))
    before = gateway.metric("modelplane_gateway_upstream_retries_total", deployment=name)
    answers = [call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)) for _ in range(20)]
    assert [a.status for a in answers] == [200] * 20
    assert {a.json["replica"] for a in answers} == {"b"}
    # The dead replica was tried (at least once, then ejected) and the request retried on the live one.
    assert gateway.metric("modelplane_gateway_upstream_retries_total", deployment=name) - before >= 1
    assert gateway.metric("modelplane_gateway_upstream_failures_total", deployment=name, kind="connect") >= 1


# --- routing ------------------------------------------------------------------------------------------------


async def _fire(url: str, path: str, key: str, count: int, concurrency: int, body=ONE_ROW) -> list[tuple]:
    """``count`` requests, ``concurrency`` at a time; (status, replica or None) per request."""
    results = []
    queue = iter(range(count))

    async def worker(session):
        for _ in queue:
            async with session.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
                payload = await response.json(content_type=None)
                results.append((response.status, payload.get("replica") if response.status == 200 else None))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return results


def test_weighted_split_follows_the_weights(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], weight=90),
                                             variant("green", [upstream.urls["b"]], weight=10)]))
    results = asyncio.run(_fire(gateway.url, invocations(name), key_for(name), 1000, 8))
    assert {status for status, _ in results} == {200}
    green = sum(1 for _, replica in results if replica == "b")
    # Binomial(1000, 0.1): mean 100, standard deviation 9.5; 50..150 is over five deviations each side.
    assert 50 <= green <= 150, green


def test_a_weight_zero_variant_gets_no_traffic(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], weight=100),
                                             variant("green", [upstream.urls["b"]], weight=0)]))
    results = asyncio.run(_fire(gateway.url, invocations(name), key_for(name), 200, 8))
    assert {replica for _, replica in results} == {"a"}


def test_least_outstanding_keeps_requests_off_the_busy_replica(gateway, rc, upstream, unique):
    """A slow replica (3 s) holding requests gets none of the requests sent meanwhile; round robin or a random
    pick would send it about half."""
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"] + "/sleep/3",
                                                              upstream.urls["b"] + "/sleep/0.05"])]))

    async def scenario():
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {key_for(name)}"}

            async def one():
                async with session.post(gateway.url + invocations(name), json=ONE_ROW, headers=headers) as r:
                    return (await r.json())["replica"]

            # Four at once: with b answering in 50 ms and a in 3 s, a ends up holding at least one.
            held = [asyncio.ensure_future(one()) for _ in range(4)]
            await asyncio.sleep(0.4)
            sequential = [await one() for _ in range(15)]
            return await asyncio.gather(*held), sequential

    held, sequential = asyncio.run(scenario())
    assert "a" in held
    assert sequential == ["b"] * 15


# --- prediction records ------------------------------------------------------------------------------------


def stream_records(rc) -> list[dict]:
    return [json.loads(fields[b"r"]) for _, fields in rc.xrange(contract.PREDICTIONS_STREAM)]


def wait_for_record(rc, request_id: str) -> dict:
    def find():
        return next((r for r in stream_records(rc) if r["request_id"] == request_id), None)

    return wait_until(find, 10, f"the record of request {request_id}")


def test_each_request_is_recorded_with_its_outcome(gateway, rc, upstream, unique):
    name = unique()
    doc = live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]], version=5,
                                                           signature=AMOUNT_AGE)]))
    ok = call(gateway.url, invocations(name), ONE_ROW, key=key_for(name),
              headers={"X-Modelplane-Entity-Key": "cust-42"})
    record = wait_for_record(rc, ok.headers["x-request-id"])
    assert record["deployment"] == name and record["deployment_id"] == doc["deployment_id"]
    assert (record["variant"], record["model_version"], record["status"]) == ("blue", 5, 200)
    assert record["sampled"] is True and record["inputs"] == ONE_ROW
    assert record["outputs"]["predictions"] == [0]
    assert record["entity_key"] == "cust-42" and record["error"] is None
    assert 0 < record["latency_ms"] < 10_000 and abs(record["ts"] - time.time()) < 60

    refused = call(gateway.url, invocations(name), {"dataframe_records": [{"age": 1}]}, key=key_for(name))
    record = wait_for_record(rc, refused.headers["x-request-id"])
    assert record["status"] == 400 and "amount" in record["error"] and record["outputs"] is None

    # Not recorded: requests refused before the deployment is known or the caller is (contract).
    unauthorised = call(gateway.url, invocations(name), ONE_ROW, key="mpk_nope")
    time.sleep(0.5)
    assert all(r["request_id"] != unauthorised.headers["x-request-id"] for r in stream_records(rc))


def test_sampling_leaves_inputs_and_outputs_out_but_still_records(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])], sampling_rate=0.0))
    ids = [call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).headers["x-request-id"]
           for _ in range(5)]
    records = [wait_for_record(rc, request_id) for request_id in ids]
    assert all(r["sampled"] is False and r["inputs"] is None and r["outputs"] is None for r in records)
    assert all(r["status"] == 200 for r in records)

    half = unique()
    live_route(gateway, rc, route_doc(half, [variant("blue", [upstream.urls["a"]])], sampling_rate=0.5))
    results = asyncio.run(_fire(gateway.url, invocations(half), key_for(half), 400, 8))
    assert {status for status, _ in results} == {200}

    def all_there():
        mine = [r for r in stream_records(rc) if r["deployment"] == half]
        return mine if len(mine) == 400 else None

    mine = wait_until(all_there, 10, "400 records")
    sampled = sum(r["sampled"] for r in mine)
    assert 140 <= sampled <= 260, sampled  # Binomial(400, 0.5): sd 10
    assert all((r["inputs"] is not None) == r["sampled"] for r in mine)


def test_a_deleted_deployment_is_dropped(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    publish(rc, None, name)
    wait_until(lambda: call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).status == 404, 10,
               "the deleted deployment is gone")


def test_an_older_generation_is_ignored(gateway, rc, upstream, unique):
    name = unique()
    doc = live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])], generation=5))
    publish(rc, {**doc, "generation": 4, "variants": [variant("blue", [upstream.urls["b"]])]})
    publish(rc, {**doc, "generation": 6, "variants": [variant("blue", [upstream.urls["c"]])]})
    wait_until(lambda: call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).json.get("replica") == "c",
               10, "generation 6 applied")
    # Generation 4 arrives late (published again): the gateway keeps 6.
    publish(rc, {**doc, "generation": 4, "variants": [variant("blue", [upstream.urls["b"]])]})
    time.sleep(0.5)
    assert call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).json["replica"] == "c"


@pytest.mark.parametrize("origin_allowed", [True, False])
def test_cors_for_the_configured_origins_only(redis_server, origin_allowed):
    from tests.gateway.support import GatewayProcess

    process = GatewayProcess(redis_server.url, MODELPLANE_GATEWAY_CORS_ORIGINS="http://dashboard.test")
    try:
        origin = "http://dashboard.test" if origin_allowed else "http://evil.test"
        preflight = call(process.url, invocations("x"), method="OPTIONS",
                         headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        answer = call(process.url, "/v2/health/live", headers={"Origin": origin})
        if origin_allowed:
            assert preflight.status == 204
            assert "x-modelplane-console-token" in preflight.headers["access-control-allow-headers"]
            assert answer.headers["access-control-allow-origin"] == origin
        else:
            assert preflight.status == 403
            assert "access-control-allow-origin" not in answer.headers
    finally:
        process.close()


def test_requests_and_upstream_latency_are_counted_in_metrics(gateway, rc, upstream, unique):
    name = unique()
    live_route(gateway, rc, route_doc(name, [variant("blue", [upstream.urls["a"]])]))
    ok_before = gateway.metric("modelplane_gateway_requests_total", deployment=name, status="200")  # metadata
    for _ in range(3):
        assert call(gateway.url, invocations(name), ONE_ROW, key=key_for(name)).status == 200
    assert call(gateway.url, invocations(name), ONE_ROW, key="mpk_wrong").status == 401
    assert gateway.metric("modelplane_gateway_requests_total", deployment=name, status="200") == ok_before + 3
    assert gateway.metric("modelplane_gateway_requests_total", deployment=name, status="401") == 1
    assert gateway.metric("modelplane_gateway_upstream_seconds_count", deployment=name, variant="blue") == 3
    seconds = gateway.metric("modelplane_gateway_upstream_seconds_sum", deployment=name, variant="blue")
    assert 0 < seconds < 30
    # Buckets are cumulative and end with every observation in +Inf.
    assert gateway.metric("modelplane_gateway_upstream_seconds_bucket", deployment=name, le="+Inf",
                          variant="blue") == 3
    assert gateway.metric("modelplane_gateway_upstream_seconds_bucket", deployment=name, le="30.0",
                          variant="blue") == 3
    buckets = [gateway.metric("modelplane_gateway_upstream_seconds_bucket", deployment=name, le=le, variant="blue")
               for le in ("0.0005", "0.001", "0.005", "0.1", "1.0", "30.0", "+Inf")]
    assert buckets == sorted(buckets)
