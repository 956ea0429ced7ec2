"""Every state change of the registry: models, versions, aliases, cards, scans and reference profiles.

MLflow calls that a change depends on run inside the service's transaction, after our checks and before our
commit: when MLflow refuses or is down, nothing of ours is written (a 4xx or 503 says why). When MLflow
succeeds and our commit then fails, MLflow holds a version we do not; the sync task adopts it on its next pass.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import Team
from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ServiceError,
    ValidationFailed,
    field_error,
)
from apps.core.permissions import has_perm, require
from apps.registry import mlflow_adapter as mlf
from apps.registry.models import (
    AliasAssignment,
    ArtifactScan,
    ModelCard,
    ModelUpload,
    ModelVersion,
    ReferenceProfile,
    RegisteredModel,
    RiskTier,
    ScanFinding,
    alias_validator,
    model_name_validator,
)

log = logging.getLogger(__name__)

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_TAGS = 50
MAX_ZIP_ENTRIES = 10_000


# ----------------------------------------------------------------------------------------------- validation

def _validate_name(name: str, field: str = "model_name") -> str:
    name = (name or "").strip()
    if not name:
        raise field_error(field, "This field is required.", code="required")
    try:
        model_name_validator(name)
    except ValidationError as exc:
        raise field_error(field, " ".join(exc.messages)) from exc
    return name


def _validate_text(field: str, value: str | None, limit: int) -> str:
    value = value or ""
    if len(value) > limit:
        raise field_error(field, f"Ensure this field has no more than {limit} characters (it has {len(value)}).",
                          code="max_length")
    return value


def _validate_tags(tags: Any) -> dict[str, str]:
    if tags in (None, ""):
        return {}
    if not isinstance(tags, dict):
        raise field_error("tags", "Tags are an object of string keys and string values.")
    if len(tags) > MAX_TAGS:
        raise field_error("tags", f"At most {MAX_TAGS} tags.")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if (not isinstance(key, str) or not key or len(key) > 250 or key.startswith("mlflow.")
                or key == settings.MODELPLANE_TEAM_TAG):
            raise field_error("tags", f"Tag key {key!r} must be 1 to 250 characters, not start with 'mlflow.' and "
                                      f"not be {settings.MODELPLANE_TEAM_TAG!r} (Modelplane's own).")
        if not isinstance(value, (str, int, float, bool)) or len(str(value)) > 5000:
            raise field_error("tags", f"Tag {key!r} must have a string value of at most 5000 characters.")
        out[key] = str(value)
    return out


def _validate_risk_tier(tier: str | None) -> str | None:
    if tier in (None, ""):
        return None
    if tier not in RiskTier.values:
        raise field_error("risk_tier", f"{tier!r} is not a risk tier; choose low, medium or high.",
                          code="invalid_choice")
    return tier


def _team(team_id: Any) -> Team:
    if team_id in (None, ""):
        raise field_error("team", "This field is required for a new model.", code="required")
    try:
        team = Team.objects.filter(pk=int(team_id)).first()
    except (TypeError, ValueError):
        team = None
    if team is None:
        raise field_error("team", f"No team with id {team_id!r}.", code="does_not_exist")
    return team


# ----------------------------------------------------------------------------------------------- models

def _model_create(*, actor: Actor, team: Team, name: str, description: str, risk_tier: str | None,
                  tags: dict[str, str], name_field: str = "model_name", created_by: Any = None) -> RegisteredModel:
    require(actor, "model.register", team)
    if RegisteredModel.objects.filter(name__iexact=name).exists():
        raise Conflict(f"A registered model named {name!r} already exists.", fields={name_field: ["already exists"]})
    mlf.registered_model_ensure(name, description=description, tags={**tags, settings.MODELPLANE_TEAM_TAG: team.slug})
    try:
        with transaction.atomic():  # a concurrent create of the same name is a 409, not a 500
            model = RegisteredModel.objects.create(team=team, name=name, description=description, tags=tags,
                                                   risk_tier=risk_tier or RiskTier.MEDIUM,
                                                   created_by=created_by or actor.user)
    except IntegrityError as exc:
        raise Conflict(f"A registered model named {name!r} already exists.",
                       fields={name_field: ["already exists"]}) from exc
    audit_event_record(actor=actor, verb="model.created", target=model, after=model.snapshot())
    return model


@transaction.atomic
def registeredmodel_create(*, actor: Actor, team_id: int, name: str, description: str = "",
                           risk_tier: str | None = None, tags: dict | None = None) -> RegisteredModel:
    """Create a registered model (here and in MLflow) owned by a team, before any version exists."""
    team = _team(team_id)
    require(actor, "model.register", team)
    return _model_create(actor=actor, team=team, name=_validate_name(name, "name"),
                         description=_validate_text("description", description, 5000),
                         risk_tier=_validate_risk_tier(risk_tier), tags=_validate_tags(tags), name_field="name")


@transaction.atomic
def registeredmodel_update(*, actor: Actor, model_id: int, description: str | None = None,
                           risk_tier: str | None = None, tags: dict | None = None) -> RegisteredModel:
    """Change a model's description, risk tier or tags; description and tags are mirrored to MLflow."""
    model = RegisteredModel.objects.select_for_update().filter(pk=model_id).first()
    if model is None:
        raise NotFound("Model not found.")
    require(actor, "model.update", model)
    before = model.snapshot()
    if description is not None:
        model.description = _validate_text("description", description, 5000)
    if risk_tier is not None:
        model.risk_tier = _validate_risk_tier(risk_tier) or model.risk_tier
    if tags is not None:
        model.tags = _validate_tags(tags)
    model.save()
    with mlf.mlflow_call(f"updating {model.name}"):
        c = mlf.client()
        if description is not None:
            c.update_registered_model(model.name, description=model.description)
        if tags is not None:
            for key, value in model.tags.items():
                c.set_registered_model_tag(model.name, key, value)
            for key in set(before.get("tags") or {}) - set(model.tags):
                c.delete_registered_model_tag(model.name, key)
    audit_event_record(actor=actor, verb="model.updated", target=model, before=before, after=model.snapshot())
    return model


def _require_may_register(*, actor: Actor, name: str, team_id: Any) -> None:
    """May the actor add a version under ``name``? Asked before anything else, MLflow included, so that someone
    who may not register learns nothing about runs or files. _model_for_registration asks again under the lock."""
    existing = RegisteredModel.objects.filter(name__iexact=name).first()
    if existing is None:
        require(actor, "model.register", _team(team_id))
    elif has_perm(actor, "model.view", existing):
        require(actor, "model.register", existing)
    elif not has_perm(actor, "model.register"):
        raise PermissionDenied("You do not have permission to do this (model.register).")
    else:
        raise Conflict(f"The model name {name!r} is taken by another team.",
                       fields={"model_name": ["taken by another team"]})


