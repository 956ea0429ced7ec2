"""The gateway's pure parts, in-process: signature checks and their messages, the OIP translations, console
tokens, the token bucket, replica and variant picks, the routing table's generation rule."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from apps.gateway import contract
from apps.gateway.ratelimit import RateLimiter
from apps.gateway.routing import RouteTable
from apps.gateway.signature import (
    InputError,
    Signature,
    check_mlflow,
    mlflow_to_oip_outputs,
    oip_metadata,
    oip_to_mlflow,
)

COLUMNS = Signature.parse({"inputs": [{"name": "amount", "type": "double", "required": True},
                                      {"name": "age", "type": "long", "required": True},
                                      {"name": "flag", "type": "boolean", "required": True},
                                      {"name": "note", "type": "string", "required": False}],
                           "outputs": [{"type": "long"}], "params": None})
TENSOR = Signature.parse({"inputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float64",
                                                                                   "shape": [-1, 3]}}]),
                          "outputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64",
                                                                                    "shape": [-1]}}])})


def refused(body, signature=COLUMNS) -> InputError:
    with pytest.raises(InputError) as caught:
        check_mlflow(body, signature)
    return caught.value


# --- settings and contract ------------------------------------------------------------------------------


def test_settings_defaults_are_the_contracts_names():
    from controlplane.settings import base

    assert base.MODELPLANE_GATEWAY_ROUTES_KEY == contract.ROUTES_KEY
    assert base.MODELPLANE_GATEWAY_ROUTES_CHANNEL == contract.ROUTES_CHANNEL
    assert base.MODELPLANE_GATEWAY_PREDICTIONS_STREAM == contract.PREDICTIONS_STREAM
    assert base.MODELPLANE_GATEWAY_FULL_RELOAD_SECONDS == contract.FULL_RELOAD_SECONDS


def test_console_tokens():
    secret = b"s3cret"
    token = contract.console_token_make("fraud", now=1_000_000, secret=secret)
    ts, mac = token.split(".")
    assert ts == "1000000" and len(mac) == 64
    assert contract.console_token_valid(token, "fraud", now=1_000_000 + 299, secret=secret)
    assert not contract.console_token_valid(token, "fraud", now=1_000_000 + 301, secret=secret)  # expired
    assert not contract.console_token_valid(token, "fraud", now=1_000_000 - 60, secret=secret)  # from the future
    assert not contract.console_token_valid(token, "other", now=1_000_000, secret=secret)
    assert not contract.console_token_valid(token, "fraud", now=1_000_000, secret=b"another")
    for garbage in ("", ".", "abc.def", "1000000.", "1000000." + "0" * 64, "-5." + mac):
        assert not contract.console_token_valid(garbage, "fraud", now=1_000_000, secret=secret)


def test_console_secret_derives_from_the_secret_key_unless_set(settings):
    import hashlib

    settings.MODELPLANE_GATEWAY_CONSOLE_SECRET = ""
    settings.SECRET_KEY = "k" * 50
    assert contract.console_secret() == hashlib.sha256(b"modelplane-console:" + b"k" * 50).hexdigest().encode()
    settings.MODELPLANE_GATEWAY_CONSOLE_SECRET = "explicit"
    assert contract.console_secret() == b"explicit"
    assert contract.console_token_valid(contract.console_token_make("d"), "d")


# --- MLflow bodies against column signatures -------------------------------------------------------------


def test_valid_bodies_in_every_format_pass():
    rows = [[1.5, 30, True, "x"], [2, 41, False, None]]
    check_mlflow({"dataframe_split": {"columns": ["amount", "age", "flag", "note"], "data": rows}}, COLUMNS)
    check_mlflow({"dataframe_split": {"columns": ["flag", "age", "amount"], "data": [[True, 1, 2.0]]}}, COLUMNS)
    check_mlflow({"dataframe_records": [{"amount": 1, "age": 2, "flag": True, "extra": "ignored"}]}, COLUMNS)
    check_mlflow({"instances": [{"amount": 1.0, "age": 2, "flag": False}]}, COLUMNS)
    check_mlflow({"inputs": {"amount": [1.0, 2.0], "age": [1, 2], "flag": [True, False]}}, COLUMNS)
    check_mlflow({"inputs": {"amount": 1.0, "age": 1, "flag": True}}, COLUMNS)
    check_mlflow({"dataframe_split": {"columns": ["amount", "age", "flag"], "data": [[None, 1, True]]}},
                 COLUMNS)  # null double is NaN
    check_mlflow({"dataframe_records": [{"x": "anything"}]}, None)  # no signature: nothing checked


def test_missing_required_column_is_named():
    error = refused({"dataframe_split": {"columns": ["age", "flag"], "data": [[1, True]]}})
    assert error.message == "missing required column `amount`"
    assert error.fields == {"amount": ["missing required column `amount`"]}
    error = refused({"dataframe_records": [{"amount": 1.0, "age": 1, "flag": True}, {"amount": 2.0, "flag": True}]})
    assert error.message == "missing required column `age` (record 1)"


def test_wrong_types_name_the_column_the_row_and_the_value():
    split = {"dataframe_split": {"columns": ["amount", "age", "flag"],
                                 "data": [[1.0, 2, True], [2.0, "x", True]]}}
    assert refused(split).message == '`age`: expected long, got string "x" (row 1)'
    error = refused({"dataframe_records": [{"amount": "1.5", "age": 2, "flag": "yes"}]})
    assert error.fields == {"amount": ['expected double, got string "1.5" (record 0)'],
                            "flag": ['expected boolean, got string "yes" (record 0)']}
    assert error.message == '`amount`: expected double, got string "1.5" (record 0) (and 1 more field)'
    assert refused({"inputs": {"amount": [1.0], "age": [2.5], "flag": [True]}}).message == \
        "`age`: expected long, got number 2.5 (row 0)"
    assert refused({"inputs": {"amount": [True], "age": [2], "flag": [True]}}).message == \
        "`amount`: expected double, got boolean true (row 0)"
    assert "null" in refused({"dataframe_records": [{"amount": 1.0, "age": None, "flag": True}]}).message
    huge = refused({"dataframe_records": [{"amount": 1.0, "age": 2**70, "flag": True}]})
    assert "out of range" in huge.message


def test_integer_columns_check_their_range():
    sig = Signature.parse({"inputs": [{"name": "n", "type": "integer", "required": True}]})
    check_mlflow({"inputs": {"n": [2**31 - 1]}}, sig)
    with pytest.raises(InputError, match="out of range"):
        check_mlflow({"inputs": {"n": [2**31]}}, sig)


def test_malformed_bodies():
    assert "exactly one of" in refused({"dataframe_split": {}, "inputs": []}).message
    assert "exactly one of" in refused({"rows": []}).message
    assert "JSON object" in refused([1, 2]).message
    assert "row 1: expected 3 values" in refused(
        {"dataframe_split": {"columns": ["amount", "age", "flag"], "data": [[1.0, 2, True], [1.0]]}}).message
    assert "columns" in refused({"dataframe_split": {"data": [[1.0]]}}).message
    assert "record 0" in refused({"dataframe_records": [[1.0, 2, True]]}).message


def test_tensor_signature_checks_dimensions_and_kinds_loosely():
    check_mlflow({"inputs": [[1, 2, 3.5], [4, 5, 6]]}, TENSOR)
    check_mlflow({"instances": [[1, 2, 3]]}, TENSOR)
    with pytest.raises(InputError, match=r"expected shape \[-1, 3\], got \[1, 2\]"):
        check_mlflow({"inputs": [[1, 2]]}, TENSOR)
    with pytest.raises(InputError, match="expected 2 dimensions"):
        check_mlflow({"inputs": [1, 2, 3]}, TENSOR)
    with pytest.raises(InputError, match='expected number elements, got string "a"'):
        check_mlflow({"inputs": [[1, 2, "a"]]}, TENSOR)
    with pytest.raises(InputError, match="ragged"):
        check_mlflow({"inputs": [[1, 2, 3], 4]}, TENSOR)


# --- Open Inference Protocol ---------------------------------------------------------------------------------


def oip(*inputs) -> dict:
    return {"inputs": [{"name": n, "shape": s, "datatype": d, "data": v} for n, s, d, v in inputs]}


def test_named_inputs_become_dataframe_split_columns():
    body = oip(("amount", [2], "FP64", [1.0, 2.0]), ("age", [2, 1], "INT64", [[3], [4]]),
               ("flag", [2], "BOOL", [True, False]))
    assert oip_to_mlflow(body, COLUMNS) == {"dataframe_split": {
        "columns": ["amount", "age", "flag"], "data": [[1.0, 3, True], [2.0, 4, False]]}}
    assert oip_to_mlflow(oip(("a", [1], "FP32", [1.0])), None) == {"dataframe_split": {"columns": ["a"],
                                                                                        "data": [[1.0]]}}


def test_one_matrix_for_a_column_model_becomes_its_rows():
    sig = Signature.parse({"inputs": [{"name": "x", "type": "double"}, {"name": "y", "type": "double"},
                                      {"name": "z", "type": "string", "required": False}]})
    body = oip(("input-0", [2, 2], "FP64", [1, 2, 3, 4]))
    assert oip_to_mlflow(body, sig) == {"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2], [3, 4]]}}


def test_tensors_go_as_inputs():
    body = oip(("input-0", [2, 3], "FP64", [1, 2, 3, 4, 5, 6]))
    assert oip_to_mlflow(body, TENSOR) == {"inputs": [[1, 2, 3], [4, 5, 6]]}
    assert oip_to_mlflow(body, None) == {"inputs": [[1, 2, 3], [4, 5, 6]]}
    with pytest.raises(InputError, match="expected shape"):
        oip_to_mlflow(oip(("input-0", [3, 2], "FP64", [1, 2, 3, 4, 5, 6])), TENSOR)


def test_oip_problems_name_the_input():
    cases = [
        (oip(("amount", [3], "FP64", [1.0, 2.0])), "input `amount`: shape [3] needs 3 values, got 2"),
        (oip(("amount", [1], "FP99", [1.0])), "input `amount`: unknown datatype"),
        (oip(("amount", [1], "INT64", [1.5])), "input `amount`: datatype INT64 needs integers, got number 1.5"),
        (oip(("amount", [1], "BYTES", ["x"]), ("age", [1], "INT64", [1]), ("flag", [1], "BOOL", [True])),
         "`amount`: expected double, got datatype BYTES"),
        (oip(("amount", [2], "FP64", [1.0, 2.0]), ("age", [1], "INT64", [1])),
         "inputs named by column must all have the same length"),
        (oip(("age", [1], "INT64", [1]), ("flag", [1], "BOOL", [True])), "missing required column `amount`"),
        ({"inputs": []}, "`inputs` must be a non-empty array"),
        ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, "`inputs[0].name` is required"),
        ([1], "the body must be an inference request object"),
    ]
    for body, message in cases:
        with pytest.raises(InputError) as caught:
            oip_to_mlflow(body, COLUMNS)
        assert caught.value.message.startswith(message), (body, caught.value.message)


def test_mlflow_answers_as_oip_outputs():
    assert mlflow_to_oip_outputs({"predictions": [1, 0, 1]}) == [
        {"name": "predictions", "shape": [3], "datatype": "INT64", "data": [1, 0, 1]}]
    assert mlflow_to_oip_outputs({"predictions": [[0.1, 0.9], [0.8, 0.2]]}) == [
        {"name": "predictions", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.9, 0.8, 0.2]}]
    assert mlflow_to_oip_outputs({"predictions": [{"label": "a", "score": 0.5}, {"label": "b", "score": 1}]}) == [
        {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "score", "shape": [2], "datatype": "FP64", "data": [0.5, 1]}]
    assert mlflow_to_oip_outputs({"predictions": {"y": [True]}}) == [
        {"name": "y", "shape": [1], "datatype": "BOOL", "data": [True]}]


def test_metadata_of_a_tensor_model():
    meta = oip_metadata("m", ["2"], TENSOR)
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "INT64", "shape": [-1]}]
    assert oip_metadata("m", [], None)["inputs"] == []


# --- rate limit and routing ----------------------------------------------------------------------------------


def test_token_bucket_allows_the_burst_then_the_rate():
    limiter = RateLimiter()
    assert [limiter.take("k", 2.0, 3.0, now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("k", 2.0, 3.0, now=100.0)
    assert wait == pytest.approx(0.5)
    assert limiter.take("k", 2.0, 3.0, now=100.6) == 0.0  # 1.2 tokens refilled
    assert limiter.take("k", 2.0, 3.0, now=100.6) > 0
    assert limiter.take("other", 2.0, 3.0, now=100.6) == 0.0  # per key
    assert limiter.take("k", 2.0, 3.0, now=1000.0) == 0.0  # refilled up to the burst, not beyond
    assert [limiter.take("k", 2.0, 3.0, now=1000.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def doc(name="d", generation=1, deployment_id=1, variants=None) -> str:
    return json.dumps({"name": name, "deployment_id": deployment_id, "generation": generation, "serving": True,
                       "keys": [], "variants": variants or [
                           {"name": "blue", "weight": 100, "model_version": 1,
                            "replicas": [{"id": "1", "url": "http://127.0.0.1:1", "ready": True}]}]})


def test_generation_only_moves_forward_for_one_deployment():
    table = RouteTable()
    assert table.apply("d", doc(generation=5)) == "applied"
    assert table.apply("d", doc(generation=4)) == "stale"
    assert table.get("d").generation == 5
    assert table.apply("d", doc(generation=5)) == "applied"  # the same document again: harmless
    assert table.apply("d", doc(generation=1, deployment_id=2)) == "applied"  # a new deployment of that name
    assert table.apply("d", "{not json") == "unreadable" and table.get("d").deployment_id == 2
    assert table.apply("d", doc(name="other")) == "unreadable"
    assert table.apply("d", None) == "removed" and table.get("d") is None


def test_full_reload_drops_what_is_gone_but_keeps_the_table_when_the_hash_is_empty():
    table = RouteTable()
    table.replace_all({"a": doc("a"), "b": doc("b")})
    assert set(table.routes) == {"a", "b"} and table.loaded
    table.replace_all({"a": doc("a")})
    assert set(table.routes) == {"a"}
    assert table.replace_all({})["kept"] == 1  # Redis came back empty: keep serving
    assert set(table.routes) == {"a"}


def test_variant_pick_by_weight_and_replica_by_load():
    variants = [{"name": "blue", "weight": 70, "model_version": 1,
                 "replicas": [{"id": "1", "url": "http://127.0.0.1:1", "ready": True},
                              {"id": "2", "url": "http://127.0.0.1:2", "ready": True},
                              {"id": "3", "url": "http://127.0.0.1:3", "ready": False}]},
                {"name": "green", "weight": 30, "model_version": 2,
                 "replicas": [{"id": "4", "url": "http://127.0.0.1:4", "ready": True}]},
                {"name": "standby", "weight": 0, "model_version": 3,
                 "replicas": [{"id": "5", "url": "http://127.0.0.1:5", "ready": True}]}]
    table = RouteTable()
    table.apply("d", doc(variants=variants))
    route = table.get("d")
    random.seed(3)
    drawn = Counter(route.pick_variant().name for _ in range(10_000))
    assert set(drawn) == {"blue", "green"} and 6700 < drawn["blue"] < 7300
    blue = route.variants[0]
    assert [r.id for r in blue.replicas] == ["1", "2"]  # not-ready replicas are never picked
    first, second = blue.replicas
    first.state.inflight = 3
    assert all(blue.pick(now=0.0) is second for _ in range(5))
    second.state.ejected_until = 10.0
    assert blue.pick(now=5.0) is first  # the ejected one is skipped until its time is up
    assert blue.pick(now=5.0, exclude=first.state) is None
    assert blue.pick(now=11.0) is second
    # A publish keeps what the replicas learnt at run time.
    table.apply("d", doc(generation=2, variants=variants))
    assert table.get("d").variants[0].replicas[0].state.inflight == 3
