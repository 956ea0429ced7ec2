"""Shared fixtures. Tests talk to a real PostgreSQL and Redis.

Where ``DATABASE_URL`` / ``REDIS_URL`` are set, or PostgreSQL and Redis answer on their usual loopback ports
(CI's machine runs both), those are used; otherwise the embedded ones that ``standalone`` uses are started
for the session (see ``apps.core.embedded``). ``MODELPLANE_TEST_EMBEDDED=1`` forces the embedded ones.
"""
from __future__ import annotations

import os
import socket

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
    settings.CACHES["default"]["LOCATION"] = redis_url


def pytest_unconfigure(config):
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
    """Each test starts with an empty cache (idempotency keys, throttles, login lockouts)."""
    from django.core.cache import cache

    cache.clear()
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