def _check_joins(*, actor: Actor, model: RegisteredModel, name: str, team_id: Any) -> None:
    """May a new version of ``name`` join the existing ``model``? (Its team, not archived, the actor's role.)"""
    if not has_perm(actor, "model.view", model):
        # Names are global in MLflow; say it is taken without revealing whose it is.
        raise Conflict(f"The model name {name!r} is taken by another team.",
                       fields={"model_name": ["taken by another team"]})
    require(actor, "model.register", model)
    if team_id not in (None, "") and str(team_id) != str(model.team_id):
        raise field_error("team", f"{model.name} belongs to team {model.team.name}; leave team empty or use it.")
    if model.archived_at is not None:
        raise Conflict(f"{model.name} is archived.", fields={"model_name": ["archived"]})


def _model_for_registration(*, actor: Actor, name: str, team_id: Any, description: str,
                            risk_tier: str | None, created_by: Any = None) -> RegisteredModel:
    """The model a new version joins: the existing one (locked), or a new one for ``team_id``."""
    model = RegisteredModel.objects.select_for_update().filter(name__iexact=name).first()
    if model is not None:
        _check_joins(actor=actor, model=model, name=name, team_id=team_id)
        return model
    team = _team(team_id)
    require(actor, "model.register", team)
    return _model_create(actor=actor, team=team, name=name, description="", risk_tier=risk_tier, tags={},
                         created_by=created_by)


def _version_record(*, actor: Actor, model: RegisteredModel, mlflow_version: Any, origin: str,
                    files: mlf.ModelFiles, lineage: dict, description: str, tags: dict[str, str],
                    registered_by: Any = None, audit_extra: dict | None = None) -> ModelVersion:
    number = int(mlflow_version.version)
    replaces = model.versions.exclude(status=ModelVersion.Status.ARCHIVED).order_by("-version").first()
    version = ModelVersion.objects.create(
        model=model, version=number, status=ModelVersion.Status.PENDING_SCAN, origin=origin,
        description=description, tags=tags, source=mlflow_version.source or "",
        run_id=mlflow_version.run_id or "", mlflow_model_id=getattr(mlflow_version, "model_id", None) or "",
        flavors=files.flavors, signature=files.signature, input_example=files.input_example, lineage=lineage,
        replaces=replaces, registered_by=registered_by or actor.user,
        mlflow_created_at=mlf._ms_to_datetime(getattr(mlflow_version, "creation_timestamp", None)),
    )
    if number > model.latest_version:
        model.latest_version = number
        model.save(update_fields=["latest_version", "updated_at"])
    card = ModelCard.objects.create(
        version=version, revision=1, metrics=dict((lineage or {}).get("metrics") or {}),
        training_data=_datasets_summary(lineage, "training"), evaluation_data=_datasets_summary(lineage, "eval"),
        owners=model.team.name, edited_by=registered_by or actor.user,
    )
    audit_event_record(actor=actor, verb="modelversion.registered", target=version,
                       after={**version.snapshot(), "card_revision": card.revision, **(audit_extra or {})})
    scan = ArtifactScan.objects.create(version=version)
    transaction.on_commit(lambda: _queue_scan(scan.pk))
    return version


def _datasets_summary(lineage: dict, context_prefix: str) -> str:
    lines = []
    for ds in (lineage or {}).get("datasets") or []:
        if str(ds.get("context") or "").startswith(context_prefix):
            source = ds.get("source")
            where = source.get("uri") if isinstance(source, dict) else source
            lines.append(f"{ds.get('name')} (digest {ds.get('digest')}, {ds.get('source_type')}: {where})")
    return "\n".join(lines)


def _queue_scan(scan_id: int) -> None:
    from apps.registry.tasks import run_artifact_scan

    run_artifact_scan.delay(scan_id)


@transaction.atomic
def modelversion_register_from_run(*, actor: Actor, model_name: str, run_id: str, artifact_path: str = "model",
                                   team_id: int | None = None, description: str = "", tags: dict | None = None,
                                   risk_tier: str | None = None) -> ModelVersion:
    """Register the MLflow model that a run logged (``runs:/<run_id>/<artifact_path>``) as a new version."""
    name = _validate_name(model_name)
    # Permission before any MLflow call: someone who may not register learns nothing about runs.
    _require_may_register(actor=actor, name=name, team_id=team_id)
    run_id = (run_id or "").strip()
    if not RUN_ID_RE.match(run_id):
        raise field_error("run_id", "An MLflow run id is 32 lower-case hexadecimal characters.")
    artifact_path = (artifact_path or "model").strip().strip("/")
    parts = PurePosixPath(artifact_path).parts
    if not artifact_path or ".." in parts or len(artifact_path) > 500:
        raise field_error("artifact_path", "A relative path inside the run, such as 'model'.")
    description = _validate_text("description", description, 5000)
    tags = _validate_tags(tags)
    risk_tier = _validate_risk_tier(risk_tier)
    lineage = mlf.run_snapshot(run_id)
    source = f"runs:/{run_id}/{artifact_path}"
    files = mlf.model_files_read(source)
    model = _model_for_registration(actor=actor, name=name, team_id=team_id, description=description,
                                    risk_tier=risk_tier)
    mv = mlf.model_version_create(model.name, source=source, run_id=run_id, description=description, tags=tags)
    return _version_record(actor=actor, model=model, mlflow_version=mv, origin=ModelVersion.Origin.RUN,
                           files=files, lineage=lineage, description=description, tags=tags)


# ----------------------------------------------------------------------------------------------- upload

PICKLE_SUFFIXES = {".pkl", ".pickle"}
SKOPS_SUFFIX = ".skops"


def _safe_members(archive: zipfile.ZipFile, limit_bytes: int) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > MAX_ZIP_ENTRIES:
        raise field_error("file", f"The zip has {len(members)} entries; at most {MAX_ZIP_ENTRIES}.")
    total = 0
    for info in members:
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
            raise field_error("file", f"The zip entry {info.filename!r} points outside the archive.",
                              code="path_traversal")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise field_error("file", f"The zip entry {info.filename!r} is a symbolic link.", code="symlink")
        total += info.file_size
        if total > limit_bytes:
            raise field_error("file", "The zip expands beyond the upload size limit.", code="too_large")
    return members


MLMODEL_MAX_BYTES = 1_000_000


