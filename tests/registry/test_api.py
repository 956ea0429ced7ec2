"""/api/v1/ for the registry, against a real MLflow server where the endpoint talks to MLflow.

Lists, filters and pagination run on rows made directly (no MLflow needed to read them); registering, aliases,
model changes and archive go through the services to the session's MLflow server (tests/registry/conftest.py).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import services as account_services
from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.registry import mlflow_adapter as mlf
from apps.registry import services
from apps.registry.models import (
    AliasAssignment,
    ArtifactScan,
    ModelCard,
    ModelUpload,
    ModelVersion,
    ReferenceProfile,
    RegisteredModel,
    ScanFinding,
)

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("tests")


# ---------------------------------------------------------------- the world

class World:
    """Team A (sci: data scientist, viewer, approver), team B (other: data scientist), root: platform admin."""

    def __init__(self, make_user, teams):
        self.a, self.b = teams
        self.sci = make_user("sci", team=self.a, roles=("data_scientist",))
        self.viewer = make_user("viewer", team=self.a, roles=("viewer",))
        self.approver = make_user("approver", team=self.a, roles=("approver",))
        self.other = make_user("other", team=self.b, roles=("data_scientist",))
        self.root = make_user("root", platform_admin=True)
        self._clients: dict[str, APIClient] = {}
        for user in (self.sci, self.viewer, self.approver, self.other, self.root):
            self.client(user)  # their tokens (and those tokens' audit events) exist before any test counts

    def client(self, user, scopes=("read", "write")) -> APIClient:
        key = f"{user.username}:{','.join(scopes)}"
        if key not in self._clients:
            _, secret = account_services.apitoken_create(actor=Actor.for_user(user), name=f"api-{key}",
                                                         scopes=list(scopes))
            self._clients[key] = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return self._clients[key]

    # Rows made directly, for reads that need no MLflow.
    def model(self, name: str, team=None, **kw) -> RegisteredModel:
        return RegisteredModel.objects.create(team=team or self.a, name=name, **kw)

    def version(self, model: RegisteredModel, number: int = 1, status="ready", **kw) -> ModelVersion:
        version = ModelVersion.objects.create(model=model, version=number, status=status, origin="run", **kw)
        model.latest_version = max(model.latest_version, number)
        model.save(update_fields=["latest_version"])
        ModelCard.objects.create(version=version, revision=1, owners=model.team.name)
        return version


@pytest.fixture
def w(make_user, teams):
    return World(make_user, teams)


def _error(response, status: int, code: str | None = None, field: str | None = None) -> dict:
    """Assert the one error shape and return its inner object."""
    assert response.status_code == status, (response.status_code, response.content[:600])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "fields"} and error["message"]
    if code:
        assert error["code"] == code, error
    if field:
        assert field in error.get("fields", {}), error
    return error


def _results(response) -> list[dict]:
    assert response.status_code == 200, response.content[:600]
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    return body["results"]


@dataclass
class Finding:
    severity: str
    scanner: str = "opcodes"
    file: str = "model/model.pkl"
    code: str = "global_not_allowed"
    message: str = "os.system is not an allowed global"


@dataclass
class ScanResult:
    findings: list = field(default_factory=list)
    files_scanned: int = 4
    scanners: dict = field(default_factory=lambda: {"opcodes": "1"})
    max_severity: str = ""
    blocked: bool = False


def _finish_scan(version: ModelVersion, *findings: Finding) -> ArtifactScan:
    scan = version.scans.filter(status__in=["queued", "running"]).get()
    order = ["critical", "high", "medium", "low", "info"]
    worst = min((f.severity for f in findings), key=order.index, default="")
    result = ScanResult(findings=list(findings), max_severity=worst, blocked=worst in ("critical", "high"))
    return services.artifactscan_complete(actor=SYSTEM, scan_id=scan.pk, result=result)


@pytest.fixture
def registered(w, logged_run, unique):
    """A version registered from a real run through the API (pending its scan)."""
    response = w.client(w.sci).post("/api/v1/versions/register-from-run/", {
        "model_name": f"{unique}-fraud", "run_id": logged_run, "team": w.a.pk, "risk_tier": "high",
        "description": "first", "tags": {"use": "batch"}}, format="json")
    assert response.status_code == 201, response.content[:600]
    return ModelVersion.objects.get(pk=response.json()["id"])


@pytest.fixture
def ready(registered):
    _finish_scan(registered)
    registered.refresh_from_db()
    assert registered.status == "ready"
    return registered


# ---------------------------------------------------------------- register from a run

def test_register_from_run_answers_the_whole_version(w, logged_run, unique):
    before = AuditEvent.objects.count()
    response = w.client(w.sci).post("/api/v1/versions/register-from-run/", {
        "model_name": f"{unique}-fraud", "run_id": logged_run, "team": w.a.pk, "risk_tier": "high",
        "tags": {"use": "batch"}}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["model_name"] == f"{unique}-fraud" and body["version"] == 1 and body["team"] == w.a.pk
    assert body["status"] == "pending_scan" and body["deployable"] is False and body["origin"] == "run"
    assert body["run_id"] == logged_run and body["source"] == f"runs:/{logged_run}/model"
    assert {"sklearn", "python_function"} <= set(body["flavors"])
    assert [c["name"] for c in body["signature"]["inputs"]] == ["amount", "age"]
    assert body["input_example"] and body["tags"] == {"use": "batch"}
    assert body["latest_scan"]["status"] == "queued" and body["aliases"] == []
    card = body["card"]
    assert card["risk_tier"] == "high" and card["revisions"] == 1 and card["complete"] is False
    assert "intended_use" in card["missing_fields"] and "metrics" not in card["missing_fields"]
    assert card["card"]["metrics"]["auc"] == pytest.approx(0.97)
    assert body["created_at"].endswith("Z")  # UTC ISO 8601
    assert [e.verb for e in AuditEvent.objects.order_by("seq")[before:]] == ["model.created",
                                                                               "modelversion.registered"]
    # the same through the version and model reads
    assert w.client(w.viewer).get(f"/api/v1/versions/{body['id']}/").json()["signature"] == body["signature"]
    model = w.client(w.viewer).get(f"/api/v1/models/{body['model']}/").json()
    assert model["latest_version"] == 1 and model["risk_tier"] == "high" and model["team_name"] == "Fraud"


def test_register_a_second_version_of_an_existing_model_needs_no_team(w, registered, logged_run):
    response = w.client(w.sci).post("/api/v1/versions/register-from-run/", {
        "model_name": registered.model.name, "run_id": logged_run}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["version"] == 2 and response.json()["replaces"] == registered.pk


OK_RUN = {"model_name": "fine", "run_id": "a" * 32, "team": "own"}


@pytest.mark.parametrize("payload, field", [
    ({}, "model_name"),
    ({"run_id": "a" * 32, "team": "own"}, "model_name"),
    ({"model_name": "fine", "team": "own"}, "run_id"),
    ({**OK_RUN, "team": "abc"}, "team"),
    ({**OK_RUN, "tags": "use=batch"}, "tags"),
    ({**OK_RUN, "tags": {"k": ["list"]}}, "tags.k"),
    ({**OK_RUN, "model_name": "x" * 129}, "model_name"),
    ({**OK_RUN, "description": "d" * 5001}, "description"),
    ({**OK_RUN, "risk_tier": "extreme"}, "risk_tier"),
    ({**OK_RUN, "colour": "red"}, "colour"),  # nothing a user sent is dropped silently
    ({**OK_RUN, "model_name": "bad name!"}, "model_name"),
    ({**OK_RUN, "run_id": "not-hex"}, "run_id"),
    ({**OK_RUN, "artifact_path": "../etc"}, "artifact_path"),
    ({**OK_RUN, "tags": {"mlflow.user": "x"}}, "tags"),
    ({**OK_RUN, "tags": {"modelplane.team": "recs"}}, "tags"),  # the team claim in MLflow is ours
    ({"model_name": "fine", "run_id": "a" * 32}, "team"),  # a new model needs its team
    ({**OK_RUN, "team": 999999}, "team"),
])
def test_register_from_run_bad_input_names_the_field(w, payload, field):
    payload = {k: (w.a.pk if v == "own" else v) for k, v in payload.items()}
    before = AuditEvent.objects.count()
    _error(w.client(w.sci).post("/api/v1/versions/register-from-run/", payload, format="json"), 400, field=field)
    assert not RegisteredModel.objects.exists() and AuditEvent.objects.count() == before


def test_unknown_run_and_a_path_that_is_no_model_name_their_field_and_leave_nothing(w, logged_run, unique):
    client = w.client(w.sci)
    error = _error(client.post("/api/v1/versions/register-from-run/", {
        "model_name": f"{unique}-x", "run_id": "0" * 32, "team": w.a.pk}, format="json"), 400, field="run_id")
    assert error["code"] == "does_not_exist"
    error = _error(client.post("/api/v1/versions/register-from-run/", {
        "model_name": f"{unique}-x", "run_id": logged_run, "artifact_path": "nothing-here", "team": w.a.pk},
        format="json"), 400, field="artifact_path")
    assert error["code"] == "not_a_model"
    assert not RegisteredModel.objects.filter(name=f"{unique}-x").exists()


def test_register_refusals_viewer_other_team_and_a_name_taken_by_another_team(w, registered, logged_run, unique):
    body = {"model_name": f"{unique}-new", "run_id": logged_run, "team": w.a.pk}
    _error(w.client(w.viewer).post("/api/v1/versions/register-from-run/", body, format="json"), 403)
    _error(w.client(w.approver).post("/api/v1/versions/register-from-run/", body, format="json"), 403)
    _error(w.client(w.other).post("/api/v1/versions/register-from-run/", body, format="json"), 404)
    # a viewer is refused before MLflow is asked about the run, even for a model that exists
    _error(w.client(w.viewer).post("/api/v1/versions/register-from-run/", {
        "model_name": registered.model.name, "run_id": "0" * 32}, format="json"), 403)
    error = _error(w.client(w.other).post("/api/v1/versions/register-from-run/", {
        "model_name": registered.model.name, "run_id": logged_run, "team": w.b.pk}, format="json"), 409,
        field="model_name")
    assert "another team" in error["message"]
    assert ModelVersion.objects.count() == 1


def test_a_read_only_token_cannot_register(w):
    _error(w.client(w.sci, scopes=("read",)).post("/api/v1/versions/register-from-run/", {}, format="json"), 403)


def test_mlflow_unreachable_is_a_503_with_retry_after_and_leaves_nothing(w, settings, monkeypatch, unique):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:1"  # nothing listens on port 1
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    before = AuditEvent.objects.count()
    response = w.client(w.sci).post("/api/v1/versions/register-from-run/", {
        "model_name": f"{unique}-down", "run_id": "a" * 32, "team": w.a.pk}, format="json")
    error = _error(response, 503, "mlflow_unavailable")
    assert response["Retry-After"] and "unreachable" in error["message"]
    response = w.client(w.sci).post("/api/v1/models/", {"name": f"{unique}-down", "team": w.a.pk}, format="json")
    _error(response, 503, "mlflow_unavailable")
    assert response["Retry-After"]
    assert not RegisteredModel.objects.exists() and AuditEvent.objects.count() == before


# ---------------------------------------------------------------- upload

def _model_zip(tmp_path: Path) -> bytes:
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]]), [0, 1, 0, 1])
    directory = tmp_path / "saved"
    mlflow.sklearn.save_model(model, str(directory), serialization_format="cloudpickle")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in directory.rglob("*"):
            zf.write(path, Path("mymodel") / path.relative_to(directory))
    return buffer.getvalue()


def _upload(client, content: bytes, name: str = "model.zip", **fields):
    return client.post("/api/v1/versions/upload/", {"file": SimpleUploadedFile(name, content), **fields},
                       format="multipart")


def test_upload_a_model_zip_is_accepted_then_registered_by_the_worker(w, mlflow_uri, unique, tmp_path):
    client = w.client(w.sci)
    response = _upload(client, _model_zip(tmp_path), model_name=f"{unique}-up", team=w.a.pk,
                       tags=json.dumps({"source": "laptop"}), risk_tier="low")
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == f"/api/v1/uploads/{body['id']}/"
    assert body["status"] == "received" and body["version"] is None and body["model_name"] == f"{unique}-up"
    assert body["filename"] == "model.zip" and body["created_by"] == "sci" and body["tags"] == {"source": "laptop"}
    assert "file_path" not in body
    assert not RegisteredModel.objects.filter(name=f"{unique}-up").exists()

    from apps.registry.tasks import process_upload

    assert process_upload(body["id"]) == "registered"  # what the worker runs (test_upload_worker.py: a real one)
    done = client.get(response["Location"]).json()
    assert done["status"] == "registered" and done["version_number"] == 1 and done["finished_at"]
    version = client.get(f"/api/v1/versions/{done['version']}/").json()
    assert version["origin"] == "upload" and version["version"] == 1 and "sklearn" in version["flavors"]
    assert version["tags"] == {"source": "laptop"} and version["card"]["risk_tier"] == "low"
    assert version["registered_by"] == "sci"
    assert mlf.model_files_read(f"models:/{unique}-up/1").flavors["sklearn"]["serialization_format"] == "cloudpickle"
    listed = client.get("/api/v1/uploads/").json()["results"]
    assert [u["id"] for u in listed] == [body["id"]]


def test_uploads_are_scoped_and_a_failed_one_is_retried(w, tmp_path):
    mine = services.modelupload_receive(actor=Actor.for_user(w.sci), model_name="up-retry", upload_path=_pkl(tmp_path),
                                        filename="m.pkl", team_id=w.a.pk)
    theirs = services.modelupload_receive(actor=Actor.for_user(w.other), model_name="up-theirs",
                                          upload_path=_pkl(tmp_path), filename="m.pkl", team_id=w.b.pk)
    client = w.client(w.sci)
    assert [u["id"] for u in client.get("/api/v1/uploads/").json()["results"]] == [mine.pk]
    _error(client.get(f"/api/v1/uploads/{theirs.pk}/"), 404)
    _error(client.post(f"/api/v1/uploads/{theirs.pk}/retry/"), 404)
    _error(client.post(f"/api/v1/uploads/{mine.pk}/retry/"), 409, "invalid_transition", field="status")
    ModelUpload.objects.filter(pk=mine.pk).update(status="failed", error="MLflow was down")
    _error(w.client(w.viewer).post(f"/api/v1/uploads/{mine.pk}/retry/"), 403)
    assert w.client(w.viewer).get(f"/api/v1/uploads/{mine.pk}/").json()["retryable"] is True
    retried = client.post(f"/api/v1/uploads/{mine.pk}/retry/")
    assert retried.status_code == 202 and retried.json()["status"] == "received" and retried.json()["error"] == ""
    assert AuditEvent.objects.filter(verb="upload.retried", target_id=str(mine.pk), actor_name="sci").exists()


def _pkl(tmp_path: Path) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.pkl"
    path.write_bytes(b"\x80\x04K\x01.")
    return path


@pytest.mark.parametrize("name, content, fields, field, code", [
    ("broken.zip", b"PK\x03\x04 this is not really a zip", {}, "file", "bad_zip"),
    ("notes.txt", b"hello", {}, "file", "unsupported_type"),
    ("fake.pkl", b"hello, I am text", {}, "file", "not_a_model"),
    ("empty.pkl", b"", {}, "file", None),
    ("m.pkl", b"\x80\x04.", {"tags": "{not json"}, "tags", None),
    ("m.pkl", b"\x80\x04.", {"tags": json.dumps(["a"])}, "tags", None),
    ("m.pkl", b"\x80\x04.", {"model_name": ""}, "model_name", None),
    ("m.pkl", b"\x80\x04.", {"team": ""}, "team", None),
])
def test_upload_bad_input_names_the_field(w, name, content, fields, field, code):
    data = {"model_name": "up-bad", "team": w.a.pk, **fields}
    error = _error(_upload(w.client(w.sci), content, name, **data), 400, field=field)
    if code:
        assert error["code"] == code
    assert not RegisteredModel.objects.exists() and not ModelUpload.objects.exists()


def test_upload_without_a_file_names_file(w):
    response = w.client(w.sci).post("/api/v1/versions/upload/", {"model_name": "m", "team": w.a.pk},
                                    format="multipart")
    _error(response, 400, field="file")


def test_upload_as_json_is_415(w):
    _error(w.client(w.sci).post("/api/v1/versions/upload/", {"model_name": "m"}, format="json"), 415)


def test_upload_over_the_limit_is_413_while_streaming(w, settings):
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 1000
    error = _error(_upload(w.client(w.sci), b"\x80\x04" + b"x" * 5000, "big.pkl", model_name="big", team=w.a.pk),
                   413, "too_large", field="file")
    assert "1000 bytes" in error["message"]
    assert not RegisteredModel.objects.exists()


def test_upload_declared_far_over_the_limit_is_413_before_reading(w, settings):
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 1000
    big = b"\x80\x04" + b"x" * (1024 * 1024 + 5000)
    _error(_upload(w.client(w.sci), big, "big.pkl", model_name="big", team=w.a.pk), 413, "too_large", field="file")


def test_upload_over_the_limit_with_a_session_and_csrf_is_413_not_500(w, settings):
    """The session's CSRF check reads the body during authentication: the limit is in force by then."""
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 1000
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(w.sci)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    response = client.post("/api/v1/versions/upload/", {
        "file": SimpleUploadedFile("big.pkl", b"\x80\x04" + b"x" * 5000), "model_name": "big", "team": w.a.pk,
        "csrfmiddlewaretoken": token}, format="multipart", HTTP_X_CSRFTOKEN=token)
    _error(response, 413, "too_large", field="file")
    # and within the limit the same session upload reaches the service (a text file is no model)
    response = client.post("/api/v1/versions/upload/", {
        "file": SimpleUploadedFile("notes.txt", b"hello"), "model_name": "small", "team": w.a.pk},
        format="multipart", HTTP_X_CSRFTOKEN=token)
    _error(response, 400, "unsupported_type", field="file")


