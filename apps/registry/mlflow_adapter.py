"""The one place that talks to MLflow's tracking server and model registry (through ``MlflowClient``).

Every call goes through :func:`mlflow_call`, which turns MLflow's failures into Modelplane's errors: a missing
run or version is a 400/404 that names the field, an unreachable server is a 503. MLflow's client retries with
exponential backoff by default (seven times, minutes in all); settings cap that so a user waits seconds, not
minutes, when MLflow is down.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from apps.core.errors import NotFound, ServiceUnavailable, ValidationFailed, field_error


def client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI, registry_uri=settings.MLFLOW_TRACKING_URI)


def _is_unreachable(exc: BaseException) -> bool:
    import requests

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                                ConnectionError, TimeoutError)):
            return True
        text = str(current)
        if "Max retries exceeded" in text or "Connection refused" in text or "timed out" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def mlflow_call(what: str, *, not_found: ValidationFailed | NotFound | None = None) -> Iterator[None]:
    """Run MLflow calls; map "does not exist" onto ``not_found`` and an unreachable server onto a 503."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if _is_unreachable(exc):
            raise ServiceUnavailable(
                f"MLflow is unreachable at {settings.MLFLOW_TRACKING_URI} ({what}); try again shortly.",
                code="mlflow_unavailable") from exc
        code = getattr(exc, "error_code", "")
        if not_found is not None and (code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower()
                                      or "Failed to download artifacts" in str(exc)):
            raise not_found from exc
        if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            raise ValidationFailed(f"MLflow refused {what}: {exc.message}", code="mlflow_invalid") from exc
        raise ServiceUnavailable(f"MLflow failed while {what}: {exc.message}", code="mlflow_error") from exc
    except Exception as exc:
        if _is_unreachable(exc):
            raise ServiceUnavailable(
                f"MLflow is unreachable at {settings.MLFLOW_TRACKING_URI} ({what}); try again shortly.",
                code="mlflow_unavailable") from exc
        raise