def _parse_mlmodel_or_400(text: bytes | str) -> dict:
    try:
        return mlf.parse_mlmodel(text.decode() if isinstance(text, bytes) else text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise field_error("file", f"The MLmodel file is not valid ({exc}).", code="not_a_model") from exc
    except Exception as exc:  # yaml errors of every kind
        raise field_error("file", f"The MLmodel file is not valid YAML ({type(exc).__name__}).",
                          code="not_a_model") from exc


def _zip_model_root(archive: zipfile.ZipFile) -> str:
    """Check a model zip's structure without extracting it (entries, sizes, paths, an MLmodel file that parses);
    returns the folder inside the zip that holds MLmodel ("" for the top)."""
    members = _safe_members(archive, settings.MODELPLANE_UPLOAD_MAX_BYTES * 4)
    mlmodels = [m for m in members if PurePosixPath(m.filename).name == "MLmodel"]
    if not mlmodels:
        raise field_error("file", "The zip holds no MLmodel file; zip a directory written by "
                                  "mlflow.<flavor>.save_model().", code="not_a_model")
    top = min(mlmodels, key=lambda m: len(PurePosixPath(m.filename).parts))
    if top.file_size > MLMODEL_MAX_BYTES:
        raise field_error("file", "The MLmodel file is larger than 1 MB; it is not one.", code="not_a_model")
    _parse_mlmodel_or_400(archive.read(top))
    root = str(PurePosixPath(top.filename).parent)
    return "" if root == "." else root


def _stage_zip(upload: Path, staging: Path) -> Path:
    """Extract an MLflow model zip into ``staging``; returns the directory that holds MLmodel."""
    try:
        with zipfile.ZipFile(upload) as archive:
            root = _zip_model_root(archive)
            archive.extractall(staging)
    except zipfile.BadZipFile as exc:
        raise field_error("file", f"Not a readable zip file ({exc}).", code="bad_zip") from exc
    return staging / root if root else staging


def _upload_kind(upload: Path, filename: str) -> str:
    """What an uploaded file is, from its name and first bytes (and a zip's structure): "zip", "pickle" or
    "skops". Cheap enough for the request path; raises a 400 naming ``file`` otherwise."""
    size = upload.stat().st_size
    if size == 0:
        raise field_error("file", "The file is empty.", code="empty")
    if size > settings.MODELPLANE_UPLOAD_MAX_BYTES:
        raise ValidationFailed(f"file: larger than the {settings.MODELPLANE_UPLOAD_MAX_BYTES} byte limit.",
                               code="too_large", fields={"file": ["too large"]}, status=413)
    suffix = Path(filename).suffix.lower()
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(upload) as archive:
                _zip_model_root(archive)
        except zipfile.BadZipFile as exc:
            raise field_error("file", f"Not a readable zip file ({exc}).", code="bad_zip") from exc
        return "zip"
    with upload.open("rb") as fh:
        head = fh.read(4)
    if suffix in PICKLE_SUFFIXES:
        if not _looks_like_pickle(head):
            raise field_error("file", "The file does not start like a pickle.", code="not_a_model")
        return "pickle"
    if suffix == SKOPS_SUFFIX:
        if head[:2] != b"PK":
            raise field_error("file", "A .skops file is a zip archive; this one is not.", code="not_a_model")
        return "skops"
    raise field_error("file", "Upload an MLflow model directory as .zip, or a scikit-learn model as .pkl, "
                              ".pickle or .skops (for joblib files, save with mlflow.sklearn.save_model and zip "
                              "the directory).", code="unsupported_type")


def _looks_like_pickle(head: bytes) -> bool:
    # Protocol 2+ starts with PROTO (0x80) and the protocol number; protocols 0/1 start with an opcode such as
    # '(' MARK, ']' EMPTY_LIST, '}' EMPTY_DICT, 'c' GLOBAL.
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head[:1] in (b"(", b"]", b"}", b"c")


def _stage_sklearn_file(upload: Path, kind: str, staging: Path) -> Path:
    """Write an MLflow model directory around a scikit-learn model file, by hand: the file is never loaded."""
    model_file, fmt = ("model.skops", "skops") if kind == "skops" else ("model.pkl", "pickle")
    model_dir = staging / "model"
    model_dir.mkdir()
    shutil.copyfile(upload, model_dir / model_file)
    import mlflow

    mlmodel = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {"env": {"virtualenv": "python_env.yaml"}, "loader_module": "mlflow.sklearn",
                                "model_path": model_file, "predict_fn": "predict", "python_version": "3.11"},
            "sklearn": {"code": None, "pickled_model": model_file, "serialization_format": fmt,
                        "sklearn_version": None},
        },
        "mlflow_version": mlflow.__version__,
        "utc_time_created": timezone.now().strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    import yaml

    (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    (model_dir / "python_env.yaml").write_text("python: '3.11'\nbuild_dependencies: [pip]\n"
                                               "dependencies: [-r requirements.txt]\n")
    (model_dir / "requirements.txt").write_text(f"mlflow=={mlflow.__version__}\nscikit-learn\ncloudpickle\n")
    return model_dir


def _files_from_directory(model_dir: Path) -> mlf.ModelFiles:
    mlmodel = mlf.parse_mlmodel((model_dir / "MLmodel").read_text())
    example = None
    info = mlmodel.get("saved_input_example_info") or {}
    path = model_dir / str(info.get("artifact_path") or "") if isinstance(info, dict) else None
    if path and path.is_file() and path.stat().st_size <= 1_000_000:
        try:
            example = json.loads(path.read_text())
        except ValueError:
            example = None
    return mlf.ModelFiles(flavors=mlmodel.get("flavors") or {}, signature=mlf.signature_of(mlmodel),
                          input_example=example, raw=mlmodel)


@transaction.atomic
def modelversion_register_from_upload(*, actor: Actor, model_name: str, upload_path: Path, filename: str,
                                      team_id: int | None = None, description: str = "", tags: dict | None = None,
                                      risk_tier: str | None = None, on_behalf_of: Any = None) -> ModelVersion:
    """Register an uploaded artifact: an MLflow model directory as a zip, or a scikit-learn model file.

    The upload is on disk (``upload_path``). Modelplane logs it to a run in the uploads experiment and registers
    that; the pickle inside is scanned, never loaded. Slow for a large file (the bytes go to MLflow), so the web
    records a ModelUpload (modelupload_receive) and the worker calls this as the system actor, ``on_behalf_of``
    the uploader: they are the version's registered_by, and the audit event names them.
    """
    name = _validate_name(model_name)
    _require_may_register(actor=actor, name=name, team_id=team_id)
    description = _validate_text("description", description, 5000)
    tags = _validate_tags(tags)
    risk_tier = _validate_risk_tier(risk_tier)
    kind = _upload_kind(upload_path, filename)
    size = upload_path.stat().st_size
    staging = Path(tempfile.mkdtemp(prefix="mp-upload-"))
    try:
        if kind == "zip":
            model_dir = _stage_zip(upload_path, staging)
        else:
            model_dir = _stage_sklearn_file(upload_path, kind, staging)
        files = _files_from_directory(model_dir)
        model = _model_for_registration(actor=actor, name=name, team_id=team_id, description=description,
                                        risk_tier=risk_tier, created_by=on_behalf_of)
        run_id, source = mlf.log_uploaded_model(model_dir, model_name=model.name,
                                                experiment_name=settings.MODELPLANE_UPLOAD_EXPERIMENT)
        lineage = mlf.run_snapshot(run_id)
        lineage["upload"] = {"filename": filename[:255], "bytes": size}
        mv = mlf.model_version_create(model.name, source=source, run_id=run_id, description=description, tags=tags)
        extra = {"uploaded_by": on_behalf_of.get_username()} if on_behalf_of is not None else None
        return _version_record(actor=actor, model=model, mlflow_version=mv, origin=ModelVersion.Origin.UPLOAD,
                               files=files, lineage=lineage, description=description, tags=tags,
                               registered_by=on_behalf_of, audit_extra=extra)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- upload records

UPLOAD_NAME_RE = re.compile(r"[^A-Za-z0-9._-]")


def _store_upload(upload_path: Path, filename: str) -> Path:
    """Keep the uploaded file where the worker finds it: its own folder under MODELPLANE_UPLOAD_DIR (a hard link
    when on the same file system, so a 500 MB file is not copied; else a copy)."""
    folder = Path(settings.MODELPLANE_UPLOAD_DIR) / uuid.uuid4().hex
    folder.mkdir(parents=True, mode=0o700)
    target = folder / (UPLOAD_NAME_RE.sub("_", Path(filename).name)[-200:] or "upload")
    try:
        os.link(upload_path, target)
    except OSError:
        shutil.copyfile(upload_path, target)
    return target


def _upload_file_delete(upload: ModelUpload) -> None:
    if upload.file_path:
        shutil.rmtree(Path(upload.file_path).parent, ignore_errors=True)


def _upload_audit(upload: ModelUpload) -> dict[str, Any]:
    return {k: v for k, v in upload.snapshot().items() if k != "file_path"}


def _queue_upload(upload_id: int) -> None:
    from apps.registry.tasks import process_upload

    process_upload.delay(upload_id)


def modelupload_receive(*, actor: Actor, model_name: str, upload_path: Path, filename: str,
                        team_id: int | None = None, description: str = "", tags: dict | None = None,
                        risk_tier: str | None = None) -> ModelUpload:
    """Accept an uploaded model file for registration, and answer at once however large it is.

    Checks what is cheap here: who may register under that name, the fields, and the file (its kind from name
    and first bytes; a zip's entries, paths and MLmodel file, read from the archive without extracting it).
    Stores the file under MODELPLANE_UPLOAD_DIR and records a ModelUpload (audited ``upload.received``); on commit
    the worker's process_upload logs it to MLflow and registers the version (modelupload_process).
    """
    name = _validate_name(model_name)
    _require_may_register(actor=actor, name=name, team_id=team_id)
    description = _validate_text("description", description, 5000)
    tags = _validate_tags(tags)
    risk_tier = _validate_risk_tier(risk_tier)
    _upload_kind(upload_path, filename)
    existing = RegisteredModel.objects.select_related("team").filter(name__iexact=name).first()
    if existing is not None:
        _check_joins(actor=actor, model=existing, name=name, team_id=team_id)
        team, name = existing.team, existing.name
    else:
        team = _team(team_id)
        require(actor, "model.register", team)
    stored = _store_upload(upload_path, filename)
    try:
        with transaction.atomic():
            upload = ModelUpload.objects.create(
                team=team, model_name=name, filename=Path(filename).name[:255] or "upload", file_path=str(stored),
                size=stored.stat().st_size, description=description, tags=tags, risk_tier=risk_tier or "",
                created_by=actor.user)
            audit_event_record(actor=actor, verb="upload.received", target=upload, after=_upload_audit(upload))
            transaction.on_commit(lambda: _queue_upload(upload.pk))
    except BaseException:
        shutil.rmtree(stored.parent, ignore_errors=True)
        raise
    return upload


@transaction.atomic
def _modelupload_begin(*, actor: Actor, upload_id: int) -> ModelUpload | None:
    """received -> logging; None when there is nothing to do (another worker took it, or it is done)."""
    upload = ModelUpload.objects.select_for_update().filter(pk=upload_id).first()
    if upload is None or upload.status != ModelUpload.Status.RECEIVED:
        return None
    before = _upload_audit(upload)
    upload.transition_to(ModelUpload.Status.LOGGING)
    upload.started_at, upload.finished_at, upload.attempts = timezone.now(), None, upload.attempts + 1
    upload.save(update_fields=["status", "started_at", "finished_at", "attempts", "updated_at"])
    audit_event_record(actor=actor, verb="upload.started", target=upload, before=before, after=_upload_audit(upload))
    return upload


@transaction.atomic
def _modelupload_fail(*, actor: Actor, upload_id: int, error: str) -> ModelUpload:
    upload = ModelUpload.objects.select_for_update().get(pk=upload_id)
    before = _upload_audit(upload)
    upload.transition_to(ModelUpload.Status.FAILED)
    upload.error, upload.finished_at = error[:5000], timezone.now()
    upload.save(update_fields=["status", "error", "finished_at", "updated_at"])
    audit_event_record(actor=actor, verb="upload.failed", target=upload, before=before, after=_upload_audit(upload),
                       reason=upload.error)
    return upload


def modelupload_process(*, actor: Actor, upload_id: int) -> ModelUpload | None:
    """The worker's half of an upload: log the stored file to MLflow and register it, as ``actor`` (the system)
    on behalf of the uploader, who must still be allowed to register there. Registered: the file is deleted.
    Failed: the reason is kept on the upload, and so is the file, for a retry (modelupload_retry)."""
    upload = _modelupload_begin(actor=actor, upload_id=upload_id)
    if upload is None:
        return None
    uploader = upload.created_by
    try:
        with transaction.atomic():
            if uploader is None or not uploader.is_active:
                raise PermissionDenied("The uploader's account no longer exists or is disabled.")
            # The uploader's roles now, not at upload time: a membership may have ended in between.
            try:
                _require_may_register(actor=Actor.for_user(uploader), name=upload.model_name,
                                      team_id=upload.team_id)
            except (PermissionDenied, NotFound) as exc:
                raise PermissionDenied(f"{uploader.get_username()} may no longer register models in team "
                                       f"{upload.team.name} (model.register).") from exc
            path = Path(upload.file_path)
            if not upload.file_path or not path.is_file():
                raise Conflict("The uploaded file is gone from the upload folder; upload it again.",
                               fields={"file": ["missing"]})
            version = modelversion_register_from_upload(
                actor=actor, model_name=upload.model_name, upload_path=path, filename=upload.filename,
                team_id=upload.team_id, description=upload.description, tags=upload.tags,
                risk_tier=upload.risk_tier or None, on_behalf_of=uploader)
            locked = ModelUpload.objects.select_for_update().get(pk=upload.pk)
            before = _upload_audit(locked)
            locked.transition_to(ModelUpload.Status.REGISTERED)
            locked.version, locked.error, locked.finished_at = version, "", timezone.now()
            locked.save(update_fields=["status", "version", "error", "finished_at", "updated_at"])
            audit_event_record(actor=actor, verb="upload.registered", target=locked, before=before,
                               after={**_upload_audit(locked), "uploaded_by": uploader.get_username()})
    except ServiceError as exc:
        message = exc.message
        if exc.fields:
            message += " (" + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in exc.fields.items()) + ")"
        return _modelupload_fail(actor=actor, upload_id=upload.pk, error=message)
    except Exception as exc:  # a failure must show on the upload's page, not vanish in a log
        log.exception("upload %s failed", upload.pk)
        return _modelupload_fail(actor=actor, upload_id=upload.pk, error=f"{type(exc).__name__}: {exc}")
    _upload_file_delete(locked)
    ModelUpload.objects.filter(pk=locked.pk).update(file_path="")
    locked.file_path = ""
    return locked


