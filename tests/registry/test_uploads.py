"""Uploads off the request path, against the real MLflow server: the request checks what is cheap, stores the file
and records a ModelUpload; the worker's task (called here directly: these tests are about the services, not the
queue; tests/registry/test_upload_worker.py runs it in a real worker) logs it to MLflow and registers the version
for the uploader; a failure keeps the file and the reason, and a retry queues it again."""
from __future__ import annotations

import pickle
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.accounts.models import Membership
from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from apps.registry import services
from apps.registry.models import ModelUpload, ModelVersion, RegisteredModel
from apps.registry.tasks import process_upload

pytestmark = pytest.mark.django_db

DOWN = "http://127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture
def sci_user(make_user, teams):
    return make_user("sci", team=teams[0], roles=("data_scientist",))


@pytest.fixture
def scientist(sci_user, actor_for):
    return actor_for(sci_user)


def _pickle_file(tmp_path: Path, name: str = "clf.pkl") -> Path:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]]), [0, 1, 0, 1])
    path = tmp_path / name
    path.write_bytes(pickle.dumps(model, protocol=4))
    return path


def _receive(actor, teams, path: Path, name: str, **kw):
    return services.modelupload_receive(actor=actor, model_name=name, upload_path=path, filename=path.name,
                                        team_id=teams[0].pk, **kw)


def _events(upload: ModelUpload) -> list[str]:
    return list(AuditEvent.objects.filter(target_type="registry.modelupload", target_id=str(upload.pk))
                .order_by("seq").values_list("verb", flat=True))


def test_upload_is_stored_and_recorded_then_the_task_registers_it_for_the_uploader(
        scientist, sci_user, teams, mlflow_uri, unique, tmp_path, _upload_dir, django_capture_on_commit_callbacks):
    path = _pickle_file(tmp_path)
    with django_capture_on_commit_callbacks() as queued:
        upload = _receive(scientist, teams, path, f"{unique}-up", description="first", tags={"use": "batch"},
                          risk_tier="low")
    assert len(queued) == 1  # the task is queued on commit (not run here)
    assert upload.status == "received" and upload.created_by == sci_user and upload.team == teams[0]
    stored = Path(upload.file_path)
    assert stored.is_file() and stored.is_relative_to(_upload_dir) and stored.read_bytes() == path.read_bytes()
    assert upload.size == path.stat().st_size and upload.filename == "clf.pkl"
    assert not RegisteredModel.objects.filter(name=f"{unique}-up").exists()  # nothing in MLflow yet
    received = AuditEvent.objects.get(verb="upload.received", target_id=str(upload.pk))
    assert received.actor_name == "sci" and "file_path" not in received.after

    assert process_upload(upload.pk) == "registered"

    upload.refresh_from_db()
    version = upload.version
    assert upload.status == "registered" and upload.error == "" and upload.finished_at and upload.attempts == 1
    assert version.origin == "upload" and version.registered_by == sci_user and version.model.created_by == sci_user
    assert version.lineage["upload"] == {"filename": "clf.pkl", "bytes": path.stat().st_size}
    assert version.description == "first" and version.tags == {"use": "batch"} and version.model.risk_tier == "low"
    registered = AuditEvent.objects.get(verb="modelversion.registered", target_id=str(version.pk))
    assert registered.actor_kind == "system" and registered.after["uploaded_by"] == "sci"
    assert _events(upload) == ["upload.received", "upload.started", "upload.registered"]
    assert not stored.exists() and upload.file_path == ""  # the file goes once MLflow holds it
    # delivered twice (acks_late): the second delivery does nothing
    assert process_upload(upload.pk) == "skipped"
    assert ModelVersion.objects.filter(model=version.model).count() == 1


def _zip(tmp_path: Path, name: str, entries: dict[str, str]) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for entry, text in entries.items():
            zf.writestr(entry, text)
    return path


@pytest.mark.parametrize("name, content, code", [
    ("broken.zip", b"PK\x03\x04 this is not really a zip", "bad_zip"),
    ("empty.pkl", b"", "empty"),
    ("notes.txt", b"hello", "unsupported_type"),
    ("fake.pkl", b"hello, I am text", "not_a_model"),
    ("fake.skops", b"not a zip", "not_a_model"),
])
def test_bad_files_are_refused_at_once_and_nothing_is_kept(scientist, teams, tmp_path, _upload_dir, name, content,
                                                           code):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationFailed) as caught:
        _receive(scientist, teams, path, "up-bad")
    assert caught.value.code == code and "file" in caught.value.fields
    assert not ModelUpload.objects.exists() and not any(_upload_dir.iterdir())


def test_zip_structure_is_checked_without_extracting(scientist, teams, tmp_path, _upload_dir):
    cases = {
        "plain.zip": ({"readme.txt": "no model here"}, "not_a_model"),
        "evil.zip": ({"../../etc/passwd": "x", "MLmodel": "flavors: {a: {}}"}, "path_traversal"),
        "badyaml.zip": ({"m/MLmodel": "flavors: [unclosed"}, "not_a_model"),
        "noflavors.zip": ({"m/MLmodel": "artifact_path: model"}, "not_a_model"),
    }
    for name, (entries, code) in cases.items():
        with pytest.raises(ValidationFailed) as caught:
            _receive(scientist, teams, _zip(tmp_path, name, entries), "zip-test")
        assert caught.value.code == code, name
    good = _zip(tmp_path, "ok.zip", {"m/MLmodel": "flavors: {python_function: {}}", "m/model.pkl": "x"})
    assert _receive(scientist, teams, good, "zip-test").status == "received"
    assert not (_upload_dir / "m").exists()  # checked in the archive, never extracted here


