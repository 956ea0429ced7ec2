"""A real MLflow tracking server for the registry tests: PostgreSQL backend store, artifacts in a temp folder.

One server per test session (it takes ~10-20 s to start here). Each test that uses it gets
``settings.MLFLOW_TRACKING_URI`` pointed at it. Model names carry a per-test prefix, so tests never see each
other's MLflow objects even though MLflow itself is not rolled back between tests.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin_dsn() -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return f"host={db['HOST']} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres" + (
        f" password={db['PASSWORD']}" if db.get("PASSWORD") else "")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, django_db_blocker):
    from django.conf import settings

    dbname = f"mlflow_test_{uuid.uuid4().hex[:10]}"
    with django_db_blocker.unblock(), psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db = settings.DATABASES["default"]
    store = (f"postgresql+psycopg://{db['USER']}{':' + db['PASSWORD'] if db.get('PASSWORD') else ''}"
             f"@{db['HOST']}:{db['PORT'] or 5432}/{dbname}")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    log = (root / "mlflow.log").open("w")
    proc = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", store, "--artifacts-destination",
         str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            pytest.fail("MLflow did not start: " + (root / "mlflow.log").read_text()[-3000:])
        time.sleep(0.5)
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()
    with django_db_blocker.unblock(), psycopg.connect(_admin_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def mlflow_uri(mlflow_server, settings, monkeypatch):
    settings.MLFLOW_TRACKING_URI = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    import mlflow

    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


@pytest.fixture
def unique():
    """A per-test prefix for MLflow names (MLflow is shared by the session and not rolled back)."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def logged_run(mlflow_uri, unique):
    """A real MLflow run with a logged scikit-learn model, parameters, metrics and a training dataset."""
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"amount": rng.random(60) * 100, "age": rng.integers(18, 80, 60).astype(float)})
    target = (frame.amount > 50).astype(int)
    mlflow.set_experiment(f"{unique}-experiment")
    with mlflow.start_run() as run:
        model = LogisticRegression().fit(frame, target)
        mlflow.log_params({"C": 1.0, "solver": "lbfgs"})
        mlflow.log_metrics({"accuracy": 0.93, "auc": 0.97})
        dataset = mlflow.data.from_pandas(frame.assign(label=target), source="s3://example/train.csv",
                                          name="train", targets="label")
        mlflow.log_input(dataset, context="training")
        mlflow.set_tag("mlflow.source.git.commit", "0123456789abcdef0123456789abcdef01234567")
        mlflow.sklearn.log_model(model, name="model", input_example=frame.head(3),
                                 serialization_format="cloudpickle")
    return run.info.run_id
