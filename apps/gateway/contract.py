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

``inputs`` is the MLflow scoring payload the model server was sent (for an Open Inference Protocol request, its
translation, e.g. ``{"dataframe_split": {...}}``), or the client's parsed body when the request was refused
before it reached a model server (null when the body was not JSON); ``outputs`` is the model server's JSON
answer (``{"predictions": [...]}``), null on an error. ``request_id`` is the ``X-Request-ID`` the client got back
(its own, or one the gateway made), so a client can find its prediction in the log.

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


# Console tokens: the dashboard's "try it" box calls the gateway for a signed-in user without a deployment key.
# The web process signs ``f"{deployment_name}:{unix_ts}"`` with a secret it shares with the gateway; the gateway
# accepts the token for that deployment alone, for CONSOLE_TOKEN_SECONDS. Header: CONSOLE_TOKEN_HEADER.
CONSOLE_TOKEN_HEADER = "X-Modelplane-Console-Token"
CONSOLE_TOKEN_SECONDS = 300
# A token dated this far in the future is still accepted (clocks of the web and gateway hosts differ a little).
CONSOLE_TOKEN_CLOCK_SKEW_SECONDS = 30


def console_secret() -> bytes:
    """The console tokens' HMAC key: ``MODELPLANE_GATEWAY_CONSOLE_SECRET``, else derived from ``SECRET_KEY``.

    Read from Django's settings at call time (the gateway reads it once at start and passes it in), so that
    production settings, which set SECRET_KEY after base.py, are the ones used.
    """
    import hashlib

    from django.conf import settings

    configured = getattr(settings, "MODELPLANE_GATEWAY_CONSOLE_SECRET", "") or ""
    if configured:
        return configured.encode()
    return hashlib.sha256(f"modelplane-console:{settings.SECRET_KEY}".encode()).hexdigest().encode()


def _console_mac(secret: bytes, deployment_name: str, ts: int) -> str:
    import hashlib
    import hmac

    return hmac.new(secret, f"{deployment_name}:{ts}".encode(), hashlib.sha256).hexdigest()


def console_token_make(deployment_name: str, now: float | None = None, *, secret: bytes | None = None) -> str:
    """A console token for one deployment: ``<unix_ts>.<hex hmac-sha256(secret, "<name>:<unix_ts>")>``."""
    import time

    ts = int(time.time() if now is None else now)
    return f"{ts}.{_console_mac(secret if secret is not None else console_secret(), deployment_name, ts)}"


def console_token_valid(token: str, deployment_name: str, now: float | None = None, *,
                        secret: bytes | None = None) -> bool:
    """True when ``token`` was made for ``deployment_name`` by the holder of the secret less than
    CONSOLE_TOKEN_SECONDS ago (and not more than the allowed clock skew in the future)."""
    import hmac
    import time

    ts_text, dot, mac = (token or "").partition(".")
    if not dot or not ts_text.isdigit() or len(ts_text) > 12 or len(mac) != 64:
        return False
    ts = int(ts_text)
    current = time.time() if now is None else now
    if ts < current - CONSOLE_TOKEN_SECONDS or ts > current + CONSOLE_TOKEN_CLOCK_SKEW_SECONDS:
        return False
    expected = _console_mac(secret if secret is not None else console_secret(), deployment_name, ts)
    return hmac.compare_digest(expected, mac)