def test_upload_refusals(w):
    _error(_upload(w.client(w.viewer), b"\x80\x04.", "m.pkl", model_name="m", team=w.a.pk), 403)
    _error(_upload(w.client(w.other), b"\x80\x04.", "m.pkl", model_name="m", team=w.a.pk), 404)


# ---------------------------------------------------------------- models: list, filters, pagination

def test_model_list_is_scoped_and_carries_aliases(w):
    fraud = w.model("fraud-scorer", tags={"use": "batch"}, risk_tier="high")
    v1 = w.version(fraud, 1)
    AliasAssignment.objects.create(model=fraud, alias="staging", version=v1, assigned_at=v1.created_at,
                                   assigned_by=w.sci)
    w.model("recs-ranker", team=w.b)
    rows = _results(w.client(w.viewer).get("/api/v1/models/"))
    assert [r["name"] for r in rows] == ["fraud-scorer"]
    assert rows[0]["aliases"][0]["alias"] == "staging" and rows[0]["aliases"][0]["version"] == 1
    assert rows[0]["aliases"][0]["assigned_by"] == "sci"
    assert {r["name"] for r in _results(w.client(w.root).get("/api/v1/models/"))} == {"fraud-scorer", "recs-ranker"}


def test_model_filters(w):
    from django.utils import timezone

    a = w.model("alpha", tags={"use": "batch", "owner": "ml"}, risk_tier="high")
    b = w.model("beta", tags={"use": "online"}, risk_tier="low")
    c = w.model("gamma-archived", archived_at=timezone.now())
    va = w.version(a, 1, status="ready")
    w.version(b, 1, status="blocked")
    w.version(c, 1, status="archived")
    AliasAssignment.objects.create(model=a, alias="staging", version=va, assigned_at=va.created_at)
    old = w.version(b, 2, status="ready")
    AliasAssignment.objects.create(model=b, alias="staging", version=old, assigned_at=old.created_at,
                                   removed_at=timezone.now())  # b held it once, not now
    other = w.model("alpha-of-b", team=w.b)
    client = w.client(w.sci)

    def names(query: str) -> list[str]:
        return [r["name"] for r in _results(client.get(f"/api/v1/models/?{query}"))]

    assert names("") == ["alpha", "beta", "gamma-archived"]
    assert names("q=ALP") == ["alpha"]
    assert names("tag=use") == ["alpha", "beta"]
    assert names("tag=use=online") == ["beta"]
    assert names("tag=owner") == ["alpha"]
    assert names("tag=use__isnull=x") == [] and names("tag=a__regex=(") == []  # a key is a key, not a lookup
    assert names(f"team={w.a.pk}") == ["alpha", "beta", "gamma-archived"]
    assert names(f"team={w.b.pk}") == [] and other.pk  # another team's models stay invisible
    assert names("alias=staging") == ["alpha"]
    assert names("risk_tier=low") == ["beta"]
    assert names("status=blocked") == ["beta"] and names("status=ready") == ["alpha", "beta"]
    assert names("archived=true") == ["gamma-archived"] and names("archived=false") == ["alpha", "beta"]
    assert names("q=a&risk_tier=high&alias=staging") == ["alpha"]