@transaction.atomic
def modelupload_retry(*, actor: Actor, upload_id: int) -> ModelUpload:
    """Queue a failed upload again (or one whose worker died while logging it); its stored file is reused."""
    upload = ModelUpload.objects.select_for_update().filter(pk=upload_id).first()
    if upload is None:
        raise NotFound("Upload not found.")
    require(actor, "model.view", upload)
    require(actor, "model.register", upload)
    stale_after = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    stuck = (upload.status == ModelUpload.Status.LOGGING and upload.started_at is not None
             and upload.started_at < stale_after)
    if upload.status != ModelUpload.Status.FAILED and not stuck:
        raise InvalidTransition(f"This upload is {upload.get_status_display().lower()}; only a failed one is "
                                "retried.", fields={"status": [upload.status]})
    if not upload.file_path or not Path(upload.file_path).is_file():
        raise Conflict("The uploaded file has been deleted; upload it again.", fields={"file": ["deleted"]})
    before = _upload_audit(upload)
    upload.transition_to(ModelUpload.Status.RECEIVED)
    upload.error = ""
    upload.save(update_fields=["status", "error", "updated_at"])
    audit_event_record(actor=actor, verb="upload.retried", target=upload, before=before, after=_upload_audit(upload))
    transaction.on_commit(lambda: _queue_upload(upload.pk))
    return upload


