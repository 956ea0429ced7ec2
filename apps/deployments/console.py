"""The deployment page's "try it" box: one prediction request sent through the gateway, as a client would.

The web process does not talk to model servers; it calls the gateway (the data plane's front door), signing the
call with a short-lived console token (apps/gateway/contract.py) instead of a deployment key, so users need no
key to try a deployment they may invoke. The request is logged by the gateway like any other.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.core.actors import Actor
from apps.core.errors import ServiceUnavailable, field_error
from apps.core.permissions import require
from apps.deployments.models import Deployment
from apps.gateway.contract import console_token_make

CONSOLE_TIMEOUT_SECONDS = 30.0
MAX_CONSOLE_PAYLOAD = 256 * 1024


@dataclass
class ConsoleAnswer:
    status: int
    body: Any
    latency_ms: float
    request_id: str


def console_invoke(*, actor: Actor, deployment: Deployment, payload: Any) -> ConsoleAnswer:
    """Send ``payload`` (an MLflow scoring body) to the deployment through the gateway; return its answer."""
    require(actor, "deployment.invoke", deployment)
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError as exc:
            raise field_error("payload", f"Not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise field_error("payload", "Must be a JSON object, e.g. {\"dataframe_split\": {...}}.")
    body = json.dumps(payload).encode()
    if len(body) > MAX_CONSOLE_PAYLOAD:
        raise field_error("payload", f"At most {MAX_CONSOLE_PAYLOAD // 1024} KiB from the console.",
                          code="too_large")
    url = f"{settings.MODELPLANE_GATEWAY_URL.rstrip('/')}/v1/deployments/{deployment.name}/invocations"
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "X-Modelplane-Console-Token": console_token_make(deployment.name),
        "X-Request-ID": actor.request_id,
    })
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=CONSOLE_TIMEOUT_SECONDS) as response:
            status, raw, request_id = response.status, response.read(), response.headers.get("X-Request-ID", "")
    except urllib.error.HTTPError as exc:
        status, raw, request_id = exc.code, exc.read(), exc.headers.get("X-Request-ID", "")
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ServiceUnavailable(f"The gateway at {settings.MODELPLANE_GATEWAY_URL} did not answer ({reason}). "
                                 f"Is `manage.py gateway` running?", code="gateway_unavailable") from None
    latency = (time.perf_counter() - started) * 1000
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return ConsoleAnswer(status=status, body=parsed, latency_ms=round(latency, 2), request_id=request_id)
