"""The registry sync end to end: a real Celery beat sends "registry.sync" every MODELPLANE_SYNC_INTERVAL_SECONDS
(lowered to 2 here) and a real worker runs it; a version created straight through the mlflow client appears as
a Modelplane version within 30 s (the promise of the sync; webhooks make it faster where MLflow can call us)."""
from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.core.cache import cache

from apps.accounts.models import Team
from apps.registry.models import ModelVersion
from apps.registry.tasks import SYNC_REPORT_KEY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SYNC_DEADLINE_SECONDS = 30


def test_a_version_created_in_mlflow_appears_within_30_seconds(celery_process, logged_run, unique):
    # A team of the test's own: models that other tests of the session left in MLflow name other teams, so the
    # sync adopts only this test's model (and queues only its scan).
    team = Team.objects.create(name=f"Sync {unique}", slug=f"sync-{unique}")
    celery_process("worker")
    celery_process("beat", {"MODELPLANE_SYNC_INTERVAL_SECONDS": "2"})
    deadline = time.monotonic() + 120
    while cache.get(SYNC_REPORT_KEY) is None:  # beat and worker are up: a first pass has reported
        assert time.monotonic() < deadline, "no sync pass within 120 s of starting beat and the worker"
        time.sleep(0.5)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.MLFLOW_TRACKING_URI)
    name = f"{unique}-direct"
    client.create_registered_model(name, tags={settings.MODELPLANE_TEAM_TAG: team.slug})
    created = time.monotonic()
    client.create_model_version(name, source=f"runs:/{logged_run}/model", run_id=logged_run)

    while not ModelVersion.objects.filter(model__name=name, version=1).exists():
        waited = time.monotonic() - created
        assert waited < SYNC_DEADLINE_SECONDS, f"{name} v1 not adopted {waited:.0f} s after MLflow created it"
        time.sleep(0.25)
    version = ModelVersion.objects.get(model__name=name, version=1)
    assert version.origin == "sync" and version.model.team == team and version.run_id == logged_run
