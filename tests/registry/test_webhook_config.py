"""Registering Modelplane's webhook on the real MLflow server, and MLflow delivering a signed call to it."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.errors import PermissionDenied
from apps.registry import mlflow_adapter as mlf
from apps.registry import services

pytestmark = pytest.mark.django_db


def test_ensure_creates_then_updates_the_one_webhook(mlflow_uri, settings):
    settings.MODELPLANE_MLFLOW_WEBHOOK_SECRET = "s3cret-for-tests"
    first = services.mlflow_webhook_ensure(actor=Actor.system("t"), url="http://127.0.0.1:9/api/v1/hooks/mlflow/",
                                           secret="s3cret-for-tests")
    second = services.mlflow_webhook_ensure(actor=Actor.system("t"), url="http://127.0.0.1:8/api/v1/hooks/mlflow/",
                                            secret="s3cret-for-tests")
    assert first["webhook_id"] == second["webhook_id"]
    hooks = [w for w in mlf.client().list_webhooks() if w.name == services.WEBHOOK_NAME]
    assert len(hooks) == 1 and hooks[0].url.endswith(":8/api/v1/hooks/mlflow/")
    assert {str(e) for e in hooks[0].events} >= {"model_version.created"}
    verbs = list(AuditEvent.objects.filter(target_type="mlflow.webhook").order_by("seq")
                 .values_list("verb", flat=True))
    # MLflow outlives each test: the first call creates the webhook unless an earlier test already did.
    assert verbs[0] in ("mlflow.webhook_created", "mlflow.webhook_updated")
    assert verbs[1:] == ["mlflow.webhook_updated"]


def test_ensure_needs_a_platform_admin_a_secret_and_a_url(make_user, teams, actor_for, mlflow_uri):
    engineer = actor_for(make_user("eng", team=teams[0], roles=("team_admin",)))
    with pytest.raises(PermissionDenied):
        services.mlflow_webhook_ensure(actor=engineer, url="http://127.0.0.1:9/", secret="x")
    with pytest.raises(CommandError, match="MODELPLANE_MLFLOW_WEBHOOK_SECRET"):
        call_command("mlflow_webhook", "--url", "http://127.0.0.1:9/api/v1/hooks/mlflow/")


def test_mlflow_delivers_a_call_our_receiver_accepts(mlflow_uri, settings, client):
    """MLflow's own test delivery goes to a loopback listener; replaying it to our receiver is accepted."""
    received: list[tuple[dict, bytes]] = []

    class Listener(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.MODELPLANE_MLFLOW_WEBHOOK_SECRET = "deliver-secret"
        state = services.mlflow_webhook_ensure(
            actor=Actor.system("t"), url=f"http://127.0.0.1:{server.server_port}/api/v1/hooks/mlflow/",
            secret="deliver-secret")
        result = mlf.client().test_webhook(state["webhook_id"])
        assert result.success, result
    finally:
        server.shutdown()
    headers, body = received[0]
    forwarded = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items() if k.lower().startswith("x-")}
    response = client.post("/api/v1/hooks/mlflow/", data=body, content_type="application/json", **forwarded)
    assert response.status_code == 202, response.content
    tampered = client.post("/api/v1/hooks/mlflow/", data=body + b" ", content_type="application/json", **forwarded)
    assert tampered.status_code == 403