def modelupload_files_purge(*, actor: Actor, older_than: timedelta) -> int:
    """Delete the stored files of uploads that failed longer ago than ``older_than`` (they can no longer be
    retried; the rows stay). Returns how many files were deleted. Run daily by beat (registry.purge_uploads)."""
    cutoff = timezone.now() - older_than
    done = 0
    for upload_id in ModelUpload.objects.filter(status=ModelUpload.Status.FAILED, finished_at__lt=cutoff).exclude(
            file_path="").values_list("pk", flat=True):
        with transaction.atomic():
            upload = ModelUpload.objects.select_for_update().get(pk=upload_id)
            if upload.status != ModelUpload.Status.FAILED or not upload.file_path:
                continue
            _upload_file_delete(upload)
            upload.file_path = ""
            upload.save(update_fields=["file_path", "updated_at"])
            audit_event_record(actor=actor, verb="upload.file_purged", target=upload, after=_upload_audit(upload),
                               reason=f"failed more than {older_than} ago")
            done += 1
    return done


# ----------------------------------------------------------------------------------------------- sync

def registry_sync(*, actor: Actor) -> dict[str, Any]:
    """Adopt versions created straight in MLflow, and settle aliases moved straight in MLflow. Returns what it
    did (adopted, unclaimed, aliases reverted / adopted / deferred, errors).

    A version of a model Modelplane knows joins that model. A model it does not know is adopted when its
    ``modelplane.team`` tag names a team's slug; otherwise it is reported as unclaimed (the models page shows
    platform admins the list). Aliases: see :func:`_alias_drift_settle`.
    """
    known = {(n, v) for n, v in ModelVersion.objects.values_list("model__name", "version")}
    models = {m.name: m for m in RegisteredModel.objects.select_related("team")}
    report: dict[str, Any] = {"adopted": [], "unclaimed": [], "errors": []}
    team_tag_cache: dict[str, str | None] = {}
    for mv in sorted(mlf.versions_search(), key=lambda v: (v.name, int(v.version))):
        key = (mv.name, int(mv.version))
        if key in known or mv.status != "READY":
            continue
        try:
            model = models.get(mv.name)
            if model is None:
                if mv.name not in team_tag_cache:
                    team_tag_cache[mv.name] = mlf.registered_model_tags(mv.name).get(settings.MODELPLANE_TEAM_TAG)
                slug = team_tag_cache[mv.name]
                team = Team.objects.filter(slug=slug).first() if slug else None
                if team is None:
                    if mv.name not in report["unclaimed"]:
                        report["unclaimed"].append(mv.name)
                    continue
            version = _adopt_version(actor=actor, mlflow_version=mv, team_id=model.team_id if model else team.pk)
            models[mv.name] = version.model
            report["adopted"].append(f"{mv.name} v{mv.version}")
        except Exception as exc:  # noqa: BLE001 - one bad version must not stop the others; it is reported
            log.warning("sync: could not adopt %s v%s: %s", mv.name, mv.version, exc)
            report["errors"].append(f"{mv.name} v{mv.version}: {exc}")
    _alias_drift_check(actor=actor, report=report)
    return report


def _aliases_held() -> dict[int, dict[str, int]]:
    """Our open alias assignments, ``{model id: {alias: version number}}``."""
    held: dict[int, dict[str, int]] = {}
    for model_id, alias, number in AliasAssignment.objects.filter(removed_at__isnull=True).values_list(
            "model_id", "alias", "version__version"):
        held.setdefault(model_id, {})[alias] = number
    return held


def _alias_drift_check(*, actor: Actor, report: dict[str, Any]) -> None:
    """Compare every model's aliases in MLflow with ours (two reads) and settle the models that differ."""
    for key in ("aliases_reverted", "aliases_adopted", "aliases_deferred"):
        report[key] = []
    try:
        theirs_by_name = mlf.aliases_by_model()
    except ServiceError as exc:
        report["errors"].append(f"aliases: {exc.message}")
        return
    ours_by_model = _aliases_held()
    for model_id, name in RegisteredModel.objects.values_list("pk", "name"):
        theirs = theirs_by_name.get(name)
        if theirs is None or theirs == ours_by_model.get(model_id, {}):
            continue  # unchanged, or MLflow has no such model (nothing to compare aliases with)
        try:
            outcome = _alias_drift_settle(actor=actor, model_id=model_id)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others; it is reported
            log.warning("sync: could not settle the aliases of %s: %s", name, exc)
            report["errors"].append(f"{name} aliases: {getattr(exc, 'message', exc)}")
            continue
        for key, items in outcome.items():
            report[key].extend(items)


