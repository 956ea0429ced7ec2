"""Registering versions against a real MLflow server: from a run, by upload, and by sync."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.core.errors import Conflict, NotFound, PermissionDenied, ServiceUnavailable, ValidationFailed
from apps.registry import mlflow_adapter as mlf
from apps.registry import services
from apps.registry.models import ModelCard, ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def scientist(make_user, teams, actor_for):
    user = make_user("sci", team=teams[0], roles=("data_scientist",))
    return actor_for(user)


def test_register_from_run_records_version_card_lineage_and_audit(scientist, teams, logged_run, unique):
    version = services.modelversion_register_from_run(
        actor=scientist, model_name=f"{unique}-fraud", run_id=logged_run, team_id=teams[0].pk,
        description="first", tags={"use": "batch"}, risk_tier="high")
    assert version.version == 1 and version.status == ModelVersion.Status.PENDING_SCAN
    assert version.model.team == teams[0] and version.model.risk_tier == "high"
    assert version.origin == "run" and version.run_id == logged_run
    assert version.source == f"runs:/{logged_run}/model"
    assert "sklearn" in version.flavors and "python_function" in version.flavors
    assert [c["name"] for c in version.signature["inputs"]] == ["amount", "age"]
    assert version.input_example is not None
    # lineage: run -> experiment -> params/metrics -> datasets -> git commit
    assert version.lineage["experiment_name"] == f"{unique}-experiment"
    assert version.lineage["params"] == {"C": "1.0", "solver": "lbfgs"}
    assert version.lineage["metrics"]["accuracy"] == pytest.approx(0.93)
    assert version.lineage["datasets"][0]["name"] == "train" and version.lineage["datasets"][0]["digest"]
    assert version.lineage["source"]["git_commit"].startswith("0123456789")
    card = version.cards.get()
    assert card.revision == 1 and card.metrics["auc"] == pytest.approx(0.97) and "train" in card.training_data
    # MLflow holds the same version, with our team tag on the registered model
    held = mlf.model_version_get(version.model.name, 1)
    assert held.run_id == logged_run
    assert mlf.registered_model_tags(version.model.name)[settings.MODELPLANE_TEAM_TAG] == teams[0].slug
    verbs = list(AuditEvent.objects.order_by("seq").values_list("verb", flat=True))
    assert verbs[-2:] == ["model.created", "modelversion.registered"]
    assert version.scans.get().status == "queued"


def test_second_version_records_the_one_it_replaces(scientist, teams, logged_run, unique):
    first = services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-m", run_id=logged_run,
                                                    team_id=teams[0].pk)
    second = services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-m", run_id=logged_run)
    assert second.version == 2 and second.replaces == first
    assert RegisteredModel.objects.get(name=f"{unique}-m").latest_version == 2


def test_unknown_run_is_a_400_naming_run_id_and_leaves_nothing(scientist, teams, mlflow_uri, unique):
    before = AuditEvent.objects.count()
    with pytest.raises(ValidationFailed) as caught:
        services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-x", run_id="0" * 32,
                                                team_id=teams[0].pk)
    assert caught.value.fields == {"run_id": [f"No MLflow run with id {'0' * 32!r}."]}
    assert not RegisteredModel.objects.filter(name=f"{unique}-x").exists()
    assert AuditEvent.objects.count() == before


def test_path_that_is_not_a_model_names_artifact_path(scientist, teams, logged_run, unique):
    with pytest.raises(ValidationFailed) as caught:
        services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-x", run_id=logged_run,
                                                artifact_path="nothing-here", team_id=teams[0].pk)
    assert "artifact_path" in caught.value.fields
    assert not RegisteredModel.objects.filter(name=f"{unique}-x").exists()


@pytest.mark.parametrize("kwargs, field", [
    ({"run_id": "not-hex"}, "run_id"),
    ({"model_name": ""}, "model_name"),
    ({"model_name": "bad name!"}, "model_name"),
    ({"model_name": "x" * 200}, "model_name"),
    ({"artifact_path": "../etc"}, "artifact_path"),
    ({"description": "d" * 5001}, "description"),
    ({"risk_tier": "extreme"}, "risk_tier"),
    ({"tags": {"mlflow.user": "x"}}, "tags"),
    ({"team_id": None}, "team"),
    ({"team_id": 999999}, "team"),
])
def test_bad_input_names_the_field(scientist, teams, kwargs, field):
    args = {"model_name": "fine-name", "run_id": "a" * 32, "team_id": teams[0].pk, **kwargs}
    with pytest.raises(ValidationFailed) as caught:
        services.modelversion_register_from_run(actor=scientist, **args)
    assert field in caught.value.fields


def test_viewer_cannot_register_and_other_team_is_refused(make_user, teams, actor_for, logged_run, unique):
    viewer = actor_for(make_user("v", team=teams[0], roles=("viewer",)))
    with pytest.raises(PermissionDenied):
        services.modelversion_register_from_run(actor=viewer, model_name=f"{unique}-v", run_id=logged_run,
                                                team_id=teams[0].pk)
    outsider = actor_for(make_user("o", team=teams[1], roles=("data_scientist",)))
    with pytest.raises(NotFound):
        services.modelversion_register_from_run(actor=outsider, model_name=f"{unique}-v", run_id=logged_run,
                                                team_id=teams[0].pk)


def test_a_name_owned_by_another_team_is_a_conflict(scientist, make_user, teams, actor_for, logged_run, unique):
    services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-owned", run_id=logged_run,
                                            team_id=teams[0].pk)
    other = actor_for(make_user("o2", team=teams[1], roles=("data_scientist",)))
    with pytest.raises(Conflict) as caught:
        services.modelversion_register_from_run(actor=other, model_name=f"{unique}-owned", run_id=logged_run,
                                                team_id=teams[1].pk)
    assert "model_name" in caught.value.fields


def test_mlflow_unreachable_is_a_503_and_leaves_nothing(scientist, teams, settings, unique, monkeypatch):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:1"  # nothing listens on port 1
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ServiceUnavailable) as caught:
        services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-down", run_id="a" * 32,
                                                team_id=teams[0].pk)
    assert caught.value.status == 503 and "unreachable" in caught.value.message
    assert not RegisteredModel.objects.filter(name=f"{unique}-down").exists()


# ------------------------------------------------------------------------------------------------ upload

def _sklearn_model():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    X = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    return LogisticRegression().fit(X, [0, 1, 0, 1])


def _mlflow_model_zip(tmp_path: Path) -> Path:
    import mlflow

    model_dir = tmp_path / "saved"
    mlflow.sklearn.save_model(_sklearn_model(), str(model_dir), serialization_format="cloudpickle")
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in model_dir.rglob("*"):
            zf.write(path, Path("mymodel") / path.relative_to(model_dir))
    return archive


def test_upload_mlflow_model_zip(scientist, teams, mlflow_uri, unique, tmp_path):
    archive = _mlflow_model_zip(tmp_path)
    version = services.modelversion_register_from_upload(actor=scientist, model_name=f"{unique}-up",
                                                         upload_path=archive, filename="model.zip",
                                                         team_id=teams[0].pk)
    assert version.origin == "upload" and version.version == 1 and "sklearn" in version.flavors
    assert version.lineage["upload"] == {"filename": "model.zip", "bytes": archive.stat().st_size}
    assert version.lineage["experiment_name"] == settings.MODELPLANE_UPLOAD_EXPERIMENT
    files = mlf.model_files_read(f"models:/{version.model.name}/1")
    assert files.flavors["sklearn"]["serialization_format"] == "cloudpickle"


def test_upload_sklearn_pickle_is_wrapped_without_loading(scientist, teams, mlflow_uri, unique, tmp_path):
    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(_sklearn_model(), protocol=4))
    version = services.modelversion_register_from_upload(actor=scientist, model_name=f"{unique}-pkl",
                                                         upload_path=path, filename="clf.pkl", team_id=teams[0].pk)
    assert version.flavors["sklearn"]["pickled_model"] == "model.pkl"
    assert version.signature is None  # unknown without loading the model: honest, not invented


@pytest.mark.parametrize("name, content, code", [
    ("broken.zip", b"PK\x03\x04 this is not really a zip", "bad_zip"),
    ("empty.pkl", b"", "empty"),
    ("notes.txt", b"hello", "unsupported_type"),
    ("fake.pkl", b"hello, I am text", "not_a_model"),
])
def test_bad_uploads_name_the_file_field(scientist, teams, tmp_path, name, content, code):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationFailed) as caught:
        services.modelversion_register_from_upload(actor=scientist, model_name="whatever", upload_path=path,
                                                   filename=name, team_id=teams[0].pk)
    assert "file" in caught.value.fields and caught.value.code == code


def test_zip_without_mlmodel_and_zip_with_traversal_are_refused(scientist, teams, tmp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("readme.txt", "no model here")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../etc/passwd", "x")
        zf.writestr("MLmodel", "flavors: {a: {}}")
    for path, code in ((plain, "not_a_model"), (evil, "path_traversal")):
        with pytest.raises(ValidationFailed) as caught:
            services.modelversion_register_from_upload(actor=scientist, model_name="zip-test", upload_path=path,
                                                       filename=path.name, team_id=teams[0].pk)
        assert caught.value.code == code and "file" in caught.value.fields


def test_upload_over_the_limit_is_413(scientist, teams, tmp_path, settings):
    settings.MODELPLANE_UPLOAD_MAX_BYTES = 10
    path = tmp_path / "big.pkl"
    path.write_bytes(b"\x80\x04" + b"x" * 100)
    with pytest.raises(ValidationFailed) as caught:
        services.modelversion_register_from_upload(actor=scientist, model_name="big", upload_path=path,
                                                   filename="big.pkl", team_id=teams[0].pk)
    assert caught.value.status == 413 and "file" in caught.value.fields


# ------------------------------------------------------------------------------------------------ sync

def test_sync_adopts_versions_created_straight_in_mlflow(teams, mlflow_uri, unique, logged_run):
    from apps.core.actors import Actor

    c = mlf.client()
    tagged, untagged = f"{unique}-direct", f"{unique}-orphan"
    c.create_registered_model(tagged, tags={settings.MODELPLANE_TEAM_TAG: teams[1].slug})
    c.create_model_version(tagged, source=f"runs:/{logged_run}/model", run_id=logged_run)
    c.create_registered_model(untagged)
    c.create_model_version(untagged, source=f"runs:/{logged_run}/model", run_id=logged_run)
    report = services.registry_sync(actor=Actor.system("registry-sync"))
    assert f"{tagged} v1" in report["adopted"]
    assert untagged in report["unclaimed"]
    version = ModelVersion.objects.get(model__name=tagged, version=1)
    assert version.origin == "sync" and version.model.team == teams[1]
    assert version.lineage["run_id"] == logged_run
    assert AuditEvent.objects.filter(verb="model.adopted", target_id=str(version.model.pk)).exists()
    # a second pass adopts nothing new
    again = services.registry_sync(actor=Actor.system("registry-sync"))
    assert f"{tagged} v1" not in again["adopted"]
    assert ModelCard.objects.filter(version=version).count() == 1
