"""Fixtures for serving tests: a real scikit-learn MLflow model on disk, serving rows pointing at it, and a replica
directory whose model-server processes are always killed at teardown (even when a test fails).

- ``sklearn_model_dir`` (session): ``mlflow.sklearn.save_model`` of a tiny classifier with a signature and an
  input example. A local path is a valid model URI, so no tracking server is needed; ``replicas.py`` serves a
  version whose ``source`` is such a path directly.
- ``replica_dir``: points ``MODELPLANE_REPLICA_DIR`` at a temporary directory and kills every process started
  under it at teardown.
- ``serving_rows``: a factory of Team / RegisteredModel / ModelVersion / Environment / Deployment / Variant rows.
- ``kill_replica_processes(root)``: SIGKILL every process whose replica scope lies under ``root``.
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

# Two rows of the model's input, in MLflow's scoring format, and the classes the model predicts for them.
SCORING_ROWS = {"dataframe_records": [{"amount": 5.0, "age": 30.0}, {"amount": 95.0, "age": 60.0}]}
EXPECTED_PREDICTIONS = [0, 1]


def kill_replica_processes(root: str | Path) -> list[int]:
    """SIGKILL every process group whose MODELPLANE_REPLICA_SCOPE names ``root`` (the directory itself, or the
    directory and a database). Returns the pids found."""
    from apps.deployments.backends.local import REPLICA_SCOPE_VAR, proc_environ, proc_pids, proc_stat

    root = str(Path(root).resolve())
    found = []
    for pid in proc_pids():
        scope = proc_environ(pid).get(REPLICA_SCOPE_VAR, "")
        if scope == root or scope.startswith(root + "|"):
            found.append(pid)
    for pid in found:
        stat = proc_stat(pid)
        try:
            if stat is not None and stat.pgrp == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _reap_quietly()
    return found


def _reap_quietly() -> None:
    """Reap the killed servers that were this process's children, so none lingers as a zombie."""
    from apps.deployments.backends import local

    deadline = time.monotonic() + 5
    while local._children and time.monotonic() < deadline:
        local._reap_children()
        if local._children:
            time.sleep(0.05)


def process_running(pid: int) -> bool:
    """A live process (a zombie is not one)."""
    from apps.deployments.backends.local import proc_stat

    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z"


@pytest.fixture(scope="session")
def sklearn_model_dir(tmp_path_factory) -> Path:
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.random(80) * 100, "age": rng.integers(18, 80, 80).astype(float)})
    target = (frame.amount > 50).astype(int)
    model = LogisticRegression().fit(frame, target)
    path = tmp_path_factory.mktemp("model") / "model"
    mlflow.sklearn.save_model(model, str(path), signature=infer_signature(frame, model.predict(frame)),
                              input_example=frame.head(2))
    return path


@pytest.fixture
def replica_dir(tmp_path, settings) -> Path:
    root = (tmp_path / "replicas").resolve()
    settings.MODELPLANE_REPLICA_DIR = root
    yield root
    kill_replica_processes(root)


@pytest.fixture
def serving_rows(db):
    """``make(model_source=..., replicas=1, **deployment_fields) -> Variant`` with every row it needs."""
    from apps.accounts.models import Team
    from apps.deployments.models import Deployment, Environment, Variant
    from apps.registry.models import ModelVersion, RegisteredModel

    def make(*, model_source: str | Path = "", replicas: int = 1, backend: str = "local", **deployment_fields):
        tag = uuid.uuid4().hex[:8]
        team = Team.objects.create(name=f"Serving {tag}", slug=f"serving-{tag}")
        model = RegisteredModel.objects.create(team=team, name=f"m-{tag}", latest_version=1)
        version = ModelVersion.objects.create(model=model, version=1, status=ModelVersion.Status.READY,
                                              origin=ModelVersion.Origin.SYNC, source=str(model_source))
        environment = Environment.objects.create(name=f"env-{tag}", backend=backend)
        deployment = Deployment.objects.create(team=team, environment=environment, model=model,
                                               name=f"d-{tag}", replicas=replicas, **deployment_fields)
        return Variant.objects.create(deployment=deployment, name="v1", model_version=version, replicas=replicas)

    return make