@transaction.atomic
def _alias_drift_settle(*, actor: Actor, model_id: int) -> dict[str, list[str]]:
    """Settle one model's aliases that MLflow holds differently from us (someone moved them straight in MLflow).

    A production alias (settings.MODELPLANE_PRODUCTION_ALIASES) moves only through an approved promotion, so
    MLflow is put back to what Modelplane holds (set back, or deleted when we hold none): ``alias.drift_reverted``.
    Any other alias is adopted into our history (``alias.drift_adopted``) when it points at a ready version;
    at a blocked or archived version it is put back too (only ready versions take aliases), and at a version
    still being scanned (or not yet adopted) it waits for a later pass.

    Under the model's lock, and with MLflow read again under it: alias_set and alias_remove hold the same lock
    from their MLflow call to their commit, so a change of theirs in flight is never taken for drift.
    """
    model = RegisteredModel.objects.select_for_update().filter(pk=model_id).first()
    outcome: dict[str, list[str]] = {"aliases_reverted": [], "aliases_adopted": [], "aliases_deferred": []}
    if model is None:
        return outcome
    theirs = mlf.registered_model_aliases(model.name)
    if theirs is None:
        return outcome
    open_rows = {a.alias: a for a in AliasAssignment.objects.select_for_update(of=("self",))
                 .select_related("version").filter(model=model, removed_at__isnull=True)}
    now = timezone.now()
    for alias in sorted(set(theirs) | set(open_rows)):
        ours_row = open_rows.get(alias)
        ours_v = ours_row.version.version if ours_row else None
        theirs_v = theirs.get(alias)
        if ours_v == theirs_v:
            continue
        label = f"{model.name}@{alias}"
        target = model.versions.filter(version=theirs_v).first() if theirs_v is not None else None
        why = ""
        if alias in settings.MODELPLANE_PRODUCTION_ALIASES:
            why = "a production alias moves only through an approved promotion"
        elif target is not None and target.status in (ModelVersion.Status.BLOCKED, ModelVersion.Status.ARCHIVED):
            why = f"v{theirs_v} is {target.status}; only a ready version takes an alias"
        elif theirs_v is not None and (target is None or target.status != ModelVersion.Status.READY):
            outcome["aliases_deferred"].append(f"{label} -> v{theirs_v} (not yet scanned here)")
            continue
        if why:
            if ours_v is not None:
                mlf.alias_set(model.name, alias, ours_v)
            else:
                mlf.alias_delete(model.name, alias)
            audit_event_record(
                actor=actor, verb="alias.drift_reverted", target=model,
                before={"alias": alias, "version": theirs_v, "held_by": "mlflow"},
                after={"alias": alias, "version": ours_v, "held_by": "modelplane"},
                reason=f"{alias} was {'moved' if theirs_v and ours_v else 'set' if theirs_v else 'deleted'} "
                       f"straight in MLflow; put back because {why}.")
            outcome["aliases_reverted"].append(f"{label}: MLflow v{theirs_v} -> v{ours_v}")
            continue
        if ours_row is not None:
            ours_row.removed_at, ours_row.removed_by = now, None
            ours_row.save(update_fields=["removed_at", "removed_by"])
        if target is not None:
            AliasAssignment.objects.create(model=model, alias=alias, version=target, assigned_at=now,
                                           assigned_by=None)
        audit_event_record(
            actor=actor, verb="alias.drift_adopted", target=model,
            before={"alias": alias, "version": ours_v, "held_by": "modelplane"},
            after={"alias": alias, "version": theirs_v, "held_by": "mlflow"},
            reason=f"{alias} was {'moved' if theirs_v and ours_v else 'set' if theirs_v else 'deleted'} "
                   "straight in MLflow; adopted (not a production alias).")
        outcome["aliases_adopted"].append(f"{label}: v{ours_v} -> v{theirs_v}")
    return outcome


@transaction.atomic
def _adopt_version(*, actor: Actor, mlflow_version: Any, team_id: int) -> ModelVersion:
    name = mlflow_version.name
    model = RegisteredModel.objects.select_for_update().filter(name=name).first()
    if model is None:
        team = Team.objects.get(pk=team_id)
        model = RegisteredModel.objects.create(team=team, name=name, created_by=None,
                                               description=_validate_text("description", "", 5000))
        audit_event_record(actor=actor, verb="model.adopted", target=model, after=model.snapshot(),
                           reason=f"created in MLflow with {settings.MODELPLANE_TEAM_TAG}={team.slug}")
    if model.versions.filter(version=int(mlflow_version.version)).exists():
        return model.versions.get(version=int(mlflow_version.version))
    files = mlf.model_files_read(f"models:/{name}/{mlflow_version.version}", field_name="source")
    lineage = mlf.run_snapshot(mlflow_version.run_id) if mlflow_version.run_id else {}
    tags = {k: v for k, v in (mlflow_version.tags or {}).items() if not k.startswith("mlflow.")}
    return _version_record(actor=actor, model=model, mlflow_version=mlflow_version, origin=ModelVersion.Origin.SYNC,
                           files=files, lineage=lineage, description=mlflow_version.description or "", tags=tags)


# ----------------------------------------------------------------------------------------------- aliases

def _alias_move(*, actor: Actor, model: RegisteredModel, alias: str, version: ModelVersion | None,
                reason: str = "") -> AliasAssignment | None:
    now = timezone.now()
    current = AliasAssignment.objects.select_for_update().filter(model=model, alias=alias,
                                                                 removed_at__isnull=True).first()
    if version is not None and current is not None and current.version_id == version.pk:
        return current
    before = {"alias": alias, "version": current.version.version if current else None}
    if current is not None:
        current.removed_at, current.removed_by = now, actor.user
        current.save(update_fields=["removed_at", "removed_by"])
    assignment = None
    if version is not None:
        assignment = AliasAssignment.objects.create(model=model, alias=alias, version=version, assigned_at=now,
                                                    assigned_by=actor.user)
        mlf.alias_set(model.name, alias, version.version)
    else:
        mlf.alias_delete(model.name, alias)
    audit_event_record(actor=actor, verb="alias.set" if version is not None else "alias.removed", target=model,
                       before=before, after={"alias": alias, "version": version.version if version else None},
                       reason=reason)
    return assignment


def _validate_alias(alias: str) -> str:
    alias = (alias or "").strip()
    if not alias:
        raise field_error("alias", "This field is required.", code="required")
    try:
        alias_validator(alias)
    except ValidationError as exc:
        raise field_error("alias", " ".join(exc.messages)) from exc
    if alias == "latest" or re.fullmatch(r"v\d+", alias):
        raise field_error("alias", f"{alias!r} is reserved by MLflow.")
    return alias


def _refuse_production_alias(alias: str) -> None:
    if alias in settings.MODELPLANE_PRODUCTION_ALIASES:
        raise PermissionDenied(
            f"The alias {alias!r} means production: it moves only through an approved promotion request "
            "(the Approvals step). Ask for a promotion instead.",
            code="promotion_required", fields={"alias": ["moves only through an approved promotion"]})


def _model_for_alias(*, actor: Actor, model_id: int, alias: str) -> tuple[RegisteredModel, str]:
    """The model, locked, and the alias, checked: what setting or removing an alias by hand starts with."""
    model = RegisteredModel.objects.select_for_update().filter(pk=model_id).first()
    if model is None:
        raise NotFound("Model not found.")
    require(actor, "alias.set", model)
    alias = _validate_alias(alias)
    _refuse_production_alias(alias)
    return model, alias


@transaction.atomic
def alias_set(*, actor: Actor, model_id: int, alias: str, version: int) -> AliasAssignment:
    """Point an alias at a ready version (mirrored to MLflow); production aliases are refused here."""
    model, alias = _model_for_alias(actor=actor, model_id=model_id, alias=alias)
    try:
        target = model.versions.get(version=int(version))
    except (ModelVersion.DoesNotExist, TypeError, ValueError) as exc:
        raise field_error("version", f"{model.name} has no version {version!r}.", code="does_not_exist") from exc
    if target.status != ModelVersion.Status.READY:
        raise Conflict(f"{target} is {target.get_status_display().lower()}; only a ready version takes an alias.",
                       fields={"version": [f"status is {target.status}"]})
    return _alias_move(actor=actor, model=model, alias=alias, version=target)


