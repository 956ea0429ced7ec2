"""Serving services and the deployment-level reconcile, on real PostgreSQL and Redis, without model servers.

Replica processes are the business of tests/deployments/test_replicas.py; here replica rows are set to the
states the reconciler would write, and the status machine, the blue-green switch (its smoke requests go to a
real HTTP server on loopback), rollbacks, keys, audit events and the route published to Redis are checked.
"""
from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from apps.deployments import reconcile, routing, services
from apps.deployments.models import Deployment, DeploymentEvent, DeploymentKey, Replica, Variant
from apps.gateway.contract import deployment_key_hash
from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db

EXAMPLE = {"columns": ["amount", "age"], "data": [[12.5, 40.0]]}


@pytest.fixture(autouse=True)
def _own_routes_key(settings):
    """Routes of this test in their own Redis hash, removed afterwards."""
    key, url = f"test:routes:{uuid.uuid4().hex[:8]}", settings.REDIS_URL
    settings.MODELPLANE_GATEWAY_ROUTES_KEY = key
    settings.MODELPLANE_GATEWAY_ROUTES_CHANNEL = key + ":changed"
    yield
    redis.Redis.from_url(url).delete(key)


class World:
    def __init__(self, make_user, teams):
        self.a, self.b = teams
        self.eng = make_user("eng", team=self.a, roles=("ml_engineer",))
        self.sci = make_user("sci", team=self.a, roles=("data_scientist",))
        self.viewer = make_user("viewer", team=self.a, roles=("viewer",))
        self.other = make_user("other", team=self.b, roles=("ml_engineer",))
        self.root = make_user("root", platform_admin=True)
        root = Actor.for_user(self.root)
        self.dev = services.environment_create(actor=root, name="dev")
        self.prod = services.environment_create(actor=root, name="production", is_production=True)
        self.model = RegisteredModel.objects.create(team=self.a, name="fraud", latest_version=3)
        self.v1, self.v2, self.v3 = (
            ModelVersion.objects.create(model=self.model, version=n, origin="run", status="ready",
                                        input_example=EXAMPLE,
                                        signature={"inputs": [{"name": "amount", "type": "double"}]})
            for n in (1, 2, 3))

    def actor(self, user):
        return Actor.for_user(user)


@pytest.fixture
def w(make_user, teams):
    return World(make_user, teams)


def _deploy(w, name="fraud-api", version=None, **kw) -> Deployment:
    return services.deployment_create(actor=w.actor(w.eng), name=name, environment_id=w.dev.pk,
                                      model_version_id=(version or w.v1).pk, **kw)


def _all_ready(deployment: Deployment, port: int = 1) -> None:
    """What the replica reconciler writes once every desired replica answers /ping."""
    for variant in deployment.variants.filter(role__in=Variant.ACTIVE_ROLES):
        for index in range(variant.replicas):
            Replica.objects.update_or_create(variant=variant, index=index, defaults={
                "status": Replica.Status.READY, "port": port, "desired": True, "ready_at": timezone.now()})


