"""Fixtures for the prediction-log tests: the real Redis (db 15) with a stream of its own per test, and a clean
prediction-log table. Records in the gateway's shape come from tests/monitoring/records.py.

The prediction log's table is unmanaged (partitioned by day), so Django's flush after a transactional test
does not empty it: ``clean_log`` truncates it.
"""
from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def redis_client():
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def stream(redis_client):
    """A stream name of this test's own (and its dead-letter stream), deleted afterwards."""
    from apps.monitoring.ingest import dead_letter_stream

    name = f"test:predictions:{uuid.uuid4().hex[:12]}"
    yield name
    redis_client.delete(name, dead_letter_stream(name))


@pytest.fixture(autouse=True)
def _forget_partitions():
    """Partitions created inside a rolled-back test transaction are gone; so must be the ingest's memory."""
    from apps.monitoring import ingest

    ingest.forget_known_partitions()
    yield
    ingest.forget_known_partitions()


@pytest.fixture
def clean_log(django_db_blocker):
    from django.db import connection

    def truncate():
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("TRUNCATE monitoring_predictionrecord")

    truncate()
    yield
    truncate()
