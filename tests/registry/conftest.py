"""A real MLflow tracking server for the registry tests (tests/mlflow_server.py starts it).

One server per test session (it takes ~10-20 s to start here). Each test that uses it gets
``settings.MLFLOW_TRACKING_URI`` pointed at it. Model names carry a per-test prefix, so tests never see each
other's MLflow objects even though MLflow itself is not rolled back between tests.
"""
from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from tests.mlflow_server import running_mlflow


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, django_db_blocker):
    from django.conf import settings

    db = settings.DATABASES["default"]
    password = quote(db.get("PASSWORD") or "", safe="")
    server = f"postgresql://{quote(db['USER'], safe='')}:{password}@{db['HOST']}:{db['PORT'] or 5432}/postgres"
    with django_db_blocker.unblock(), running_mlflow(server, tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


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
