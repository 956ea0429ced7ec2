"""Shared fixtures. Tests talk to a real PostgreSQL and Redis.

Where ``DATABASE_URL`` / ``REDIS_URL`` are set, or PostgreSQL and Redis answer on their usual loopback ports
(CI's machine runs both), those are used; otherwise the embedded ones that ``standalone`` uses are started
for the session (see ``apps.core.embedded``). ``MODELPLANE_TEST_EMBEDDED=1`` forces the embedded ones.
"""
from __future__ import annotations

import os
import socket
import uuid

import pytest


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pytest_configure(config):
    if os.environ.get("MODELPLANE_TEST_EMBEDDED") == "1":
        # Forced: the embedded services, even where others answer or are named.
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("REDIS_URL", None)
    else:
        if not os.environ.get("DATABASE_URL") and _answers("127.0.0.1", 5432):
            os.environ["DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/modelplane"
        if not os.environ.get("REDIS_URL") and _answers("127.0.0.1", 6379):
            os.environ["REDIS_URL"] = "redis://127.0.0.1:6379/15"
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        from apps.core import embedded

        services = embedded.start_for_tests()
        config._modelplane_embedded = services
        os.environ.setdefault("DATABASE_URL", services.database_url)
        os.environ.setdefault("REDIS_URL", services.redis_url)
        _point_settings_at_the_environment()
    _isolate_celery()


def _isolate_celery():
    """Celery's tasks in a queue of this session's own, on a Redis database apart from the cache's
    (controlplane/settings/test.py reads both names; the workers and beat that tests start inherit them).

    Otherwise a worker that another session started on the same Redis takes this session's tasks (and looks for
    their rows in its own database), and the cache.clear() of _clean_cache, a FLUSHDB, drops tasks that wait for
    a worker, also another session's.
    """
    from urllib.parse import urlsplit, urlunsplit

    from django.conf import settings

    parts = urlsplit(os.environ["REDIS_URL"])
    os.environ.setdefault("MODELPLANE_TEST_BROKER_URL", urlunsplit(parts._replace(path="/13")))
    os.environ.setdefault("MODELPLANE_TEST_CELERY_QUEUE", f"test-{os.getpid()}")
    settings.CELERY_BROKER_URL = os.environ["MODELPLANE_TEST_BROKER_URL"]
    settings.CELERY_TASK_DEFAULT_QUEUE = os.environ["MODELPLANE_TEST_CELERY_QUEUE"]


def _point_settings_at_the_environment():
    """pytest-django loads the settings before any conftest runs, so they were read without the URLs set
    above: point the database, cache and broker at them. In place: Django's connection handler already
    holds the DATABASES dict."""
    import dj_database_url
    from django.conf import settings

    database = dj_database_url.parse(os.environ["DATABASE_URL"])
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        settings.DATABASES["default"][key] = database[key]
    redis_url = os.environ["REDIS_URL"]
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = redis_url
    settings.MODELPLANE_GATEWAY_REDIS_URL = redis_url
    settings.CACHES["default"]["LOCATION"] = redis_url


def pytest_unconfigure(config):
    try:  # tasks that no worker of this session took (queued on commit by transactional tests) go with it
        import redis

        redis.Redis.from_url(os.environ["MODELPLANE_TEST_BROKER_URL"]).delete(
            os.environ["MODELPLANE_TEST_CELERY_QUEUE"])
    except Exception:  # noqa: BLE001, S110 - tidying only; Redis may already be gone
        pass
    services = getattr(config, "_modelplane_embedded", None)
    if services is not None:
        services.stop()


@pytest.fixture(scope="session", autouse=True)
def _flush_past_the_audit_trigger():
    """Transactional tests end with a flush (TRUNCATE), which the audit table's trigger refuses by design.

    Only here, in the test harness, the flush runs with ``session_replication_role = replica`` (a superuser
    setting that keeps ordinary triggers from firing) so that test databases can be reset. The trigger tests
    themselves run with the trigger in force.
    """
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        with self.connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
        try:
            original(self, sql_list)
        finally:
            with self.connection.cursor() as cursor:
                cursor.execute("SET session_replication_role = origin")

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with an empty cache (idempotency keys, throttles, login lockouts).

    Only the cache's own keys go (its KEY_PREFIX), not the whole Redis database as cache.clear() would: streams,
    routes and queues of tests running at the same time (another session, a helper's run) live there too."""
    from django.conf import settings
    from django.core.cache import cache

    prefix = settings.CACHES["default"].get("KEY_PREFIX") or ""
    client = cache._cache.get_client(None, write=True)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000)) if prefix else None
    if keys is None:
        cache.clear()
    elif keys:
        client.delete(*keys)
    yield


@pytest.fixture
def make_user(db):
    from apps.accounts.models import Membership, Team, User

    def make(username: str, *, team: Team | None = None, roles: tuple[str, ...] = (), platform_admin=False,
             password: str = "pw-for-tests-123"):
        user = User.objects.create_user(username=username, password=password, is_platform_admin=platform_admin)
        for role in roles:
            Membership.objects.create(user=user, team=team, role=role)
        return user

    return make


@pytest.fixture
def teams(db):
    """Two teams: the one under test and another whose objects must stay invisible."""
    from apps.accounts.models import Team

    return Team.objects.create(name="Fraud", slug="fraud"), Team.objects.create(name="Recs", slug="recs")


@pytest.fixture
def actor_for():
    from apps.core.actors import Actor

    return lambda user, **kw: Actor.for_user(user, **kw)


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


# ------------------------------------------------------------------ a real MLflow server (registry and serving)

@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory, django_db_blocker):
    """One real MLflow tracking server per test session (tests/mlflow_server.py; ~10-20 s to start here)."""
    from urllib.parse import quote

    from django.conf import settings

    from tests.mlflow_server import running_mlflow

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
