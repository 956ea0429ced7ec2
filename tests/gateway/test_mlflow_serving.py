"""The gateway in front of real MLflow scoring servers (``mlflow models serve``, a scikit-learn model with a
column signature): both MLflow formats and OIP inference reach the model and come back; the signature is
checked by the gateway before MLflow sees the body; and one of two replicas killed with SIGKILL under load
costs no request (the gateway retries a dropped or refused connection on the other replica).
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.gateway.support import MlflowReplica, call, key_for, publish, route_doc, variant, wait_until

pytestmark = pytest.mark.slow

ROWS = [[120.0, 30], [80.5, 61], [150.25, 45]]


@pytest.fixture
def mlflow_route(gateway, rc, mlflow_replicas, mlflow_model, unique):
    name = unique("mlflow")
    publish(rc, route_doc(name, [variant("blue", [r.url for r in mlflow_replicas], version=1,
                                         signature=mlflow_model.signature)]))
    wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10,
               "route applied")
    return name


def predict(gateway, name, body, **kwargs):
    return call(gateway.url, f"/v1/deployments/{name}/invocations", body, key=key_for(name),
                headers={"Content-Type": "application/json"}, **kwargs)


def direct(replica, body):
    return call(replica.url, "/invocations", body, headers={"Content-Type": "application/json"})


def test_both_dataframe_formats_and_inputs_give_the_models_predictions(gateway, mlflow_replicas, mlflow_route):
    expected = direct(mlflow_replicas[0], {"dataframe_split": {"columns": ["amount", "age"], "data": ROWS}})
    assert expected.status == 200, expected
    predictions = expected.json["predictions"]
    assert len(predictions) == 3 and set(predictions) <= {0, 1}
    bodies = [
        {"dataframe_split": {"columns": ["amount", "age"], "data": ROWS}},
        {"dataframe_records": [{"amount": a, "age": b} for a, b in ROWS]},
        {"dataframe_records": [{"amount": a, "age": b, "note": "optional column"} for a, b in ROWS]},
        {"inputs": {"amount": [r[0] for r in ROWS], "age": [r[1] for r in ROWS]}},
    ]
    for body in bodies:
        answer = predict(gateway, mlflow_route, body)
        assert answer.status == 200, (body, answer)
        assert answer.json["predictions"] == predictions, body


def test_a_hundred_rows(gateway, mlflow_route):
    rows = [[float(50 + i), 20 + i % 60] for i in range(100)]
    answer = predict(gateway, mlflow_route, {"dataframe_split": {"columns": ["amount", "age"], "data": rows}})
    assert answer.status == 200 and len(answer.json["predictions"]) == 100


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_oip_infer_with_and_without_content_type(gateway, mlflow_replicas, mlflow_route, content_type):
    request = {"id": "oip-1", "inputs": [
        {"name": "amount", "shape": [3], "datatype": "FP64", "data": [r[0] for r in ROWS]},
        {"name": "age", "shape": [3], "datatype": "INT64", "data": [r[1] for r in ROWS]}]}
    headers = {"Content-Type": content_type} if content_type else {}
    answer = call(gateway.url, f"/v2/models/{mlflow_route}/infer", request, key=key_for(mlflow_route),
                  headers=headers)
    assert answer.status == 200, answer
    expected = direct(mlflow_replicas[0], {"dataframe_split": {"columns": ["amount", "age"], "data": ROWS}})
    assert answer.json["model_name"] == mlflow_route and answer.json["id"] == "oip-1"
    assert answer.json["outputs"] == [{"name": "predictions", "shape": [3], "datatype": "INT64",
                                       "data": expected.json["predictions"]}]
    # One [N, 2] tensor for a two-column model: its rows, in the signature's column order.
    tensor = {"inputs": [{"name": "input-0", "shape": [3, 2], "datatype": "FP64",
                          "data": [v for row in ROWS for v in row]}]}
    rows = call(gateway.url, f"/v2/models/{mlflow_route}/infer", tensor, key=key_for(mlflow_route))
    assert rows.status == 200 and rows.json["outputs"][0]["data"] == expected.json["predictions"]


def test_metadata_from_the_mlflow_signature(gateway, mlflow_route):
    meta = call(gateway.url, f"/v2/models/{mlflow_route}", key=key_for(mlflow_route)).json
    assert meta["platform"] == "mlflow" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "amount", "datatype": "FP64", "shape": [-1]},
                              {"name": "age", "datatype": "INT64", "shape": [-1]},
                              {"name": "note", "datatype": "BYTES", "shape": [-1]}]


def test_signature_mismatch_is_refused_by_the_gateway_naming_the_column(gateway, mlflow_route):
    missing = predict(gateway, mlflow_route, {"dataframe_split": {"columns": ["age"], "data": [[3]]}})
    assert missing.status == 400
    assert missing.json["error"]["message"] == "missing required column `amount`"
    wrong = predict(gateway, mlflow_route, {"dataframe_records": [{"amount": "lots", "age": 3}]})
    assert wrong.status == 400
    assert wrong.json["error"]["fields"] == {"amount": ['expected double, got string "lots" (record 0)']}
    fractional_age = predict(gateway, mlflow_route, {"dataframe_records": [{"amount": 1.0, "age": 3.5}]})
    assert fractional_age.status == 400 and "`age`: expected long, got number 3.5" in \
        fractional_age.json["error"]["message"]


def test_mlflows_own_refusal_comes_through(gateway, mlflow_route, rc, mlflow_replicas, unique):
    """Without a signature in the route the gateway checks nothing, and MLflow's 400 reaches the client."""
    name = unique("nosig")
    publish(rc, route_doc(name, [variant("blue", [mlflow_replicas[0].url])]))
    wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10, "route")
    answer = predict(gateway, name, {"dataframe_split": {"columns": ["age"], "data": [[3]]}})
    assert answer.status == 400
    assert answer.json["error"]["code"] == "model_rejected_input"
    assert "amount" in answer.json["error"]["message"]


