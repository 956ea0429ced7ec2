"""An upload end to end through a real Celery worker (tests/registry/conftest.py): the API answers 202 at once,
the worker takes the task queued on commit, logs the file to the real MLflow server, registers the version for
the uploader and deletes the file; then it scans the version too."""
from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.registry.models import ModelUpload, ModelVersion

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _wait(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


def test_the_worker_registers_an_upload_for_its_uploader(celery_worker, make_user, teams, unique, _upload_dir):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    user = make_user("sci", team=teams[0], roles=("data_scientist",))
    client = APIClient()
    client.force_login(user)
    model = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]]), [0, 1, 0, 1])
    response = client.post("/api/v1/versions/upload/", {
        "file": SimpleUploadedFile("clf.pkl", pickle.dumps(model, protocol=4)), "model_name": f"{unique}-w",
        "team": teams[0].pk}, format="multipart")
    assert response.status_code == 202, response.content
    stored = Path(ModelUpload.objects.get(pk=response.json()["id"]).file_path)
    assert stored.is_file()

    def finished():
        body = client.get(response["Location"]).json()
        return body if body["status"] in ("registered", "failed") else None

    body = _wait(finished, "the upload to be registered")
    assert body["status"] == "registered", body["error"]
    version = ModelVersion.objects.get(pk=body["version"])
    assert version.registered_by == user and version.origin == "upload"
    event = AuditEvent.objects.get(verb="modelversion.registered", target_id=str(version.pk))
    assert event.actor_name == "upload-worker" and event.after["uploaded_by"] == "sci"
    assert not stored.exists()
    # the same worker then scans it (queued on the registration's commit)
    version = _wait(lambda: ModelVersion.objects.filter(pk=version.pk, status__in=["ready", "blocked"]).first(),
                    "the scan")
    assert version.status == "ready"
