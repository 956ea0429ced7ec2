"""The prediction-log ingest: Redis stream -> PostgreSQL, in batches, exactly once in effect.

The gateway appends one entry per request to ``contract.PREDICTIONS_STREAM`` (record shape in
``apps/gateway/contract.py``). ``ingest_run`` reads it as a member of a consumer group and hands each batch to
``ingest_batch``, which in ONE PostgreSQL transaction

1. skips the entries an earlier, committed batch already covered (``IngestedBatch``; they come back when a
   worker died between COMMIT and XACK and another claimed them),
2. COPYs the sampled records into the day-partitioned ``monitoring_predictionrecord``,
3. adds every record (sampled or not) to the per-minute rollups (INSERT ... ON CONFLICT DO UPDATE),
4. records the batch's entry ids in ``IngestedBatch``;

then the entries are acknowledged (XACK) and the stream is trimmed up to the oldest entry any consumer group
still needs (XTRIM MINID; the gateway's approximate MAXLEN only bounds a stream nobody drains). A thread reads
and parses the next batch while the current one is written (``_StreamReader``), through a small Lua script
that returns the batch as one string (``read_batch_fast``: redis-py's pure-Python reply parser was the most
expensive step), or a blocking XREADGROUP when the stream is idle.

A malformed entry (no JSON, a missing or mistyped field) goes to the dead-letter stream ``<stream>:dead``
with the reason, is counted in the batch's stats and ``IngestedBatch.dead_lettered``, logged, and the rest
of the batch goes on. A row PostgreSQL itself refuses goes there too (the batch is retried row by row to find
it), so one bad record never blocks the stream. The dead letter is written before COMMIT: after a crash in
between, the entry is dead-lettered again (at least once, never lost).

Throughput comes from batching (a few thousand entries per round trip to Redis and per transaction), COPY,
and little Python per record: one orjson parse, one expression of type checks, one orjson dump of the
inputs and outputs. ``benchmarks/ingest.py`` measures it. Several workers may share the stream (each its own
consumer); rollup rows are upserted in key order so that they never deadlock.
"""
from __future__ import annotations

import bisect
import datetime as dt
import logging
import math
import os
import queue
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from apps.gateway import contract
from apps.monitoring import services
from apps.monitoring.models import (
    HISTOGRAM_SIZE,
    LATENCY_BUCKETS_MS,
    IngestedBatch,
    PredictionRecord,
    PredictionRollup,
    is_client_error,
    is_server_error,
)

log = logging.getLogger(__name__)

UTC = dt.UTC
_EPOCH_DAY = dt.date(1970, 1, 1)
DEAD_LETTER_SUFFIX = ":dead"
DEAD_LETTER_MAXLEN = 100_000
CLAIM_IDLE_MS = 60_000          # a pending entry idle this long belongs to a dead (or stuck) consumer
CLAIM_EVERY_SECONDS = 30.0      # look for such entries this often while running, not only at start
FORGET_CONSUMERS_IDLE_MS = 24 * 3600 * 1000  # consumers idle a day with nothing pending are removed
MAX_TEXT = 1000                 # longest error reason kept; longer ones are cut
MAX_ID = 512  # longest request id, entity key or name accepted (the gateway sends at most 128 and 256)
FUTURE_SLACK_SECONDS = 24 * 3600  # a record stamped further ahead than this is refused (clock gone wrong)

COPY_COLUMNS = ("ts", "request_id", "deployment_id", "deployment", "variant", "model_version", "latency_ms",
                "status", "inputs", "outputs", "entity_key", "error")
COPY_SQL = f"COPY {PredictionRecord._meta.db_table} ({', '.join(COPY_COLUMNS)}) FROM STDIN"
INSERT_SQL = (f"INSERT INTO {PredictionRecord._meta.db_table} ({', '.join(COPY_COLUMNS)}) "
              "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s) ON CONFLICT DO NOTHING")
ROLLUP_TABLE = PredictionRollup._meta.db_table
ROLLUP_CHUNK = 500


def dead_letter_stream(stream: str) -> str:
    """Where the malformed entries of ``stream`` go (``modelplane:predictions:dead`` for the real stream)."""
    return stream + DEAD_LETTER_SUFFIX


class Malformed(Exception):
    """An entry that cannot become a record; the message is the reason stored with the dead letter."""


@dataclass(slots=True)
class Record:
    """One parsed prediction record (the contract's fields, checked)."""

    entry_id: str
    request_id: str
    deployment_id: int
    deployment: str
    variant: str | None
    model_version: int | None
    ts: float
    latency_ms: float
    status: int
    sampled: bool
    inputs: str | None   # JSON text, ready for jsonb
    outputs: str | None
    entity_key: str | None
    error: str | None

    def row(self) -> tuple:
        return (dt.datetime.fromtimestamp(self.ts, UTC), self.request_id, self.deployment_id, self.deployment,
                self.variant, self.model_version, self.latency_ms, self.status, self.inputs, self.outputs,
                self.entity_key, self.error)


