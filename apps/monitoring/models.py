"""The prediction log and its per-minute rollups.

The gateway appends one record per request to a Redis stream (``apps/gateway/contract.py``); the ingest worker
(``manage.py ingest_predictions``, ``apps/monitoring/ingest.py``) writes them here in batches:

- ``PredictionRecord``: the sampled requests, one row each, in a table partitioned by day (``ts``), so that
  retention drops whole partitions instead of deleting rows;
- ``PredictionRollup``: every request (sampled or not) counted per deployment, variant and minute, with a
  fixed-bucket latency histogram from which the deployment page estimates percentiles;
- ``IngestedBatch``: the stream entry ids of each committed batch, so that entries delivered again after a
  crash between COMMIT and XACK are recognised and skipped.

Deployments live in ``apps.deployments``; these tables refer to them by id only (no foreign key): the log is
written at tens of thousands of rows a second and must outlive a deleted deployment until retention drops it.
"""
from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models

# Upper bounds (ms, inclusive) of the latency histogram's buckets; one more bucket counts everything slower
# than the last bound. Defined once: the ingest fills, and the selectors read, histograms of this shape.
# Changing the bounds changes the meaning of every stored histogram: add a migration that rewrites them.
LATENCY_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
HISTOGRAM_SIZE = len(LATENCY_BUCKETS_MS) + 1

PARTITION_PREFIX = "monitoring_predictionrecord_p"  # + YYYYMMDD: one partition per UTC day


class PredictionRecord(models.Model):
    """One sampled request as the gateway saw it: who answered (deployment, variant, version), when, how fast,
    with which status, and the inputs and outputs.

    The table is created by migration 0002 as ``PARTITION BY RANGE (ts)`` with one partition per UTC day
    (``services.predictionlog_partitions_ensure`` creates them ahead, the ingest creates a missing one before
    writing, ``services.predictionlog_partitions_drop_expired`` drops whole partitions past retention), hence
    ``managed = False``. The primary key is (ts, request_id): PostgreSQL requires the partition key in it.
    Rows are written by COPY only (``apps.monitoring.ingest``), never through the ORM.
    """

    pk = models.CompositePrimaryKey("ts", "request_id")
    ts = models.DateTimeField(help_text="When the request reached the gateway (UTC).")
    request_id = models.TextField()
    deployment_id = models.BigIntegerField(help_text="apps.deployments Deployment id (no foreign key).")
    deployment = models.TextField(help_text="The deployment's name when the request was served.")
    variant = models.TextField(null=True, blank=True, help_text="Null when no variant was picked.")
    model_version = models.IntegerField(null=True, blank=True)
    latency_ms = models.FloatField()
    status = models.SmallIntegerField(help_text="The HTTP status the client got.")
    inputs = models.JSONField(null=True, blank=True)
    outputs = models.JSONField(null=True, blank=True)
    entity_key = models.TextField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)

    class Meta:
        managed = False
        db_table = "monitoring_predictionrecord"
        ordering = ["-ts"]

    def __str__(self) -> str:
        return f"{self.deployment}/{self.variant or '-'} {self.request_id} @ {self.ts:%Y-%m-%d %H:%M:%S}"

    @property
    def is_error(self) -> bool:
        return is_server_error(self.status, self.error)


def is_server_error(status: int, error: str | None) -> bool:
    """What the rollups count as an error: the request failed on our side.

    A 5xx always is; so is an ``error`` reason recorded with a success status (the gateway saw a failure it
    still answered, e.g. an unreadable model response). A 4xx is the client's mistake: counted apart as a
    client error, never as an error, so a caller sending bad input does not page the model's owners.
    """
    return status >= 500 or (bool(error) and status < 400)


def is_client_error(status: int) -> bool:
    return 400 <= status < 500


class PredictionRollup(models.Model):
    """Every request of one deployment variant in one minute: counts, errors, latency sum, max and histogram.

    ``variant`` is "" for requests no variant answered. ``latency_histogram[i]`` counts requests with latency
    in (LATENCY_BUCKETS_MS[i-1], LATENCY_BUCKETS_MS[i]]; the last element counts those above the last bound.
    The ingest adds to a row with INSERT ... ON CONFLICT DO UPDATE, so several ingest workers may share a
    minute. ``count`` includes unsampled requests; ``sampled`` says how many of them are in the prediction log.
    """

    deployment_id = models.BigIntegerField(help_text="apps.deployments Deployment id (no foreign key).")
    variant = models.CharField(max_length=200, blank=True, default="")
    minute = models.DateTimeField(help_text="Start of the minute (UTC).")
    count = models.IntegerField(default=0)
    sampled = models.IntegerField(default=0)
    errors = models.IntegerField(default=0, help_text="5xx, or an error recorded with a success status.")
    client_errors = models.IntegerField(default=0, help_text="4xx.")
    latency_sum_ms = models.FloatField(default=0.0)
    latency_max_ms = models.FloatField(default=0.0)
    latency_histogram = ArrayField(models.IntegerField(), size=HISTOGRAM_SIZE)

    class Meta:
        constraints = [
            # (deployment, minute) first: the page reads a deployment's minutes in a range, any variant.
            models.UniqueConstraint(fields=["deployment_id", "minute", "variant"],
                                    name="monitoring_rollup_unique_minute"),
        ]
        indexes = [models.Index(fields=["minute"], name="monitoring_rollup_minute")]

    def __str__(self) -> str:
        return f"deployment {self.deployment_id}/{self.variant or '-'} {self.minute:%Y-%m-%d %H:%M}: {self.count}"


class IngestedBatch(models.Model):
    """One committed ingest batch: which stream entries it covered (dead-lettered ones included).

    Written in the same transaction as the batch's rows and rollups, before the entries are acknowledged in
    Redis. An entry delivered again (its consumer died between COMMIT and XACK, and another claimed it) is
    found here and skipped, which makes the ingest exactly-once in effect. ``first_ms``/``last_ms`` are the
    millisecond parts of the smallest and largest entry id, so that a lookup reads only the batches whose
    range overlaps. Kept for ``INGEST_LEDGER_RETENTION`` (far longer than an entry can stay pending).
    """

    stream = models.CharField(max_length=200)
    consumer = models.CharField(max_length=200)
    first_ms = models.BigIntegerField()
    last_ms = models.BigIntegerField()
    entry_ids = ArrayField(models.TextField())
    records = models.IntegerField(default=0, help_text="Entries counted in the rollups.")
    logged = models.IntegerField(default=0, help_text="Rows written to the prediction log.")
    dead_lettered = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["stream", "last_ms"], name="monitoring_batch_range")]

    def __str__(self) -> str:
        return f"{self.stream} batch {self.pk}: {len(self.entry_ids)} entries"