class Upstream:
    """A real HTTP server on loopback standing in for a model server's /invocations (status chosen per test)."""

    def __init__(self, status: int = 200):
        self.status, self.bodies = status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"predictions": [0]}' if outer.status == 200 else b'{"error_code": "BAD"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


# ------------------------------------------------------------------------------------------ environments

def test_only_platform_admins_manage_environments(w):
    with pytest.raises(PermissionDenied):
        services.environment_create(actor=w.actor(w.eng), name="qa")
    with pytest.raises(ValidationFailed) as exc:
        services.environment_create(actor=w.actor(w.root), name="Bad Name!")
    assert "name" in exc.value.fields
    with pytest.raises(ValidationFailed) as exc:
        services.environment_create(actor=w.actor(w.root), name="dev")
    assert exc.value.code == "duplicate"
    env = services.environment_update(actor=w.actor(w.root), environment_id=w.dev.pk, description="Sandbox")
    assert env.description == "Sandbox"
    assert AuditEvent.objects.filter(verb="environment.updated", target_id=str(w.dev.pk)).exists()


# ------------------------------------------------------------------------------------------- create

def test_create_records_variant_event_audit_and_queues_nothing_half_made(w):
    deployment = _deploy(w, replicas=2, sampling_rate="0.25")
    assert deployment.status == "pending" and deployment.team == w.a and deployment.sampling_rate == 0.25
    variant = deployment.variants.get()
    assert (variant.name, variant.role, variant.weight, variant.replicas) == ("v1", "live", 100, 2)
    audit = AuditEvent.objects.get(verb="deployment.created")
    assert audit.after["variant"] == "v1" and audit.actor_name == "eng"
    assert DeploymentEvent.objects.filter(deployment=deployment, kind="created").exists()


def test_create_refuses_bad_input_naming_the_field(w):
    cases = [
        ({"name": "Bad_Name"}, "name"),
        ({"environment_id": 9999}, "environment"),
        ({"model_version_id": "x"}, "model_version"),
        ({"replicas": 0}, "replicas"),
        ({"replicas": "many"}, "replicas"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"rate_limit_burst": 10}, "rate_limit_burst"),
        ({"bogus": 1}, "bogus"),
    ]
    for override, field in cases:
        kwargs = {"name": "ok-name", "environment_id": w.dev.pk, "model_version_id": w.v1.pk}
        kwargs.update(override)
        with pytest.raises(ValidationFailed) as exc:
            services.deployment_create(actor=w.actor(w.eng), **kwargs)
        assert field in exc.value.fields, (override, exc.value.fields)
    assert not Deployment.objects.exists()


def test_blocked_version_is_refused_with_the_scans_reason(w):
    w.v2.status, w.v2.status_message = "blocked", "posix.system is not on the allowlist"
    w.v2.save()
    with pytest.raises(ValidationFailed) as exc:
        _deploy(w, version=w.v2)
    assert exc.value.code == "blocked" and "posix.system" in exc.value.fields["model_version"][0]


def test_roles_and_teams(w):
    with pytest.raises(PermissionDenied):
        services.deployment_create(actor=w.actor(w.sci), name="x", environment_id=w.dev.pk,
                                   model_version_id=w.v1.pk)
    with pytest.raises(ValidationFailed):  # another team's version is not even visible
        services.deployment_create(actor=w.actor(w.other), name="x", environment_id=w.dev.pk,
                                   model_version_id=w.v1.pk)
    deployment = _deploy(w)
    with pytest.raises(NotFound):
        services.deployment_stop(actor=w.actor(w.other), deployment_id=deployment.pk)
    with pytest.raises(PermissionDenied):
        services.deployment_stop(actor=w.actor(w.viewer), deployment_id=deployment.pk)


def test_production_needs_a_platform_admin_until_approvals_land(w):
    with pytest.raises(PermissionDenied) as exc:
        services.deployment_create(actor=w.actor(w.eng), name="fraud-prod", environment_id=w.prod.pk,
                                   model_version_id=w.v1.pk)
    assert exc.value.code == "promotion_required" and "promotion" in exc.value.message
    assert services.deployment_create(actor=w.actor(w.root), name="fraud-prod", environment_id=w.prod.pk,
                                      model_version_id=w.v1.pk).pk


# ---------------------------------------------------------------------------------------- status machine