@transaction.atomic
def alias_remove(*, actor: Actor, model_id: int, alias: str) -> None:
    """Remove a (non-production) alias from the model, here and in MLflow."""
    model, alias = _model_for_alias(actor=actor, model_id=model_id, alias=alias)
    if not model.alias_history.filter(alias=alias, removed_at__isnull=True).exists():
        raise field_error("alias", f"{model.name} has no alias {alias!r}.", code="does_not_exist")
    _alias_move(actor=actor, model=model, alias=alias, version=None)


# ----------------------------------------------------------------------------------------------- cards

@transaction.atomic
def modelcard_revise(*, actor: Actor, version_id: int, changes: dict[str, Any]) -> ModelCard:
    """Add a revision of a version's model card with ``changes`` applied to the newest one."""
    version = ModelVersion.objects.select_for_update().select_related("model").filter(pk=version_id).first()
    if version is None:
        raise NotFound("Model version not found.")
    require(actor, "model.update", version)
    if version.status == ModelVersion.Status.ARCHIVED:
        raise InvalidTransition("An archived version's model card is kept as it was; it takes no new revision.",
                                fields={"version": ["archived"]})
    current = version.cards.order_by("-revision").first()
    limits = {f: ModelCard._meta.get_field(f).max_length for f in ModelCard.TEXT_FIELDS}
    errors: dict[str, list[str]] = {}
    for key, value in changes.items():
        if key == "metrics":
            if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
                errors[key] = ["An object of metric names and numbers."]
        elif key not in limits:
            errors[key] = ["Not a model card field."]
        elif not isinstance(value, str):
            errors[key] = ["A string is required."]
        elif limits[key] and len(value) > limits[key]:
            errors[key] = [f"Ensure this field has no more than {limits[key]} characters (it has {len(value)})."]
    if errors:
        raise ValidationFailed("The model card is not valid.", fields=errors)
    data = {f: getattr(current, f) for f in (*ModelCard.TEXT_FIELDS, "metrics")} if current else {}
    data.update(changes)
    card = ModelCard.objects.create(version=version, revision=(current.revision + 1) if current else 1,
                                    edited_by=actor.user, **data)
    audit_event_record(actor=actor, verb="modelcard.revised", target=version,
                       before={k: (getattr(current, k) if current else None) for k in changes},
                       after={**{k: getattr(card, k) for k in changes}, "revision": card.revision})
    return card


# ----------------------------------------------------------------------------------------------- scans

@transaction.atomic
def artifactscan_request(*, actor: Actor, version_id: int) -> ArtifactScan:
    """Scan a version again (e.g. after a scanner update, or after a scan error)."""
    version = ModelVersion.objects.select_for_update().select_related("model").filter(pk=version_id).first()
    if version is None:
        raise NotFound("Model version not found.")
    require(actor, "model.register", version)
    if version.status == ModelVersion.Status.ARCHIVED:
        raise Conflict("An archived version is not scanned.", fields={"version": ["archived"]})
    if version.scans.filter(status__in=[ArtifactScan.Status.QUEUED, ArtifactScan.Status.RUNNING]).exists():
        raise Conflict("A scan of this version is already queued or running.", fields={"version": ["scan running"]})
    before = version.snapshot()
    if version.status != ModelVersion.Status.PENDING_SCAN:
        version.transition_to(ModelVersion.Status.PENDING_SCAN)
        version.save(update_fields=["status", "updated_at"])
    scan = ArtifactScan.objects.create(version=version)
    audit_event_record(actor=actor, verb="scan.requested", target=version, before=before, after=version.snapshot())
    transaction.on_commit(lambda: _queue_scan(scan.pk))
    return scan


@transaction.atomic
def artifactscan_begin(*, actor: Actor, scan_id: int) -> ArtifactScan | None:
    """Mark a queued scan as running; None when another worker took it (tasks are delivered at least once)."""
    scan = ArtifactScan.objects.select_for_update(of=("self",)).select_related("version__model").filter(
        pk=scan_id).first()
    if scan is None or scan.status != ArtifactScan.Status.QUEUED:
        return None
    scan.status, scan.started_at = ArtifactScan.Status.RUNNING, timezone.now()
    scan.save(update_fields=["status", "started_at", "updated_at"])
    version = scan.version
    audit_event_record(actor=actor, verb="scan.started", target=version, after={"scan": scan.pk, "status": scan.status})
    return scan


@transaction.atomic
def artifactscan_complete(*, actor: Actor, scan_id: int, result: Any = None, error: str = "") -> ArtifactScan:
    """Record a scan's findings and decide the version: ready, or blocked by a critical or high finding."""
    scan = ArtifactScan.objects.select_for_update().select_related("version__model").get(pk=scan_id)
    version = ModelVersion.objects.select_for_update().get(pk=scan.version_id)
    require(actor, "scan.override", version)  # only the system (or a platform admin) records scan results
    before = version.snapshot()
    scan.finished_at = timezone.now()
    if error:
        scan.status, scan.error = ArtifactScan.Status.ERROR, error[:5000]
    else:
        ScanFinding.objects.bulk_create([
            ScanFinding(scan=scan, severity=f.severity, scanner=f.scanner[:50], file=f.file[:500],
                        code=f.code[:100], message=f.message[:5000])
            for f in result.findings
        ])
        scan.files_scanned = result.files_scanned
        scan.scanners = result.scanners
        scan.max_severity = result.max_severity or ""
        scan.status = ArtifactScan.Status.BLOCKED if result.blocked else ArtifactScan.Status.PASSED
        if version.status == ModelVersion.Status.PENDING_SCAN:
            version.transition_to(ModelVersion.Status.BLOCKED if result.blocked else ModelVersion.Status.READY)
            version.status_message = (f"Blocked by the artifact scan ({scan.max_severity} finding)."
                                      if result.blocked else "")
            version.save(update_fields=["status", "status_message", "updated_at"])
    scan.save()
    audit_event_record(actor=actor, verb="scan.completed", target=version, before=before,
                       after={**version.snapshot(), "scan": scan.pk, "scan_status": scan.status,
                              "max_severity": scan.max_severity, "findings": scan.findings.count()})
    return scan