@dataclass
class BatchStats:
    """What one batch (or a whole run, summed) did with its entries."""

    entries: int = 0          # entries handed in
    rolled_up: int = 0        # records added to the rollups (every valid, not yet ingested record)
    logged: int = 0           # rows written to the prediction log
    unsampled: int = 0        # records in the rollups only (the gateway did not sample them)
    expired: int = 0          # sampled but older than the retention: in the rollups only
    dead_lettered: int = 0    # malformed entries and rows PostgreSQL refused, moved to the dead-letter stream
    redelivered: int = 0      # entries an earlier committed batch already covered: skipped
    duplicate_rows: int = 0   # sampled records whose (ts, request_id) was already in the log

    def add(self, other: BatchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --- parsing --------------------------------------------------------------------------------------------------

def _text(value: Any, name: str, *, required: bool, limit: int = MAX_ID) -> str | None:
    if value is None:
        if required:
            raise Malformed(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise Malformed(f"{name} must be a string, not {type(value).__name__}")
    if required and not value:
        raise Malformed(f"{name} is empty")
    if len(value) > limit:
        raise Malformed(f"{name} is longer than {limit} characters")
    # PostgreSQL text cannot hold NUL.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _int(value: Any, name: str, *, required: bool, low: int, high: int) -> int | None:
    if value is None:
        if required:
            raise Malformed(f"{name} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise Malformed(f"{name} {value} is out of range {low}..{high}")
    return value


def _number(value: Any, name: str) -> float:
    if value is None:
        raise Malformed(f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise Malformed(f"{name} must be a finite number >= 0")
    return value


def _no_nul(value: Any) -> Any:
    """The value with NUL characters in its strings replaced (jsonb refuses \\u0000)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    return value


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        text = orjson.dumps(value)
    except TypeError as exc:  # orjson.loads produced it, so this is only a safety net
        raise Malformed(f"inputs/outputs are not serialisable: {exc}") from exc
    if b"\\u0000" in text:
        text = orjson.dumps(_no_nul(value))
    return text.decode()


def parse_entry(entry_id: str, entry_fields: dict | None, *, now: float | None = None) -> Record:
    """The record an entry carries, checked against the contract; raises Malformed naming the problem."""
    if entry_fields is None:
        # Still pending for us but gone from the stream: trimmed by the gateway's MAXLEN before we read it.
        raise Malformed("the entry was trimmed from the stream before it was ingested; its record is lost")
    raw = entry_fields.get(b"r")
    if raw is None:
        raw = entry_fields.get("r")
        if raw is None:
            raise Malformed("the entry has no 'r' field" if entry_fields else "the entry has no fields")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"'r' is not JSON: {exc}") from exc
    if type(doc) is not dict:
        raise Malformed(f"'r' must be a JSON object, not {type(doc).__name__}")
    latest = (time.time() if now is None else now) + FUTURE_SLACK_SECONDS
    get = doc.get
    request_id, deployment_id, deployment = get("request_id"), get("deployment_id"), get("deployment")
    variant, model_version, ts = get("variant"), get("model_version"), get("ts")
    latency_ms, status, sampled = get("latency_ms"), get("status"), get("sampled", True)
    entity_key, error = get("entity_key"), get("error")
    # The common case in one expression (this runs tens of thousands of times a second); anything it does
    # not accept goes through _parse_checked, which names the problem or cleans the value up.
    if (type(request_id) is str and 0 < len(request_id) <= MAX_ID and "\x00" not in request_id
            and type(deployment_id) is int and 0 < deployment_id < 2**63
            and type(deployment) is str and 0 < len(deployment) <= MAX_ID and "\x00" not in deployment
            and (variant is None or (type(variant) is str and len(variant) <= MAX_ID and "\x00" not in variant))
            and (model_version is None or (type(model_version) is int and 0 <= model_version < 2**31))
            and type(ts) in _NUMBER and 0 <= ts <= latest
            and type(latency_ms) in _NUMBER and 0 <= latency_ms < math.inf
            and type(status) is int and 0 <= status <= 999
            and type(sampled) is bool
            and (entity_key is None
                 or (type(entity_key) is str and len(entity_key) <= MAX_ID and "\x00" not in entity_key))
            and (error is None or (type(error) is str and len(error) <= MAX_TEXT and "\x00" not in error))):
        return Record(entry_id, request_id, deployment_id, deployment, variant, model_version, float(ts),
                      float(latency_ms), status, sampled,
                      _json(get("inputs")) if sampled else None, _json(get("outputs")) if sampled else None,
                      entity_key, error)
    return _parse_checked(entry_id, doc, latest)


_NUMBER = (float, int)


def _parse_checked(entry_id: str, doc: dict, latest: float) -> Record:
    """parse_entry's careful path: every field checked one by one, NULs replaced, a long error cut."""
    ts = _number(doc.get("ts"), "ts")
    if ts > latest:
        raise Malformed(f"ts {ts} is more than a day in the future")
    sampled = doc.get("sampled", True)
    if not isinstance(sampled, bool):
        raise Malformed(f"sampled must be true or false, not {type(sampled).__name__}")
    error = doc.get("error")
    if error is not None and not isinstance(error, str):
        raise Malformed(f"error must be a string or null, not {type(error).__name__}")
    if error is not None:
        error = _text(error[:MAX_TEXT], "error", required=False, limit=MAX_TEXT)
    return Record(
        entry_id=entry_id,
        request_id=_text(doc.get("request_id"), "request_id", required=True),
        deployment_id=_int(doc.get("deployment_id"), "deployment_id", required=True, low=1, high=2**63 - 1),
        deployment=_text(doc.get("deployment"), "deployment", required=True),
        variant=_text(doc.get("variant"), "variant", required=False),
        model_version=_int(doc.get("model_version"), "model_version", required=False, low=0, high=2**31 - 1),
        ts=ts,
        latency_ms=_number(doc.get("latency_ms"), "latency_ms"),
        status=_int(doc.get("status"), "status", required=True, low=0, high=999),
        sampled=sampled,
        inputs=_json(doc.get("inputs")) if sampled else None,
        outputs=_json(doc.get("outputs")) if sampled else None,
        entity_key=_text(doc.get("entity_key"), "entity_key", required=False),
        error=error,
    )


def _decode_id(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def _id_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


# --- rollups --------------------------------------------------------------------------------------------------

def rollup_groups(records: Iterable[Record]) -> dict[tuple[int, str, int], list]:
    """Records summed per (deployment id, variant, minute as epoch seconds):
    [count, sampled, errors, client_errors, latency sum, latency max, histogram]."""
    groups: dict[tuple[int, str, int], list] = {}
    bounds = LATENCY_BUCKETS_MS
    for r in records:
        key = (r.deployment_id, r.variant or "", int(r.ts // 60) * 60)
        g = groups.get(key)
        if g is None:
            g = groups[key] = [0, 0, 0, 0, 0.0, 0.0, [0] * HISTOGRAM_SIZE]
        g[0] += 1
        if r.sampled:
            g[1] += 1
        if is_server_error(r.status, r.error):
            g[2] += 1
        elif is_client_error(r.status):
            g[3] += 1
        g[4] += r.latency_ms
        g[5] = max(g[5], r.latency_ms)
        # bisect_left: the first bound >= latency, so a bound is the inclusive top of its bucket.
        g[6][bisect.bisect_left(bounds, r.latency_ms)] += 1
    return groups


def _upsert_rollups(cursor, groups: dict[tuple[int, str, int], list]) -> None:
    # Sorted: two workers adding to the same minutes lock the rows in the same order (no deadlock).
    items = sorted(groups.items())
    for start in range(0, len(items), ROLLUP_CHUNK):
        chunk = items[start:start + ROLLUP_CHUNK]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::integer[])"] * len(chunk))
        params: list = []
        for (deployment_id, variant, minute), (count, sampled, errors, client_errors, lat_sum, lat_max,
                                                hist) in chunk:
            params += [deployment_id, variant, dt.datetime.fromtimestamp(minute, UTC), count, sampled, errors,
                       client_errors, lat_sum, lat_max, hist]
        cursor.execute(
            f"INSERT INTO {ROLLUP_TABLE} AS r (deployment_id, variant, minute, count, sampled, errors, "
            f"client_errors, latency_sum_ms, latency_max_ms, latency_histogram) VALUES {values} "
            "ON CONFLICT (deployment_id, minute, variant) DO UPDATE SET "
            "count = r.count + EXCLUDED.count, sampled = r.sampled + EXCLUDED.sampled, "
            "errors = r.errors + EXCLUDED.errors, client_errors = r.client_errors + EXCLUDED.client_errors, "
            "latency_sum_ms = r.latency_sum_ms + EXCLUDED.latency_sum_ms, "
            "latency_max_ms = GREATEST(r.latency_max_ms, EXCLUDED.latency_max_ms), "
            "latency_histogram = ARRAY(SELECT h.a + h.b FROM unnest(r.latency_histogram, "
            "EXCLUDED.latency_histogram) WITH ORDINALITY AS h(a, b, i) ORDER BY h.i)",
            params)


# --- partitions -----------------------------------------------------------------------------------------------

_known_partition_days: dict[str, set[dt.date]] = {}


def _partition_cache() -> set[dt.date]:
    # Per database: tests and the benchmark point the same process at other databases.
    return _known_partition_days.setdefault(connection.settings_dict["NAME"], set())


def forget_known_partitions() -> None:
    """Drop the cache of partitions known to exist (after partitions were dropped behind our back)."""
    _known_partition_days.clear()


def _ensure_partitions(days: set[dt.date]) -> None:
    known = _partition_cache()
    missing = days - known
    if missing:
        services.predictionlog_partitions_ensure(days=missing)
        known |= missing


# --- one batch ------------------------------------------------------------------------------------------------

class _DeadLetters:
    """Collects the batch's dead letters; written to Redis before the batch commits."""

    def __init__(self, redis_client, stream: str):
        self.redis = redis_client
        self.stream = stream
        self.items: list[tuple[str, bytes, str]] = []

    def add(self, entry_id: str, raw: Any, reason: str) -> None:
        if isinstance(raw, str):
            raw = raw.encode()
        elif not isinstance(raw, bytes):
            raw = repr(raw).encode()
        self.items.append((entry_id, raw, reason))

    def flush(self) -> None:
        if not self.items:
            return
        if self.redis is None:
            raise RuntimeError("dead letters to write but no Redis client given to ingest_batch")
        target = dead_letter_stream(self.stream)
        at = dt.datetime.now(UTC).isoformat()
        pipe = self.redis.pipeline(transaction=False)
        for entry_id, raw, reason in self.items:
            log.warning("prediction entry %s of %s dead-lettered: %s", entry_id, self.stream, reason)
            pipe.xadd(target, {"id": entry_id, "stream": self.stream, "reason": reason, "r": raw, "at": at},
                      maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        pipe.execute()
        self.items = []


INGEST_LOCK = 0x4D50_494E  # "MPIN"; the second key is the stream's


def _stream_key(stream: str) -> int:
    return zlib.crc32(stream.encode()) - 2**31  # a signed int4, as pg_advisory_xact_lock(int, int) wants


def _already_ingested(stream: str, ids: list[str]) -> set[str]:
    """The ids among ``ids`` that a committed batch of ``stream`` covered."""
    ms = [_id_ms(i) for i in ids]
    table = IngestedBatch._meta.db_table
    with connection.cursor() as cursor:
        # Most batches overlap no earlier one at all: find that out without shipping the ids.
        cursor.execute(f"SELECT 1 FROM {table} WHERE stream = %s AND last_ms >= %s AND first_ms <= %s LIMIT 1",
                       [stream, min(ms), max(ms)])
        if cursor.fetchone() is None:
            return set()
        # The ids travel as one string (a text[] parameter costs ~4x more to send); INTERSECT hashes both
        # sides, where `= ANY(array)` would compare every pair.
        cursor.execute(
            f"SELECT e FROM (SELECT unnest(entry_ids) AS e FROM {table} "
            "WHERE stream = %s AND last_ms >= %s AND first_ms <= %s) AS seen "
            "INTERSECT SELECT unnest(string_to_array(%s, ','))",
            [stream, min(ms), max(ms), ",".join(ids)])
        return {row[0] for row in cursor.fetchall()}


def _record_batch(*, stream: str, consumer: str, ids: list[str], stats: BatchStats) -> None:
    ms = [_id_ms(i) for i in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {IngestedBatch._meta.db_table} (stream, consumer, first_ms, last_ms, entry_ids, "
            "records, logged, dead_lettered, created_at) "
            "VALUES (%s, %s, %s, %s, string_to_array(%s, ','), %s, %s, %s, now())",
            [stream, consumer[:200], min(ms), max(ms), ",".join(ids), stats.rolled_up, stats.logged,
             stats.dead_lettered])


def _copy_rows(rows: Sequence[tuple]) -> None:
    # Django's cursor wrapper hands .copy to psycopg's cursor.
    with connection.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
        for row in rows:
            copy.write_row(row)


def _write_log(records: list[Record], dead: _DeadLetters, stats: BatchStats) -> None:
    """COPY the records' rows; on a refusal, fall back to inserts that skip duplicates and isolate bad rows."""
    if not records:
        return
    rows = [r.row() for r in records]
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                _copy_rows(rows)
            stats.logged += len(rows)
            return
        except (psycopg.errors.CheckViolation, IntegrityError, psycopg.errors.IntegrityError) as exc:
            cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
            if attempt == 1 and isinstance(cause, psycopg.errors.CheckViolation):
                # "no partition of relation ... found for row": a partition we believed in was dropped
                # (or never committed); look again and retry once.
                forget_known_partitions()
                _ensure_partitions({dt.datetime.fromtimestamp(r.ts, UTC).date() for r in records})
                continue
            break
        except (psycopg.errors.DataError, DataError, psycopg.errors.ProgrammingError) as exc:
            log.warning("COPY of %d prediction rows refused (%s); inserting row by row", len(rows), exc)
            break
    # Slow path, rare: a (ts, request_id) already logged, or a value PostgreSQL refuses.
    with connection.cursor() as cursor:
        for record, row in zip(records, rows, strict=True):
            try:
                with transaction.atomic():
                    cursor.execute(INSERT_SQL, row)
                    inserted = cursor.rowcount
            except (DatabaseError, psycopg.DatabaseError) as exc:
                if isinstance(exc, (OperationalError, InterfaceError, psycopg.OperationalError)):
                    raise
                dead.add(record.entry_id, orjson.dumps({"row": [str(v) for v in row]}),
                         f"rejected by PostgreSQL: {str(exc).strip().splitlines()[0][:300]}")
                stats.dead_lettered += 1
                continue
            if inserted:
                stats.logged += 1
            else:
                stats.duplicate_rows += 1


@dataclass
class ParsedBatch:
    """A batch of stream entries read and parsed: the entries themselves (for XACK), their ids, the records,
    and the malformed ones as (entry id, payload, reason)."""

    entries: Sequence[tuple[Any, dict | None]]
    ids: list[str]
    records: list[Record]
    malformed: list[tuple[str, Any, str]]
    read_at: float = field(default_factory=time.monotonic)
    claimed: bool = False  # taken over from another consumer (XAUTOCLAIM)


def parse_batch(entries: Sequence[tuple[Any, dict | None]], *, now: float | None = None,
                claimed: bool = False) -> ParsedBatch:
    """Parse every entry; a malformed one is set aside with its reason, never raised."""
    now = time.time() if now is None else now
    batch = ParsedBatch(entries=entries, ids=[], records=[], malformed=[], claimed=claimed)
    for raw_id, entry_fields in entries:
        entry_id = _decode_id(raw_id)
        batch.ids.append(entry_id)
        try:
            batch.records.append(parse_entry(entry_id, entry_fields, now=now))
        except Exception as exc:  # noqa: BLE001 - Malformed, or a bug: either way one entry, not the stream
            reason = str(exc) if isinstance(exc, Malformed) else f"unreadable ({type(exc).__name__}: {exc})"
            raw = None
            if entry_fields:
                raw = entry_fields.get(b"r", entry_fields.get("r"))
            batch.malformed.append((entry_id, raw if raw is not None else entry_fields, reason))
    return batch


def ingest_batch(entries: Sequence[tuple[Any, dict | None]], *, stream: str = contract.PREDICTIONS_STREAM,
                 redis_client=None, consumer: str = "", now: float | None = None,
                 parsed: ParsedBatch | None = None, serialize: bool = False) -> BatchStats:
    """Write one batch of stream entries (``[(entry_id, fields), ...]`` as XREADGROUP returns them) to
    PostgreSQL in one transaction; return what happened to them. Acknowledging them is the caller's job,
    after this returns. ``redis_client`` receives the dead letters (needed only when there are any).
    ``parsed``: the entries already parsed (``parse_batch``; the worker's reader thread does it).

    ``serialize``: the batch may overlap one another worker is writing right now (entries claimed from a
    consumer thought dead, or held long enough to be claimed): its transaction then takes the stream's
    advisory lock before looking in the ledger, so that of two such transactions the second sees the
    first's entries and skips them. Ordinary batches never overlap and skip the lock.
    """
    stats = BatchStats(entries=len(entries))
    if not entries:
        return stats
    now = time.time() if now is None else now
    batch = parsed if parsed is not None else parse_batch(entries, now=now)
    ids, records = batch.ids, batch.records
    dead = _DeadLetters(redis_client, stream)
    for entry_id, raw, reason in batch.malformed:
        dead.add(entry_id, raw, reason)
    cutoff = services.retention_cutoff_day(today=dt.datetime.fromtimestamp(now, UTC).date())
    cutoff_ts = dt.datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC).timestamp()
    days = {_EPOCH_DAY + dt.timedelta(days=n)
            for n in {int(r.ts // 86400) for r in records if r.sampled and r.ts >= cutoff_ts}}
    # Before the batch's transaction: partition DDL locks the parent table, so keep it out of the long one.
    _ensure_partitions(days)

    with transaction.atomic():
        if serialize:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [INGEST_LOCK, _stream_key(stream)])
        seen = _already_ingested(stream, ids)
        if seen:
            stats.redelivered = len(seen)
            records = [r for r in records if r.entry_id not in seen]
            dead.items = [item for item in dead.items if item[0] not in seen]
            log.info("%d redelivered entries of %s were already ingested: skipped", len(seen), stream)
        stats.dead_lettered = len(dead.items)
        to_log = []
        for r in records:
            if not r.sampled:
                stats.unsampled += 1
            elif r.ts < cutoff_ts:
                stats.expired += 1
            else:
                to_log.append(r)
        _write_log(to_log, dead, stats)
        groups = rollup_groups(records)
        if groups:
            with connection.cursor() as cursor:
                _upsert_rollups(cursor, groups)
        stats.rolled_up = len(records)
        new_ids = [i for i in ids if i not in seen] if seen else ids
        if new_ids:
            _record_batch(stream=stream, consumer=consumer, ids=new_ids, stats=stats)
        # Last before COMMIT: a dead letter may be written twice (crash right here), never lost.
        dead.flush()
    return stats


# --- the worker loop ------------------------------------------------------------------------------------------

def consumer_name() -> str:
    """host-pid: unique per worker process, and says where a stuck consumer ran."""
    return f"{socket.gethostname()}-{os.getpid()}"


def redis_connect(url: str | None = None):
    import redis

    return redis.Redis.from_url(url or settings.REDIS_URL, socket_timeout=30, socket_connect_timeout=5,
                                health_check_interval=30)


def _stream_gone(exc: Exception) -> bool:
    """Redis' answers when the stream or its group was deleted under a reader (then: create them again)."""
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text or "no such key" in text


def ensure_group(client, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing, from the stream's start: records the gateway
    wrote before the first ingest ran are read too."""
    import redis

    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def acknowledge(client, stream: str, group: str, ids: Sequence[Any]) -> None:
    """XACK the entries, then trim what every group of the stream is done with."""
    if not ids:
        return
    client.xack(stream, group, *ids)
    trim_acknowledged(client, stream)


def _parse_id(entry_id: Any) -> tuple[int, int]:
    ms, _, seq = _decode_id(entry_id).partition("-")
    return int(ms), int(seq or 0)


def trim_acknowledged(client, stream: str) -> str | None:
    """Remove the entries that every consumer group of ``stream`` has read and acknowledged; return the
    oldest id kept.

    XTRIM MINID at the oldest entry some group still needs (its oldest pending entry, else the one after
    the last delivered to it): three small commands, where XDEL of a batch's ids ships them all again.
    A second group on the stream (another reader of prediction records) keeps what it has not read.
    """
    import redis

    keep: tuple[int, int] | None = None
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError as exc:  # the stream is gone (deleted under us): nothing to trim
        log.warning("cannot trim %s: %s", stream, exc)
        return None
    for info in groups:
        if info.get("pending"):
            summary = client.xpending(stream, info["name"])
            needed = _parse_id(summary["min"])
        else:
            ms, seq = _parse_id(info["last-delivered-id"])
            needed = (ms, seq + 1)
        keep = needed if keep is None else min(keep, needed)
    if keep is None:
        return None
    minid = f"{keep[0]}-{keep[1]}"
    client.xtrim(stream, minid=minid, approximate=False)
    return minid


def claim_stale(client, *, stream: str, group: str, consumer: str, min_idle_ms: int = CLAIM_IDLE_MS,
                count: int = 1000) -> Iterable[list[tuple[Any, dict | None]]]:
    """Yield batches of entries pending for other consumers longer than ``min_idle_ms``, now ours (XAUTOCLAIM)."""
    start = "0-0"
    while True:
        reply = client.xautoclaim(stream, group, consumer, min_idle_ms, start_id=start, count=count)
        start, entries = reply[0], reply[1]
        if entries:
            yield entries
        if start in (b"0-0", "0-0"):
            return


def forget_idle_consumers(client, *, stream: str, group: str, me: str,
                          idle_ms: int = FORGET_CONSUMERS_IDLE_MS) -> list[str]:
    """Remove consumers of earlier processes that have nothing pending and have been idle for a day."""
    import redis

    removed = []
    try:
        consumers = client.xinfo_consumers(stream, group)
    except redis.ResponseError as exc:  # housekeeping only: never a reason not to ingest
        log.warning("cannot list the consumers of %s/%s: %s", stream, group, exc)
        return removed
    for info in consumers:
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name != me and info.get("pending", 0) == 0 and info.get("idle", 0) > idle_ms:
            client.xgroup_delconsumer(stream, group, name)
            removed.append(name)
    return removed


@dataclass
class RunStats(BatchStats):
    """A run's totals: the batches' stats summed, plus the batches and the time taken."""

    batches: int = 0
    seconds: float = 0.0
    errors: int = 0  # database or Redis failures survived (the batch was retried)
    consumer: str = field(default="")

    def add(self, other: BatchStats) -> None:
        for f in fields(BatchStats):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


_IDLE, _DONE = "idle", "done"  # the reader's signals besides a batch of entries


class _StreamReader(threading.Thread):
    """Reads the next batch (XREADGROUP ``>``) while the main thread writes the current one to PostgreSQL.

    Parsing a Redis reply is Python work and writing a batch is mostly waiting for PostgreSQL, so the two
    overlap. The queue holds one batch: at most two batches are read ahead of their commit (one queued, one
    being read), and whatever was read is handed over, never dropped: when stopping, the reader puts what it
    holds, then ``_DONE``. An empty read puts ``_IDLE``, so the main thread wakes at least every block.
    """

    def __init__(self, *, client, stream: str, group: str, consumer: str, batch_size: int, block_ms: int,
                 stop_event: threading.Event):
        super().__init__(name=f"prediction-reader-{consumer}", daemon=True)
        self.client, self.stream, self.group, self.consumer = client, stream, group, consumer
        self.batch_size, self.block_ms, self.stop_event = batch_size, block_ms, stop_event
        self.batches: queue.Queue = queue.Queue(maxsize=1)
        self.failure: BaseException | None = None
        self.errors = 0
        self.busy = True  # the last read found entries: try the script first
        self.fast = FAST_READ

    def read(self) -> list:
        """The next batch: through the script while entries keep coming, else a blocking XREADGROUP (which
        waits for the next entry; the script cannot block)."""
        import redis

        if self.fast and self.busy:
            try:
                entries = read_batch_fast(self.client, stream=self.stream, group=self.group,
                                          consumer=self.consumer, count=self.batch_size)
            except redis.ResponseError as exc:
                if _stream_gone(exc):
                    raise
                # A Redis without scripting (some managed services): the plain read works everywhere.
                log.warning("reading %s through a script failed (%s); using XREADGROUP", self.stream, exc)
                self.fast = False
                entries = []
            if entries:
                return entries
        entries = _entries_of(self.client.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                     count=self.batch_size, block=self.block_ms))
        self.busy = bool(entries)
        return entries

    def run(self) -> None:
        import redis

        backoff = 0.0
        try:
            while not self.stop_event.is_set():
                try:
                    entries = self.read()
                    backoff = 0.0
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self.errors += 1
                    backoff = min(max(backoff * 2, 0.5), 15.0)
                    log.error("Redis unavailable (%s); reading again in %.1f s", exc, backoff)
                    self.batches.put(_IDLE)
                    self.stop_event.wait(backoff)
                    continue
                except redis.ResponseError as exc:
                    if not _stream_gone(exc):
                        raise
                    log.warning("consumer group %s of %s is gone; creating it again", self.group, self.stream)
                    ensure_group(self.client, self.stream, self.group)
                    continue
                # Parsed here, while the main thread waits for PostgreSQL on the previous batch.
                self.batches.put(parse_batch(entries) if entries else _IDLE)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            self.failure = exc
        finally:
            self.batches.put(_DONE)


# XREADGROUP inside Redis, the reply flattened into one string: redis-py's pure-Python reply parser costs
# ~12 us an entry (5 elements each), the most expensive step of the ingest; slicing one string costs ~1 us.
# Each entry: "<id> r <length>\n<value of field r>" (the contract's one field), otherwise
# "<id> x <n>\n" followed by n times "<length>\n<bytes>" (field, value, field, value...) so that a malformed
# entry reaches the dead-letter stream exactly as it was.
_READ_SCRIPT = """
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not reply then return '' end
local out = {}
for _, entry in ipairs(reply[1][2]) do
  local f = entry[2]
  if #f == 2 and f[1] == 'r' then
    out[#out + 1] = entry[1] .. ' r ' .. #f[2] .. '\\n' .. f[2]
  else
    out[#out + 1] = entry[1] .. ' x ' .. #f .. '\\n'
    for _, item in ipairs(f) do out[#out + 1] = #item .. '\\n' .. item end
  end
end
return table.concat(out)
"""


def _hiredis_available() -> bool:
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:  # pragma: no cover - older redis-py
        return False
    return bool(HIREDIS_AVAILABLE)


# With hiredis (a C parser redis-py uses when installed) the plain XREADGROUP is cheaper on both sides.
FAST_READ = not _hiredis_available()  # benchmarks compare with it off


def read_batch_fast(client, *, stream: str, group: str, consumer: str, count: int) -> list:
    """XREADGROUP ``>`` (never blocking) through a Lua script; entries as redis-py's XREADGROUP returns them
    (``client`` must not decode responses). EVALSHA, loading the script on first use."""
    blob = client.register_script(_READ_SCRIPT)(keys=[stream], args=[group, consumer, count])
    entries = []
    pos, end = 0, len(blob)
    while pos < end:
        newline = blob.index(b"\n", pos)
        entry_id, kind, number = blob[pos:newline].split(b" ")
        pos = newline + 1
        if kind == b"r":
            stop = pos + int(number)
            entries.append((entry_id, {b"r": blob[pos:stop]}))
            pos = stop
            continue
        items = []
        for _ in range(int(number)):
            newline = blob.index(b"\n", pos)
            stop = newline + 1 + int(blob[pos:newline])
            items.append(blob[newline + 1:stop])
            pos = stop
        entries.append((entry_id, dict(zip(items[::2], items[1::2], strict=True))))
    return entries


def _entries_of(reply) -> list:
    """The entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (value,) = reply.values()
        return value[0] if value and isinstance(value[0], list) else value
    return reply[0][1]


def ingest_run(*, stream: str = contract.PREDICTIONS_STREAM, group: str = contract.PREDICTIONS_GROUP,
               consumer: str | None = None, stop_event: threading.Event | None = None,
               batch_size: int | None = None, block_ms: int = 1000, claim_idle_ms: int = CLAIM_IDLE_MS,
               redis_client=None, stop_when_idle: bool = False, report_every: float = 30.0) -> RunStats:
    """Read ``stream`` as ``consumer`` of ``group`` and ingest batch after batch until ``stop_event`` is set
    (or, with ``stop_when_idle``, until a read finds nothing: benchmarks and tests).

    At start, and every CLAIM_EVERY_SECONDS, entries left pending by dead consumers (idle > ``claim_idle_ms``)
    are claimed and ingested first. A batch that fails on PostgreSQL is retried (after a back-off) until it
    is written or the worker is stopped; if stopped first, its entries stay pending and another worker claims
    them. Acknowledging is retried the same way. Nothing read is skipped.
    """
    import redis

    stop_event = stop_event or threading.Event()
    consumer = consumer or consumer_name()
    batch_size = batch_size or settings.MODELPLANE_INGEST_BATCH_SIZE
    client = redis_client or redis_connect()
    run = RunStats(consumer=consumer)
    started = time.monotonic()
    last_report, reported = time.monotonic(), 0

    def retrying(what: str, action) -> bool:
        """Run ``action`` until it succeeds (True) or the worker is stopped (False)."""
        backoff = 0.0
        while True:
            if not connection.in_atomic_block:
                # Replace a connection past CONN_MAX_AGE or broken; never inside a caller's transaction.
                close_old_connections()
            try:
                action()
                return True
            except (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError) as exc:
                problem = f"PostgreSQL unavailable ({exc})"
                if not connection.in_atomic_block:
                    connection.close()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                problem = f"Redis unavailable ({exc})"
            run.errors += 1
            backoff = min(max(backoff * 2, 0.5), 15.0)
            if stop_event.is_set():
                log.error("%s while %s; stopping: the entries stay pending for another worker", problem, what)
                return False
            log.error("%s while %s; retrying in %.1f s", problem, what, backoff)
            stop_event.wait(backoff)
            if stop_event.is_set():
                return False

    def process(batch: ParsedBatch) -> None:
        holder: list[BatchStats] = []

        def write() -> None:
            # Another worker can claim our entries once they are idle for claim_idle_ms: a batch held for a
            # quarter of that (PostgreSQL was away) is written under the stream's lock, as claimed ones are.
            serialize = batch.claimed or (time.monotonic() - batch.read_at) * 1000 >= claim_idle_ms / 4
            holder.append(ingest_batch(batch.entries, stream=stream, redis_client=client, consumer=consumer,
                                       parsed=batch, serialize=serialize))

        if not retrying("writing a batch", write):
            return
        if retrying("acknowledging a batch",
                    lambda: acknowledge(client, stream, group, [e[0] for e in batch.entries])):
            run.add(holder[0])
            run.batches += 1

    def claim() -> None:
        try:
            for entries in claim_stale(client, stream=stream, group=group, consumer=consumer,
                                       min_idle_ms=claim_idle_ms, count=batch_size):
                log.info("claimed %d entries of %s left pending by other consumers", len(entries), stream)
                process(parse_batch(entries, claimed=True))
                if stop_event.is_set():
                    return
        except redis.ResponseError as exc:
            if not _stream_gone(exc):
                raise
            log.warning("consumer group %s of %s is gone; creating it again", group, stream)
            ensure_group(client, stream, group)

    def start() -> None:
        ensure_group(client, stream, group)
        services.predictionlog_partitions_ensure()
        removed = forget_idle_consumers(client, stream=stream, group=group, me=consumer)
        if removed:
            log.info("removed idle consumers of %s/%s: %s", stream, group, ", ".join(removed))

    if not retrying("starting", start):
        run.seconds = time.monotonic() - started
        return run
    retrying("claiming pending entries", claim)
    last_claim = time.monotonic()

    reader = _StreamReader(client=client, stream=stream, group=group, consumer=consumer,
                           batch_size=batch_size, block_ms=block_ms, stop_event=stop_event)
    reader.start()
    try:
        while True:
            item = reader.batches.get()
            if item is _DONE:
                break
            if item is _IDLE:
                if stop_when_idle:
                    stop_event.set()  # the reader hands over what it still holds, then _DONE
            else:
                process(item)
            now = time.monotonic()
            if not stop_event.is_set() and now - last_claim >= CLAIM_EVERY_SECONDS:
                retrying("claiming pending entries", claim)
                last_claim = time.monotonic()
            if now - last_report >= report_every:
                done = run.entries - reported
                log.info("ingested %d entries in the last %.0f s (%.0f/s); totals %s", done, now - last_report,
                         done / (now - last_report), run.as_dict())
                last_report, reported = now, run.entries
    finally:
        stop_event.set()
        reader.join(timeout=max(5.0, 2 * block_ms / 1000))
    run.errors += reader.errors
    if reader.failure is not None:
        raise reader.failure
    run.seconds = time.monotonic() - started
    return run
