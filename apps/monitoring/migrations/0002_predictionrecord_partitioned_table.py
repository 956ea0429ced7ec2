"""The prediction log's table, partitioned by day on ``ts`` (PredictionRecord is ``managed = False``).

Only the parent table and its (partitioned) indexes are created here; the daily partitions come from
``apps.monitoring.services.predictionlog_partitions_ensure`` (the ingest worker at start and before writing a
day it has not seen, and the hourly beat task, which creates them a few days ahead). There is no DEFAULT
partition on purpose: a row for a day without a partition fails loudly instead of piling up in one unbounded
table that retention cannot drop and that every new partition would have to scan.
"""
from django.db import migrations

FORWARD = """
CREATE TABLE monitoring_predictionrecord (
    ts            timestamptz NOT NULL,
    request_id    text        NOT NULL,
    deployment_id bigint      NOT NULL,
    deployment    text        NOT NULL,
    variant       text        NULL,
    model_version integer     NULL,
    latency_ms    real        NOT NULL,
    status        smallint    NOT NULL,
    inputs        jsonb       NULL,
    outputs       jsonb       NULL,
    entity_key    text        NULL,
    error         text        NULL,
    PRIMARY KEY (ts, request_id)
) PARTITION BY RANGE (ts);
CREATE INDEX monitoring_predictionrecord_deployment_ts
    ON monitoring_predictionrecord (deployment_id, ts);
"""

BACKWARD = "DROP TABLE IF EXISTS monitoring_predictionrecord CASCADE;"


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