@pytest.mark.parametrize("query, field", [
    ("risk_tier=extreme", "risk_tier"), ("status=gone", "status"), ("team=abc", "team"), ("team=1.5", "team"),
    ("archived=perhaps", "archived"), ("q=" + "x" * 200, "q"),
])
def test_model_filters_with_bad_values_name_the_parameter(w, query, field):
    _error(w.client(w.sci).get(f"/api/v1/models/?{query}"), 400, "invalid", field=field)


def test_model_list_cursor_pagination_walks_every_model_once_in_name_order(w):
    for i in range(7):
        w.model(f"m{i:02d}")
    client, seen, url = w.client(w.sci), [], "/api/v1/models/?page_size=3"
    while url:
        body = client.get(url).json()
        assert len(body["results"]) <= 3
        seen += [r["name"] for r in body["results"]]
        url = body["next"]
    assert seen == [f"m{i:02d}" for i in range(7)]
    _error(client.get("/api/v1/models/?cursor=garbage"), 404)


def test_model_detail_scoping(w):
    mine, theirs = w.model("mine"), w.model("theirs", team=w.b)
    assert w.client(w.viewer).get(f"/api/v1/models/{mine.pk}/").json()["name"] == "mine"
    _error(w.client(w.viewer).get(f"/api/v1/models/{theirs.pk}/"), 404)
    _error(w.client(w.viewer).get("/api/v1/models/999999/"), 404)
    assert w.client(w.root).get(f"/api/v1/models/{theirs.pk}/").status_code == 200


