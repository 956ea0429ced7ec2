"""The prediction-log ingest against the real PostgreSQL and Redis: batches land in the right day partitions,
rollups are exact, malformed entries are dead-lettered, and a crash between COMMIT and XACK duplicates nothing.
"""
from __future__ import annotations

import bisect
import datetime as dt
import threading
import time

import orjson
import psycopg
import pytest
from django.db import connection, connections

from apps.monitoring import ingest
from apps.monitoring.ingest import dead_letter_stream, ingest_batch, ingest_run
from apps.monitoring.models import LATENCY_BUCKETS_MS, IngestedBatch, PredictionRecord, PredictionRollup
from apps.monitoring.selectors import histogram_quantile, prediction_list, rollup_series, rollup_series_total
from apps.monitoring.services import partition_name
from tests.monitoring.records import entries, entry, record, xadd

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def today_start() -> dt.datetime:
    now = dt.datetime.now(UTC)
    return dt.datetime(now.year, now.month, now.day, tzinfo=UTC)


def rows_by_partition() -> dict[str, set[str]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text, request_id FROM monitoring_predictionrecord")
        found: dict[str, set[str]] = {}
        for table, request_id in cursor.fetchall():
            found.setdefault(table, set()).add(request_id)
    return found


def test_batch_lands_in_day_partitions_and_unsampled_only_in_rollups(redis_client, stream):
    today = today_start()
    yesterday = today - dt.timedelta(days=1)
    docs = [
        record(request_id="today-1", ts=today.timestamp() + 30),
        record(request_id="today-2", ts=today.timestamp() + 31, variant="green"),
        record(request_id="yesterday-1", ts=yesterday.timestamp() + 86399.5),
        record(request_id="unsampled-1", ts=today.timestamp() + 32, sampled=False, inputs=None, outputs=None),
        # The gateway left inputs in but did not sample it: still not logged.
        record(request_id="unsampled-2", ts=today.timestamp() + 33, sampled=False),
        record(request_id="too-old", ts=(today - dt.timedelta(days=40)).timestamp()),
    ]
    stats = ingest_batch(entries(docs), stream=stream, redis_client=redis_client)

    assert stats.as_dict() == {"entries": 6, "rolled_up": 6, "logged": 3, "unsampled": 2, "expired": 1,
                               "dead_lettered": 0, "redelivered": 0, "duplicate_rows": 0}
    assert rows_by_partition() == {
        partition_name(today.date()): {"today-1", "today-2"},
        partition_name(yesterday.date()): {"yesterday-1"},
    }
    row = PredictionRecord.objects.get(request_id="today-1")
    assert row.inputs == {"amount": 12.5, "country": "DE"} and row.outputs == {"predictions": [0]}
    assert (row.deployment_id, row.deployment, row.variant, row.model_version, row.status) == (
        12, "fraud-scorer", "blue", 3, 200)
    assert row.ts == today + dt.timedelta(seconds=30) and row.entity_key == "cust-42"
    assert row.latency_ms == pytest.approx(4.21, rel=1e-6)

    # Every record is in the rollups, the unsampled and the expired ones too.
    assert sum(PredictionRollup.objects.values_list("count", flat=True)) == 6
    assert sum(PredictionRollup.objects.values_list("sampled", flat=True)) == 4
    assert IngestedBatch.objects.get().entry_ids == [e[0].decode() for e in entries(docs)]


def test_rollup_numbers_and_histogram_are_exact(redis_client, stream):
    minute = today_start() + dt.timedelta(minutes=1)
    t = minute.timestamp()
    # One latency per bucket, and two in the first: bounds are inclusive tops of their bucket.
    latencies = [0.5, 1.0, 1.5, 3, 7, 15, 45, 99, 150, 450, 999, 1500, 4000, 7000]
    statuses = [200] * len(latencies)
    statuses[0], statuses[1], statuses[2], statuses[3] = 500, 503, 404, 400
    errors_text = [None] * len(latencies)
    errors_text[4] = "unreadable model response"  # a failure answered with 200: an error
    errors_text[2] = "input does not match the signature"  # 404 with a reason: still a client error
    docs = [record(ts=t + i, latency_ms=lat, status=st, error=err, sampled=(i % 2 == 0))
            for i, (lat, st, err) in enumerate(zip(latencies, statuses, errors_text, strict=True))]
    docs += [
        record(ts=t + 5, variant="green", latency_ms=2.0),
        record(ts=t + 6, variant=None, model_version=None, status=503, latency_ms=0.1, error="no replica ready"),
        record(ts=t + 60, latency_ms=10.0),  # the next minute
    ]
    ingest_batch(entries(docs), stream=stream, redis_client=redis_client)

    rows = {(r.variant, r.minute): r for r in PredictionRollup.objects.filter(deployment_id=12)}
    assert set(rows) == {("blue", minute), ("green", minute), ("", minute),
                         ("blue", minute + dt.timedelta(minutes=1))}
    blue = rows[("blue", minute)]
    assert (blue.count, blue.sampled, blue.errors, blue.client_errors) == (14, 7, 3, 2)
    assert blue.latency_histogram == [2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert blue.latency_sum_ms == pytest.approx(sum(latencies))
    assert blue.latency_max_ms == 7000
    green = rows[("green", minute)]
    assert (green.count, green.errors, green.latency_histogram[1]) == (1, 0, 1)
    none = rows[("", minute)]
    assert (none.count, none.errors, none.latency_histogram[0]) == (1, 1, 1)

    # A second batch on the same minute adds to the row, bucket by bucket.
    ingest_batch(entries([record(ts=t + 7, latency_ms=1.0, status=502)], start_ms=1_800_000_000_000),
                 stream=stream, redis_client=redis_client)
    blue.refresh_from_db()
    assert (blue.count, blue.errors) == (15, 4)
    assert blue.latency_histogram == [3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert blue.latency_sum_ms == pytest.approx(sum(latencies) + 1.0)


def test_quantile_estimate_is_sane():
    # 1000 latencies spread evenly over 0..100 ms: true p50 = 50, p95 = 95, p99 = 99.
    hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    values = [(i + 0.5) / 10 for i in range(1000)]
    for v in values:
        hist[bisect.bisect_left(LATENCY_BUCKETS_MS, v)] += 1
    assert histogram_quantile(hist, 0.50, max_ms=99.95) == pytest.approx(50, abs=0.1)
    # Inside a wide bucket (50..100) the estimate interpolates; for uniform data that is exact.
    assert histogram_quantile(hist, 0.95, max_ms=99.95) == pytest.approx(95, abs=0.1)
    assert histogram_quantile(hist, 0.99, max_ms=99.95) == pytest.approx(99, abs=0.1)
    # Skewed data: the estimate stays inside the bucket holding the true quantile.
    skewed = [1.5] * 90 + [300.0] * 9 + [8000.0]
    hist = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for v in skewed:
        hist[bisect.bisect_left(LATENCY_BUCKETS_MS, v)] += 1
    assert 1 < histogram_quantile(hist, 0.50, max_ms=8000) <= 2
    assert 200 < histogram_quantile(hist, 0.95, max_ms=8000) <= 500
    # The open last bucket is bounded by the observed maximum.
    assert 5000 < histogram_quantile(hist, 0.999, max_ms=8000) <= 8000
    assert histogram_quantile([0] * len(hist), 0.5) is None


def test_rollup_series_per_variant_and_total(redis_client, stream):
    minute = today_start() + dt.timedelta(minutes=2)
    t = minute.timestamp()
    docs = [record(ts=t + i % 60, latency_ms=float(i % 40) + 0.5, status=500 if i % 10 == 0 else 200)
            for i in range(120)]
    docs += [record(ts=t + 1, variant="green", latency_ms=300.0) for _ in range(30)]
    ingest_batch(entries(docs), stream=stream, redis_client=redis_client)

    series = rollup_series(deployment_id=12, since=minute - dt.timedelta(minutes=5))
    assert set(series) == {"blue", "green"}
    (blue,) = series["blue"]
    assert (blue.minute, blue.count, blue.errors) == (minute, 120, 12)
    assert blue.rps == pytest.approx(2.0) and blue.error_rate == pytest.approx(0.1)
    # Latencies 0.5..39.5 evenly: the true p50 is ~20, p95 ~38; the buckets (20..50] bound the estimate.
    assert 10 < blue.p50_ms <= 50 and 20 < blue.p95_ms <= 39.5 and blue.p99_ms <= blue.max_ms == 39.5
    assert rollup_series(deployment_id=12, since=minute, variant="green")["green"][0].p50_ms == pytest.approx(
        250, abs=50)
    (total,) = rollup_series_total(deployment_id=12, since=minute)
    assert total.count == 150 and total.max_ms == 300.0 and sum(total.histogram) == 150
    assert rollup_series(deployment_id=99, since=minute) == {}
    # until is exclusive
    assert rollup_series(deployment_id=12, since=minute - dt.timedelta(minutes=5), until=minute) == {}


def test_malformed_entries_go_to_the_dead_letter_stream_and_the_rest_is_ingested(redis_client, stream):
    good = [record(request_id=f"good-{i}") for i in range(3)]
    bad = [
        (b"1700000000100-0", {b"r": b"{not json"}),
        (b"1700000000101-0", {b"other": b"field"}),
        entry({k: v for k, v in record().items() if k != "deployment_id"}, "1700000000102-0"),
        entry(record(status="200"), "1700000000103-0"),
        entry(record(latency_ms=-1), "1700000000104-0"),
        entry(record(ts=4_102_444_800), "1700000000105-0"),  # 2100-01-01
        (b"1700000000106-0", {b"r": b"[1, 2]"}),
    ]
    batch = entries(good)[:2] + bad + entries(good)[2:]
    batch[-1] = (b"1700000000200-0", batch[-1][1])
    stats = ingest_batch(batch, stream=stream, redis_client=redis_client)

    assert (stats.logged, stats.dead_lettered, stats.rolled_up) == (3, 7, 3)
    assert set(PredictionRecord.objects.values_list("request_id", flat=True)) == {"good-0", "good-1", "good-2"}
    dead = redis_client.xrange(dead_letter_stream(stream))
    reasons = {f[b"id"].decode(): f[b"reason"].decode() for _id, f in dead}
    assert reasons.keys() == {b[0].decode() for b in bad}
    assert "not JSON" in reasons["1700000000100-0"]
    assert "no 'r' field" in reasons["1700000000101-0"]
    assert reasons["1700000000102-0"] == "deployment_id is missing"
    assert reasons["1700000000103-0"] == "status must be an integer, not str"
    assert "latency_ms" in reasons["1700000000104-0"]
    assert "future" in reasons["1700000000105-0"]
    assert "JSON object" in reasons["1700000000106-0"]
    # The original payload travels with the reason.
    assert {f[b"r"] for _id, f in dead if f[b"id"] == b"1700000000100-0"} == {b"{not json"}
    assert IngestedBatch.objects.get().dead_lettered == 7


def test_a_row_postgresql_refuses_is_dead_lettered_and_the_batch_goes_on(redis_client, stream):
    # 1e300 passes our checks (finite, >= 0) but overflows the real column: COPY fails, row by row finds it.
    docs = [record(request_id="ok-1"), record(request_id="overflow", latency_ms=1e300), record(request_id="ok-2")]
    stats = ingest_batch(entries(docs), stream=stream, redis_client=redis_client)
    assert (stats.logged, stats.dead_lettered) == (2, 1)
    assert set(PredictionRecord.objects.values_list("request_id", flat=True)) == {"ok-1", "ok-2"}
    (_id, fields), = redis_client.xrange(dead_letter_stream(stream))
    assert fields[b"reason"].startswith(b"rejected by PostgreSQL") and b"overflow" in fields[b"r"]


def test_a_record_already_logged_is_skipped_not_a_failure(redis_client, stream):
    first = record(request_id="same")
    ingest_batch(entries([first]), stream=stream, redis_client=redis_client)
    # The same request under another entry id (e.g. the gateway retried its XADD), next to a new one.
    stats = ingest_batch(entries([first, record(request_id="new")], start_ms=1_800_000_000_000), stream=stream,
                         redis_client=redis_client)
    assert (stats.logged, stats.duplicate_rows, stats.dead_lettered) == (1, 1, 0)
    assert sorted(PredictionRecord.objects.values_list("request_id", flat=True)) == ["new", "same"]


def test_nul_characters_do_not_break_the_batch(redis_client, stream):
    doc = record(request_id="nul\x00id", inputs={"text": "a\x00b", "k\x00": 1}, error="bad\x00thing",
                 status=500)
    stats = ingest_batch(entries([doc]), stream=stream, redis_client=redis_client)
    assert stats.logged == 1
    row = PredictionRecord.objects.get()
    assert row.request_id == "nul\ufffdid" and row.inputs == {"text": "a\ufffdb", "k\ufffd": 1}
    assert row.error == "bad\ufffdthing"


def test_ingest_run_reads_acknowledges_and_deletes(redis_client, stream):
    docs = [record(request_id=f"r{i}", sampled=i % 3 != 0) for i in range(25)]
    xadd(redis_client, stream, docs)
    run = ingest_run(stream=stream, group="ingest", consumer="t1", batch_size=10, redis_client=redis_client,
                     stop_when_idle=True, block_ms=100)
    assert (run.entries, run.batches, run.logged, run.unsampled) == (25, 3, 16, 9)
    assert PredictionRecord.objects.count() == 16
    assert redis_client.xlen(stream) == 0  # acknowledged and deleted
    assert redis_client.xpending(stream, "ingest")["pending"] == 0
    assert IngestedBatch.objects.filter(stream=stream).count() == 3


def test_crash_between_commit_and_ack_duplicates_nothing(redis_client, stream):
    docs = [record(request_id=f"r{i}") for i in range(20)]
    ids = xadd(redis_client, stream, docs)
    ingest.ensure_group(redis_client, stream, "ingest")
    # Consumer "dead" reads and commits the batch, then dies before XACK.
    ((_name, batch),) = redis_client.xreadgroup("ingest", "dead", {stream: ">"}, count=100)
    assert ingest_batch(batch, stream=stream, redis_client=redis_client, consumer="dead").logged == 20
    assert redis_client.xpending(stream, "ingest")["pending"] == 20

    # A new worker claims the dead consumer's pending entries (idle threshold 0 here, 60 s in production).
    run = ingest_run(stream=stream, group="ingest", consumer="heir", claim_idle_ms=0,
                     redis_client=redis_client, stop_when_idle=True, block_ms=100)
    assert (run.entries, run.redelivered, run.logged, run.rolled_up) == (20, 20, 0, 0)
    assert PredictionRecord.objects.count() == 20
    assert sum(PredictionRollup.objects.values_list("count", flat=True)) == 20
    assert redis_client.xpending(stream, "ingest")["pending"] == 0
    assert redis_client.xlen(stream) == 0
    assert sorted(IngestedBatch.objects.get().entry_ids) == sorted(ids)


def test_partly_redelivered_batch_writes_only_the_new_entries(redis_client, stream):
    committed = entries([record(request_id=f"old{i}") for i in range(3)])
    ingest_batch(committed, stream=stream, redis_client=redis_client)
    fresh = entries([record(request_id="new0")], start_ms=1_700_000_000_001 + 10)
    stats = ingest_batch(committed[1:] + fresh, stream=stream, redis_client=redis_client)
    assert (stats.redelivered, stats.logged, stats.rolled_up) == (2, 1, 1)
    assert PredictionRecord.objects.count() == 4
    assert sum(PredictionRollup.objects.values_list("count", flat=True)) == 4


def test_prediction_list_newest_first_with_paging(redis_client, stream):
    base = today_start().timestamp()
    docs = [record(request_id=f"r{i:02d}", ts=base + i) for i in range(12)]
    docs.append(record(request_id="other", deployment_id=13, ts=base + 100))
    docs.append(record(request_id="hidden", sampled=False, ts=base + 50))
    ingest_batch(entries(docs), stream=stream, redis_client=redis_client)

    page = prediction_list(deployment_id=12, limit=5)
    assert [r.request_id for r in page] == ["r11", "r10", "r09", "r08", "r07"]
    older = prediction_list(deployment_id=12, limit=5, before=page[-1].ts)
    assert [r.request_id for r in older] == ["r06", "r05", "r04", "r03", "r02"]
    assert len(prediction_list(deployment_id=12, limit=10_000)) == 12
    assert [r.request_id for r in prediction_list(deployment_id=13, limit=5)] == ["other"]


def test_entry_trimmed_before_ingest_is_dead_lettered_not_lost_silently(redis_client, stream):
    stats = ingest_batch([(b"1700000000000-0", None)], stream=stream, redis_client=redis_client)
    assert stats.dead_lettered == 1
    ((_id, fields),) = redis_client.xrange(dead_letter_stream(stream))
    assert b"trimmed" in fields[b"reason"]


def test_record_json_stays_as_sent(redis_client, stream):
    inputs = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x\ty\n"], [2.5, "\\"]]}}
    ingest_batch(entries([record(inputs=inputs, outputs=[0.1, 0.9])]), stream=stream, redis_client=redis_client)
    row = PredictionRecord.objects.get()
    assert row.inputs == inputs and row.outputs == [0.1, 0.9]
    assert orjson.loads(orjson.dumps(row.inputs)) == inputs


def test_a_partition_dropped_behind_the_ingests_back_is_created_again(redis_client, stream):
    base = today_start().timestamp() + 60
    ingest_batch(entries([record(request_id="first", ts=base)]), stream=stream, redis_client=redis_client)
    name = partition_name(today_start().date())
    with connection.cursor() as cursor:  # the ingest still believes the partition exists
        cursor.execute(f'DROP TABLE "{name}"')
    stats = ingest_batch(entries([record(request_id="second", ts=base)], start_ms=1_800_000_000_000),
                         stream=stream, redis_client=redis_client)
    assert (stats.logged, stats.dead_lettered) == (1, 0)
    assert rows_by_partition() == {name: {"second"}}


@pytest.mark.django_db(transaction=True)
def test_a_running_worker_survives_its_stream_being_deleted(redis_client, stream, clean_log):
    stop, result = threading.Event(), {}

    def work():
        try:
            result["run"] = ingest_run(stream=stream, group="ingest", consumer="w", stop_event=stop, block_ms=100)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc
        finally:
            connections.close_all()

    def wait_rows(n: int) -> None:
        deadline = time.monotonic() + 30
        while PredictionRecord.objects.count() < n and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.1)
        assert PredictionRecord.objects.count() == n, result

    worker = threading.Thread(target=work)
    worker.start()
    try:
        xadd(redis_client, stream, [record(request_id=f"before-{i}") for i in range(5)])
        wait_rows(5)
        redis_client.delete(stream)  # e.g. an operator's mistake, or a FLUSHDB
        time.sleep(0.3)
        xadd(redis_client, stream, [record(request_id=f"after-{i}") for i in range(5)])
        wait_rows(10)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert "error" not in result, result
    assert result["run"].entries == 10 and result["run"].logged == 10


def test_fast_read_returns_what_xreadgroup_returns(redis_client, stream):
    """The Lua read (one flat reply) gives the same entries as redis-py's XREADGROUP, odd ones included."""
    other = stream + ":plain"
    shapes = [
        {"r": orjson.dumps(record())},
        {"r": b""},
        {"r": "caf\u00e9 \n 1 r 5\n".encode()},   # bytes that look like the framing
        {"x": b"1", "y": b"\xff\x00\n"},          # no r: a malformed entry, kept byte for byte
        {"r": b"{}", "extra": b"2"},
    ]
    try:
        for i, fields in enumerate(shapes, start=1):
            redis_client.xadd(stream, fields, id=f"{i}-0")
            redis_client.xadd(other, fields, id=f"{i}-0")
        ingest.ensure_group(redis_client, stream, "g")
        ingest.ensure_group(redis_client, other, "g")
        fast = ingest.read_batch_fast(redis_client, stream=stream, group="g", consumer="c", count=100)
        plain = ingest._entries_of(redis_client.xreadgroup("g", "c", {other: ">"}, count=100))
        assert fast == [(i, dict(f)) for i, f in plain]
        assert len(fast) == 5 and fast[3] == (b"4-0", {b"x": b"1", b"y": b"\xff\x00\n"})
        assert redis_client.xpending(stream, "g")["pending"] == 5  # delivered to the group, as XREADGROUP does
        assert ingest.read_batch_fast(redis_client, stream=stream, group="g", consumer="c", count=100) == []
    finally:
        redis_client.delete(other)


def test_worker_dead_letters_malformed_entries_from_the_stream(redis_client, stream):
    xadd(redis_client, stream, [record(request_id="good-1")])
    redis_client.xadd(stream, {"x": b"\xff"})
    redis_client.xadd(stream, {"r": b"{oops"})
    xadd(redis_client, stream, [record(request_id="good-2")])
    run = ingest_run(stream=stream, group="ingest", consumer="t", redis_client=redis_client, stop_when_idle=True,
                     block_ms=100)
    assert (run.entries, run.logged, run.dead_lettered) == (4, 2, 2)
    reasons = sorted(f[b"reason"].decode() for _id, f in redis_client.xrange(dead_letter_stream(stream)))
    assert reasons[0].startswith("'r' is not JSON") and reasons[1] == "the entry has no 'r' field"
    assert redis_client.xlen(stream) == 0


@pytest.mark.django_db(transaction=True)
def test_a_claimed_batch_waits_for_a_concurrent_writer_and_skips_its_entries(redis_client, stream, clean_log):
    """Worker B writes entries it claimed while worker A, thought dead, is still committing the same ones:
    B's transaction waits on the stream's lock, then finds A's entries in the ledger and skips them."""
    batch = entries([record(request_id=f"r{i}") for i in range(5)])
    ids = [e[0].decode() for e in batch]
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"],
                            password=db.get("PASSWORD") or None, dbname=db["NAME"])
    try:
        # Worker A: inside its transaction, holding the lock, it has written the batch (ledger row shown).
        other.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ingest.INGEST_LOCK, ingest._stream_key(stream)])
        other.execute("INSERT INTO monitoring_ingestedbatch (stream, consumer, first_ms, last_ms, entry_ids, "
                      "records, logged, dead_lettered, created_at) VALUES (%s, 'a', %s, %s, %s, 5, 5, 0, now())",
                      [stream, ingest._id_ms(ids[0]), ingest._id_ms(ids[-1]), ids])
        result = {}

        def worker_b():
            try:
                result["stats"] = ingest_batch(batch, stream=stream, redis_client=redis_client, consumer="b",
                                               parsed=ingest.parse_batch(batch, claimed=True), serialize=True)
            finally:
                connections.close_all()

        thread = threading.Thread(target=worker_b)
        thread.start()
        thread.join(timeout=1.5)
        assert thread.is_alive(), "worker B did not wait for the lock"
        other.commit()  # A commits: the lock is released
        thread.join(timeout=30)
    finally:
        other.close()
    assert result["stats"].redelivered == 5 and result["stats"].logged == 0
    assert PredictionRecord.objects.count() == 0 and PredictionRollup.objects.count() == 0
