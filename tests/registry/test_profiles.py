"""Reference profiles: from an uploaded file and from a file the version's run logged, through the services."""
from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.core.errors import NotFound, PermissionDenied, ValidationFailed
from apps.registry import services
from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db

CSV = "amount,country,fraud\n12.5,FR,0\n99.0,DE,1\n15.0,FR,0\n,ES,0\n42.0,DE,1\n"


@pytest.fixture
def version(teams):
    model = RegisteredModel.objects.create(team=teams[0], name="profiled")
    return ModelVersion.objects.create(model=model, version=1, origin="upload", status="ready")


@pytest.fixture
def scientist(make_user, teams, actor_for):
    return actor_for(make_user("sci", team=teams[0], roles=("data_scientist",)))


def test_profile_from_upload_is_stored_and_audited(scientist, version, tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text(CSV)
    profile = services.referenceprofile_create_from_upload(actor=scientist, version_id=version.pk,
                                                           upload_path=path, filename="ref.csv")
    assert profile.row_count == 5 and profile.source == "upload:ref.csv"
    features = profile.features["features"]
    assert features["amount"]["type"] == "numeric" and features["amount"]["missing"] == 1
    assert features["country"]["frequencies"]["FR"] == 2
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "profile.created" and event.after["rows"] == 5


def test_bad_reference_file_names_the_file_field(scientist, version, tmp_path):
    path = tmp_path / "ref.csv"
    path.write_bytes(b"\x00\x01\x02 binary")
    with pytest.raises(ValidationFailed) as caught:
        services.referenceprofile_create_from_upload(actor=scientist, version_id=version.pk, upload_path=path,
                                                     filename="ref.csv")
    assert "file" in caught.value.fields
    assert not version.profiles.exists()


def test_profile_permissions(make_user, teams, actor_for, version, tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text(CSV)
    viewer = actor_for(make_user("v", team=teams[0], roles=("viewer",)))
    with pytest.raises(PermissionDenied):
        services.referenceprofile_create_from_upload(actor=viewer, version_id=version.pk, upload_path=path,
                                                     filename="ref.csv")
    outsider = actor_for(make_user("o", team=teams[1], roles=("data_scientist",)))
    with pytest.raises(NotFound):
        services.referenceprofile_create_from_upload(actor=outsider, version_id=version.pk, upload_path=path,
                                                     filename="ref.csv")


def test_profile_from_a_file_the_run_logged(scientist, teams, mlflow_uri, unique, tmp_path):
    import mlflow

    mlflow.set_experiment(f"{unique}-profiles")
    with mlflow.start_run() as run:
        data = tmp_path / "train.csv"
        data.write_text(CSV)
        mlflow.log_artifact(str(data), artifact_path="data")
    model = RegisteredModel.objects.create(team=teams[0], name=f"{unique}-p")
    version = ModelVersion.objects.create(model=model, version=1, origin="run", status="ready",
                                          run_id=run.info.run_id)
    profile = services.referenceprofile_create_from_run(actor=scientist, version_id=version.pk,
                                                        artifact_path="data/train.csv")
    assert profile.row_count == 5 and profile.source == f"runs:/{run.info.run_id}/data/train.csv"
    with pytest.raises(ValidationFailed) as caught:
        services.referenceprofile_create_from_run(actor=scientist, version_id=version.pk,
                                                  artifact_path="data/missing.csv")
    assert "artifact_path" in caught.value.fields


def test_a_scan_starts_once_and_its_start_is_audited(scientist, version):
    from apps.core.actors import Actor
    from apps.registry.models import ArtifactScan

    scan = ArtifactScan.objects.create(version=version)
    started = services.artifactscan_begin(actor=Actor.system("artifact-scanner"), scan_id=scan.pk)
    assert started is not None and started.status == "running"
    assert services.artifactscan_begin(actor=Actor.system("artifact-scanner"), scan_id=scan.pk) is None
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "scan.started" and event.after == {"scan": scan.pk, "status": "running"}
