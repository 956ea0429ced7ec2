"""State changes of the prediction log: its daily partitions and the retention of the log and its rollups.

Writing records is the ingest's job (``apps.monitoring.ingest``); this module keeps the table fit for it:

- ``predictionlog_partitions_ensure`` creates the partitions of given days (by default today and
  ``MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS`` ahead); the ingest calls it for a day it has not seen;
- ``predictionlog_partitions_drop_expired`` detaches and drops the partitions that lie wholly before
  ``MODELPLANE_PREDICTION_RETENTION_DAYS`` and records an audit event naming them;
- ``predictionrollup_prune`` deletes rollups older than ``MODELPLANE_ROLLUP_RETENTION_DAYS`` (row deletes:
  rollups are a few rows per deployment and minute);
- ``ingestedbatch_prune`` forgets the stream ids of batches far older than any entry can stay pending;
- ``predictionlog_maintain`` runs all of them (the hourly beat task ``monitoring.maintain_prediction_log``).

Retention is a system action: only the system actor (or a platform admin) may run it.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.permissions import require
from apps.monitoring.models import PARTITION_PREFIX, IngestedBatch, PredictionRecord, PredictionRollup

PARENT_TABLE = PredictionRecord._meta.db_table
# Serialises partition DDL between ingest workers and the beat task (CREATE ... IF NOT EXISTS still races
# on the catalog when two sessions create the same partition at once).
PARTITION_LOCK = 0x4D50_5052  # "MPPR"
# The stream ids of a committed batch are needed only while one of its entries may still be delivered again
# (pending entries are claimed after a minute); a week is far beyond that.
INGEST_LEDGER_RETENTION = dt.timedelta(days=7)
RETENTION_VERB = "predictionlog.retention"
_PARTITION_RE = re.compile(rf"^{PARTITION_PREFIX}(\d{{8}})$")
UTC = dt.UTC


def utc_today() -> dt.date:
    return timezone.now().astimezone(UTC).date()


def partition_name(day: dt.date) -> str:
    """The partition holding the records of one UTC day."""
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_day(name: str) -> dt.date | None:
    """The day a partition of ours holds; None for a table that does not follow our naming."""
    match = _PARTITION_RE.match(name)
    if not match:
        return None
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return None


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def predictionlog_partitions() -> dict[str, dt.date]:
    """The prediction log's partitions that follow our naming, by name, with the day each holds."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass", [PARENT_TABLE])
        names = [row[0] for row in cursor.fetchall()]
    found = {}
    for name in names:
        day = partition_day(name)
        if day is not None:
            found[name] = day
    return found


def predictionlog_partitions_ensure(*, days: Iterable[dt.date] | None = None, today: dt.date | None = None,
                                    ahead: int | None = None) -> list[str]:
    """Create the daily partitions that are missing; return the names created.

    ``days`` names the days wanted; by default today (UTC) and the next ``ahead`` days
    (``MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS``). Idempotent, and safe when several ingest workers and the
    beat task call it at once (an advisory lock serialises the DDL, which is brief: an empty table).
    """
    if days is None:
        today = today or utc_today()
        ahead = settings.MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS if ahead is None else ahead
        days = [today + dt.timedelta(days=i) for i in range(max(0, ahead) + 1)]
    wanted = sorted(set(days))
    if not wanted:
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITION_LOCK])
        existing = set(predictionlog_partitions())
        for day in wanted:
            name = partition_name(day)
            if name in existing:
                continue
            start, end = _day_start(day), _day_start(day + dt.timedelta(days=1))
            # The name comes from partition_name (a fixed prefix and digits), never from input.
            # Literal bounds: DDL takes no bind parameters.
            cursor.execute(f'CREATE TABLE "{name}" PARTITION OF "{PARENT_TABLE}" '
                           f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
            created.append(name)
    return created


def retention_cutoff_day(*, today: dt.date | None = None, retention_days: int | None = None) -> dt.date:
    """The first day whose records are kept: records before its start are past retention."""
    days = settings.MODELPLANE_PREDICTION_RETENTION_DAYS if retention_days is None else retention_days
    return (today or utc_today()) - dt.timedelta(days=days)


def predictionlog_partitions_drop_expired(*, actor: Actor, today: dt.date | None = None,
                                          retention_days: int | None = None) -> list[str]:
    """Detach and drop every partition wholly older than the retention; return their names.

    A partition of day D holds [D, D+1); it goes when D+1 <= today - retention days, so with 30 days of
    retention the last 30 full days and today are kept. Whole partitions go in one transaction (DETACH, then
    DROP TABLE: no row-by-row delete, no vacuum debt), with one audit event naming them.
    """
    require(actor, RETENTION_VERB)
    days = settings.MODELPLANE_PREDICTION_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = retention_cutoff_day(today=today, retention_days=days)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PARTITION_LOCK])
        # DETACH takes a strong lock on the parent: wait for a running ingest batch, but not forever.
        cursor.execute("SET LOCAL lock_timeout = '30s'")
        expired = sorted((day, name) for name, day in predictionlog_partitions().items()
                         if day + dt.timedelta(days=1) <= cutoff)
        for _day, name in expired:
            cursor.execute(f'ALTER TABLE "{PARENT_TABLE}" DETACH PARTITION "{name}"')
            cursor.execute(f'DROP TABLE "{name}"')
        dropped = [name for _day, name in expired]
        if dropped:
            audit_event_record(
                actor=actor, verb="predictionlog.partitions_dropped", target=PredictionRecord._meta.label_lower,
                target_id=PARENT_TABLE, target_repr="prediction log",
                after={"dropped": dropped, "days": [day.isoformat() for day, _ in expired],
                       "retention_days": days, "kept_from": cutoff.isoformat()},
                reason=f"retention: records older than {days} days")
    return dropped


def predictionrollup_prune(*, actor: Actor, now: dt.datetime | None = None,
                           retention_days: int | None = None) -> int:
    """Delete the rollups older than ``MODELPLANE_ROLLUP_RETENTION_DAYS``; return how many went.

    Not audited: an hourly sliver of aggregates, removed by a rule that is itself in the settings.
    """
    require(actor, RETENTION_VERB)
    days = settings.MODELPLANE_ROLLUP_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = (now or timezone.now()) - dt.timedelta(days=days)
    deleted, _ = PredictionRollup.objects.filter(minute__lt=cutoff).delete()
    return deleted


def ingestedbatch_prune(*, actor: Actor, now: dt.datetime | None = None) -> int:
    """Forget the stream ids of batches older than INGEST_LEDGER_RETENTION; return how many went."""
    require(actor, RETENTION_VERB)
    cutoff = (now or timezone.now()) - INGEST_LEDGER_RETENTION
    deleted, _ = IngestedBatch.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def predictionlog_maintain(*, actor: Actor, today: dt.date | None = None) -> dict:
    """Partitions ahead, retention of the log, its rollups and the ingest ledger: the hourly beat task."""
    created = predictionlog_partitions_ensure(today=today)
    dropped = predictionlog_partitions_drop_expired(actor=actor, today=today)
    rollups = predictionrollup_prune(actor=actor)
    batches = ingestedbatch_prune(actor=actor)
    return {"partitions_created": created, "partitions_dropped": dropped, "rollups_deleted": rollups,
            "ingest_batches_forgotten": batches}
