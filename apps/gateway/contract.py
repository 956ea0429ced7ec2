"""The data plane's two contracts with the control plane, in one place.

Nothing here touches the ORM: the gateway imports this module on its hot path, the control plane (which
publishes routes) and the ingest worker (which reads prediction records) import it too.

1. The routing table (control plane -> gateway)
-----------------------------------------------
Redis hash ``ROUTES_KEY``: field = deployment name, value = a *route document* (JSON, below). The control plane
writes the document with HSET and then PUBLISHes the deployment name on ``ROUTES_CHANNEL`` (a deleted
deployment: HDEL, then PUBLISH the name; the gateway drops a route whose field is gone). The gateway loads the
whole hash at start, applies each published change, reloads the whole hash after a reconnect (it may have missed
messages) and every ``FULL_RELOAD_SECONDS`` as a safety net, and keeps serving with its last table while Redis is
away. ``generation`` only grows for one deployment; the gateway ignores a document older than the one it holds.

Route document::

    {
      "name": "fraud-scorer",            # deployment name: /v1/deployments/{name}/..., /v2/models/{name}/...
      "deployment_id": 12,
      "team": "fraud",
      "environment": "staging",
      "generation": 7,
      "status": "running",               # the deployment's status; only "serving" decides whether it answers
      "serving": true,                   # false: the gateway answers 503 (stopped / not yet started)
      "keys": [{"id": 5, "hash": "<sha256 hex of the full key>"}],   # active deployment keys only
      "rate_limit": {"requests_per_second": 100.0, "burst": 200},    # per key, per gateway process; null = none
      "max_payload_bytes": 1048576,
      "timeout_seconds": 10.0,
      "sampling_rate": 1.0,              # share of requests whose inputs/outputs are logged (0..1)
      "variants": [
        {"name": "blue", "model_name": "fraud", "model_version": 3, "weight": 100,
         "signature": {"inputs": [{"name": "amount", "type": "double", "required": true}],
                       "outputs": [{"type": "long"}], "params": null},     # MLflow signature, parsed; or null
         "replicas": [{"id": "41", "url": "http://127.0.0.1:41001", "ready": true}]}
      ]
    }

Weights are integers 0..100 summing to 100 over the variants that have weight; a variant of weight 0 gets no
traffic (a blue-green standby). Only replicas with ``ready: true`` are picked.

2. The prediction record (gateway -> ingest worker)
---------------------------------------------------
The gateway appends one entry per request to the Redis stream ``PREDICTIONS_STREAM`` (XADD with an approximate
MAXLEN of ``PREDICTIONS_STREAM_MAXLEN``), in batches through a pipeline. The entry has one field ``r`` holding
the JSON record::

    {"request_id": "8f0c...", "deployment_id": 12, "deployment": "fraud-scorer", "variant": "blue",
     "model_version": 3, "ts": 1764050000.123,  # epoch seconds (UTC) when the request arrived
     "latency_ms": 4.21, "status": 200,          # the HTTP status the client got
     "sampled": true,                            # false: inputs/outputs left out (sampling); rolled up only
     "inputs": {...} | null, "outputs": {...} | null, "entity_key": "cust-42" | null,
     "error": null | "short reason"}

Every request is counted in the per-minute rollups; only sampled ones become rows of the prediction log.
Requests refused before a deployment is known (unknown deployment, bad key) are not recorded there; the
gateway counts them in its own metrics. ``variant`` / ``model_version`` are null when no variant was picked.
"""
from __future__ import annotations

ROUTES_KEY = "modelplane:routes"
ROUTES_CHANNEL = "modelplane:routes:changed"
FULL_RELOAD_SECONDS = 30.0

PREDICTIONS_STREAM = "modelplane:predictions"
PREDICTIONS_STREAM_MAXLEN = 2_000_000
PREDICTIONS_GROUP = "ingest"

# Deployment keys: ``mpk_<prefix>_<secret>``; the gateway and the control plane hash them the same way.
DEPLOYMENT_KEY_PREFIX = "mpk_"


def deployment_key_hash(key: str) -> str:
    """The stored form of a deployment key (SHA-256 hex of the whole key)."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()
