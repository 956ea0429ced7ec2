"""Partitions of the prediction log are created ahead and dropped after the retention, with an audit event;
rollups and the ingest ledger are pruned; only the system (or a platform admin) may do it."""
from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.errors import PermissionDenied
from apps.monitoring import services
from apps.monitoring.models import IngestedBatch, PredictionRollup
from apps.monitoring.services import partition_name, predictionlog_partitions

pytestmark = pytest.mark.django_db

UTC = dt.UTC
SYSTEM = Actor.system("prediction-log-retention")


def insert_row(day: dt.date, request_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO monitoring_predictionrecord (ts, request_id, deployment_id, deployment, latency_ms, "
            "status) VALUES (%s, %s, 12, 'fraud-scorer', 1.0, 200)",
            [dt.datetime(day.year, day.month, day.day, 12, tzinfo=UTC), request_id])


def test_partitions_are_created_ahead_once():
    today = dt.date(2031, 3, 30)
    created = services.predictionlog_partitions_ensure(today=today, ahead=3)
    assert created == [partition_name(today + dt.timedelta(days=i)) for i in range(4)]
    assert services.predictionlog_partitions_ensure(today=today, ahead=3) == []
    found = predictionlog_partitions()
    assert {found[name] for name in created} == {today + dt.timedelta(days=i) for i in range(4)}
    # Each holds exactly its UTC day.
    insert_row(dt.date(2031, 4, 1), "in-april")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM monitoring_predictionrecord "
                       "WHERE request_id = 'in-april'")
        assert cursor.fetchone()[0] == "monitoring_predictionrecord_p20310401"


def test_default_ensure_covers_today_and_the_days_ahead(settings):
    settings.MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS = 2
    services.predictionlog_partitions_ensure()
    today = timezone.now().astimezone(UTC).date()
    names = set(predictionlog_partitions())
    assert {partition_name(today + dt.timedelta(days=i)) for i in range(3)} <= names


def test_partitions_past_retention_are_dropped_with_an_audit_event(settings):
    settings.MODELPLANE_PREDICTION_RETENTION_DAYS = 30
    today = timezone.now().astimezone(UTC).date()
    old = [today - dt.timedelta(days=d) for d in (45, 31)]
    kept = [today - dt.timedelta(days=30), today]
    services.predictionlog_partitions_ensure(days=old + kept)
    for day in old + kept:
        insert_row(day, f"row-{day}")

    dropped = services.predictionlog_partitions_drop_expired(actor=SYSTEM)

    assert dropped == [partition_name(day) for day in old]
    names = set(predictionlog_partitions())
    assert not names & set(dropped)
    assert {partition_name(day) for day in kept} <= names
    with connection.cursor() as cursor:
        for name in dropped:  # dropped, not merely detached
            cursor.execute("SELECT to_regclass(%s)", [name])
            assert cursor.fetchone()[0] is None
        cursor.execute("SELECT request_id FROM monitoring_predictionrecord ORDER BY ts")
        assert [r[0] for r in cursor.fetchall()] == [f"row-{day}" for day in kept]
    event = AuditEvent.objects.get(verb="predictionlog.partitions_dropped")
    assert event.actor_kind == "system" and event.actor_name == "prediction-log-retention"
    assert event.after["dropped"] == dropped and event.after["retention_days"] == 30
    assert event.target_id == "monitoring_predictionrecord"
    # Nothing left to drop: no second event.
    assert services.predictionlog_partitions_drop_expired(actor=SYSTEM) == []
    assert AuditEvent.objects.filter(verb="predictionlog.partitions_dropped").count() == 1


def test_retention_is_refused_to_an_ordinary_user(make_user, teams):
    user = make_user("eng", team=teams[0], roles=("ml_engineer",))
    with pytest.raises(PermissionDenied):
        services.predictionlog_partitions_drop_expired(actor=Actor.for_user(user))
    with pytest.raises(PermissionDenied):
        services.predictionrollup_prune(actor=Actor.for_user(user))


def test_rollups_and_ingest_ledger_are_pruned(settings):
    settings.MODELPLANE_ROLLUP_RETENTION_DAYS = 400
    now = timezone.now()
    old = now - dt.timedelta(days=401)
    recent = now - dt.timedelta(days=399)
    for minute in (old, recent):
        PredictionRollup.objects.create(deployment_id=1, minute=minute.replace(second=0, microsecond=0),
                                        count=1, latency_histogram=[0] * 13)
    assert services.predictionrollup_prune(actor=SYSTEM) == 1
    assert PredictionRollup.objects.get().minute == recent.replace(second=0, microsecond=0)

    batch = IngestedBatch.objects.create(stream="s", consumer="c", first_ms=1, last_ms=2, entry_ids=["1-0"])
    IngestedBatch.objects.create(stream="s", consumer="c", first_ms=3, last_ms=4, entry_ids=["3-0"])
    IngestedBatch.objects.filter(pk=batch.pk).update(created_at=now - services.INGEST_LEDGER_RETENTION
                                                     - dt.timedelta(hours=1))
    assert services.ingestedbatch_prune(actor=SYSTEM) == 1
    assert IngestedBatch.objects.get().entry_ids == ["3-0"]


def test_beat_task_maintains_the_log(settings):
    from apps.monitoring.tasks import maintain_prediction_log

    settings.MODELPLANE_PREDICTION_RETENTION_DAYS = 30
    today = timezone.now().astimezone(UTC).date()
    expired = today - dt.timedelta(days=60)
    services.predictionlog_partitions_ensure(days=[expired])
    report = maintain_prediction_log.apply().get()
    assert partition_name(expired) in report["partitions_dropped"]
    assert partition_name(today + dt.timedelta(days=settings.MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS)) in set(
        predictionlog_partitions())
    assert "monitoring.maintain_prediction_log" in {e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()}
