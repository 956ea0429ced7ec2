"""POST/GET /api/v1/versions/{id}/profiles/: reference data from an upload or a run artifact."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db

CSV = b"amount,country\n1.0,FR\n2.5,DE\n,FR\n"


@pytest.fixture
def version(teams):
    model = RegisteredModel.objects.create(team=teams[0], name="api-profiled")
    return ModelVersion.objects.create(model=model, version=1, origin="upload", status="ready")


@pytest.fixture
def client_for(make_user, teams):
    def make(role: str, team=None):
        client = APIClient()
        client.force_authenticate(make_user(f"u-{role}", team=team or teams[0], roles=(role,)))
        return client
    return make


def test_upload_profile_then_list(client_for, version):
    client = client_for("data_scientist")
    url = f"/api/v1/versions/{version.pk}/profiles/"
    response = client.post(url, {"file": SimpleUploadedFile("ref.csv", CSV)}, format="multipart")
    assert response.status_code == 201, response.json()
    assert response.json()["row_count"] == 3
    listed = client.get(url).json()["results"]
    assert [p["id"] for p in listed] == [response.json()["id"]]
    detail = client.get(f"/api/v1/versions/{version.pk}/").json()
    assert detail["profile"]["id"] == response.json()["id"]


@pytest.mark.parametrize("body, field", [
    ({}, "file"),
    ({"file": SimpleUploadedFile("ref.csv", b"\x00\x01binary")}, "file"),
    ({"artifact_path": "x.csv", "file": SimpleUploadedFile("ref.csv", CSV)}, "file"),
    ({"nonsense": "1"}, "nonsense"),
])
def test_bad_profile_input_names_the_field(client_for, version, body, field):
    response = client_for("data_scientist").post(f"/api/v1/versions/{version.pk}/profiles/", body,
                                                 format="multipart")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_artifact_path_on_a_version_without_a_run(client_for, version):
    response = client_for("ml_engineer").post(f"/api/v1/versions/{version.pk}/profiles/",
                                              {"artifact_path": "data/train.csv"}, format="json")
    assert response.status_code == 400 and "artifact_path" in response.json()["error"]["fields"]


def test_profile_over_the_upload_limit_is_413(client_for, version, settings):
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 16
    response = client_for("data_scientist").post(f"/api/v1/versions/{version.pk}/profiles/",
                                                 {"file": SimpleUploadedFile("ref.csv", CSV * 50)},
                                                 format="multipart")
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def test_viewer_is_refused_and_other_team_is_404(client_for, version, teams):
    url = f"/api/v1/versions/{version.pk}/profiles/"
    assert client_for("viewer").post(url, {"file": SimpleUploadedFile("r.csv", CSV)},
                                     format="multipart").status_code == 403
    assert client_for("data_scientist", team=teams[1]).get(url).status_code == 404