# ---------------------------------------------------------------- models: create and change

def test_model_create_and_duplicate(w, mlflow_uri, unique):
    client = w.client(w.sci)
    response = client.post("/api/v1/models/", {"name": f"{unique}-empty", "team": w.a.pk, "risk_tier": "low",
                                               "description": "no versions yet", "tags": {"use": "batch"}},
                           format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["latest_version"] == 0 and body["aliases"] == [] and body["created_by"] == "sci"
    assert mlf.registered_model_tags(f"{unique}-empty") == {"use": "batch", "modelplane.team": "fraud"}
    assert AuditEvent.objects.filter(verb="model.created", target_id=str(body["id"])).exists()
    error = _error(client.post("/api/v1/models/", {"name": f"{unique}-EMPTY", "team": w.a.pk}, format="json"), 409,
                   "conflict", field="name")
    assert "already exists" in error["message"]


@pytest.mark.parametrize("payload, status, field", [
    ({}, 400, "name"),
    ({"name": "ok"}, 400, "team"),
    ({"name": "bad name!", "team": "A"}, 400, "team"),
    ({"name": "bad name!", "team": "own"}, 400, "name"),
    ({"name": "x" * 129, "team": "own"}, 400, "name"),
    ({"name": "ok", "team": "own", "description": "d" * 5001}, 400, "description"),
    ({"name": "ok", "team": "own", "tags": {"k": "v" * 5001}}, 400, "tags.k"),
    ({"name": "ok", "team": "own", "risk_tier": "extreme"}, 400, "risk_tier"),
    ({"name": "ok", "team": 999999}, 400, "team"),
])
def test_model_create_bad_input(w, payload, status, field):
    payload = {k: (w.a.pk if v == "own" else v) for k, v in payload.items()}
    _error(w.client(w.sci).post("/api/v1/models/", payload, format="json"), status, field=field)
    assert not RegisteredModel.objects.exists()


def test_model_create_refusals(w):
    _error(w.client(w.viewer).post("/api/v1/models/", {"name": "m", "team": w.a.pk}, format="json"), 403)
    _error(w.client(w.other).post("/api/v1/models/", {"name": "m", "team": w.a.pk}, format="json"), 404)


def test_model_update_mirrors_to_mlflow(w, registered):
    model = registered.model
    client = w.client(w.sci)
    response = client.patch(f"/api/v1/models/{model.pk}/", {"description": "better", "tags": {"tier": "gold"},
                                                             "risk_tier": "medium"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["description"] == "better" and response.json()["risk_tier"] == "medium"
    assert mlf.client().get_registered_model(model.name).description == "better"
    assert mlf.registered_model_tags(model.name) == {"tier": "gold", "modelplane.team": "fraud"}
    # risk tier decides the card's required fields
    assert "metrics" not in client.get(f"/api/v1/versions/{registered.pk}/card/").json()["missing_fields"]


def test_model_update_refusals_and_bad_input(w):
    mine, theirs = w.model("mine"), w.model("theirs", team=w.b)
    _error(w.client(w.viewer).patch(f"/api/v1/models/{mine.pk}/", {"risk_tier": "low"}, format="json"), 403)
    _error(w.client(w.sci).patch(f"/api/v1/models/{theirs.pk}/", {"risk_tier": "low"}, format="json"), 404)
    _error(w.client(w.sci).patch(f"/api/v1/models/{mine.pk}/", {"risk_tier": "extreme"}, format="json"), 400,
           field="risk_tier")
    _error(w.client(w.sci).patch(f"/api/v1/models/{mine.pk}/", {"name": "renamed"}, format="json"), 400,
           field="name")  # names are MLflow's keys: not changeable, and not silently ignored
    _error(w.client(w.sci).put(f"/api/v1/models/{mine.pk}/", {}, format="json"), 405)
    response = w.client(w.sci).patch(f"/api/v1/models/{mine.pk}/", {"risk_tier": "low"}, format="json")
    assert response.status_code == 200 and response.json()["risk_tier"] == "low"


# ---------------------------------------------------------------- aliases

def test_alias_set_list_and_remove(w, ready):
    model = ready.model
    client = w.client(w.sci)
    response = client.post(f"/api/v1/models/{model.pk}/aliases/", {"alias": "staging", "version": 1}, format="json")
    assert response.status_code == 200, response.content
    assert [(a["alias"], a["version"]) for a in response.json()["current"]] == [("staging", 1)]
    assert mlf.client().get_model_version_by_alias(model.name, "staging").version == "1"
    assert w.client(w.viewer).get(f"/api/v1/versions/{ready.pk}/").json()["aliases"] == ["staging"]
    assert w.client(w.viewer).get("/api/v1/models/?alias=staging").json()["results"][0]["name"] == model.name
    response = client.delete(f"/api/v1/models/{model.pk}/aliases/staging/")
    assert response.status_code == 204
    body = client.get(f"/api/v1/models/{model.pk}/aliases/").json()
    assert body["current"] == []
    assert [(h["alias"], h["assigned_by"], h["removed_by"]) for h in body["history"]] == [("staging", "sci", "sci")]
    assert body["history"][0]["removed_at"]
    assert [e for e in AuditEvent.objects.filter(verb__startswith="alias.").order_by("seq").values_list(
        "verb", flat=True)] == [
        "alias.set", "alias.removed"]


@pytest.mark.parametrize("payload, status, code, field", [
    ({}, 400, "invalid", "alias"),
    ({"alias": "staging"}, 400, "invalid", "version"),
    ({"alias": "staging", "version": "one"}, 400, "invalid", "version"),
    ({"alias": "Bad Alias", "version": 1}, 400, "invalid", "alias"),
    ({"alias": "x" * 65, "version": 1}, 400, "invalid", "alias"),
    ({"alias": "v1", "version": 1}, 400, "invalid", "alias"),
    ({"alias": "latest", "version": 1}, 400, "invalid", "alias"),
    ({"alias": "staging", "version": 7}, 400, "does_not_exist", "version"),
    ({"alias": "champion", "version": 1}, 403, "promotion_required", "alias"),
    ({"alias": "production", "version": 1}, 403, "promotion_required", "alias"),
])
def test_alias_set_bad_input(w, payload, status, code, field):
    model = w.model("aliased")
    w.version(model, 1)
    _error(w.client(w.sci).post(f"/api/v1/models/{model.pk}/aliases/", payload, format="json"), status, code, field)
    assert not AliasAssignment.objects.exists()


def test_alias_needs_a_ready_version_and_the_right_role(w):
    model, theirs = w.model("aliased"), w.model("theirs", team=w.b)
    w.version(model, 1, status="pending_scan")
    _error(w.client(w.sci).post(f"/api/v1/models/{model.pk}/aliases/", {"alias": "staging", "version": 1},
                                format="json"), 409, "conflict", "version")
    _error(w.client(w.viewer).post(f"/api/v1/models/{model.pk}/aliases/", {"alias": "staging", "version": 1},
                                   format="json"), 403)
    _error(w.client(w.sci).post(f"/api/v1/models/{theirs.pk}/aliases/", {"alias": "staging", "version": 1},
                                format="json"), 404)
    _error(w.client(w.sci).get(f"/api/v1/models/{theirs.pk}/aliases/"), 404)
    _error(w.client(w.sci).delete(f"/api/v1/models/{model.pk}/aliases/staging/"), 400, "does_not_exist", "alias")
    _error(w.client(w.viewer).delete(f"/api/v1/models/{model.pk}/aliases/staging/"), 403)
    _error(w.client(w.sci).delete(f"/api/v1/models/{theirs.pk}/aliases/staging/"), 404)
    _error(w.client(w.sci).delete(f"/api/v1/models/{model.pk}/aliases/champion/"), 403, "promotion_required")


# ---------------------------------------------------------------- versions: list and detail

def test_version_list_filters_and_pagination(w):
    a, b = w.model("a"), w.model("b")
    made = [w.version(a, 1, status="ready"), w.version(a, 2, status="blocked"), w.version(b, 1, status="ready"),
            w.version(w.model("theirs", team=w.b), 1)]
    client = w.client(w.viewer)
    rows = _results(client.get("/api/v1/versions/"))
    assert [r["id"] for r in rows] == [v.pk for v in reversed(made[:3])]  # newest first, scoped
    assert [r["version"] for r in _results(client.get(f"/api/v1/versions/?model={a.pk}"))] == [2, 1]
    assert [r["model_name"] for r in _results(client.get("/api/v1/versions/?status=blocked"))] == ["a"]
    assert _results(client.get(f"/api/v1/versions/?model={made[3].model_id}")) == []
    first = client.get("/api/v1/versions/?page_size=2").json()
    second = client.get(first["next"]).json()
    assert [r["id"] for r in first["results"] + second["results"]] == [v.pk for v in reversed(made[:3])]
    assert second["next"] is None
    _error(client.get("/api/v1/versions/?status=nope"), 400, field="status")
    _error(client.get("/api/v1/versions/?model=x"), 400, field="model")


def test_version_detail_has_card_scan_profile_and_scoping(w):
    model = w.model("detailed", risk_tier="low")
    version = w.version(model, 1, signature={"inputs": [{"name": "x", "type": "double"}]}, input_example=[[1.0]],
                        flavors={"sklearn": {}})
    ReferenceProfile.objects.create(version=version, source="runs:/x/train.csv", row_count=10,
                                    features={"x": {"type": "numeric", "count": 10, "missing": 0}})
    theirs = w.version(w.model("theirs", team=w.b), 1)
    body = w.client(w.viewer).get(f"/api/v1/versions/{version.pk}/").json()
    assert body["signature"]["inputs"][0]["name"] == "x" and body["input_example"] == [[1.0]]
    assert body["flavors"] == {"sklearn": {}} and body["latest_scan"] is None
    assert body["card"]["missing_fields"] == ["intended_use", "contact"]  # owners filled from the team
    assert body["profile"]["row_count"] == 10 and body["profile"]["features"]["x"]["type"] == "numeric"
    _error(w.client(w.viewer).get(f"/api/v1/versions/{theirs.pk}/"), 404)
    _error(w.client(w.viewer).get("/api/v1/versions/999999/"), 404)


def test_lineage(w, registered, logged_run, unique):
    body = w.client(w.viewer).get(f"/api/v1/versions/{registered.pk}/lineage/").json()
    kinds = {n["kind"] for n in body["graph"]["nodes"]}
    assert {"version", "run", "experiment", "params", "dataset", "commit"} <= kinds
    assert {"from": "version", "to": "run", "label": "logged by"} in body["graph"]["edges"]
    assert body["lineage"]["run_id"] == logged_run and body["lineage"]["experiment_name"] == f"{unique}-experiment"
    theirs = w.version(w.model("theirs", team=w.b), 1)
    _error(w.client(w.viewer).get(f"/api/v1/versions/{theirs.pk}/lineage/"), 404)


# ---------------------------------------------------------------- cards

def test_card_revise_and_read(w):
    version = w.version(w.model("carded", risk_tier="low"))
    client = w.client(w.sci)
    response = client.post(f"/api/v1/versions/{version.pk}/card/", {
        "intended_use": "Scoring card payments.", "contact": "ml@example.com", "metrics": {"auc": 0.9}},
        format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["card"]["revision"] == 2 and body["revisions"] == 2 and body["complete"] is True
    assert body["card"]["owners"] == "Fraud" and body["card"]["edited_by"] == "sci"
    assert body["missing_fields"] == []
    assert client.get(f"/api/v1/versions/{version.pk}/card/").json() == body
    event = AuditEvent.objects.filter(verb="modelcard.revised").get()
    assert event.after["revision"] == 2 and event.after["intended_use"] == "Scoring card payments."


@pytest.mark.parametrize("payload, field", [
    ({}, "non_field_errors"),
    ({"intended_use": "x" * 10001}, "intended_use"),
    ({"contact": "x" * 301}, "contact"),
    ({"owners": 12}, None),  # a number is taken as text by DRF; fine
    ({"metrics": {"auc": "high"}}, "metrics.auc"),
    ({"metrics": [1, 2]}, "metrics"),
    ({"intended_use": "ok", "version": 3}, "version"),
    ({"intended_use": ["a"]}, "intended_use"),
])
def test_card_bad_input(w, payload, field):
    version = w.version(w.model("carded"))
    response = w.client(w.sci).post(f"/api/v1/versions/{version.pk}/card/", payload, format="json")
    if field is None:
        assert response.status_code == 201
        return
    _error(response, 400, field=field)
    assert version.cards.count() == 1


def test_card_refusals(w):
    version = w.version(w.model("carded"))
    theirs = w.version(w.model("theirs", team=w.b))
    _error(w.client(w.viewer).post(f"/api/v1/versions/{version.pk}/card/", {"intended_use": "x"}, format="json"), 403)
    _error(w.client(w.approver).post(f"/api/v1/versions/{version.pk}/card/", {"intended_use": "x"},
                                     format="json"), 403)
    _error(w.client(w.sci).post(f"/api/v1/versions/{theirs.pk}/card/", {"intended_use": "x"}, format="json"), 404)
    _error(w.client(w.sci).get(f"/api/v1/versions/{theirs.pk}/card/"), 404)
    assert w.client(w.viewer).get(f"/api/v1/versions/{version.pk}/card/").status_code == 200
    archived = w.version(w.model("retired"), status="archived")
    _error(w.client(w.sci).post(f"/api/v1/versions/{archived.pk}/card/", {"intended_use": "x"}, format="json"), 409,
           "invalid_transition", field="version")
    assert archived.cards.count() == 1


def test_card_export_json_and_html_escapes_what_authors_typed(w):
    version = w.version(w.model("exported", risk_tier="medium"))
    services.modelcard_revise(actor=Actor.for_user(w.sci), version_id=version.pk, changes={
        "intended_use": "**Fraud** scoring.\n\n<script>alert(1)</script> [click](javascript:alert(2)) "
                        "![pixel](http://tracker.example/p.png)",
        "limitations": "- not for loans\n- not for *insurance*", "metrics": {"auc": 0.91}})
    client = w.client(w.viewer)
    response = client.get(f"/api/v1/versions/{version.pk}/card/export/")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    document = response.json()
    assert document["model"] == "exported" and document["version"] == 1 and document["revision"] == 2
    assert document["metrics"] == {"auc": 0.91} and "training_data" in document["missing_fields"]
    assert document["exported_at"].endswith(("Z", "+00:00"))
    response = client.get(f"/api/v1/versions/{version.pk}/card/export/?as=html")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert "script-src" not in response["Content-Security-Policy"] and "default-src 'none'" in \
        response["Content-Security-Policy"]
    html = response.content.decode()
    assert "<strong>Fraud</strong> scoring." in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "javascript:" not in html.split("[click]")[0] and 'href="javascript' not in html
    assert "<img" not in html and "<li>not for <em>insurance</em></li>" in html
    assert "<td>auc</td><td>0.91</td>" in html and "Model card: exported v1" in html
    assert "Training data" in html and "this risk tier requires it" in html
    _error(client.get(f"/api/v1/versions/{version.pk}/card/export/?as=pdf"), 400, field="as")
    theirs = w.version(w.model("theirs", team=w.b))
    _error(client.get(f"/api/v1/versions/{theirs.pk}/card/export/?as=html"), 404)


# ---------------------------------------------------------------- scans

def test_scans_list_with_findings_request_again_and_override(w, registered):
    blocked = _finish_scan(registered, Finding("critical"), Finding("low", code="unusual_file", file="x.bin"))
    registered.refresh_from_db()
    assert registered.status == "blocked"
    client = w.client(w.sci)
    scans = _results(client.get(f"/api/v1/versions/{registered.pk}/scans/"))
    assert [s["status"] for s in scans] == ["blocked"] and scans[0]["max_severity"] == "critical"
    assert [(f["severity"], f["code"]) for f in scans[0]["findings"]] == [("critical", "global_not_allowed"),
                                                                       ("low", "unusual_file")]
    detail = client.get(f"/api/v1/versions/{registered.pk}/").json()
    assert detail["latest_scan"]["findings_by_severity"] == {"critical": 1, "low": 1}
    assert detail["open_findings"] == 1 and detail["deployable"] is False
    # only a platform admin releases it, with a real justification
    justification = "The global is used by the feature pipeline only; reviewed with security."
    _error(client.post(f"/api/v1/scans/{blocked.pk}/override/", {"justification": justification},
                       format="json"), 403)
    _error(w.client(w.other).post(f"/api/v1/scans/{blocked.pk}/override/", {"justification": justification},
                                  format="json"), 404)
    _error(w.client(w.root).post(f"/api/v1/scans/{blocked.pk}/override/", {"justification": "ok"},
                                 format="json"), 400, field="justification")
    _error(w.client(w.root).post(f"/api/v1/scans/{blocked.pk}/override/", {}, format="json"), 400,
           field="justification")
    response = w.client(w.root).post(f"/api/v1/scans/{blocked.pk}/override/", {"justification": justification},
                                     format="json")
    assert response.status_code == 200, response.content
    assert response.json()["overridden_by"] == "root" and response.json()["override_justification"] == justification
    registered.refresh_from_db()
    assert registered.status == "ready" and "Released by root" in registered.status_message
    assert client.get(f"/api/v1/versions/{registered.pk}/").json()["open_findings"] == 0  # answered by the override
    _error(w.client(w.root).post(f"/api/v1/scans/{blocked.pk}/override/", {"justification": justification},
                                 format="json"), 409)
    # scan it again: back to pending, a new queued scan; a second request while it is queued is a conflict
    response = client.post(f"/api/v1/versions/{registered.pk}/scans/")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    registered.refresh_from_db()
    assert registered.status == "pending_scan"
    _error(client.post(f"/api/v1/versions/{registered.pk}/scans/"), 409, field="version")
    assert [s["status"] for s in _results(client.get(f"/api/v1/versions/{registered.pk}/scans/"))] == [
        "queued", "blocked"]
    assert w.client(w.viewer).get(f"/api/v1/scans/{blocked.pk}/").json()["findings"][0]["severity"] == "critical"
    _error(w.client(w.other).get(f"/api/v1/scans/{blocked.pk}/"), 404)


def test_open_findings_are_the_latest_scans_not_overridden(w):
    version = w.version(w.model("rescanned"))
    old = ArtifactScan.objects.create(version=version, status="blocked", max_severity="critical")
    ScanFinding.objects.bulk_create([ScanFinding(scan=old, severity="critical", scanner="s", file="f", code="c",
                                                 message="m") for _ in range(2)])
    newer = ArtifactScan.objects.create(version=version, status="passed")
    ScanFinding.objects.create(scan=newer, severity="low", scanner="s", file="f", code="c", message="m")
    client = w.client(w.sci)

    def open_findings() -> int:
        listed = {v["id"]: v for v in _results(client.get("/api/v1/versions/"))}
        assert listed[version.pk]["open_findings"] == client.get(f"/api/v1/versions/{version.pk}/").json()[
            "open_findings"]
        return listed[version.pk]["open_findings"]

    assert open_findings() == 0  # the old scan's two criticals were answered by the newer scan
    newest = ArtifactScan.objects.create(version=version, status="blocked", max_severity="high")
    ScanFinding.objects.create(scan=newest, severity="high", scanner="s", file="f", code="c", message="m")
    assert open_findings() == 1
    ArtifactScan.objects.filter(pk=newest.pk).update(overridden_at=timezone.now(), override_justification="ok")
    assert open_findings() == 0


def test_scan_request_refusals(w):
    version = w.version(w.model("scanned"))
    theirs = w.version(w.model("theirs", team=w.b))
    _error(w.client(w.viewer).post(f"/api/v1/versions/{version.pk}/scans/"), 403)
    _error(w.client(w.sci).post(f"/api/v1/versions/{theirs.pk}/scans/"), 404)
    _error(w.client(w.sci).get(f"/api/v1/versions/{theirs.pk}/scans/"), 404)
    archived = w.version(w.model("old"), status="archived")
    _error(w.client(w.sci).post(f"/api/v1/versions/{archived.pk}/scans/"), 409)


# ---------------------------------------------------------------- archive

def test_archive_removes_aliases_in_mlflow_and_refuses_twice(w, ready):
    model = ready.model
    client = w.client(w.sci)
    assert client.post(f"/api/v1/models/{model.pk}/aliases/", {"alias": "staging", "version": 1},
                       format="json").status_code == 200
    # a reason too long is refused before anything changes, MLflow's alias included
    _error(client.post(f"/api/v1/versions/{ready.pk}/archive/", {"reason": "r" * 2001}, format="json"), 400,
           field="reason")
    assert mlf.client().get_model_version_by_alias(model.name, "staging").version == "1"
    response = client.post(f"/api/v1/versions/{ready.pk}/archive/", {"reason": "superseded"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "archived" and response.json()["aliases"] == []
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        mlf.client().get_model_version_by_alias(model.name, "staging")
    assert AuditEvent.objects.filter(verb="modelversion.archived", reason="superseded").exists()
    _error(client.post(f"/api/v1/versions/{ready.pk}/archive/", {}, format="json"), 409, "invalid_transition")


def test_archive_refusals(w):
    version = w.version(w.model("kept"))
    theirs = w.version(w.model("theirs", team=w.b))
    _error(w.client(w.viewer).post(f"/api/v1/versions/{version.pk}/archive/", {}, format="json"), 403)
    _error(w.client(w.sci).post(f"/api/v1/versions/{theirs.pk}/archive/", {}, format="json"), 404)
    _error(w.client(w.sci).post(f"/api/v1/versions/{version.pk}/archive/", {"reason": 5, "why": "x"},
                                format="json"), 400, field="why")
    champion = w.version(w.model("prod"))
    AliasAssignment.objects.create(model=champion.model, alias="champion", version=champion,
                                   assigned_at=champion.created_at)
    _error(w.client(w.sci).post(f"/api/v1/versions/{champion.pk}/archive/", {}, format="json"), 409,
           field="version")
    version.refresh_from_db()
    assert version.status == "ready"


# ---------------------------------------------------------------- MLflow webhook

SECRET = "whsec-for-tests-0123456789"


def _signed(body: dict, *, secret: str = SECRET, timestamp: int | None = None, delivery_id: str | None = None):
    """Headers as MLflow 3.17 sends them, signed by MLflow's own function."""
    from mlflow.webhooks.delivery import _generate_hmac_signature

    payload = json.dumps(body)
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return payload, {"HTTP_X_MLFLOW_DELIVERY_ID": delivery_id, "HTTP_X_MLFLOW_TIMESTAMP": ts,
                     "HTTP_X_MLFLOW_SIGNATURE": _generate_hmac_signature(secret, delivery_id, ts, payload)}


EVENT = {"entity": "model_version", "action": "created", "timestamp": "2026-01-01T00:00:00+00:00",
         "data": {"name": "fraud", "version": "3", "source": "models:/m-1", "run_id": None, "tags": {},
                  "description": None}}


@pytest.fixture
def queued(monkeypatch, settings):
    from apps.registry import tasks

    settings.MODELPLANE_MLFLOW_WEBHOOK_SECRET = SECRET
    calls = []
    monkeypatch.setattr(tasks.sync_registry, "delay", lambda *a, **kw: calls.append((a, kw)))
    return calls


def test_webhook_with_a_valid_signature_queues_a_sync(queued):
    payload, headers = _signed(EVENT)
    response = APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json", **headers)
    assert response.status_code == 202, response.content
    assert response.json() == {"event": "model_version.created", "delivery_id": headers["HTTP_X_MLFLOW_DELIVERY_ID"],
                               "queued": True}
    assert queued == [((), {})]


def test_webhook_signature_matches_our_own_computation(queued):
    """MLflow's scheme, spelled out: HMAC-SHA256 over "<delivery id>.<timestamp>.<body>", "v1,<base64>"."""
    payload, ts, delivery = json.dumps(EVENT), str(int(time.time())), "d-1"
    digest = hmac.new(SECRET.encode(), f"{delivery}.{ts}.{payload}".encode(), hashlib.sha256).digest()
    signature = "v0,bogus v1," + base64.b64encode(digest).decode()  # several signatures: any valid one will do
    response = APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json",
                                HTTP_X_MLFLOW_DELIVERY_ID=delivery, HTTP_X_MLFLOW_TIMESTAMP=ts,
                                HTTP_X_MLFLOW_SIGNATURE=signature)
    assert response.status_code == 202 and queued


def test_webhook_for_something_other_than_the_registry_queues_nothing(queued):
    payload, headers = _signed({**EVENT, "entity": "prompt", "action": "created"})
    response = APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json", **headers)
    assert response.status_code == 202 and response.json()["queued"] is False and queued == []


@pytest.mark.parametrize("tamper, code, field", [
    ("secret", "signature_invalid", "X-MLflow-Signature"),
    ("body", "signature_invalid", "X-MLflow-Signature"),
    ("no_signature", "signature_missing", "X-MLflow-Signature"),
    ("no_timestamp", "signature_missing", "X-MLflow-Timestamp"),
    ("stale", "signature_expired", "X-MLflow-Timestamp"),
    ("garbage_timestamp", "signature_invalid", "X-MLflow-Timestamp"),
])
def test_webhook_refuses_a_bad_signature(queued, tamper, code, field):
    payload, headers = _signed(EVENT, secret="another-secret" if tamper == "secret" else SECRET,
                               timestamp=int(time.time()) - 3600 if tamper == "stale" else None)
    if tamper == "body":
        payload = payload.replace('"3"', '"4"')
    if tamper == "no_signature":
        del headers["HTTP_X_MLFLOW_SIGNATURE"]
    if tamper == "no_timestamp":
        del headers["HTTP_X_MLFLOW_TIMESTAMP"]
    if tamper == "garbage_timestamp":
        headers["HTTP_X_MLFLOW_TIMESTAMP"] = "yesterday"
    response = APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json", **headers)
    _error(response, 403, code, field)
    assert queued == []


def test_webhook_signed_but_not_an_event_is_400(queued):
    from mlflow.webhooks.delivery import _generate_hmac_signature

    ts = str(int(time.time()))
    response = APIClient().post("/api/v1/hooks/mlflow/", "[1, 2]", content_type="application/json",
                                HTTP_X_MLFLOW_DELIVERY_ID="d", HTTP_X_MLFLOW_TIMESTAMP=ts,
                                HTTP_X_MLFLOW_SIGNATURE=_generate_hmac_signature(SECRET, "d", ts, "[1, 2]"))
    _error(response, 400, field="body")
    assert queued == []


def test_webhook_without_a_configured_secret_is_503(settings):
    settings.MODELPLANE_MLFLOW_WEBHOOK_SECRET = ""
    payload, headers = _signed(EVENT)
    _error(APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json", **headers), 503,
           "webhook_not_configured")


def test_webhook_ignores_sessions_and_tokens_and_needs_no_csrf(queued, w):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(w.viewer)
    payload, headers = _signed(EVENT)
    assert client.post("/api/v1/hooks/mlflow/", payload, content_type="application/json",
                       **headers).status_code == 202
    _error(w.client(w.root).post("/api/v1/hooks/mlflow/", payload, content_type="application/json"), 403,
           "signature_missing")
    _error(APIClient().get("/api/v1/hooks/mlflow/"), 405)


def test_webhook_has_its_own_throttle_not_the_anonymous_one(queued, settings):
    from django.core.cache import cache

    settings.MODELPLANE_MLFLOW_WEBHOOK_RATE = "3/min"
    for _ in range(3):
        payload, headers = _signed(EVENT)
        assert APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json",
                                **headers).status_code == 202
    payload, headers = _signed(EVENT)
    _error(APIClient().post("/api/v1/hooks/mlflow/", payload, content_type="application/json", **headers), 429,
           "throttled")
    assert len(queued) == 3
    assert cache.get("throttle_mlflow_webhook_127.0.0.1") and cache.get("throttle_anon_127.0.0.1") is None


# ---------------------------------------------------------------- the schema

def test_every_registry_route_is_documented():
    import yaml

    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    for path, methods in {
        "/api/v1/models/": {"get", "post"}, "/api/v1/models/{id}/": {"get", "patch"},
        "/api/v1/models/{id}/aliases/": {"get", "post"}, "/api/v1/models/{id}/aliases/{alias}/": {"delete"},
        "/api/v1/versions/": {"get"}, "/api/v1/versions/{id}/": {"get"},
        "/api/v1/versions/register-from-run/": {"post"}, "/api/v1/versions/upload/": {"post"},
        "/api/v1/versions/{id}/lineage/": {"get"}, "/api/v1/versions/{id}/card/": {"get", "post"},
        "/api/v1/versions/{id}/card/export/": {"get"}, "/api/v1/versions/{id}/scans/": {"get", "post"},
        "/api/v1/versions/{id}/archive/": {"post"}, "/api/v1/scans/{id}/": {"get"},
        "/api/v1/uploads/": {"get"}, "/api/v1/uploads/{id}/": {"get"}, "/api/v1/uploads/{id}/retry/": {"post"},
        "/api/v1/scans/{id}/override/": {"post"}, "/api/v1/hooks/mlflow/": {"post"},
    }.items():
        assert set(schema["paths"][path]) & {"get", "post", "patch", "put", "delete"} == methods, path
    params = {p["name"] for p in schema["paths"]["/api/v1/models/"]["get"]["parameters"]}
    assert {"q", "tag", "team", "alias", "risk_tier", "status", "archived", "cursor"} <= params
    upload = schema["paths"]["/api/v1/versions/upload/"]["post"]["requestBody"]["content"]
    assert set(upload) == {"multipart/form-data"}
