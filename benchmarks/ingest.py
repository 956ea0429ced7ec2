#!/usr/bin/env python
"""Prediction-log ingest throughput: Redis stream -> PostgreSQL with COPY, against executemany INSERT.

    python benchmarks/ingest.py [--records 200000 --runs 3 --batch-size 5000]

Everything it uses is its own and is removed at the end, also on Ctrl-C, SIGTERM or an error:

1. A scratch database ``bench_ingest_<id>`` on the PostgreSQL server of ``DATABASE_URL`` (else
   postgres@127.0.0.1:5432), migrated in-process; a stream ``bench:predictions:<id>`` on ``REDIS_URL``'s server
   (else redis://127.0.0.1:6379/14, neither the development db 0 nor the tests' db 15).
2. ``--records`` records in the gateway's shape (apps/gateway/contract.py): 6 deployments with sampling rates
   1.0, 1.0, 0.5, 0.5, 0.1 and 0.0 (about 52 % sampled), two variants each, over the last ten minutes,
   log-normal latencies, ~3 % 5xx and ~2 % 4xx, small JSON inputs (6 features) and outputs.
3. Each run empties the tables, fills the stream (pipelined XADD, not timed), then times the real ingest loop,
   ``apps.monitoring.ingest.ingest_run`` (XREADGROUP, parse, one transaction per batch with COPY + rollup
   upsert + ledger, XACK + XDEL) from a full stream until it is empty, and checks the result: every record in
   the rollups, every sampled one in the log, the stream drained.
4. Baseline, the same loop with one change: the log rows go in by ``cursor.executemany(INSERT ...)``
   (psycopg 3 pipelines it) instead of COPY. Runs alternate (COPY, INSERT, COPY, ...) so a busy machine slows
   both alike. ``--plain-read`` adds the COPY loop reading with redis-py's XREADGROUP instead of the Lua read.

Printed: cores and load average, then per method the median records/s over the runs (all records, sampled or
not: what the stream delivers), the rows/s into the log, the share of time inside ``ingest_batch`` (parse +
PostgreSQL), and COPY/INSERT; then the CPU time per record of the worker, its PostgreSQL backend and Redis,
which a busy machine changes far less than the wall-clock rate. Goal: at least 20 000 records/s with COPY.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apps.core.embedded import libpq_url, redacted, with_database

GOAL = 20_000
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
DEPLOYMENTS = [  # (id, name, sampling rate)
    (101, "fraud-scorer", 1.0), (102, "churn", 1.0), (103, "recs-ranker", 0.5), (104, "pricing", 0.5),
    (105, "search-embed", 0.1), (106, "ads-ctr", 0.0),
]


def say(message: str) -> None:
    try:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
    except OSError:
        pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def admin_execute(admin_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def make_records(n: int, seed: int = 7) -> list[bytes]:
    """``n`` JSON records as the gateway writes them."""
    import orjson

    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        dep_id, name, rate = DEPLOYMENTS[i % len(DEPLOYMENTS)]
        variant = "blue" if rng.random() < 0.8 else "green"
        roll = rng.random()
        status = 500 if roll < 0.03 else (400 if roll < 0.05 else 200)
        sampled = rng.random() < rate
        features = {"amount": round(rng.uniform(1, 5000), 2), "country": rng.choice(["DE", "FR", "US", "JP"]),
                    "age": rng.randint(18, 90), "tenure_days": rng.randint(0, 4000),
                    "channel": rng.choice(["web", "app", "store"]), "score_prev": round(rng.random(), 4)}
        out.append(orjson.dumps({
            "request_id": uuid.UUID(int=rng.getrandbits(128)).hex, "deployment_id": dep_id, "deployment": name,
            "variant": variant, "model_version": 3 if variant == "blue" else 4,
            "ts": now - 600 + 600 * i / n, "latency_ms": round(math.exp(rng.gauss(1.5, 0.8)), 3),
            "status": status, "sampled": sampled,
            "inputs": {"dataframe_records": [features]} if sampled else None,
            "outputs": {"predictions": [round(rng.random(), 5)]} if sampled and status == 200 else None,
            "entity_key": f"cust-{rng.randint(1, 100000)}",
            "error": "model server returned 500" if status == 500 else ("bad input" if status == 400 else None),
        }))
    return out


def fill(client, stream: str, records: list[bytes]) -> float:
    started = time.monotonic()
    for start in range(0, len(records), 5000):
        pipe = client.pipeline(transaction=False)
        for raw in records[start:start + 5000]:
            pipe.xadd(stream, {"r": raw})
        pipe.execute()
    return time.monotonic() - started


def reset_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE monitoring_predictionrecord, monitoring_predictionrollup, "
                       "monitoring_ingestedbatch")


class executemany_instead_of_copy:
    """The baseline: the ingest loop unchanged but for how the log rows are written."""

    def __enter__(self):
        from apps.monitoring import ingest

        self.original = ingest._copy_rows
        plain = ingest.INSERT_SQL.replace(" ON CONFLICT DO NOTHING", "")

        def insert_rows(rows):
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.executemany(plain, rows)

        ingest._copy_rows = insert_rows
        return self

    def __exit__(self, *exc):
        from apps.monitoring import ingest

        ingest._copy_rows = self.original


def timed_run(client, stream: str, records: list[bytes], expected_sampled: int, batch_size: int,
              method: str) -> dict:
    from django.db import connection

    from apps.monitoring import ingest
    from apps.monitoring.models import PredictionRecord, PredictionRollup

    reset_tables()
    client.delete(stream, ingest.dead_letter_stream(stream))
    fill_seconds = fill(client, stream, records)
    ingest.ensure_group(client, stream, "ingest")
    inside = [0.0]
    original_batch = ingest.ingest_batch
    with connection.cursor() as cursor:  # the backend the ingest will use (a fresh connection per run)
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    cpu_before = (time.process_time(), process_cpu(backend), redis_cpu(client))

    def measured_batch(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original_batch(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - started

    ingest.ingest_batch = measured_batch
    fast_read_default = ingest.FAST_READ
    if method == "plain-read":
        ingest.FAST_READ = False
    try:
        with executemany_instead_of_copy() if method == "insert" else contextlib.nullcontext():
            run = ingest.ingest_run(stream=stream, group="ingest", consumer="bench", batch_size=batch_size,
                                    redis_client=client, stop_when_idle=True, block_ms=100)
    finally:
        ingest.ingest_batch = original_batch
        ingest.FAST_READ = fast_read_default
    cpu_after = (time.process_time(), process_cpu(backend), redis_cpu(client))
    cpu = [None if a is None or b is None else b - a for a, b in zip(cpu_before, cpu_after, strict=True)]
    # The check: nothing lost, nothing doubled.
    logged = PredictionRecord.objects.count()
    counted = sum(PredictionRollup.objects.values_list("count", flat=True))
    problems = []
    if run.entries != len(records) or counted != len(records):
        problems.append(f"{run.entries} entries read, {counted} counted in rollups, {len(records)} sent")
    if logged != expected_sampled:
        problems.append(f"{logged} rows logged, {expected_sampled} sampled")
    if client.xlen(stream) or run.dead_lettered or run.errors:
        problems.append(f"stream left {client.xlen(stream)}, {run.dead_lettered} dead letters, "
                        f"{run.errors} errors")
    if problems:
        raise SystemExit(f"{method}: WRONG RESULT: " + "; ".join(problems))
    connection.close()
    return {"seconds": run.seconds, "inside": inside[0], "fill": fill_seconds, "logged": logged,
            "batches": run.batches, "cpu": cpu}


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a local process has used; None when /proc does not show it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client) -> float | None:
    try:
        info = client.info("cpu")
    except Exception:  # noqa: BLE001 - a figure we can do without
        return None
    return info["used_cpu_user"] + info["used_cpu_sys"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--plain-read", action="store_true",
                        help="also time COPY with redis-py's XREADGROUP instead of the Lua read")
    args = parser.parse_args()
    if args.records < 1 or args.runs < 1:
        parser.error("--records and --runs must be at least 1")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    load = os.getloadavg()
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    admin_url = with_database(server_url, "postgres")
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    import psycopg
    import redis

    with psycopg.connect(libpq_url(admin_url), connect_timeout=5) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    print(f"PostgreSQL {pg_version} at {redacted(admin_url)}; Redis at {redacted(redis_url)}; "
          f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}); Python {sys.version.split()[0]}")
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"Redis does not answer at {redis_url} ({exc}); set REDIS_URL.")
        return 2

    tag = uuid.uuid4().hex[:8]
    db_name = f"bench_ingest_{tag}"
    stream = f"bench:predictions:{tag}"
    created = False
    try:
        admin_execute(admin_url, f'CREATE DATABASE "{db_name}"')
        created = True
        say(f"created scratch database {db_name}")
        os.environ.update(DJANGO_SETTINGS_MODULE="controlplane.settings.base",
                          DATABASE_URL=with_database(server_url, db_name), REDIS_URL=redis_url,
                          MODELPLANE_LOG_LEVEL="WARNING")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from apps.monitoring import services

        services.predictionlog_partitions_ensure(ahead=1)
        say("migrated; partitions in place")

        started = time.monotonic()
        records = make_records(args.records)
        import orjson

        sampled = sum(1 for raw in records if orjson.loads(raw)["sampled"])
        size = sum(len(r) for r in records) / len(records)
        say(f"made {len(records)} records in {time.monotonic() - started:.1f} s: {sampled} sampled "
            f"({100 * sampled / len(records):.0f} %), {size:.0f} bytes each on average")

        methods = ("copy", "insert", "plain-read") if args.plain_read else ("copy", "insert")
        results: dict[str, list[dict]] = {m: [] for m in methods}
        for i in range(args.runs):
            for method in methods:
                r = timed_run(client, stream, records, sampled, args.batch_size, method)
                results[method].append(r)
                say(f"run {i + 1}/{args.runs} {method:10s}: {len(records) / r['seconds']:8.0f} records/s "
                    f"({r['seconds']:.2f} s, {r['batches']} batches; {r['inside'] / r['seconds']:.0%} inside "
                    f"ingest_batch; stream filled at {len(records) / r['fill']:.0f}/s)")

        print()
        print(f"{len(records)} records ({sampled} sampled), batches of {args.batch_size}, "
              f"median of {args.runs} runs each:")
        print(f"  {'method':34s} {'records/s':>10s} {'log rows/s':>11s} {'seconds':>8s} {'in batch':>9s}")
        medians = {}
        labels = {"copy": "COPY (ours)", "insert": "executemany INSERT (baseline)",
                  "plain-read": "COPY, redis-py XREADGROUP read"}
        for method in methods:
            label = labels[method]
            seconds = statistics.median(r["seconds"] for r in results[method])
            inside = statistics.median(r["inside"] / r["seconds"] for r in results[method])
            medians[method] = len(records) / seconds
            print(f"  {label:34s} {medians[method]:10.0f} {sampled / seconds:11.0f} {seconds:8.2f} {inside:9.0%}")
        print()
        print("CPU per record (median; worker = this process, both threads; PostgreSQL = the ingest's backend; "
              "Redis = the whole server, other clients included):")
        print(f"  {'method':34s} {'worker':>8s} {'postgres':>9s} {'redis':>7s} {'total':>7s} {'records/CPU-s':>14s}")
        for method in methods:
            parts = []
            for i in range(3):
                values = [r["cpu"][i] for r in results[method] if r["cpu"][i] is not None]
                parts.append(statistics.median(values) / len(records) * 1e6 if values else None)
            known = [p for p in parts if p is not None]
            total = sum(known)
            shown = [f"{p:.1f}" if p is not None else "n/a" for p in parts]
            print(f"  {labels[method]:34s} {shown[0]:>8s} {shown[1]:>9s} {shown[2]:>7s} {total:7.1f} "
                  f"{1e6 / total:14.0f}")
        print(f"  COPY / INSERT: {medians['copy'] / medians['insert']:.2f}x")
        if "plain-read" in medians:
            print(f"  Lua read / redis-py read: {medians['copy'] / medians['plain-read']:.2f}x")
        verdict = "meets" if medians["copy"] >= GOAL else "MISSES"
        print(f"  goal >= {GOAL} records/s with COPY: {verdict} ({medians['copy']:.0f})")
        end_load = os.getloadavg()
        print(f"load average {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f} at the end")
        return 0
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        try:
            client.delete(stream, f"{stream}:dead")
        except redis.RedisError as exc:
            say(f"could not delete the stream {stream}: {exc}")
        if created:
            # Django may not be set up yet; the drop below forces the connections closed anyway.
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            say(f"dropped {db_name}")


if __name__ == "__main__":
    sys.exit(main())
