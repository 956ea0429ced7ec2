"""Prediction records in the gateway's shape (apps/gateway/contract.py), and stream entries carrying them."""
from __future__ import annotations

import time
import uuid

import orjson


def record(**overrides) -> dict:
    """One prediction record as the gateway writes it (contract.py), with overrides."""
    doc = {
        "request_id": uuid.uuid4().hex, "deployment_id": 12, "deployment": "fraud-scorer", "variant": "blue",
        "model_version": 3, "ts": time.time(), "latency_ms": 4.21, "status": 200, "sampled": True,
        "inputs": {"amount": 12.5, "country": "DE"}, "outputs": {"predictions": [0]}, "entity_key": "cust-42",
        "error": None,
    }
    doc.update(overrides)
    return doc


def entry(doc: dict, entry_id: str) -> tuple[bytes, dict]:
    """An entry as XREADGROUP returns it, for ingest_batch called directly."""
    return entry_id.encode(), {b"r": orjson.dumps(doc)}


def entries(docs: list[dict], start_ms: int = 1_700_000_000_000) -> list[tuple[bytes, dict]]:
    return [entry(doc, f"{start_ms + i}-0") for i, doc in enumerate(docs)]


def xadd(client, stream: str, docs: list[dict]) -> list[str]:
    pipe = client.pipeline(transaction=False)
    for doc in docs:
        pipe.xadd(stream, {"r": orjson.dumps(doc)})
    return [i.decode() for i in pipe.execute()]