@transaction.atomic
def artifactscan_override(*, actor: Actor, scan_id: int, justification: str) -> ArtifactScan:
    """A platform admin releases a blocked version, with a written justification."""
    scan = ArtifactScan.objects.select_for_update().select_related("version__model").filter(pk=scan_id).first()
    if scan is None:
        raise NotFound("Scan not found.")
    version = ModelVersion.objects.select_for_update().get(pk=scan.version_id)
    require(actor, "model.view", version)
    require(actor, "scan.override", version)
    justification = (justification or "").strip()
    if len(justification) < 20:
        raise field_error("justification", "Write at least 20 characters: why is this finding acceptable?")
    _validate_text("justification", justification, 5000)
    if scan.status != ArtifactScan.Status.BLOCKED or version.status != ModelVersion.Status.BLOCKED:
        raise Conflict("Only the blocking scan of a blocked version can be overridden.",
                       fields={"scan": [f"scan is {scan.status}, version is {version.status}"]})
    before = version.snapshot()
    scan.overridden_by, scan.override_justification, scan.overridden_at = actor.user, justification, timezone.now()
    scan.save()
    version.transition_to(ModelVersion.Status.READY)
    version.status_message = f"Released by {actor.name} despite the scan: {justification[:200]}"
    version.save(update_fields=["status", "status_message", "updated_at"])
    audit_event_record(actor=actor, verb="scan.overridden", target=version, before=before, after=version.snapshot(),
                       reason=justification)
    return scan


@transaction.atomic
def modelversion_archive(*, actor: Actor, version_id: int, reason: str = "") -> ModelVersion:
    """Archive a version: it keeps its history but takes no alias and no deployment."""
    found = ModelVersion.objects.filter(pk=version_id).values_list("model_id", flat=True).first()
    if found is None:
        raise NotFound("Model version not found.")
    # The model's lock first, as alias_set and the sync's alias check take it: its aliases change here.
    RegisteredModel.objects.select_for_update().filter(pk=found).first()
    version = ModelVersion.objects.select_for_update().select_related("model").get(pk=version_id)
    require(actor, "model.update", version)
    reason = _validate_text("reason", reason, 2000)  # before MLflow's aliases are touched
    if version.model.alias_history.filter(version=version, removed_at__isnull=True,
                                          alias__in=settings.MODELPLANE_PRODUCTION_ALIASES).exists():
        raise Conflict("This version holds a production alias; promote another version first.",
                       fields={"version": ["holds a production alias"]})
    before = version.snapshot()
    version.transition_to(ModelVersion.Status.ARCHIVED)
    version.save(update_fields=["status", "updated_at"])
    for assignment in version.model.alias_history.filter(version=version, removed_at__isnull=True):
        _alias_move(actor=actor, model=version.model, alias=assignment.alias, version=None,
                    reason="version archived")
    audit_event_record(actor=actor, verb="modelversion.archived", target=version, before=before,
                       after=version.snapshot(), reason=reason)
    return version


# ----------------------------------------------------------------------------------------------- profiles

def _profile_record(*, actor: Actor, version_id: int, path: Path, source: str) -> ReferenceProfile:
    from apps.registry.profiling import profile_file

    profile = profile_file(path, max_bytes=settings.MODELPLANE_UPLOAD_MAX_BYTES)  # ProfileInputError is a 400
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().select_related("model").filter(pk=version_id).first()
        if version is None:
            raise NotFound("Model version not found.")
        require(actor, "model.update", version)
        record = ReferenceProfile.objects.create(version=version, source=source[:500],
                                                 row_count=profile["row_count"], features=profile)
        audit_event_record(actor=actor, verb="profile.created", target=version,
                           after={"profile": record.pk, "source": record.source, "rows": record.row_count,
                                  "features": sorted(profile["features"])})
    return record


def referenceprofile_create_from_upload(*, actor: Actor, version_id: int, upload_path: Path,
                                        filename: str) -> ReferenceProfile:
    """Profile an uploaded reference file (CSV or Parquet) for a version; drift compares against it."""
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None:
        raise NotFound("Model version not found.")
    require(actor, "model.update", version)  # before reading a byte of the file
    return _profile_record(actor=actor, version_id=version_id, path=upload_path,
                           source=f"upload:{Path(filename).name}")


def referenceprofile_create_from_run(*, actor: Actor, version_id: int, artifact_path: str) -> ReferenceProfile:
    """Profile a CSV or Parquet file that the version's run logged as an artifact (e.g. its training data)."""
    import mlflow

    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None:
        raise NotFound("Model version not found.")
    require(actor, "model.update", version)
    if not version.run_id:
        raise field_error("artifact_path", "This version has no MLflow run to read a dataset from.")
    artifact_path = (artifact_path or "").strip().strip("/")
    if not artifact_path or ".." in PurePosixPath(artifact_path).parts:
        raise field_error("artifact_path", "A relative path of a file in the run's artifacts.")
    with tempfile.TemporaryDirectory(prefix="mp-profile-") as tmp:
        missing = field_error("artifact_path", f"The run has no artifact {artifact_path!r}.", code="does_not_exist")
        with mlf.mlflow_call(f"downloading {artifact_path}", not_found=missing):
            local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=artifact_path,
                                                        dst_path=tmp, tracking_uri=settings.MLFLOW_TRACKING_URI)
        if not Path(local).is_file():
            raise field_error("artifact_path", "That artifact is a directory; name a CSV or Parquet file.")
        return _profile_record(actor=actor, version_id=version_id, path=Path(local),
                               source=f"runs:/{version.run_id}/{artifact_path}")


# ----------------------------------------------------------------------------------------------- webhooks

WEBHOOK_NAME = "modelplane-registry-sync"
WEBHOOK_EVENTS = ["model_version.created", "registered_model.created", "model_version_alias.created",
                  "model_version_alias.deleted"]


def mlflow_webhook_ensure(*, actor: Actor, url: str, secret: str) -> dict[str, Any]:
    """Point MLflow's registry webhook at Modelplane (create it, or update it in place). Idempotent.

    MLflow then calls ``url`` (``/api/v1/hooks/mlflow/``) when a version or alias changes, and the receiver
    queues a sync at once; polling stays as the fallback. The MLflow server must allow http and loopback
    targets for a local setup (MLFLOW_WEBHOOK_ALLOWED_SCHEMES, MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS): standalone
    sets both for the MLflow it runs.
    """
    require(actor, "backend.manage")
    if not secret:
        raise field_error("secret", "Set MODELPLANE_MLFLOW_WEBHOOK_SECRET first; MLflow signs each call with it.")
    if not re.match(r"^https?://", url or ""):
        raise field_error("url", "An http(s) URL of Modelplane's /api/v1/hooks/mlflow/.")
    c = mlf.client()
    with mlf.mlflow_call("configuring MLflow's webhook"):
        existing = next((w for w in c.list_webhooks() if w.name == WEBHOOK_NAME), None)
        if existing is None:
            hook = c.create_webhook(name=WEBHOOK_NAME, url=url, events=WEBHOOK_EVENTS, secret=secret,
                                    description="Modelplane adopts new versions at once (registry sync).")
            verb = "mlflow.webhook_created"
        else:
            hook = c.update_webhook(existing.webhook_id, url=url, events=WEBHOOK_EVENTS, secret=secret,
                                    status="ACTIVE")
            verb = "mlflow.webhook_updated"
    state = {"webhook_id": hook.webhook_id, "url": url, "events": WEBHOOK_EVENTS}
    with transaction.atomic():
        audit_event_record(actor=actor, verb=verb, target="mlflow.webhook", target_id=hook.webhook_id,
                           target_repr=WEBHOOK_NAME, after=state)
    return state
