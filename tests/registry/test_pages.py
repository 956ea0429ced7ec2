"""The registry pages through Django's test client, against a real MLflow where the page or form talks to it.

Each page and form: the success path, bad input (a 400 with the error next to the field, marked
``data-field-error="<field>"``), permissions (403 for a role without the verb, 404 for another team's object),
and MLflow down (a 503 with a message, never a 500).
"""
from __future__ import annotations

import json
import pickle
import re
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.registry import services
from apps.registry.models import (
    AliasAssignment,
    ArtifactScan,
    ModelCard,
    ModelUpload,
    ModelVersion,
    RegisteredModel,
)
from apps.registry.tasks import process_upload

pytestmark = pytest.mark.django_db

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1


# ------------------------------------------------------------------------------------------------ helpers

@pytest.fixture
def people(make_user, teams):
    a, b = teams
    return SimpleNamespace(
        scientist=make_user("sci", team=a, roles=("data_scientist",)),
        viewer=make_user("viewer", team=a, roles=("viewer",)),
        approver=make_user("appr", team=a, roles=("approver",)),
        outsider=make_user("outsider", team=b, roles=("data_scientist",)),
        admin=make_user("padmin", platform_admin=True),
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def field_errors(response) -> dict[str, str]:
    html = response.content.decode()
    return {m.group(1): m.group(2) for m in re.finditer(r'data-field-error="([^"]+)"[^>]*>([^<]*)<', html)}


def make_version(team, name: str, *, number: int = 1, status: str = ModelVersion.Status.PENDING_SCAN,
                 lineage: dict | None = None, tier: str = "medium", tags: dict | None = None) -> ModelVersion:
    """Rows only, no MLflow: for pages that read what Modelplane recorded."""
    model = RegisteredModel.objects.filter(name=name).first() or RegisteredModel.objects.create(
        team=team, name=name, risk_tier=tier, tags=tags or {})
    version = ModelVersion.objects.create(model=model, version=number, status=status, origin="run",
                                          lineage=lineage or {}, flavors={"sklearn": {}},
                                          signature={"inputs": [{"name": "amount", "type": "double"}],
                                                     "outputs": [{"type": "long"}], "params": None})
    model.latest_version = max(model.latest_version, number)
    model.save()
    ModelCard.objects.create(version=version, revision=1, owners=team.name)
    ArtifactScan.objects.create(version=version)
    return version


def finding(severity="critical", code="global_not_allowed", file="model.pkl"):
    return SimpleNamespace(severity=severity, scanner="opcodes", file=file, code=code,
                           message=f"{code}: os.system is not allowed for the sklearn flavour")


def scan_result(findings=(), blocked=None):
    findings = list(findings)
    severities = [f.severity for f in findings]
    top = next((s for s in ("critical", "high", "medium", "low", "info") if s in severities), "")
    return SimpleNamespace(findings=findings, files_scanned=3, scanners={"opcodes": "1.0"}, max_severity=top,
                           blocked=blocked if blocked is not None else top in ("critical", "high"))


def finish_scan(version, result):
    scan = version.scans.order_by("-created_at").first()
    return services.artifactscan_complete(actor=Actor.system("artifact-scanner"), scan_id=scan.pk, result=result)


def sklearn_pickle() -> bytes:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    return pickle.dumps(LogisticRegression().fit(X, [0, 1, 0, 1]), protocol=4)


# ------------------------------------------------------------------------------------------------ model list

def test_model_list_scopes_searches_filters_and_pages(people, teams):
    a, b = teams
    ready = make_version(a, "fraud-scorer", status="ready", tier="high", tags={"use": "batch"})
    make_version(a, "churn", tier="low")
    make_version(b, "recs-secret")
    AliasAssignment.objects.create(model=ready.model, alias="staging", version=ready, assigned_at=timezone.now())
    client = client_for(people.viewer)

    page = client.get(reverse("registry:model_list"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-model="fraud-scorer"' in html and 'data-model="churn"' in html
    assert "recs-secret" not in html  # another team's model is not listed
    assert "data-register-button" not in html  # a viewer is not offered registering

    def names(**params):
        response = client.get(reverse("registry:model_list"), params)
        assert response.status_code == 200, params
        return re.findall(r'data-model="([^"]+)"', response.content.decode())

    assert names(q="FRAUD") == ["fraud-scorer"]
    assert names(tag="use") == ["fraud-scorer"] and names(tag="use=batch") == ["fraud-scorer"]
    assert names(tag="use=online") == []
    assert names(alias="staging") == ["fraud-scorer"]
    assert names(risk_tier="low") == ["churn"]
    assert names(status="ready") == ["fraud-scorer"] and names(status="pending_scan") == ["churn"]
    assert names(team=a.pk) == ["churn", "fraud-scorer"]

    for params, field in (({"risk_tier": "extreme"}, "risk_tier"), ({"status": "gone"}, "status"),
                          ({"team": b.pk}, "team"), ({"tag": "=x"}, "tag"), ({"team": "abc"}, "team")):
        response = client.get(reverse("registry:model_list"), params)
        assert response.status_code == 400, params
        assert field in field_errors(response), params


def test_model_list_cursor_pagination(people, teams):
    for i in range(27):
        RegisteredModel.objects.create(team=teams[0], name=f"m{i:02d}")
    client = client_for(people.viewer)
    first = client.get(reverse("registry:model_list"), {"q": "m"})
    shown = re.findall(r'data-model="([^"]+)"', first.content.decode())
    assert shown == [f"m{i:02d}" for i in range(25)]
    next_link = re.search(r'href="\?([^"]+)" data-next-page', first.content.decode()).group(1).replace("&amp;", "&")
    assert "q=m" in next_link and "after=m24" in next_link
    second = client.get(reverse("registry:model_list") + "?" + next_link)
    assert re.findall(r'data-model="([^"]+)"', second.content.decode()) == ["m25", "m26"]
    assert "data-next-page" not in second.content.decode()


def test_models_area_refuses_a_user_in_no_team(make_user):
    assert client_for(make_user("loner")).get(reverse("registry:model_list")).status_code == 403


# ------------------------------------------------------------------------------------------------ model page

def test_model_page_and_another_teams_model(people, teams):
    version = make_version(teams[0], "page-model", status="ready")
    page = client_for(people.scientist).get(reverse("registry:model_detail", args=[version.model_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-version="1"' in html and "data-alias-form" in html and "data-register-button" in html
    assert "#/models/page-model" in html  # deep link into the MLflow UI
    assert client_for(people.viewer).get(reverse("registry:model_detail", args=[version.model_id])).status_code == 200
    assert "data-alias-form" not in client_for(people.viewer).get(
        reverse("registry:model_detail", args=[version.model_id])).content.decode()
    assert client_for(people.outsider).get(
        reverse("registry:model_detail", args=[version.model_id])).status_code == 404
    assert client_for(people.outsider).get(reverse("registry:version_detail", args=[version.pk])).status_code == 404


def test_model_edit_form(people, teams, mlflow_uri, unique):
    model = services.registeredmodel_create(actor=Actor.for_user(people.scientist), team_id=teams[0].pk,
                                            name=f"{unique}-edit")
    url = reverse("registry:model_edit", args=[model.pk])
    client = client_for(people.scientist)
    assert client.get(url).status_code == 200
    bad = client.post(url, {"risk_tier": "extreme", "description": "x", "tags": "no equals sign"})
    assert bad.status_code == 400
    assert set(field_errors(bad)) == {"risk_tier", "tags"}
    reserved = client.post(url, {"risk_tier": "high", "tags": "mlflow.user=me"})
    assert reserved.status_code == 400 and "tags" in field_errors(reserved)
    ok = client.post(url, {"risk_tier": "high", "description": "Scores card payments.", "tags": "use=online"})
    assert ok.status_code == 302
    model.refresh_from_db()
    assert model.risk_tier == "high" and model.tags == {"use": "online"}
    assert client_for(people.viewer).post(url, {"risk_tier": "low"}).status_code == 403


# ------------------------------------------------------------------------------------------------ register

def test_register_from_run_lands_on_the_version_page(people, teams, logged_run, unique):
    client = client_for(people.scientist)
    form = client.get(reverse("registry:register"), {"run_id": logged_run})
    assert form.status_code == 200 and logged_run in form.content.decode()
    response = client.post(reverse("registry:register"), {
        "model_name": f"{unique}-fraud", "team": teams[0].pk, "run_id": logged_run, "artifact_path": "model",
        "risk_tier": "high", "description": "first", "tags": "use=batch\n\nowner = risk-team"})
    assert response.status_code == 302
    version = ModelVersion.objects.get(model__name=f"{unique}-fraud")
    assert response["Location"] == reverse("registry:version_detail", args=[version.pk])
    assert version.tags == {"use": "batch", "owner": "risk-team"} and version.model.risk_tier == "high"

    page = client.get(response["Location"])
    assert page.status_code == 200
    html = page.content.decode()
    # scan pending, shown honestly, with the status endpoint the page polls
    assert "data-scan-pending" in html and f'data-scan-poll="{reverse("registry:scan_status", args=[version.pk])}"' in html
    # card, with what the high tier still misses
    assert "data-card-missing" in html and 'data-missing="limitations"' in html
    assert 'data-missing="training_data"' not in html  # filled from the run's training dataset
    # lineage: run, experiment, params and metrics, dataset digest and source, commit; and the graph's figure
    assert logged_run in html and f"{unique}-experiment" in html and "0123456789abcdef0123456789abcdef01234567" in html
    assert "s3://example/train.csv" in html and version.lineage["datasets"][0]["digest"] in html
    figure = json.loads(re.search(r'<script id="lineage-figure" type="application/json">(.*?)</script>', html,
                                  re.DOTALL).group(1))
    nodes = figure["data"][2]
    assert len(nodes["x"]) == 6  # version, run, experiment, parameters and metrics, the dataset, the commit
    assert f"{unique}-experiment" in nodes["text"] and "0123456789ab" in nodes["text"]
    assert reverse("registry:run_detail", args=[logged_run]) in nodes["customdata"]
    # signature
    assert "amount" in html and "data-no-signature" not in html
    assert "vendor/plotly.min.js" in html

    status = client.get(reverse("registry:scan_status", args=[version.pk])).json()
    assert status["status"] == "pending_scan" and status["scan"]["status"] == "queued"


def test_register_bad_input_is_a_400_next_to_the_field(people, teams, mlflow_uri, unique):
    client = client_for(people.scientist)
    empty = client.post(reverse("registry:register"), {})
    assert empty.status_code == 400
    assert {"model_name", "run_id", "artifact_path"} <= set(field_errors(empty))
    bad = client.post(reverse("registry:register"), {"model_name": "bad name!", "team": teams[0].pk,
                                                     "run_id": "Z" * 32, "artifact_path": "model",
                                                     "tags": "=novalue", "risk_tier": "extreme"})
    assert bad.status_code == 400
    assert {"run_id", "tags", "risk_tier"} <= set(field_errors(bad))
    # a team the scientist is not in is not a choice
    other = client.post(reverse("registry:register"), {"model_name": f"{unique}-x", "team": teams[1].pk,
                                                       "run_id": "a" * 32, "artifact_path": "model"})
    assert other.status_code == 400 and "team" in field_errors(other)
    # the service's refusals land on the field too: the name, then an unknown run (MLflow says so)
    name = client.post(reverse("registry:register"), {"model_name": "bad name!", "team": teams[0].pk,
                                                      "run_id": "a" * 32, "artifact_path": "model"})
    assert name.status_code == 400 and "model_name" in field_errors(name)
    unknown = client.post(reverse("registry:register"), {"model_name": f"{unique}-x", "team": teams[0].pk,
                                                         "run_id": "0" * 32, "artifact_path": "model"})
    assert unknown.status_code == 400 and "No MLflow run" in field_errors(unknown)["run_id"]
    assert not RegisteredModel.objects.filter(name=f"{unique}-x").exists()


def test_register_refuses_a_viewer(people):
    client = client_for(people.viewer)
    for name in ("registry:register", "registry:upload"):
        assert client.get(reverse(name)).status_code == 403
        assert client.post(reverse(name), {"model_name": "x"}).status_code == 403


def test_register_with_mlflow_down_is_a_503_form_error(people, teams, settings, monkeypatch):
    settings.MLFLOW_TRACKING_URI = DOWN
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    response = client_for(people.scientist).post(reverse("registry:register"), {
        "model_name": "down-model", "team": teams[0].pk, "run_id": "a" * 32, "artifact_path": "model"})
    assert response.status_code == 503
    assert "MLflow is unreachable" in response.content.decode() and 'class="form-errors"' in response.content.decode()


def test_upload_lands_on_its_page_which_links_to_the_version_once_registered(people, teams, mlflow_uri, unique,
                                                                             tmp_path):
    client = client_for(people.scientist)
    assert client.get(reverse("registry:upload")).status_code == 200
    path = tmp_path / "clf.pkl"
    path.write_bytes(sklearn_pickle())
    with path.open("rb") as fh:
        response = client.post(reverse("registry:upload"), {
            "model_name": f"{unique}-up", "team": teams[0].pk, "risk_tier": "low", "file": fh})
    assert response.status_code == 302, field_errors(response)
    upload = ModelUpload.objects.get(model_name=f"{unique}-up")
    assert response["Location"] == reverse("registry:upload_detail", args=[upload.pk])
    html = client.get(response["Location"]).content.decode()
    assert "It is being logged to MLflow" in html  # the message
    assert 'data-upload-status="received"' in html and "data-upload-pending" in html
    assert f'data-upload-poll="{reverse("registry:upload_status", args=[upload.pk])}"' in html
    status = client.get(reverse("registry:upload_status", args=[upload.pk])).json()
    assert status == {"status": "received", "error": None, "version_url": None}

    assert process_upload(upload.pk) == "registered"  # what the worker runs
    version = ModelVersion.objects.get(model__name=f"{unique}-up")
    status = client.get(reverse("registry:upload_status", args=[upload.pk])).json()
    assert status["status"] == "registered"
    assert status["version_url"] == reverse("registry:version_detail", args=[version.pk])
    html = client.get(response["Location"]).content.decode()
    assert "data-upload-poll" not in html  # done: the page stops polling
    assert f'href="{status["version_url"]}" data-upload-version' in html
    assert version.origin == "upload" and version.lineage["upload"]["filename"] == "clf.pkl"
    html = client.get(status["version_url"]).content.decode()
    assert "data-scan-section" in html and "data-card-section" in html and "clf.pkl" in html
    assert "data-no-signature" in html  # a pickle is never loaded to infer one: said, not invented
    # The page's script uploads with XHR (for the progress bar) and navigates itself: it gets the target as JSON,
    # so that the success message waits for the page rather than going to the XHR.
    with path.open("rb") as fh:
        xhr = client.post(reverse("registry:upload"), {"model_name": f"{unique}-up", "file": fh},
                          HTTP_X_REQUESTED_WITH="XMLHttpRequest")
    second = ModelUpload.objects.exclude(pk=upload.pk).get(model_name=f"{unique}-up")
    assert xhr.status_code == 200 and xhr.json() == {"redirect": reverse("registry:upload_detail", args=[second.pk])}
    assert "It is being logged to MLflow" in client.get(xhr.json()["redirect"]).content.decode()


def test_a_failed_upload_shows_why_and_is_retried_from_its_page(people, teams, tmp_path):
    path = tmp_path / "clf.pkl"
    path.write_bytes(sklearn_pickle())
    upload = services.modelupload_receive(actor=Actor.for_user(people.scientist), model_name="up-failed",
                                          upload_path=path, filename="clf.pkl", team_id=teams[0].pk)
    ModelUpload.objects.filter(pk=upload.pk).update(status="failed", error="MLflow is unreachable (test).")
    page = reverse("registry:upload_detail", args=[upload.pk])
    html = client_for(people.scientist).get(page).content.decode()
    assert "MLflow is unreachable (test)." in html and "data-upload-retry" in html and "data-upload-poll" not in html
    viewer = client_for(people.viewer)
    assert "data-upload-retry" not in viewer.get(page).content.decode()  # a viewer sees it, is not offered a retry
    assert viewer.post(reverse("registry:upload_retry", args=[upload.pk])).status_code == 403
    outsider = client_for(people.outsider)
    assert outsider.get(page).status_code == 404
    assert outsider.get(reverse("registry:upload_status", args=[upload.pk])).status_code == 404
    retried = client_for(people.scientist).post(reverse("registry:upload_retry", args=[upload.pk]), follow=True)
    assert retried.redirect_chain[-1][0] == page and "queued again" in retried.content.decode()
    assert ModelUpload.objects.get(pk=upload.pk).status == "received"
    again = client_for(people.scientist).post(reverse("registry:upload_retry", args=[upload.pk]), follow=True)
    assert "only a failed one is retried" in again.content.decode()


def test_upload_bad_files_are_a_400_on_the_file_field(people, teams, tmp_path):
    client = client_for(people.scientist)
    for name, content in (("notes.txt", b"hello"), ("fake.pkl", b"hello, I am text"), ("empty.pkl", b"")):
        path = tmp_path / name
        path.write_bytes(content)
        with path.open("rb") as fh:
            response = client.post(reverse("registry:upload"), {"model_name": "up-bad", "team": teams[0].pk,
                                                                "file": fh})
        assert response.status_code == 400, name
        assert "file" in field_errors(response), name
        assert not RegisteredModel.objects.filter(name="up-bad").exists()
    missing = client.post(reverse("registry:upload"), {"model_name": "up-bad", "team": teams[0].pk})
    assert missing.status_code == 400 and "file" in field_errors(missing)


def test_upload_over_the_limit_is_a_413_that_keeps_the_form(people, teams, tmp_path, settings):
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 64 * 1024
    path = tmp_path / "big.pkl"
    path.write_bytes(b"\x80\x04" + b"x" * (300 * 1024))
    client = client_for(people.scientist)
    with path.open("rb") as fh:
        response = client.post(reverse("registry:upload"), {"model_name": "too-big", "team": teams[0].pk,
                                                            "file": fh})
    assert response.status_code == 413
    assert "larger than the limit" in field_errors(response)["file"]
    assert 'value="too-big"' in response.content.decode()  # what was typed before the file is kept
    assert not RegisteredModel.objects.filter(name="too-big").exists()


# ------------------------------------------------------------------------------------------------ scans

def test_scan_findings_block_and_a_platform_admin_overrides_with_a_justification(people, teams):
    version = make_version(teams[0], "scanned")
    finish_scan(version, scan_result([finding("critical"), finding("low", code="unused_file", file="notes.txt")]))
    version.refresh_from_db()
    assert version.status == "blocked"
    scan = version.scans.get()
    page = client_for(people.scientist).get(reverse("registry:version_detail", args=[version.pk]))
    html = page.content.decode()
    assert 'data-scan-result="blocked"' in html and 'data-severity="critical"' in html and "os.system" in html
    assert html.index('data-severity="critical"') < html.index('data-severity="low"')
    assert "data-override-link" not in html and "data-scan-poll" not in html

    url = reverse("registry:scan_override", args=[scan.pk])
    assert client_for(people.scientist).get(url).status_code == 403
    assert client_for(people.scientist).post(url, {"justification": "x" * 40}).status_code == 403
    assert client_for(people.outsider).get(url).status_code == 404
    admin = client_for(people.admin)
    assert "data-override-link" in admin.get(reverse("registry:version_detail", args=[version.pk])).content.decode()
    assert admin.get(url).status_code == 200
    short = admin.post(url, {"justification": "because"})
    assert short.status_code == 400 and "justification" in field_errors(short)
    ok = admin.post(url, {"justification": "The os.system global is in a test fixture file never loaded."})
    assert ok.status_code == 302
    version.refresh_from_db()
    assert version.status == "ready"
    event = AuditEvent.objects.filter(verb="scan.overridden").get()
    assert event.reason.startswith("The os.system global") and event.actor_name == "padmin"
    html = admin.get(reverse("registry:version_detail", args=[version.pk])).content.decode()
    assert "data-scan-override-note" in html and "never loaded" in html
    again = admin.post(url, {"justification": "The os.system global is in a test fixture file never loaded."})
    assert again.status_code == 409  # only a blocked version's blocking scan can be overridden


def test_scan_passed_error_and_rescan(people, teams):
    version = make_version(teams[0], "passing")
    finish_scan(version, scan_result([finding("low", code="unused_file")]))
    client = client_for(people.scientist)
    html = client.get(reverse("registry:version_detail", args=[version.pk])).content.decode()
    assert 'data-scan-result="passed"' in html and "data-scan-pending" not in html
    response = client.post(reverse("registry:scan_request", args=[version.pk]))
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.status == "pending_scan" and version.scans.count() == 2
    again = client.post(reverse("registry:scan_request", args=[version.pk]), follow=True)
    assert "already queued or running" in again.content.decode()
    services.artifactscan_complete(actor=Actor.system("artifact-scanner"),
                                   scan_id=version.scans.order_by("-created_at").first().pk,
                                   error="MLflow has no artifacts for passing v1.")
    html = client.get(reverse("registry:version_detail", args=[version.pk])).content.decode()
    assert "data-scan-error" in html and "MLflow has no artifacts" in html
    assert client_for(people.viewer).post(reverse("registry:scan_request", args=[version.pk])).status_code == 403


def test_scan_status_json(people, teams):
    version = make_version(teams[0], "polled")
    client = client_for(people.viewer)
    data = client.get(reverse("registry:scan_status", args=[version.pk])).json()
    assert data["status"] == "pending_scan" and data["scan"]["status"] == "queued"
    finish_scan(version, scan_result([finding("high")]))
    data = client.get(reverse("registry:scan_status", args=[version.pk])).json()
    assert data["status"] == "blocked" and data["scan"]["max_severity"] == "high" and data["scan"]["findings"] == 1
    assert client_for(people.outsider).get(reverse("registry:scan_status", args=[version.pk])).status_code == 404


# ------------------------------------------------------------------------------------------------ cards

def test_card_edit_renders_markdown_and_says_what_is_missing(people, teams):
    version = make_version(teams[0], "carded", tier="high")
    url = reverse("registry:card_edit", args=[version.pk])
    client = client_for(people.scientist)
    assert client.get(url).status_code == 200
    bad = client.post(url, {"metrics": "auc=high", "owners": "o" * 501})
    assert bad.status_code == 400 and {"metrics", "owners"} <= set(field_errors(bad))
    ok = client.post(url, {"intended_use": "## Scoring\n\n- card payments\n\n<script>alert(1)</script>",
                           "owners": "Fraud", "contact": "fraud@example.com", "metrics": "auc=0.97"})
    assert ok.status_code == 302
    card = version.cards.order_by("-revision").first()
    assert card.revision == 2 and card.metrics == {"auc": 0.97}
    html = client.get(reverse("registry:version_detail", args=[version.pk])).content.decode()
    assert "<h2>Scoring</h2>" in html and "<li>card payments</li>" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for missing in ("out_of_scope_use", "training_data", "evaluation_data", "limitations", "ethical_considerations"):
        assert f'data-missing="{missing}"' in html
    assert 'data-missing="intended_use"' not in html
    nothing = client.post(url, {"intended_use": card.intended_use, "owners": "Fraud", "contact": "fraud@example.com",
                                "metrics": "auc=0.97"})
    assert nothing.status_code == 302 and version.cards.count() == 2  # nothing changed: no new revision
    assert client_for(people.viewer).get(url).status_code == 403
    assert client_for(people.outsider).get(url).status_code == 404


def test_card_exports(people, teams):
    version = make_version(teams[0], "exported", tier="low")
    services.modelcard_revise(actor=Actor.for_user(people.scientist), version_id=version.pk, changes={
        "intended_use": "Scores **card** payments. <img src=x onerror=alert(1)>", "contact": "fraud@example.com"})
    client = client_for(people.viewer)
    as_json = client.get(reverse("registry:card_export_json", args=[version.pk]))
    assert as_json.status_code == 200 and "attachment" in as_json["Content-Disposition"]
    data = as_json.json()
    assert data["model"] == "exported" and data["complete"] is True and data["missing_fields"] == []
    as_html = client.get(reverse("registry:card_export_html", args=[version.pk]))
    assert as_html.status_code == 200 and as_html["Content-Type"].startswith("text/html")
    html = as_html.content.decode()
    assert "<strong>card</strong>" in html and "<img" not in html and "script-src" not in as_html[
        "Content-Security-Policy"] and "default-src 'none'" in as_html["Content-Security-Policy"]
    assert client_for(people.outsider).get(reverse("registry:card_export_json", args=[version.pk])).status_code == 404


# ------------------------------------------------------------------------------------------------ aliases

def test_aliases_set_move_refuse_production_and_keep_history(people, teams, logged_run, unique):
    actor = Actor.for_user(people.scientist)
    first = services.modelversion_register_from_run(actor=actor, model_name=f"{unique}-al", run_id=logged_run,
                                                    team_id=teams[0].pk)
    second = services.modelversion_register_from_run(actor=actor, model_name=f"{unique}-al", run_id=logged_run)
    for v in (first, second):
        finish_scan(v, scan_result())
    model = first.model
    url = reverse("registry:aliases", args=[model.pk])
    client = client_for(people.scientist)
    assert client.get(url).status_code == 200

    set_first = client.post(url, {"alias": "staging", "version": 1,
                                  "next": reverse("registry:version_detail", args=[first.pk])})
    assert set_first.status_code == 302 and set_first["Location"] == reverse("registry:version_detail", args=[first.pk])
    assert client.post(url, {"alias": "staging", "version": 2}).status_code == 302
    history = list(AliasAssignment.objects.filter(model=model, alias="staging").order_by("assigned_at"))
    assert [(h.version.version, h.removed_at is None) for h in history] == [(1, False), (2, True)]
    html = client.get(url).content.decode()
    assert html.count('<span class="alias">staging</span>') >= 3  # now, and twice in the history
    from apps.registry import mlflow_adapter as mlf

    assert mlf.client().get_model_version_by_alias(model.name, "staging").version == "2"

    production = client.post(url, {"alias": "champion", "version": 2})
    assert production.status_code == 403
    assert "promotion" in field_errors(production)["alias"]
    assert "promotion" in production.content.decode()
    for data, field in (({"alias": "Bad Alias", "version": 2}, "alias"), ({"alias": "v3", "version": 2}, "alias"),
                        ({"alias": "canary", "version": 9}, "version"), ({}, "alias")):
        response = client.post(url, data)
        assert response.status_code == 400, data
        assert field in field_errors(response), data

    removed = client.post(reverse("registry:alias_remove", args=[model.pk]), {"alias": "staging"})
    assert removed.status_code == 302
    assert not AliasAssignment.objects.filter(model=model, alias="staging", removed_at__isnull=True).exists()
    assert client.post(reverse("registry:alias_remove", args=[model.pk]), {"alias": "staging"}).status_code == 400
    assert client_for(people.viewer).post(url, {"alias": "staging", "version": 2}).status_code == 403
    assert client_for(people.outsider).post(url, {"alias": "staging", "version": 2}).status_code == 404
    assert "data-alias-form" not in client_for(people.viewer).get(url).content.decode()


def test_alias_needs_a_ready_version(people, teams):
    version = make_version(teams[0], "not-ready")
    url = reverse("registry:aliases", args=[version.model_id])
    response = client_for(people.scientist).post(url, {"alias": "staging", "version": 1})
    assert response.status_code == 400 and "version" in field_errors(response)


# ------------------------------------------------------------------------------------------------ archive

def test_archive_a_version(people, teams):
    version = make_version(teams[0], "old", status="ready")
    url = reverse("registry:version_archive", args=[version.pk])
    client = client_for(people.scientist)
    assert client.get(url).status_code == 200
    assert client.post(url, {"reason": "r" * 2001}).status_code == 400
    assert client.post(url, {"reason": "superseded"}).status_code == 302
    version.refresh_from_db()
    assert version.status == "archived"
    again = client.post(url, {"reason": "again"})
    assert again.status_code == 409 and 'class="form-errors"' in again.content.decode()
    assert client_for(people.viewer).post(url, {}).status_code == 403


# ------------------------------------------------------------------------------------------------ experiments

def test_experiments_runs_and_compare(people, logged_run, unique):
    import mlflow

    with mlflow.start_run(experiment_id=mlflow.get_run(logged_run).info.experiment_id, run_name="second") as run:
        mlflow.log_params({"C": 0.5, "solver": "lbfgs"})
        for step, value in enumerate([0.7, 0.8, 0.91]):
            mlflow.log_metric("accuracy", value, step=step)
    client = client_for(people.scientist)

    listing = client.get(reverse("registry:experiment_list"), {"q": unique})
    assert listing.status_code == 200
    html = listing.content.decode()
    assert f'data-experiment="{unique}-experiment"' in html
    experiment_id = mlflow.get_run(logged_run).info.experiment_id
    detail = client.get(reverse("registry:experiment_detail", args=[experiment_id]))
    assert detail.status_code == 200
    assert f'data-run="{logged_run}"' in detail.content.decode() and f'data-run="{run.info.run_id}"' in detail.content.decode()
    assert f"#/experiments/{experiment_id}" in detail.content.decode()

    run_page = client.get(reverse("registry:run_detail", args=[logged_run]))
    assert run_page.status_code == 200
    html = run_page.content.decode()
    assert "solver" in html and "0.93" in html and "s3://example/train.csv" in html
    assert 'data-logged-model="model"' in html  # MLflow 3 keeps the model as a logged model of the run
    assert f"#/experiments/{experiment_id}/runs/{logged_run}" in html and "data-register-run" in html

    compare = client.get(reverse("registry:run_compare"), {"runs": [logged_run, run.info.run_id]})
    assert compare.status_code == 200
    html = compare.content.decode()
    assert html.count("data-compare-chart") == 2  # the latest values, and accuracy by step
    figure = json.loads(re.search(r'<script id="chart-latest-data" type="application/json">(.*?)</script>', html,
                                  re.DOTALL).group(1))
    assert [t["type"] for t in figure["data"]] == ["bar", "bar"] and "accuracy" in figure["data"][0]["x"]
    assert 'class="differs"' in html  # C differs between the runs

    for params in ({"runs": [logged_run]}, {"runs": ["nothex"] * 2}, {"runs": [logged_run, "0" * 32]},
                   {"runs": [f"{i:032x}" for i in range(11)]}):
        response = client.get(reverse("registry:run_compare"), params)
        assert response.status_code == 400, params
        assert "runs" in field_errors(response), params
    assert client.get(reverse("registry:run_detail", args=["0" * 32])).status_code == 404
    assert client.get(reverse("registry:run_detail", args=["not-a-run"])).status_code == 404
    assert client.get(reverse("registry:experiment_detail", args=["999999"])).status_code == 404
    bad_search = client.get(reverse("registry:experiment_list"), {"q": "x' OR '1'='1"})
    assert bad_search.status_code == 400 and "q" in field_errors(bad_search)


def test_experiments_need_the_verb_and_mlflow(people, settings, monkeypatch):
    for user in (people.viewer, people.approver):
        client = client_for(user)
        for url in (reverse("registry:experiment_list"), reverse("registry:experiment_detail", args=["0"]),
                    reverse("registry:run_detail", args=["a" * 32]), reverse("registry:run_compare")):
            assert client.get(url).status_code == 403, (user.username, url)
        assert 'data-subnav="experiments"' not in client.get(reverse("registry:model_list")).content.decode()
    settings.MLFLOW_TRACKING_URI = DOWN
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = client_for(people.scientist)
    for url in (reverse("registry:experiment_list"), reverse("registry:experiment_detail", args=["0"]),
                reverse("registry:run_detail", args=["a" * 32]),
                reverse("registry:run_compare") + f"?runs={'a' * 32}&runs={'b' * 32}"):
        response = client.get(url)
        assert response.status_code == 503, url
        assert "data-mlflow-unavailable" in response.content.decode(), url
