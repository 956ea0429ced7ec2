"""The serving pages through Django's test client, on the real PostgreSQL, without model servers.

Deployments are made by the services (their reconcile is queued with ``transaction.on_commit``, which the
``db`` fixture never runs, so nothing starts); replica rows are written as the reconciler would. Each page: the
success path, bad input (a 400 with the error next to the field, marked ``data-field-error="<field>"``),
refusals (403 for a role without the verb, 409 for a move the status machine forbids, shown above the form),
another team's objects (404), and the "try it" box against a gateway that does not listen (503 with the
message) and against a real HTTP server standing in for the gateway on loopback.
"""
from __future__ import annotations

import json
import re
import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.deployments import services
from apps.deployments.models import Deployment, DeploymentKey, Environment, Replica
from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db

EXAMPLE = {"columns": ["amount", "age"], "data": [[12.5, 40.0]]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def w(make_user, teams):
    a, b = teams
    root = make_user("root", platform_admin=True)
    world = SimpleNamespace(
        a=a, b=b, root=root,
        eng=make_user("eng", team=a, roles=("ml_engineer",)),
        sci=make_user("sci", team=a, roles=("data_scientist",)),
        viewer=make_user("viewer", team=a, roles=("viewer",)),
        approver=make_user("appr", team=a, roles=("approver",)),
        other=make_user("other", team=b, roles=("ml_engineer",)),
        loner=make_user("loner"),
    )
    actor = Actor.for_user(root)
    world.dev = services.environment_create(actor=actor, name="dev")
    world.prod = services.environment_create(actor=actor, name="production", is_production=True)
    world.model = RegisteredModel.objects.create(team=a, name="fraud", latest_version=3)
    world.v1, world.v2 = (ModelVersion.objects.create(model=world.model, version=n, origin="run", status="ready",
                                                      input_example=EXAMPLE) for n in (1, 2))
    world.v3 = ModelVersion.objects.create(model=world.model, version=3, origin="run", status="blocked",
                                           status_message="os.system in model.pkl")
    world.other_model = RegisteredModel.objects.create(team=b, name="recs", latest_version=1)
    world.other_version = ModelVersion.objects.create(model=world.other_model, version=1, origin="run",
                                                      status="ready")
    return world


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def field_errors(response) -> dict[str, str]:
    html = response.content.decode()
    return {m.group(1): m.group(2) for m in re.finditer(r'data-field-error="([^"]+)"[^>]*>([^<]*)<', html)}


def deploy(w, name="fraud-api", *, version=None, env=None, user=None, **settings_) -> Deployment:
    return services.deployment_create(actor=Actor.for_user(user or w.eng), name=name,
                                      environment_id=(env or w.dev).pk, model_version_id=(version or w.v1).pk,
                                      **settings_)


def running(deployment: Deployment, *, ready: int = 1) -> Deployment:
    """Put a deployment where the reconciler would after its replicas came up."""
    Deployment.objects.filter(pk=deployment.pk).update(status="running", status_message="Running.")
    variant = deployment.variants.get(role="live")
    for i in range(ready):
        Replica.objects.create(variant=variant, index=i, status="ready", port=20000 + i, pid=4000 + i)
    deployment.refresh_from_db()
    return deployment


def other_team_deployment(w) -> Deployment:
    return deploy(w, "recs-api", version=w.other_version, user=w.other)


# ------------------------------------------------------------------------------------------------ list

def test_list_shows_own_team_deployments_with_versions_and_replicas(w):
    mine = running(deploy(w, "fraud-api"))
    other_team_deployment(w)
    response = client_for(w.viewer).get(reverse("deployments:deployment_list"))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-deployment="fraud-api"' in html and 'data-deployment="recs-api"' not in html
    row = html[html.index('data-deployment="fraud-api"'):]
    row = row[:row.index("</tr>")]
    assert "v1" in row and "100%" in row and 'data-status="running"' in row and "1 / 1" in row
    assert reverse("deployments:deployment_detail", args=[mine.pk]) in row
    assert "data-new-deployment" not in html  # a viewer may not create


def test_list_filters_and_bad_filters(w):
    deploy(w, "fraud-api")
    running(deploy(w, "fraud-batch"))
    c = client_for(w.eng)
    html = c.get(reverse("deployments:deployment_list"), {"status": "running"}).content.decode()
    assert 'data-deployment="fraud-batch"' in html and 'data-deployment="fraud-api"' not in html
    html = c.get(reverse("deployments:deployment_list"), {"q": "api"}).content.decode()
    assert 'data-deployment="fraud-api"' in html and 'data-deployment="fraud-batch"' not in html
    html = c.get(reverse("deployments:deployment_list"), {"environment": w.prod.pk}).content.decode()
    assert "No deployment matches these filters." in html
    assert "data-new-deployment" in html
    for bad in ({"environment": "abc"}, {"status": "exploded"}, {"team": "x"}):
        response = c.get(reverse("deployments:deployment_list"), bad)
        assert response.status_code == 400, bad
        assert next(iter(bad)) in field_errors(response)


def test_list_pages_by_name(w, monkeypatch):
    from apps.deployments import views

    monkeypatch.setattr(views, "DEPLOYMENTS_PAGE_SIZE", 2)
    for name in ("a-one", "b-two", "c-three"):
        deploy(w, name)
    c = client_for(w.eng)
    html = c.get(reverse("deployments:deployment_list")).content.decode()
    assert 'data-deployment="a-one"' in html and 'data-deployment="c-three"' not in html
    html = c.get(reverse("deployments:deployment_list"), {"after": "b-two"}).content.decode()
    assert 'data-deployment="c-three"' in html and 'data-deployment="a-one"' not in html


def test_list_refuses_a_user_in_no_team(w):
    assert client_for(w.loner).get(reverse("deployments:deployment_list")).status_code == 403


# ------------------------------------------------------------------------------------------------ create

def test_create_form_offers_only_ready_versions_of_own_teams(w):
    response = client_for(w.eng).get(reverse("deployments:deployment_create"))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'value="{w.v1.pk}"' in html and f'value="{w.v2.pk}"' in html
    assert f'value="{w.v3.pk}"' not in html  # blocked
    assert f'value="{w.other_version.pk}"' not in html  # another team's
    assert "requests may fail during the switch" in html  # direct's sentence under its choice
    assert "kept warm for the rollback window" in html or "previous version is kept warm" in html
    assert "data-production-note" in html and "only platform admins may deploy there" in html


@pytest.mark.parametrize("who", ["viewer", "sci", "approver"])
def test_create_form_refuses_roles_without_deployment_create(w, who):
    c = client_for(getattr(w, who))
    assert c.get(reverse("deployments:deployment_create")).status_code == 403
    response = c.post(reverse("deployments:deployment_create"), {"name": "x", "environment": w.dev.pk,
                                                                  "model_version": w.v1.pk})
    assert response.status_code == 403
    assert not Deployment.objects.exists()


def _create_data(w, **overrides):
    data = {"name": "fraud-api", "environment": w.dev.pk, "model": "", "model_version": w.v1.pk,
            "strategy": "blue_green", "replicas": "2", "cpu": "0.5", "memory_mb": "512", "timeout_seconds": "5",
            "max_payload_bytes": "65536", "rate_limit_rps": "", "rate_limit_burst": "", "sampling_rate": "0.5",
            "rollback_window_seconds": "600", "description": "Scores payments."}
    data.update(overrides)
    return data


def test_create_deployment_through_the_form(w):
    response = client_for(w.eng).post(reverse("deployments:deployment_create"), _create_data(w))
    deployment = Deployment.objects.get(name="fraud-api")
    assert response.status_code == 302
    assert response["Location"] == reverse("deployments:deployment_detail", args=[deployment.pk])
    assert (deployment.replicas, deployment.memory_mb, deployment.sampling_rate) == (2, 512, 0.5)
    assert str(deployment.cpu) == "0.50" and deployment.rollback_window_seconds == 600
    assert deployment.rate_limit_rps is None and deployment.team == w.a and deployment.status == "pending"
    variant = deployment.variants.get()
    assert (variant.model_version, variant.role, variant.weight, variant.replicas) == (w.v1, "live", 100, 2)
    assert AuditEvent.objects.filter(verb="deployment.created", target_id=str(deployment.pk)).exists()
    page = client_for(w.eng).get(response["Location"]).content.decode()
    assert "Created in dev" in page  # the timeline's first entry


@pytest.mark.parametrize("overrides, field, words", [
    ({"name": "Not A Name!"}, "name", "Lower-case"),
    ({"replicas": "99"}, "replicas", "less than or equal to 8"),
    ({"replicas": "many"}, "replicas", "whole number"),
    ({"cpu": "lots"}, "cpu", "number"),
    ({"sampling_rate": "2"}, "sampling_rate", "less than or equal to 1"),
    ({"rate_limit_burst": "10"}, "rate_limit_burst", "needs a rate"),
    ({"model_version": "abc"}, "model_version", "valid choice"),
    ({"environment": "999999"}, "environment", "No environment"),
    ({"environment": ""}, "environment", "required"),
    ({"strategy": "yolo"}, "strategy", "valid choice"),
])
def test_create_form_errors_name_their_field(w, overrides, field, words):
    response = client_for(w.eng).post(reverse("deployments:deployment_create"), _create_data(w, **overrides))
    assert response.status_code == 400
    errors = field_errors(response)
    assert field in errors and words in errors[field], errors
    assert not Deployment.objects.exists()


def test_create_refuses_a_blocked_version_with_the_scans_reason(w):
    response = client_for(w.eng).post(reverse("deployments:deployment_create"),
                                      _create_data(w, model_version=w.v3.pk))
    assert response.status_code == 400
    assert "blocked by its artifact scan: os.system in model.pkl" in field_errors(response)["model_version"]


def test_create_refuses_another_teams_version_and_a_mismatched_model(w):
    c = client_for(w.eng)
    response = c.post(reverse("deployments:deployment_create"), _create_data(w, model_version=w.other_version.pk))
    assert response.status_code == 400
    assert "No model version" in field_errors(response)["model_version"]
    other = RegisteredModel.objects.create(team=w.a, name="churn")
    ModelVersion.objects.create(model=other, version=1, origin="run", status="ready")
    response = c.post(reverse("deployments:deployment_create"), _create_data(w, model=other.pk))
    assert response.status_code == 400
    assert "another model" in field_errors(response)["model_version"]


def test_create_refuses_a_duplicate_name(w):
    deploy(w, "fraud-api")
    response = client_for(w.eng).post(reverse("deployments:deployment_create"), _create_data(w))
    assert response.status_code == 400
    assert "already exists" in field_errors(response)["name"]


def test_production_is_refused_to_an_ml_engineer_and_allowed_to_a_platform_admin(w):
    response = client_for(w.eng).post(reverse("deployments:deployment_create"),
                                      _create_data(w, environment=w.prod.pk))
    html = response.content.decode()
    assert response.status_code == 403
    assert "data-form-errors" in html and "production environment" in html and "approved" in html
    assert not Deployment.objects.exists()
    response = client_for(w.root).post(reverse("deployments:deployment_create"),
                                       _create_data(w, environment=w.prod.pk))
    assert response.status_code == 302
    assert Deployment.objects.get().environment == w.prod


# ------------------------------------------------------------------------------------------------ the deployment page

def test_viewer_sees_the_page_without_actions(w):
    deployment = running(deploy(w))
    response = client_for(w.viewer).get(reverse("deployments:deployment_detail", args=[deployment.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-status="running"' in html and 'data-variant="v1"' in html and 'data-replica=' in html
    assert f"/v1/deployments/{deployment.name}/invocations" in html and f"/v2/models/{deployment.name}/infer" in html
    assert reverse("registry:version_detail", args=[w.v1.pk]) in html
    for marker in ("data-rollout-form", "data-rollback-form", "data-stop-form", "data-start-form",
                   "data-try-form", "data-edit-settings", "data-actions-section"):
        assert marker not in html, marker


def test_engineer_sees_the_actions_the_try_box_and_what_a_rollback_would_do(w):
    deployment = running(deploy(w))
    html = client_for(w.eng).get(reverse("deployments:deployment_detail", args=[deployment.pk])).content.decode()
    for marker in ("data-rollout-form", "data-stop-form", "data-try-form", "data-edit-settings"):
        assert marker in html, marker
    assert f'value="{w.v2.pk}"' in html and f'value="{w.v3.pk}"' not in html  # rollout: ready, not live
    assert 'data-rollback-plan="none"' in html and "data-rollback-form" not in html
    assert "&quot;dataframe_split&quot;" in html and "12.5" in html  # the try box starts from the input example
    assert "No traffic in the last hour." in html or "prediction log" in html


def test_data_scientist_may_try_but_not_operate(w):
    deployment = running(deploy(w))
    html = client_for(w.sci).get(reverse("deployments:deployment_detail", args=[deployment.pk])).content.decode()
    assert "data-try-form" in html and "data-rollout-form" not in html and "data-stop-form" not in html


def test_another_teams_deployment_and_unknown_ids_are_404(w):
    theirs = other_team_deployment(w)
    c = client_for(w.eng)
    for name in ("deployment_detail", "deployment_status", "deployment_edit", "key_list"):
        assert c.get(reverse(f"deployments:{name}", args=[theirs.pk])).status_code == 404, name
        assert c.get(reverse(f"deployments:{name}", args=[999999])).status_code == 404, name
    for name in ("deployment_rollout", "deployment_rollback", "deployment_stop", "deployment_start",
                 "deployment_try"):
        assert c.post(reverse(f"deployments:{name}", args=[theirs.pk]), {}).status_code == 404, name
    assert c.get("/deployments/abc/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == "pending"


def test_status_json_follows_the_deployment(w):
    deployment = deploy(w)
    c = client_for(w.viewer)
    url = reverse("deployments:deployment_status", args=[deployment.pk])
    first = c.get(url).json()
    assert first["status"] == "pending" and first["replicas_ready"] == 0 and first["replicas_desired"] == 1
    running(deployment)
    second = c.get(url).json()
    assert second["status"] == "running" and second["replicas_ready"] == 1
    assert second["fingerprint"] != first["fingerprint"]
    assert c.get(reverse("deployments:deployment_status", args=[other_team_deployment(w).pk])).status_code == 404


def test_charts_come_from_the_rollups(w):
    from apps.monitoring.models import LATENCY_BUCKETS_MS, PredictionRollup

    deployment = running(deploy(w))
    minute = (timezone.now() - timedelta(minutes=5)).replace(second=0, microsecond=0)
    histogram = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    histogram[3] = 40
    PredictionRollup.objects.create(deployment_id=deployment.pk, variant="v1", minute=minute, count=40, sampled=40,
                                    errors=2, client_errors=1, latency_sum_ms=400.0, latency_max_ms=30.0,
                                    latency_histogram=histogram)
    html = client_for(w.viewer).get(reverse("deployments:deployment_detail", args=[deployment.pk])).content.decode()
    assert 'data-deployment-chart' in html and "No traffic in the last hour." not in html
    figure = json.loads(re.search(r'<script id="chart-requests-data" type="application/json">(.*?)</script>',
                                  html, re.DOTALL).group(1))
    assert figure["data"][0]["name"] == "v1" and figure["data"][0]["y"] == [40]
    errors = json.loads(re.search(r'<script id="chart-errors-data" type="application/json">(.*?)</script>',
                                  html, re.DOTALL).group(1))
    assert errors["data"][0]["y"] == [2]
    latency = json.loads(re.search(r'<script id="chart-latency-data" type="application/json">(.*?)</script>',
                                   html, re.DOTALL).group(1))
    assert [t["name"] for t in latency["data"]] == ["v1 p50", "v1 p95", "v1 p99"]
    assert all(t["y"][0] is not None for t in latency["data"])


# ------------------------------------------------------------------------------------------------ actions

def test_rollout_from_the_page(w):
    deployment = running(deploy(w))
    c = client_for(w.eng)
    url = reverse("deployments:deployment_rollout", args=[deployment.pk])
    response = c.post(url, {"model_version": w.v2.pk, "strategy": "blue_green"})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == "updating"
    candidate = deployment.variants.get(role="candidate")
    assert candidate.model_version == w.v2 and candidate.weight == 0
    # A second rollout while the first runs: the service's 409, above the form.
    response = c.post(url, {"model_version": w.v1.pk, "strategy": "direct"})
    assert response.status_code == 409 and "already in progress" in response.content.decode()
    # What a rollback would do now: cancel the candidate.
    html = c.get(reverse("deployments:deployment_detail", args=[deployment.pk])).content.decode()
    assert 'data-rollback-plan="cancel"' in html and "data-rollback-form" in html


def test_rollout_errors(w):
    deployment = running(deploy(w))
    c = client_for(w.eng)
    url = reverse("deployments:deployment_rollout", args=[deployment.pk])
    response = c.post(url, {"model_version": w.v3.pk, "strategy": "blue_green"})
    assert response.status_code == 400 and "blocked" in field_errors(response)["model_version"]
    response = c.post(url, {"model_version": "abc", "strategy": "blue_green"})
    assert response.status_code == 400 and "model_version" in field_errors(response)
    response = c.post(url, {"model_version": w.v2.pk, "strategy": "sideways"})
    assert response.status_code == 400 and "strategy" in field_errors(response)
    pending = deploy(w, "fraud-two")
    response = c.post(reverse("deployments:deployment_rollout", args=[pending.pk]),
                      {"model_version": w.v2.pk, "strategy": "blue_green"})
    assert response.status_code == 409  # pending -> updating is not a move the status machine allows
    assert "data-action-error" in response.content.decode()
    assert client_for(w.viewer).post(url, {"model_version": w.v2.pk, "strategy": "direct"}).status_code == 403
    assert client_for(w.sci).post(url, {"model_version": w.v2.pk, "strategy": "direct"}).status_code == 403
    deployment.refresh_from_db()
    assert deployment.status == "running" and deployment.variants.count() == 1


def test_rollback_cancels_a_candidate_and_refuses_when_nothing_is_left(w):
    deployment = running(deploy(w))
    c = client_for(w.eng)
    url = reverse("deployments:deployment_rollback", args=[deployment.pk])
    response = c.post(url, {"rollback-reason": "one version only"})
    assert response.status_code == 409 and "Nothing to roll back to" in response.content.decode()
    services.deployment_rollout_start(actor=Actor.for_user(w.eng), deployment_id=deployment.pk,
                                      model_version_id=w.v2.pk)
    assert client_for(w.viewer).post(url, {"rollback-reason": "x"}).status_code == 403
    response = c.post(url, {"rollback-reason": "latency regression"})
    assert response.status_code == 302
    assert deployment.variants.get(model_version=w.v2).role == "retired"
    assert deployment.events.filter(kind="rolled_back", message__contains="latency regression").exists()
    response = c.post(url, {"rollback-reason": "x" * 2001})
    assert response.status_code == 400 and "reason" in field_errors(response)


def test_stop_and_start(w):
    deployment = running(deploy(w))
    c = client_for(w.eng)
    stop = reverse("deployments:deployment_stop", args=[deployment.pk])
    assert client_for(w.viewer).post(stop, {}).status_code == 403
    assert c.post(stop, {"stop-reason": "maintenance"}).status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == "stopping"
    response = c.post(stop, {})
    assert response.status_code == 409 and "data-action-error" in response.content.decode()
    start = reverse("deployments:deployment_start", args=[deployment.pk])
    response = c.post(start)
    assert response.status_code == 409 and "data-action-error" in response.content.decode()  # still stopping
    Deployment.objects.filter(pk=deployment.pk).update(status="stopped")
    html = c.get(reverse("deployments:deployment_detail", args=[deployment.pk])).content.decode()
    assert "data-start-form" in html and "data-stop-form" not in html
    assert c.post(start).status_code == 302
    deployment.refresh_from_db()
    assert deployment.status == "deploying"
    assert c.get(stop).status_code == 405


def test_settings_edit(w):
    deployment = running(deploy(w))
    c = client_for(w.eng)
    url = reverse("deployments:deployment_edit", args=[deployment.pk])
    response = c.get(url)
    assert response.status_code == 200 and 'value="10.0"' in response.content.decode()  # current timeout
    data = {"replicas": "3", "cpu": "1", "memory_mb": "1024", "timeout_seconds": "10", "max_payload_bytes": "1048576",
            "rate_limit_rps": "50", "rate_limit_burst": "", "sampling_rate": "1", "rollback_window_seconds": "3600",
            "description": "Now with a rate limit."}
    assert c.post(url, data).status_code == 302
    deployment.refresh_from_db()
    assert (deployment.replicas, deployment.rate_limit_rps, deployment.description) == (3, 50.0,
                                                                                         "Now with a rate limit.")
    assert deployment.variants.get(role="live").replicas == 3
    event = deployment.events.filter(kind="updated").first()
    assert event is not None and "replicas" in event.message and "rate_limit_rps" in event.message
    response = c.post(url, {**data, "replicas": "0"})
    assert response.status_code == 400 and "replicas" in field_errors(response)
    response = c.post(url, {**data, "memory_mb": "lots"})
    assert response.status_code == 400 and "memory_mb" in field_errors(response)
    assert client_for(w.viewer).get(url).status_code == 403
    assert client_for(w.viewer).post(url, data).status_code == 403


# ------------------------------------------------------------------------------------------------ try it

def test_try_answers_503_with_the_message_when_no_gateway_listens(w, settings):
    settings.MODELPLANE_GATEWAY_URL = f"http://127.0.0.1:{_free_port()}"
    deployment = running(deploy(w))
    url = reverse("deployments:deployment_try", args=[deployment.pk])
    response = client_for(w.sci).post(url, json.dumps({"payload": json.dumps({"dataframe_split": EXAMPLE})}),
                                      content_type="application/json")
    assert response.status_code == 503
    body = response.json()
    assert body["error"]["code"] == "gateway_unavailable" and "did not answer" in body["error"]["message"]
    assert "Traceback" not in response.content.decode()


def test_try_refusals(w, settings):
    settings.MODELPLANE_GATEWAY_URL = f"http://127.0.0.1:{_free_port()}"
    deployment = running(deploy(w))
    url = reverse("deployments:deployment_try", args=[deployment.pk])
    c = client_for(w.eng)
    response = c.post(url, json.dumps({"payload": "{not json"}), content_type="application/json")
    assert response.status_code == 400 and "payload" in response.json()["error"]["fields"]
    response = c.post(url, json.dumps({"payload": "[1, 2]"}), content_type="application/json")
    assert response.status_code == 400 and "JSON object" in response.json()["error"]["message"]
    response = c.post(url, b"{broken", content_type="application/json")
    assert response.status_code == 400
    response = c.post(url, json.dumps({}), content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["fields"] == {"payload": [
        "This field is required."]}
    response = client_for(w.viewer).post(url, json.dumps({"payload": "{}"}), content_type="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    assert c.get(url).status_code == 405


class _Gateway(BaseHTTPRequestHandler):
    """Stands in for the gateway on loopback: answers like it, and remembers what it was sent."""

    seen: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Gateway.seen.append((self.path, dict(self.headers), json.loads(body)))
        answer = json.dumps({"predictions": [1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Request-ID", "req-123")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_try_relays_the_gateways_answer(w, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings.MODELPLANE_GATEWAY_URL = f"http://127.0.0.1:{server.server_address[1]}"
        deployment = running(deploy(w))
        response = client_for(w.eng).post(reverse("deployments:deployment_try", args=[deployment.pk]),
                                          json.dumps({"payload": json.dumps({"dataframe_split": EXAMPLE})}),
                                          content_type="application/json")
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == 200 and body["body"] == {"predictions": [1]} and body["request_id"] == "req-123"
    assert body["latency_ms"] >= 0
    path, headers, sent = _Gateway.seen[-1]
    assert path == f"/v1/deployments/{deployment.name}/invocations"
    assert sent == {"dataframe_split": EXAMPLE} and headers.get("X-Modelplane-Console-Token")


# ------------------------------------------------------------------------------------------------ keys

def test_key_is_shown_once_and_never_again(w):
    deployment = deploy(w)
    c = client_for(w.eng)
    url = reverse("deployments:key_list", args=[deployment.pk])
    form = c.get(url).content.decode()
    nonce = re.search(r'name="nonce" value="([^"]+)"', form).group(1)
    response = c.post(url, {"nonce": nonce, "name": "checkout", "expires_at": ""})
    html = response.content.decode()
    assert response.status_code == 200
    key = re.search(r'data-new-key-value>(mpk_[^<]+)<', html).group(1)
    record = DeploymentKey.objects.get(deployment=deployment)
    assert record.name == "checkout" and key.startswith(f"mpk_{record.prefix}_")
    assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]
    assert key not in response["Location"] if response.has_header("Location") else True
    assert key not in json.dumps(dict(c.session.items()), default=str)
    again = c.get(url).content.decode()
    assert key not in again and f'data-key="{record.prefix}"' in again
    # The same form posted again (a reload): no second key, and the key is not shown again.
    response = c.post(url, {"nonce": nonce, "name": "checkout", "expires_at": ""}, follow=True)
    assert DeploymentKey.objects.filter(deployment=deployment).count() == 1
    assert key not in response.content.decode() and "already submitted" in response.content.decode()


def test_key_form_errors_and_who_may_manage_keys(w):
    deployment = deploy(w)
    url = reverse("deployments:key_list", args=[deployment.pk])
    c = client_for(w.eng)
    response = c.post(url, {"name": "old", "expires_at": "2001-01-01T00:00"})
    assert response.status_code == 400 and "future" in field_errors(response)["expires_at"]
    response = c.post(url, {"name": "", "expires_at": ""})
    assert response.status_code == 400 and "name" in field_errors(response)
    response = c.post(url, {"name": "x", "expires_at": "next tuesday"})
    assert response.status_code == 400 and "expires_at" in field_errors(response)
    viewer = client_for(w.viewer)
    html = viewer.get(url).content.decode()
    assert "data-key-form" not in html
    assert viewer.post(url, {"name": "sneaky"}).status_code == 403
    assert client_for(w.sci).post(url, {"name": "sneaky"}).status_code == 403
    assert not DeploymentKey.objects.exists()


def test_revoke_a_key(w):
    deployment = deploy(w)
    record, _key = services.deploymentkey_create(actor=Actor.for_user(w.eng), deployment_id=deployment.pk,
                                                 name="checkout")
    revoke = reverse("deployments:key_revoke", args=[deployment.pk, record.pk])
    assert client_for(w.viewer).post(revoke).status_code == 403
    assert client_for(w.other).post(revoke).status_code == 404
    response = client_for(w.eng).post(revoke)
    assert response.status_code == 302
    record.refresh_from_db()
    assert record.revoked_at is not None
    html = client_for(w.eng).get(reverse("deployments:key_list", args=[deployment.pk])).content.decode()
    assert 'data-key-state="revoked"' in html
    # A key of another deployment through this deployment's URL: 404, not a revoke.
    second = deploy(w, "fraud-two")
    theirs, _ = services.deploymentkey_create(actor=Actor.for_user(w.eng), deployment_id=second.pk, name="x")
    assert client_for(w.eng).post(reverse("deployments:key_revoke", args=[deployment.pk, theirs.pk])).status_code \
        == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


# ------------------------------------------------------------------------------------------------ replica output

def test_replica_output_page(w):
    deployment = running(deploy(w))
    replica = Replica.objects.get(variant__deployment=deployment)
    url = reverse("deployments:replica_output", args=[deployment.pk, replica.pk])
    response = client_for(w.viewer).get(url)
    html = response.content.decode()
    assert response.status_code == 200 and "Replica v1 #0" in html
    assert "data-replica-log" in html or "data-output-empty" in html or "data-output-unavailable" in html
    assert client_for(w.other).get(url).status_code == 404
    second = running(deploy(w, "fraud-two"))
    assert client_for(w.eng).get(reverse("deployments:replica_output",
                                         args=[second.pk, replica.pk])).status_code == 404
    assert client_for(w.eng).get(reverse("deployments:replica_output",
                                         args=[deployment.pk, 999999])).status_code == 404


# ------------------------------------------------------------------------------------------------ environments

def test_environment_list_for_everyone_signed_in(w):
    deploy(w)
    for user in (w.viewer, w.loner):
        response = client_for(user).get(reverse("deployments:environment_list"))
        html = response.content.decode()
        assert response.status_code == 200
        assert 'data-environment="dev"' in html and 'data-environment="production"' in html
        assert "data-new-environment" not in html and "data-edit-environment" not in html
    html = client_for(w.root).get(reverse("deployments:environment_list")).content.decode()
    assert "data-new-environment" in html and 'data-edit-environment="dev"' in html
    row = html[html.index('data-environment="dev"'):]
    assert "1 <span" in row[:row.index("</tr>")]  # one deployment not stopped


def test_environment_create_and_edit_by_platform_admins_only(w):
    create = reverse("deployments:environment_create")
    assert client_for(w.eng).get(create).status_code == 403
    assert client_for(w.eng).post(create, {"name": "qa", "backend": "local"}).status_code == 403
    c = client_for(w.root)
    assert c.get(create).status_code == 200
    response = c.post(create, {"name": "qa", "backend": "local", "backend_settings": '{"max_replicas": 4}',
                               "description": "Quality checks"})
    assert response.status_code == 302
    env = Environment.objects.get(name="qa")
    assert env.backend_settings == {"max_replicas": 4} and not env.is_production
    edit = reverse("deployments:environment_edit", args=[env.pk])
    assert client_for(w.eng).get(edit).status_code == 403
    response = c.post(edit, {"name": "ignored", "backend": "local", "backend_settings": "", "is_production": "on",
                             "description": "Now production"})
    assert response.status_code == 302
    env.refresh_from_db()
    assert env.name == "qa" and env.is_production and env.backend_settings == {}
    assert c.get(reverse("deployments:environment_edit", args=[999999])).status_code == 404


@pytest.mark.parametrize("raw, words", [("{not json", "Not valid JSON"), ("[1, 2]", "JSON object"),
                                        ('"text"', "JSON object")])
def test_environment_backend_settings_must_be_a_json_object(w, raw, words):
    response = client_for(w.root).post(reverse("deployments:environment_create"),
                                       {"name": "qa", "backend": "local", "backend_settings": raw})
    assert response.status_code == 400
    assert words in field_errors(response)["backend_settings"]
    assert not Environment.objects.filter(name="qa").exists()


def test_environment_errors_from_the_service(w):
    c = client_for(w.root)
    response = c.post(reverse("deployments:environment_create"), {"name": "dev", "backend": "local"})
    assert response.status_code == 400 and "already exists" in field_errors(response)["name"]
    response = c.post(reverse("deployments:environment_create"), {"name": "Bad Name", "backend": "local"})
    assert response.status_code == 400 and "name" in field_errors(response)
    deploy(w)  # dev now has a deployment that is not stopped: its backend cannot change
    response = c.post(reverse("deployments:environment_edit", args=[w.dev.pk]),
                      {"name": "dev", "backend": "kubernetes", "backend_settings": "{}"})
    assert response.status_code == 409
    assert "Stop this environment" in response.content.decode()
    assert "backend" in field_errors(response)