def _ms_to_datetime(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


@dataclass
class ModelFiles:
    """What an MLflow model directory's MLmodel file says: flavors, signature, input example."""

    flavors: dict[str, Any]
    signature: dict[str, Any] | None
    input_example: Any
    mlflow_model_id: str = ""
    run_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def parse_mlmodel(text: str) -> dict[str, Any]:
    """Parse an MLmodel file (YAML, safe loader only); raises ValueError when it is not one."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict) or not data["flavors"]:
        raise ValueError("the MLmodel file has no flavors")
    return data


def signature_of(mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    raw = mlmodel.get("signature")
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for part in ("inputs", "outputs", "params"):
        value = raw.get(part)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[part] = value
    return out


def model_files_read(source: str, *, field_name: str = "artifact_path") -> ModelFiles:
    """Read the MLmodel file (and the input example) at an MLflow model URI, without loading the model."""
    import mlflow

    not_found = field_error(field_name, f"{source} is not an MLflow model (no MLmodel file there).",
                            code="not_a_model")
    with tempfile.TemporaryDirectory(prefix="mp-mlmodel-") as tmp:
        with mlflow_call(f"reading {source}", not_found=not_found):
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/MLmodel",
                                                       dst_path=tmp, tracking_uri=settings.MLFLOW_TRACKING_URI)
        try:
            mlmodel = parse_mlmodel(Path(path).read_text())
        except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise field_error(field_name, f"{source}/MLmodel is not a valid MLmodel file ({exc}).",
                              code="not_a_model") from exc
        example = None
        info = mlmodel.get("saved_input_example_info") or {}
        example_path = info.get("artifact_path") if isinstance(info, dict) else None
        if example_path:
            try:
                with mlflow_call("reading the input example"):
                    ex = mlflow.artifacts.download_artifacts(artifact_uri=f"{source.rstrip('/')}/{example_path}",
                                                             dst_path=tmp, tracking_uri=settings.MLFLOW_TRACKING_URI)
                if Path(ex).stat().st_size <= 1_000_000:
                    example = json.loads(Path(ex).read_text())
            except (ValueError, OSError, ServiceUnavailable):
                example = None  # an example is a convenience; its absence blocks nothing
    return ModelFiles(flavors=mlmodel.get("flavors") or {}, signature=signature_of(mlmodel), input_example=example,
                      mlflow_model_id=str(mlmodel.get("model_id") or ""), run_id=str(mlmodel.get("run_id") or ""),
                      raw=mlmodel)


def run_snapshot(run_id: str, *, field_name: str = "run_id") -> dict[str, Any]:
    """The lineage facts of a run: experiment, parameters, metrics, tags, input datasets, source commit."""
    not_found = field_error(field_name, f"No MLflow run with id {run_id!r}.", code="does_not_exist")
    c = client()
    with mlflow_call(f"reading run {run_id}", not_found=not_found):
        run = c.get_run(run_id)
        experiment = c.get_experiment(run.info.experiment_id)
    tags = dict(run.data.tags)
    datasets = []
    for item in run.inputs.dataset_inputs or []:
        ds = item.dataset
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        datasets.append({"name": ds.name, "digest": ds.digest, "source_type": ds.source_type,
                         "source": _json_or_text(ds.source), "schema": _json_or_text(ds.schema),
                         "profile": _json_or_text(ds.profile), "context": context})
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "user": run.info.user_id,
        "start_time": _iso(run.info.start_time),
        "end_time": _iso(run.info.end_time),
        "experiment_id": experiment.experiment_id,
        "experiment_name": experiment.name,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": {k: v for k, v in tags.items() if not k.startswith("mlflow.log-model")},
        "datasets": datasets,
        "source": {
            "name": tags.get("mlflow.source.name", ""),
            "type": tags.get("mlflow.source.type", ""),
            "git_commit": tags.get("mlflow.source.git.commit", ""),
            "git_branch": tags.get("mlflow.source.git.branch", ""),
            "git_repo_url": tags.get("mlflow.source.git.repoURL", ""),
        },
    }


def _iso(ms: int | None) -> str | None:
    dt = _ms_to_datetime(ms)
    return dt.isoformat() if dt else None


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def registered_model_ensure(name: str, *, description: str = "", tags: dict[str, str] | None = None) -> None:
    """Create the registered model in MLflow unless it exists."""
    from mlflow.exceptions import MlflowException

    c = client()
    with mlflow_call(f"creating registered model {name}"):
        try:
            c.create_registered_model(name, tags=tags or None, description=description or None)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise


def model_version_create(name: str, *, source: str, run_id: str | None, description: str = "",
                         tags: dict[str, str] | None = None):
    c = client()
    with mlflow_call(f"creating a version of {name}"):
        return c.create_model_version(name, source=source, run_id=run_id or None, description=description or None,
                                      tags=tags or None, await_creation_for=60)


def model_version_get(name: str, version: int):
    c = client()
    with mlflow_call(f"reading {name} v{version}", not_found=NotFound(f"MLflow has no {name} v{version}.")):
        return c.get_model_version(name, str(version))


def alias_set(name: str, alias: str, version: int) -> None:
    with mlflow_call(f"setting alias {alias} on {name}"):
        client().set_registered_model_alias(name, alias, str(version))


def alias_delete(name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    with mlflow_call(f"removing alias {alias} from {name}"):
        try:
            client().delete_registered_model_alias(name, alias)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise


def versions_search(*, max_results: int = 1000) -> list:
    """Every model version in MLflow (newest first), for the sync task."""
    c = client()
    out: list = []
    token = None
    with mlflow_call("listing model versions"):
        while True:
            page = c.search_model_versions(max_results=min(max_results, 1000), page_token=token,
                                           order_by=["creation_timestamp DESC"])
            out.extend(page)
            token = getattr(page, "token", None)
            if not token or len(out) >= max_results:
                break
    return out


def aliases_by_model() -> dict[str, dict[str, int]]:
    """Every registered model's aliases in MLflow, ``{name: {alias: version}}``, for the sync's drift check.

    search_registered_models carries each model's aliases, so this is one call per 1000 models, not one per model.
    """
    c = client()
    out: dict[str, dict[str, int]] = {}
    token = None
    with mlflow_call("listing registered models"):
        while True:
            page = c.search_registered_models(max_results=1000, page_token=token)
            for rm in page:
                out[rm.name] = {alias: int(version) for alias, version in (rm.aliases or {}).items()}
            token = getattr(page, "token", None)
            if not token:
                break
    return out


def registered_model_aliases(name: str) -> dict[str, int] | None:
    """One model's aliases in MLflow now (``{alias: version}``); None when MLflow has no such model."""
    from mlflow.exceptions import MlflowException

    with mlflow_call(f"reading the aliases of {name}"):
        try:
            rm = client().get_registered_model(name)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
    return {alias: int(version) for alias, version in (rm.aliases or {}).items()}


def registered_model_tags(name: str) -> dict[str, str]:
    with mlflow_call(f"reading registered model {name}", not_found=NotFound(f"MLflow has no model {name}.")):
        return dict(client().get_registered_model(name).tags)


def artifacts_download(name: str, version: int, dst: Path) -> Path:
    """Download a version's artifacts to ``dst`` for the scanner (bytes only; nothing is loaded)."""
    import mlflow

    with mlflow_call(f"downloading {name} v{version}",
                     not_found=NotFound(f"MLflow has no artifacts for {name} v{version}.")):
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst),
                                                        tracking_uri=settings.MLFLOW_TRACKING_URI))


def log_uploaded_model(directory: Path, *, model_name: str, experiment_name: str) -> tuple[str, str]:
    """Log an uploaded MLflow model directory to a new run; returns (run_id, source URI)."""
    c = client()
    with mlflow_call("logging the uploaded model"):
        experiment = c.get_experiment_by_name(experiment_name)
        experiment_id = experiment.experiment_id if experiment else c.create_experiment(experiment_name)
        run = c.create_run(experiment_id, run_name=f"upload-{model_name}",
                           tags={"modelplane.origin": "upload", "modelplane.model": model_name})
        try:
            c.log_artifacts(run.info.run_id, str(directory), artifact_path="model")
        except Exception:
            c.set_terminated(run.info.run_id, status="FAILED")
            raise
        c.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id, f"runs:/{run.info.run_id}/model"