async def _steady_load(url: str, key: str, seconds: float, concurrency: int, on_tick=None) -> dict:
    body = {"dataframe_split": {"columns": ["amount", "age"], "data": ROWS}}
    counts = {"ok": 0, "failed": 0, "statuses": {}}
    deadline = time.monotonic() + seconds

    async def worker(session):
        while time.monotonic() < deadline:
            try:
                async with session.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            counts["statuses"][status] = counts["statuses"].get(status, 0) + 1
            counts["ok" if status == 200 else "failed"] += 1

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        if on_tick is not None:
            await on_tick(counts)
        await asyncio.gather(*tasks)
    return counts


def test_killing_one_of_two_replicas_under_load_fails_no_request(gateway, rc, mlflow_model, mlflow_replicas,
                                                                   unique):
    """SIGKILL of one replica (its whole process group) in the middle of steady load at concurrency 8.

    Requests in flight on the killed replica see their connection dropped; new ones see it refused. The
    gateway retries both once on the other replica and ejects the dead one, so the goal is no failed request.
    """
    victim = MlflowReplica(mlflow_model.path)
    try:
        victim.wait_ready()
        survivor = mlflow_replicas[0]
        name = unique("kill")
        publish(rc, route_doc(name, [variant("blue", [survivor.url, victim.url], signature=mlflow_model.signature)]))
        wait_until(lambda: call(gateway.url, f"/v2/models/{name}", key=key_for(name)).status == 200, 10, "route")
        retries_before = gateway.metric("modelplane_gateway_upstream_retries_total", deployment=name)

        async def kill_midway(counts):
            await asyncio.sleep(2.0)
            assert counts["ok"] > 0, "no request succeeded before the kill"
            victim.kill()
            counts["at_kill"] = counts["ok"]

        counts = asyncio.run(_steady_load(f"{gateway.url}/v1/deployments/{name}/invocations", key_for(name),
                                          seconds=5.0, concurrency=8, on_tick=kill_midway))
        print(f"\nkill one of two replicas under load: {counts['ok']} ok, {counts['failed']} failed "
              f"({counts['statuses']}); retries {gateway.metric('modelplane_gateway_upstream_retries_total', deployment=name) - retries_before:.0f}")
        assert counts["ok"] > counts["at_kill"] > 0, "requests kept succeeding after the kill"
        assert counts["failed"] == 0, counts
        assert gateway.metric("modelplane_gateway_upstream_retries_total", deployment=name) > retries_before
    finally:
        victim.close()