def test_over_the_limit_is_413(scientist, teams, tmp_path, settings):
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 10
    path = tmp_path / "big.pkl"
    path.write_bytes(b"\x80\x04" + b"x" * 100)
    with pytest.raises(ValidationFailed) as caught:
        _receive(scientist, teams, path, "big")
    assert caught.value.status == 413


def test_refusals_come_before_the_file_is_stored(make_user, teams, actor_for, scientist, tmp_path, _upload_dir):
    path = _pickle_file(tmp_path)
    viewer = actor_for(make_user("v", team=teams[0], roles=("viewer",)))
    with pytest.raises(PermissionDenied):
        _receive(viewer, teams, path, "refused")
    outsider = actor_for(make_user("o", team=teams[1], roles=("data_scientist",)))
    with pytest.raises(NotFound):
        _receive(outsider, teams, path, "refused")
    RegisteredModel.objects.create(team=teams[0], name="retired", archived_at=timezone.now())
    with pytest.raises(Conflict) as caught:
        _receive(scientist, teams, path, "retired")
    assert caught.value.fields == {"model_name": ["archived"]}
    with pytest.raises(ValidationFailed) as caught:
        _receive(scientist, teams, path, "bad name!")
    assert "model_name" in caught.value.fields
    assert not ModelUpload.objects.exists() and not any(_upload_dir.iterdir())


def test_a_failed_upload_keeps_its_file_and_reason_and_is_retried(
        scientist, make_user, teams, actor_for, mlflow_uri, unique, tmp_path, settings, monkeypatch):
    upload = _receive(scientist, teams, _pickle_file(tmp_path), f"{unique}-retry")
    settings.MLFLOW_TRACKING_URI = DOWN
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert process_upload(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.status == "failed" and "MLflow is unreachable" in upload.error
    assert Path(upload.file_path).is_file() and upload.version is None
    failed = AuditEvent.objects.get(verb="upload.failed", target_id=str(upload.pk))
    assert failed.actor_kind == "system" and "unreachable" in failed.reason
    assert not RegisteredModel.objects.filter(name=f"{unique}-retry").exists()

    viewer = actor_for(make_user("v", team=teams[0], roles=("viewer",)))
    with pytest.raises(PermissionDenied):
        services.modelupload_retry(actor=viewer, upload_id=upload.pk)
    outsider = actor_for(make_user("o", team=teams[1], roles=("data_scientist",)))
    with pytest.raises(NotFound):
        services.modelupload_retry(actor=outsider, upload_id=upload.pk)
    services.modelupload_retry(actor=scientist, upload_id=upload.pk)
    upload.refresh_from_db()
    assert upload.status == "received" and upload.error == ""
    with pytest.raises(InvalidTransition):  # only a failed upload is retried
        services.modelupload_retry(actor=scientist, upload_id=upload.pk)

    settings.MLFLOW_TRACKING_URI = mlflow_uri
    assert process_upload(upload.pk) == "registered"
    upload.refresh_from_db()
    assert upload.version.version == 1 and upload.attempts == 2
    assert _events(upload) == ["upload.received", "upload.started", "upload.failed", "upload.retried",
                               "upload.started", "upload.registered"]


def test_the_worker_asks_again_whether_the_uploader_may_register(scientist, sci_user, teams, mlflow_uri, unique,
                                                                 tmp_path):
    upload = _receive(scientist, teams, _pickle_file(tmp_path), f"{unique}-left")
    Membership.objects.filter(user=sci_user).delete()  # they left the team before the worker got to it
    assert process_upload(upload.pk) == "failed"
    upload.refresh_from_db()
    assert upload.error == f"sci may no longer register models in team {teams[0].name} (model.register)."
    assert not RegisteredModel.objects.filter(name=f"{unique}-left").exists()


def test_purge_deletes_the_files_of_old_failed_uploads_only(scientist, teams, tmp_path):
    old = _receive(scientist, teams, _pickle_file(tmp_path), "purge-old")
    recent = _receive(scientist, teams, _pickle_file(tmp_path), "purge-recent")
    waiting = _receive(scientist, teams, _pickle_file(tmp_path), "purge-waiting")
    ModelUpload.objects.filter(pk=old.pk).update(status="failed", finished_at=timezone.now() - timedelta(days=8))
    ModelUpload.objects.filter(pk=recent.pk).update(status="failed", finished_at=timezone.now())
    done = services.modelupload_files_purge(actor=Actor.system("upload-purge"), older_than=timedelta(days=7))
    assert done == 1
    old.refresh_from_db()
    assert old.file_path == "" and all(Path(u.file_path).is_file() for u in (recent, waiting))
    assert AuditEvent.objects.filter(verb="upload.file_purged", target_id=str(old.pk)).exists()
    with pytest.raises(Conflict):  # nothing left to retry with
        services.modelupload_retry(actor=scientist, upload_id=old.pk)