def test_first_deploy_goes_pending_deploying_running_degraded_running(w):
    deployment = _deploy(w, replicas=2)
    reconcile._advance(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "deploying"
    _all_ready(deployment)
    reconcile._advance(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "running" and "2 of 2" in deployment.status_message
    Replica.objects.filter(variant__deployment=deployment, index=1).update(status="crashed")
    reconcile._advance(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "degraded"
    Replica.objects.filter(variant__deployment=deployment).update(status="ready")
    reconcile._advance(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "running"
    verbs = list(AuditEvent.objects.filter(target_type="deployments.deployment").values_list("verb", flat=True))
    assert {"deployment.deploying", "deployment.running", "deployment.degraded"} <= set(verbs)


def test_replicas_that_keep_crashing_fail_the_deployment(w):
    deployment = _deploy(w)
    reconcile._advance(deployment.pk)
    variant = deployment.variants.get()
    Replica.objects.create(variant=variant, index=0, status="crashed", restart_count=reconcile.MAX_FAILED_STARTS,
                           last_exit="exited with code 1")
    reconcile._advance(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "failed" and "exited with code 1" in deployment.status_message


def test_invalid_moves_are_refused(w):
    deployment = _deploy(w)
    services.deployment_stop(actor=w.actor(w.eng), deployment_id=deployment.pk)
    with pytest.raises(InvalidTransition):
        services.deployment_stop(actor=w.actor(w.eng), deployment_id=deployment.pk)
    with pytest.raises(InvalidTransition):
        services.deployment_rollout_start(actor=w.actor(w.eng), deployment_id=deployment.pk,
                                          model_version_id=w.v2.pk)


# ------------------------------------------------------------------------------------------- blue-green

def _running(w, **kw) -> Deployment:
    deployment = _deploy(w, **kw)
    reconcile._advance(deployment.pk)
    _all_ready(deployment)
    reconcile._advance(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "running"
    return deployment


def test_blue_green_smoke_tests_then_switches_at_once_and_keeps_blue_warm(w, upstream):
    deployment = _running(w, rollback_window_seconds=600)
    services.deployment_rollout_start(actor=w.actor(w.eng), deployment_id=deployment.pk, model_version_id=w.v2.pk)
    green = deployment.variants.get(role="candidate")
    assert green.weight == 0
    reconcile._advance(deployment.pk)   # green not ready yet: nothing moves
    assert Deployment.objects.get(pk=deployment.pk).status == "updating"
    _all_ready(deployment, port=upstream.port)
    reconcile._advance(deployment.pk)
    deployment.refresh_from_db()
    assert deployment.status == "running"
    assert upstream.bodies == [{"dataframe_split": EXAMPLE}]   # the smoke request was the input example
    roles = {v.name: (v.role, v.weight) for v in deployment.variants.all()}
    assert roles == {"v1": ("standby", 0), "v2": ("live", 100)}
    blue = deployment.variants.get(name="v1")
    assert timedelta(seconds=590) < blue.standby_until - timezone.now() <= timedelta(seconds=600)
    assert AuditEvent.objects.filter(verb="deployment.switched", actor_kind="system").exists()

    # Rollback within the window: blue is warm, so traffic goes back at once.
    services.deployment_rollback(actor=w.actor(w.eng), deployment_id=deployment.pk, reason="error rate")
    roles = {v.name: (v.role, v.weight) for v in deployment.variants.all()}
    assert roles == {"v1": ("live", 100), "v2": ("retired", 0)}
    reconcile._advance(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "running"
    assert AuditEvent.objects.get(verb="deployment.rolled_back").reason == "error rate"


def test_failed_smoke_request_aborts_the_rollout_and_blue_keeps_serving(w):
    bad = Upstream(status=500)
    try:
        deployment = _running(w)
        services.deployment_rollout_start(actor=w.actor(w.eng), deployment_id=deployment.pk,
                                          model_version_id=w.v2.pk)
        _all_ready(deployment, port=bad.port)
        reconcile._advance(deployment.pk)
    finally:
        bad.close()
    deployment.refresh_from_db()
    assert deployment.status == "running" and "smoke requests" in deployment.status_message
    assert {v.name: v.role for v in deployment.variants.all()} == {"v1": "live", "v2": "retired"}
    assert AuditEvent.objects.filter(verb="deployment.rollout_aborted").exists()


def test_standby_is_retired_after_the_rollback_window(w, upstream):
    deployment = _running(w, rollback_window_seconds=0)
    services.deployment_rollout_start(actor=w.actor(w.eng), deployment_id=deployment.pk, model_version_id=w.v2.pk)
    _all_ready(deployment, port=upstream.port)
    reconcile._advance(deployment.pk)
    reconcile._retire_expired_standbys(Deployment.objects.get(pk=deployment.pk))
    assert deployment.variants.get(name="v1").role == "retired"
    # Nothing warm left: rollback starts v1 again as a new variant (the direct way).
    services.deployment_rollback(actor=w.actor(w.eng), deployment_id=deployment.pk)
    live = deployment.variants.get(role="live")
    assert live.model_version == w.v1 and live.name == "v1-2"
    assert Deployment.objects.get(pk=deployment.pk).status == "rolling_back"


def test_direct_rollout_replaces_at_once(w):
    deployment = _running(w, strategy="direct")
    services.deployment_rollout_start(actor=w.actor(w.eng), deployment_id=deployment.pk, model_version_id=w.v2.pk)
    assert {v.name: (v.role, v.weight) for v in deployment.variants.all()} == {
        "v1": ("retired", 0), "v2": ("live", 100)}
    assert "requests may fail" in Deployment.objects.get(pk=deployment.pk).status_message
    with pytest.raises(ValidationFailed) as exc:  # the version already live is not a rollout
        services.deployment_rollout_start(actor=w.actor(w.eng), deployment_id=deployment.pk,
                                          model_version_id=w.v2.pk)
    assert exc.value.code == "already_live"


def test_rollback_with_nothing_to_go_back_to(w):
    deployment = _running(w)
    with pytest.raises(Conflict) as exc:
        services.deployment_rollback(actor=w.actor(w.eng), deployment_id=deployment.pk)
    assert exc.value.code == "nothing_to_roll_back"


def test_stop_then_stopped_once_no_replica_runs(w):
    deployment = _running(w)
    services.deployment_stop(actor=w.actor(w.eng), deployment_id=deployment.pk)
    reconcile._advance(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "stopping"
    Replica.objects.filter(variant__deployment=deployment).update(status="stopped", desired=False)
    reconcile._advance(deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "stopped"
    services.deployment_start(actor=w.actor(w.eng), deployment_id=deployment.pk)
    assert Deployment.objects.get(pk=deployment.pk).status == "deploying"


# ------------------------------------------------------------------------------------- keys and routes

def test_route_published_to_redis_with_keys_weights_and_ready_replicas(w, settings):
    deployment = _running(w, rate_limit_rps=5)
    record, key = services.deploymentkey_create(actor=w.actor(w.eng), deployment_id=deployment.pk, name="ci")
    assert key.startswith("mpk_") and DeploymentKey.objects.get().key_hash == deployment_key_hash(key)
    assert key not in json.dumps(AuditEvent.objects.get(verb="deployment_key.created").after)
    client = redis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    pubsub.subscribe(settings.MODELPLANE_GATEWAY_ROUTES_CHANNEL)
    pubsub.get_message(timeout=1)
    assert routing.routing_publish(deployment.pk) is True
    doc = json.loads(client.hget(settings.MODELPLANE_GATEWAY_ROUTES_KEY, "fraud-api"))
    assert doc["keys"] == [{"id": record.pk, "hash": deployment_key_hash(key)}]
    assert doc["serving"] is True and doc["rate_limit"] == {"requests_per_second": 5.0, "burst": 5}
    assert [(v["name"], v["weight"], [r["ready"] for r in v["replicas"]]) for v in doc["variants"]] == [
        ("v1", 100, [True])]
    message = pubsub.get_message(timeout=2)
    assert message and message["data"] == b"fraud-api"
    # Unchanged: not published again. Revoked key: a new generation without it.
    assert routing.routing_publish(deployment.pk) is False
    services.deploymentkey_revoke(actor=w.actor(w.eng), key_id=record.pk)
    assert routing.routing_publish(deployment.pk) is True
    doc2 = json.loads(client.hget(settings.MODELPLANE_GATEWAY_ROUTES_KEY, "fraud-api"))
    assert doc2["keys"] == [] and doc2["generation"] > doc["generation"]
    pubsub.close()


def test_publish_without_redis_fails_quietly_and_retries_later(w, settings):
    deployment = _running(w)
    settings.MODELPLANE_GATEWAY_REDIS_URL = "redis://127.0.0.1:1/0"
    assert routing.routing_publish(deployment.pk) is False


def test_key_rules(w):
    deployment = _deploy(w)
    with pytest.raises(ValidationFailed) as exc:
        services.deploymentkey_create(actor=w.actor(w.eng), deployment_id=deployment.pk, name="")
    assert "name" in exc.value.fields
    with pytest.raises(ValidationFailed) as exc:
        services.deploymentkey_create(actor=w.actor(w.eng), deployment_id=deployment.pk, name="x",
                                      expires_at="2001-01-01T00:00:00Z")
    assert "expires_at" in exc.value.fields
    with pytest.raises(PermissionDenied):
        services.deploymentkey_create(actor=w.actor(w.sci), deployment_id=deployment.pk, name="x")


# ------------------------------------------------------------------------------------------------- API

def _api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_create_rollout_rollback_keys_and_errors(w):
    api = _api(w.eng)
    r = api.post("/api/v1/deployments/", {"name": "fraud-api", "environment": w.dev.pk,
                                          "model_version": w.v1.pk, "replicas": 1}, format="json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "pending" and body["variants"][0]["model_version_number"] == 1
    assert body["invocations_path"] == "/v1/deployments/fraud-api/invocations"
    pk = body["id"]
    r = api.post("/api/v1/deployments/", {"name": "x", "environment": w.dev.pk, "model_version": w.v1.pk,
                                          "replicas": "two"}, format="json")
    assert r.status_code == 400 and "replicas" in r.json()["error"]["fields"]
    r = api.post("/api/v1/deployments/", {"name": "x", "environment": w.dev.pk, "model_version": w.v1.pk,
                                          "colour": "red"}, format="json")
    assert r.status_code == 400 and r.json()["error"]["fields"]["colour"] == ["Unknown field."]
    r = api.post(f"/api/v1/deployments/{pk}/rollout/", {"model_version": w.v2.pk}, format="json")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"  # still pending
    r = api.post(f"/api/v1/deployments/{pk}/keys/", {"name": "ci"}, format="json")
    assert r.status_code == 201 and r.json()["key"].startswith("mpk_")
    assert "key" not in api.get(f"/api/v1/deployments/{pk}/keys/").json()[0]
    key_id = r.json()["id"]
    assert api.post(f"/api/v1/deployment-keys/{key_id}/revoke/").json()["active"] is False
    assert _api(w.other).get(f"/api/v1/deployments/{pk}/").status_code == 404
    assert _api(w.other).post(f"/api/v1/deployment-keys/{key_id}/revoke/").status_code == 404
    assert _api(w.viewer).post(f"/api/v1/deployments/{pk}/stop/", {}, format="json").status_code == 403
    assert api.get(f"/api/v1/deployments/{pk}/events/").json()[0]["kind"] == "key_revoked"
    assert api.get("/api/v1/deployments/?status=pending").json()["results"][0]["id"] == pk
    assert api.get("/api/v1/deployments/?environment=abc").status_code == 400
    assert _api(w.eng).post("/api/v1/environments/", {"name": "qa"}, format="json").status_code == 403
    assert _api(w.root).post("/api/v1/environments/", {"name": "qa"}, format="json").status_code == 201


def test_api_try_says_when_the_gateway_is_down(w, settings):
    settings.MODELPLANE_GATEWAY_URL = "http://127.0.0.1:1"
    deployment = _deploy(w)
    r = _api(w.sci).post(f"/api/v1/deployments/{deployment.pk}/try/",
                         {"payload": {"dataframe_split": EXAMPLE}}, format="json")
    assert r.status_code == 503 and r.json()["error"]["code"] == "gateway_unavailable"
    r = _api(w.viewer).post(f"/api/v1/deployments/{deployment.pk}/try/", {"payload": {}}, format="json")
    assert r.status_code == 403
    r = _api(w.sci).post(f"/api/v1/deployments/{deployment.pk}/try/", {"payload": [1, 2]}, format="json")
    assert r.status_code == 400 and "payload" in r.json()["error"]["fields"]


def test_api_metrics_flattens_the_rollups_per_variant(w):
    from apps.monitoring.models import HISTOGRAM_SIZE, PredictionRollup

    deployment = _deploy(w)
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=2)
    histogram = [0] * HISTOGRAM_SIZE
    histogram[2] = 60
    PredictionRollup.objects.create(deployment_id=deployment.pk, variant="v1", minute=minute, count=60, sampled=6,
                                    errors=3, client_errors=1, latency_sum_ms=240.0, latency_max_ms=9.0,
                                    latency_histogram=histogram)
    r = _api(w.viewer).get(f"/api/v1/deployments/{deployment.pk}/metrics/")
    assert r.status_code == 200, r.content
    (point,) = r.json()
    assert (point["variant"], point["count"], point["errors"], point["rps"]) == ("v1", 60, 3, 1.0)
    assert point["mean_ms"] == 4.0 and point["p50_ms"] is not None
    assert _api(w.viewer).get(f"/api/v1/deployments/{deployment.pk}/metrics/?since=yesterday").status_code == 400
    assert _api(w.other).get(f"/api/v1/deployments/{deployment.pk}/metrics/").status_code == 404


def test_an_update_that_changes_nothing_records_nothing(w):
    deployment = _deploy(w, replicas=2)
    generation = Deployment.objects.get(pk=deployment.pk).generation
    services.deployment_update(actor=w.actor(w.eng), deployment_id=deployment.pk, replicas=2)
    assert Deployment.objects.get(pk=deployment.pk).generation == generation
    assert not AuditEvent.objects.filter(verb="deployment.updated").exists()
    services.deployment_update(actor=w.actor(w.eng), deployment_id=deployment.pk, replicas=3)
    assert deployment.variants.get().replicas == 3
    assert AuditEvent.objects.get(verb="deployment.updated").after["replicas"] == 3


def test_rollback_plan_is_one_decision_for_the_service_and_the_page():
    """services.rollback_plan over unsaved variants: the candidate first, then the newest standby, then the most
    recently retired version that is not live (a retired variant without retired_at counts from its creation,
    never first as PostgreSQL's NULLS FIRST would have it), else nothing."""
    now = timezone.now()

    def v(pk, role, version, retired_at=None):
        return Variant(pk=pk, role=role, model_version_id=version, created_at=now - timedelta(days=10 - pk),
                       retired_at=retired_at)

    live = v(5, Variant.Role.LIVE, 3)
    older = v(1, Variant.Role.RETIRED, 1)  # no retired_at: counts from its creation, ten days ago
    newer = v(2, Variant.Role.RETIRED, 2, retired_at=now - timedelta(hours=1))
    same_as_live = v(3, Variant.Role.RETIRED, 3, retired_at=now)
    plan = services.rollback_plan([older, newer, same_as_live, live])
    assert (plan.kind, plan.target, plan.live) == ("restart", newer, [live])
    standby = v(4, Variant.Role.STANDBY, 2)
    assert services.rollback_plan([older, standby, live]).target is standby
    candidate = v(6, Variant.Role.CANDIDATE, 4)
    assert services.rollback_plan([standby, candidate, live]).kind == "cancel"
    assert services.rollback_plan([live]) == services.RollbackPlan("none", [live], None)
