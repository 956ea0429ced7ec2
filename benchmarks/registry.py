#!/usr/bin/env python
"""The registry's model list against MLflow's own search_registered_models, on the same PostgreSQL server.

    python benchmarks/registry.py [--models 1000 --versions 10 --repeat 200 --time-cap 120 --explain]

Everything it uses is its own and is removed at the end, also on Ctrl-C, SIGTERM or an error:

1. Two scratch databases on the PostgreSQL server of ``DATABASE_URL`` (else postgres@127.0.0.1:5432): one for
   Modelplane, migrated with ``manage.py migrate``, one for MLflow's backend store.
2. A real ``mlflow server`` on that store (one worker, job execution off, as tests/registry/conftest.py does)
   and Modelplane under gunicorn (one sync worker, ``controlplane.settings.base``, ``MODELPLANE_DEBUG=0``), on
   loopback ports, under the process supervisor of ``apps.core.embedded``.
3. MLflow gets ``--models`` registered models x ``--versions`` versions (tags on every model, aliases on some)
   in-process through MLflow's own ``SqlAlchemyStore`` on the same database, not over REST (one call at a time
   through the server's single worker and its HTTP layer): every model, tag and alias through its
   create_registered_model and set_registered_model_alias, the code the server runs behind those REST calls;
   the versions of every ``--real-every``th model (default 10th) through create_model_version, the others in
   bulk through MLflow's ORM classes with the same values (create_model_version costs ~10 ms of Python a call;
   10 000 of them would be most of the run), checked column by column against the real ones. Modelplane's
   rows come from bulk_create with MLflow's names, tags and aliases: two teams splitting the models, one user
   in the first team (so team scoping hides half of them).
4. Timed over HTTP on loopback, the same client for both sides, a new connection per request, interleaved
   round-robin so a busy machine slows every side alike:
     - MLflow: GET /api/2.0/mlflow/registered-models/search?max_results=N (the baseline of every ratio) and
       MlflowClient().search_registered_models(max_results=N) (adds the client's parsing; for reference);
     - ours, signed in with a session cookie: GET /api/v1/models/?page_size=N, the page registry:model_list
       (/models/, its own page size, against MLflow at that size), and two floors without a model list:
       GET /api/v1/me/ (session, middleware, throttle) and GET /accounts/profile/ (a page's shell).
   N is --page-size (100, also MLflow's default max_results) and the page's size when that differs. A
   measurement whose URL does not resolve (yet) is skipped with a line saying so.
5. The database layer alone, in-process: our selector ``registeredmodel_list`` (first N rows, with its
   prefetch) against ``SqlAlchemyStore.search_registered_models(max_results=N)``.
6. Our requests profiled in-process: queries per request, SQL time, the slowest statements, repeated
   statements (N+1); when a ratio is above the goal (1.5x MLflow) or with ``--explain``, also EXPLAIN ANALYZE
   of the slowest registry query and the Python functions that take the time.

Printed: cores and load average, then median and p95 in milliseconds, requests timed, ours/MLflow. On a loaded
machine the absolute figures move; the ratios, measured side by side, much less.
"""
from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import math
import os
import pstats
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent

from apps.core.embedded import ServiceProblem, Supervisor, libpq_url, redacted, with_database

GOAL_RATIO = 1.5
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"  # not 0 (the development default) nor 15 (the tests)
MLFLOW_DEFAULT_MAX_RESULTS = 100  # mlflow.store.model_registry.SEARCH_REGISTERED_MODEL_MAX_RESULTS_DEFAULT


def say(message: str) -> None:
    try:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
    except OSError:  # stdout closed (piped into head): the clean-up must still run to the end
        pass


def model_name(i: int) -> str:
    return f"bench-model-{i:05d}"


def model_tags(i: int) -> dict[str, str]:
    return {"task": ("classification", "regression", "ranking")[i % 3], "owner": f"owner{i % 17}",
            "modelplane.team": "bench-a" if i % 2 == 0 else "bench-b"}


def model_aliases(i: int, versions: int) -> dict[str, int]:
    """Every 4th model has a champion (its newest version); every 10th also a challenger."""
    found = {}
    if i % 4 == 0:
        found["champion"] = versions
    if i % 10 == 0 and versions > 1:
        found["challenger"] = versions - 1
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --- databases --------------------------------------------------------------------------------------------

def admin_execute(admin_url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def pg_server_version(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(admin_url), connect_timeout=5) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def analyze(url: str) -> None:
    """Fresh planner statistics after the bulk load (both databases alike)."""
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# --- services ---------------------------------------------------------------------------------------------

def http_ready(port: int, path: str) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


def wait_for(sup: Supervisor, what: str, ready, timeout: float) -> float:
    """Poll until ready; fail when a service died or the time ran out. Returns seconds waited."""
    start = time.monotonic()
    while not ready():
        sup.check_children(starting=True)
        if time.monotonic() - start > timeout:
            raise ServiceProblem(f"{what} did not become ready within {timeout:.0f} s.")
        time.sleep(0.25)
    return time.monotonic() - start


# --- populating ------------------------------------------------------------------------------------------

def populate_mlflow(store, n_models: int, n_versions: int, real_every: int) -> tuple[float, int]:
    """Fill MLflow's backend store with MLflow's own code.

    Every model, its tags and its aliases go through the store's create_registered_model and
    set_registered_model_alias, the code the server runs behind the REST calls. The versions of every
    ``real_every``-th model go through create_model_version too; the others are inserted in bulk through
    MLflow's own ORM classes (SqlModelVersion, SqlModelVersionTag) with the values create_model_version
    writes, one transaction per 50 models: create_model_version costs ~10 ms of Python a call (several
    queries, eager loads, a commit), which for 10 000 versions would be most of the run. ``check_fill``
    compares the two kinds of rows column by column.

    Returns (seconds, versions made through create_model_version)."""
    from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag
    from mlflow.store.model_registry.dbmodels.models import (
        SqlModelVersion,
        SqlModelVersionTag,
        SqlRegisteredModel,
    )
    from mlflow.utils.time import get_current_time_millis

    started = time.monotonic()
    real = 0
    step = max(50, n_models // 5)
    for first in range(0, n_models, 50):
        chunk = range(first, min(first + 50, n_models))
        for i in chunk:
            name = model_name(i)
            tags = [RegisteredModelTag(k, v) for k, v in model_tags(i).items()]
            store.create_registered_model(name, tags=tags, description=f"Benchmark model {i}.")
            if i % real_every == 0:
                for v in range(1, n_versions + 1):
                    store.create_model_version(name, source=f"s3://bench-artifacts/{name}/{v}/model",
                                               run_id=uuid.uuid4().hex, description=f"Version {v}.",
                                               tags=[ModelVersionTag("stage", "candidate")])
                real += n_versions
        bulk = [i for i in chunk if i % real_every != 0]
        if bulk:
            with store.ManagedSessionMaker(read_only=False) as session:
                now = get_current_time_millis()
                for i in bulk:
                    name = model_name(i)
                    for v in range(1, n_versions + 1):
                        source = f"s3://bench-artifacts/{name}/{v}/model"
                        row = store._with_workspace_field(SqlModelVersion(
                            name=name, version=v, creation_time=now, last_updated_time=now, source=source,
                            storage_location=source, run_id=uuid.uuid4().hex, run_link=None,
                            description=f"Version {v}."))
                        row.model_version_tags = [store._with_workspace_field(
                            SqlModelVersionTag(name=name, version=v, key="stage", value="candidate"))]
                        session.add(row)
                # create_model_version also touches its registered model
                touched = SqlRegisteredModel.name.in_([model_name(i) for i in bulk])
                session.query(SqlRegisteredModel).filter(touched).update({"last_updated_time": now},
                                                                         synchronize_session=False)
        for i in chunk:
            for alias, version in model_aliases(i, n_versions).items():
                store.set_registered_model_alias(model_name(i), alias, str(version))
        if chunk.stop % step == 0 and chunk.stop < n_models:
            say(f"  MLflow: {chunk.stop}/{n_models} models ({time.monotonic() - started:.0f} s)")
    return time.monotonic() - started, real


def check_fill(store, n_models: int, real_every: int) -> None:
    """Compare a version made by create_model_version with a bulk one, column by column (the columns that
    differ by design, names, ids, times, sources, left out); say so loudly if they differ."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion

    if real_every <= 1 or n_models < 2:
        return
    varying = {"name", "run_id", "creation_time", "last_updated_time", "source", "storage_location"}
    with store.ManagedSessionMaker() as session:
        rows = {r.name: r for r in session.query(SqlModelVersion).filter(
            SqlModelVersion.name.in_([model_name(0), model_name(1)]), SqlModelVersion.version == 1)}
        columns = [c.name for c in SqlModelVersion.__table__.columns if c.name not in varying]
        real, bulk = rows[model_name(0)], rows[model_name(1)]
        differ = [c for c in columns if getattr(real, c) != getattr(bulk, c)]
        tags_differ = ({(t.key, t.value) for t in real.model_version_tags}
                       != {(t.key, t.value) for t in bulk.model_version_tags})
    if differ or tags_differ:
        what = differ + (["tags"] if tags_differ else [])
        print(f"  WARNING: bulk versions differ from create_model_version's in {', '.join(what)}")
    else:
        print(f"  checked: a bulk version equals one from create_model_version in every other column "
              f"({', '.join(columns)}) and its tags")


def populate_modelplane(n_models: int, n_versions: int):
    """Bulk rows matching MLflow's: two teams, one user in the first, the same names, tags and aliases."""
    from django.utils import timezone

    from apps.accounts.models import Membership, Team, User
    from apps.core.permissions import DATA_SCIENTIST
    from apps.registry.models import AliasAssignment, ModelVersion, RegisteredModel, RiskTier

    started = time.monotonic()
    team_a, team_b = Team.objects.bulk_create([Team(name="Bench A", slug="bench-a"),
                                               Team(name="Bench B", slug="bench-b")])
    user = User.objects.create_user(username="bench", password=None)
    Membership.objects.create(user=user, team=team_a, role=DATA_SCIENTIST)
    tiers = [RiskTier.LOW, RiskTier.MEDIUM, RiskTier.HIGH]
    models = RegisteredModel.objects.bulk_create([
        RegisteredModel(team=team_a if i % 2 == 0 else team_b, name=model_name(i),
                        description=f"Benchmark model {i}.", tags=model_tags(i), risk_tier=tiers[i % 3],
                        created_by=user, latest_version=n_versions)
        for i in range(n_models)], batch_size=1000)
    now = timezone.now()
    statuses = [ModelVersion.Status.READY] * 8 + [ModelVersion.Status.PENDING_SCAN,
                                                  ModelVersion.Status.BLOCKED]
    versions = ModelVersion.objects.bulk_create([
        ModelVersion(model=m, version=v, status=statuses[(i + v) % len(statuses)],
                     origin=ModelVersion.Origin.SYNC, description=f"Version {v}.",
                     tags={"stage": "candidate"},
                     source=f"s3://bench-artifacts/{m.name}/{v}/model", run_id=uuid.uuid4().hex,
                     flavors={"python_function": {}, "sklearn": {}}, mlflow_created_at=now)
        for i, m in enumerate(models) for v in range(1, n_versions + 1)], batch_size=2000)
    by_key = {(vv.model_id, vv.version): vv for vv in versions}
    AliasAssignment.objects.bulk_create([
        AliasAssignment(model=m, alias=alias, version=by_key[(m.pk, version)], assigned_at=now,
                        assigned_by=user)
        for i, m in enumerate(models) for alias, version in model_aliases(i, n_versions).items()])
    visible = sum(1 for m in models if m.team_id == team_a.pk)
    return user, visible, time.monotonic() - started


# --- timing -----------------------------------------------------------------------------------------------

class Target:
    """One thing to time: an HTTP GET on a port, or a callable."""

    def __init__(self, key: str, label: str, *, side: str, group: int = 0, baseline: str | None = None,
                 port: int | None = None, path: str | None = None, headers: dict | None = None, call=None):
        self.key, self.label, self.side, self.group, self.baseline = key, label, side, group, baseline
        self.port, self.path, self.headers, self.call = port, path, headers or {}, call
        self.times: list[float] = []
        self.status: int | None = None
        self.nbytes = 0

    def once(self) -> float:
        if self.call is not None:
            started = time.perf_counter()
            self.call()
            return time.perf_counter() - started
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        started = time.perf_counter()
        conn.request("GET", self.path, headers=self.headers)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - started
        conn.close()
        self.status, self.nbytes = resp.status, len(body)
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
        return elapsed


def run_interleaved(targets: list[Target], *, repeat: int, warmup: int, time_cap: float) -> list[Target]:
    """Warm each target up, then time them round-robin (rotating the order each round) until ``repeat``
    rounds or ``time_cap`` seconds. A target that fails during warm-up is dropped with its reason."""
    live = []
    for t in targets:
        try:
            for _ in range(warmup):
                t.once()
            live.append(t)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"  SKIP {t.label}: failed during warm-up: {exc}")
    deadline = time.monotonic() + time_cap
    for r in range(repeat):
        if time.monotonic() > deadline:
            print(f"  time cap of {time_cap:.0f} s reached after {r} of {repeat} rounds")
            break
        shift = r % len(live) if live else 0
        for t in live[shift:] + live[:shift]:
            try:
                t.times.append(t.once())
            except Exception as exc:  # noqa: BLE001
                print(f"  DROPPED {t.label} after {len(t.times)} requests: {exc}")
                live.remove(t)
    return live


def print_table(title: str, targets: list[Target]) -> dict[str, float]:
    """Median, p95, count and the ratio to each target's baseline. Returns {key: median ratio}."""
    by_key = {t.key: t for t in targets}
    print(f"\n{title}")
    print(f"  {'what':<70} {'median ms':>9} {'p95 ms':>8} {'n':>5}  ours/MLflow median (p95)")
    ratios = {}
    for t in targets:
        if not t.times:
            continue
        s = sorted(t.times)
        med, p95 = statistics.median(s) * 1000, percentile(s, 0.95) * 1000
        ratio = ""
        base = by_key.get(t.baseline) if t.baseline else None
        if base is not None and base.times:
            bs = sorted(base.times)
            r_med = med / (statistics.median(bs) * 1000)
            r_p95 = p95 / (percentile(bs, 0.95) * 1000)
            ratios[t.key] = r_med
            verdict = ("" if t.key.endswith("_floor") else
                       "within goal" if r_med <= GOAL_RATIO else f"ABOVE the {GOAL_RATIO}x goal")
            ratio = f"{r_med:.2f}x ({r_p95:.2f}x)  {verdict}"
        elif any(o.baseline == t.key for o in targets):
            ratio = "baseline"
        size = f", {t.nbytes / 1024:.0f} KiB" if t.nbytes else ""
        print(f"  {t.label + size:<70} {med:>9.2f} {p95:>8.2f} {len(s):>5}  {ratio}")
    return ratios


# --- profiling --------------------------------------------------------------------------------------------

def profile_request(client, path: str, *, explain: bool) -> None:
    """One request in-process: its queries, SQL time and slowest statements; with ``explain`` also EXPLAIN
    ANALYZE of the slowest SELECT and the Python functions that take the time."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(path)  # warm
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        resp = client.get(path)
    total = (time.perf_counter() - started) * 1000
    queries = captured.captured_queries
    sql_ms = sum(float(q["time"]) for q in queries) * 1000
    print(f"\n  {path}: HTTP {resp.status_code}, {len(queries)} queries, {sql_ms:.1f} ms in SQL of "
          f"{total:.1f} ms in-process ({total - sql_ms:.1f} ms in Python: middleware, view, serializer or "
          f"template)")
    slowest = sorted(queries, key=lambda q: float(q["time"]), reverse=True)
    for q in slowest[:4]:
        sql = " ".join(q["sql"].split())
        print(f"    {float(q['time']) * 1000:6.2f} ms  {sql[:200]}{'...' if len(sql) > 200 else ''}")
    # Statements that repeat with different values are the sign of an N+1.
    shapes: dict[str, int] = {}
    for q in queries:
        shape = q["sql"].split(" WHERE ")[0][:120]
        shapes[shape] = shapes.get(shape, 0) + 1
    repeated = {s: n for s, n in shapes.items() if n > 2}
    for shape, n in repeated.items():
        print(f"    repeated {n} times (N+1?): {' '.join(shape.split())[:150]}")
    if not explain:
        return
    # The slowest read of registry rows, else the slowest read at all.
    selects = [q for q in slowest if q["sql"].lstrip().upper().startswith("SELECT")]
    selects.sort(key=lambda q: "registry_" not in q["sql"].split(" WHERE ")[0])
    if selects:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + selects[0]["sql"])
            plan = "\n".join("      " + row[0] for row in cursor.fetchall())
        print(f"    EXPLAIN ANALYZE of the slowest SELECT:\n{plan}")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        client.get(path)
    prof.disable()
    out = io.StringIO()
    ours_and_libraries = r"apps/|rest_framework/(serial|pagin|fields)|django/(template|db/models/query)"
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(ours_and_libraries, 18)
    lines = [ln for ln in out.getvalue().splitlines()
             if ln.strip() and not ln.startswith(("   Ordered", "   List"))]
    print("    cumulative time over 5 requests (our code, DRF serializers, templates, ORM):")
    print("\n".join("      " + ln for ln in lines[-20:]))


# --- clean-up --------------------------------------------------------------------------------------------

def clean_up(sup: Supervisor, work: Path, store, admin_url: str, created: list[str], *,
             show_logs: bool) -> None:
    """Stop the servers, drop the scratch databases, remove the work folder: each step whatever the others
    did (an output pipe closed early, a server that will not stop)."""

    def step(what: str, action) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - go on with the other steps
            say(f"while {what}: {exc!r}")

    def show_logs_tail() -> None:
        for log in sorted((work / "logs").glob("*.log")):
            print(f"--- the end of {log.name}:\n{log.read_text(errors='replace')[-1500:]}", flush=True)

    def close_django() -> None:
        from django.apps import apps as django_apps

        if django_apps.ready:
            from django.db import connections

            connections.close_all()

    step("stopping the servers", sup.shutdown)
    if show_logs:
        step("showing the servers' logs", show_logs_tail)
    step("closing Django's connections", close_django)
    if store is not None:
        step("closing MLflow's store", store.engine.dispose)
    for name in created:
        step(f"dropping the scratch database {name} (drop it by hand)",
             lambda name=name: admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if created:
        say(f"dropped {', '.join(created)}; servers stopped")
    shutil.rmtree(work, ignore_errors=True)


# --- main -------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=200,
                        help="timed requests per measurement (default 200)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--page-size", type=int, default=100,
                        help=f"rows per page on both sides (default 100, which is also MLflow's default "
                             f"max_results, {MLFLOW_DEFAULT_MAX_RESULTS})")
    parser.add_argument("--time-cap", type=float, default=120,
                        help="seconds for the HTTP measurements; fewer requests when reached (default 120)")
    parser.add_argument("--real-every", type=int, default=10,
                        help="make the versions of every Kth model through MLflow's create_model_version, "
                             "the rest in bulk through MLflow's ORM classes (default 10; 1: all through "
                             "create_model_version, slow)")
    parser.add_argument("--explain", action="store_true",
                        help="EXPLAIN ANALYZE and a Python profile even when within the goal")
    args = parser.parse_args()
    if args.real_every < 1:
        parser.error("--real-every must be at least 1")
    if not (1 <= args.page_size <= 500):
        parser.error("--page-size must be between 1 and 500 (our API's max_page_size)")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    run_started = time.monotonic()
    load = os.getloadavg()
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    admin_url = with_database(server_url, "postgres")
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    import django
    import mlflow

    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start")
    print(f"PostgreSQL {pg_server_version(admin_url)} at {redacted(admin_url)}; MLflow {mlflow.__version__}; "
          f"Django {django.get_version()}; Python {sys.version.split()[0]}")
    print(f"data: {args.models} registered models x {args.versions} versions; page size {args.page_size}; "
          f"{args.repeat} timed requests each after {args.warmup} warm-up; time cap {args.time_cap:.0f} s")
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        print(f"Redis does not answer at {redis_url} ({exc}); set REDIS_URL: our stack needs it (cache, "
              "throttle).")
        return 2

    tag = uuid.uuid4().hex[:8]
    mp_db, ml_db = f"bench_modelplane_{tag}", f"bench_mlflow_{tag}"
    mp_url = with_database(server_url, mp_db)
    ml_store_uri = with_database(server_url, ml_db, scheme="postgresql+psycopg")
    work = Path(tempfile.mkdtemp(prefix="modelplane-bench-registry-"))
    for sub in ("logs", "run", "mlflow", "static"):
        (work / sub).mkdir()
    sup = Supervisor(data_dir=work, say=say)
    created: list[str] = []
    store = None
    failed = True  # until the end is reached: then the services' logs are not printed
    try:
        for name in (mp_db, ml_db):
            admin_execute(admin_url, f'CREATE DATABASE "{name}"')
            created.append(name)
        say(f"created scratch databases {mp_db} and {ml_db}")

        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DJANGO_"))}
        base_env["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '')}"
        ml_port, web_port = free_port(), free_port()
        ml_uri = f"http://127.0.0.1:{ml_port}"
        # MLflow creates its tables on start; Modelplane migrates at the same time (two processes, two cores).
        sup.spawn("mlflow", [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", ml_store_uri,
                             "--artifacts-destination", str(work / "mlflow" / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(ml_port), "--workers", "1"],
                  {**base_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=work / "mlflow")
        django_env = {**base_env, "DJANGO_SETTINGS_MODULE": "controlplane.settings.base",
                      "DATABASE_URL": mp_url, "REDIS_URL": redis_url, "MODELPLANE_DEBUG": "0",
                      "MLFLOW_TRACKING_URI": ml_uri, "MODELPLANE_STATIC_ROOT": str(work / "static"),
                      # The default 1200/min would throttle the benchmark itself; the throttle still runs.
                      "MODELPLANE_API_USER_RATE": "1000000/min"}
        started = time.monotonic()
        migrate = sup.spawn("migrate", [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput"],
                            django_env, cwd=ROOT, is_step=True)
        wait_for(sup, "manage.py migrate", lambda: migrate.popen.poll() is not None, timeout=300)
        sup.children.pop("migrate")
        if migrate.popen.returncode != 0:
            raise ServiceProblem(f"manage.py migrate failed: {sup.how_it_ended(migrate)}", migrate.log_path)
        say(f"migrated {mp_db} ({time.monotonic() - started:.0f} s)")
        sup.spawn("web", [str(VENV_BIN / "gunicorn"), "controlplane.wsgi:application", "--bind",
                          f"127.0.0.1:{web_port}", "--workers", "1", "--timeout", "60",
                          "--access-logfile", "-", "--error-logfile", "-", "--name", "modelplane-bench-web"],
                  django_env, cwd=ROOT)

        os.environ.update({k: django_env[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL",
                                                      "MODELPLANE_DEBUG", "MLFLOW_TRACKING_URI",
                                                      "MODELPLANE_API_USER_RATE", "MODELPLANE_STATIC_ROOT")})
        django.setup()
        waited = wait_for(sup, "MLflow's /health", lambda: http_ready(ml_port, "/health"), timeout=240)
        say(f"MLflow server up on {ml_uri} (waited {waited:.0f} s more)")

        from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(ml_store_uri)
        say(f"filling MLflow through its SqlAlchemyStore: {args.models} models x {args.versions} versions, "
            f"those of every {args.real_every}th model through create_model_version, the rest in bulk")
        seconds, real = populate_mlflow(store, args.models, args.versions, args.real_every)
        say(f"MLflow filled in {seconds:.0f} s ({real} of {args.models * args.versions} versions through "
            f"create_model_version)")
        check_fill(store, args.models, args.real_every)
        user, visible, seconds = populate_modelplane(args.models, args.versions)
        say(f"Modelplane rows filled in {seconds:.1f} s (bulk_create); user 'bench' sees {visible} of "
            f"{args.models} models")
        analyze(mp_url)
        analyze(with_database(server_url, ml_db))
        wait_for(sup, "gunicorn", lambda: http_ready(web_port, "/healthz"), timeout=60)

        from django.conf import settings
        from django.test import Client
        from django.urls import NoReverseMatch, Resolver404, resolve, reverse

        client = Client(HTTP_HOST="127.0.0.1")
        client.force_login(user)
        session_id = client.cookies[settings.SESSION_COOKIE_NAME].value
        cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_id}"}
        n = args.page_size

        def ours_api_path() -> str | None:
            path = "/api/v1/models/"
            try:
                match = resolve(path)
            except Resolver404:
                print(f"  SKIP our list API: {path} does not resolve yet (apps/registry/api/ not wired into "
                      f"apps/core/api/urls.py)")
                return None
            owner = getattr(match.func, "cls", match.func).__module__
            if not owner.startswith("apps.registry"):
                print(f"  SKIP our list API: {path} resolves to {owner}, not the registry's")
                return None
            return path

        def ours_page_path() -> str | None:
            try:
                path = reverse("registry:model_list")
            except NoReverseMatch:
                try:
                    now = f"/models/ is served by {resolve('/models/').view_name}"
                except Resolver404:
                    now = "nothing serves /models/"
                print(f"  SKIP our model list page: the URL name registry:model_list does not resolve yet "
                      f"({now})")
                return None
            if resolve(path).view_name != "registry:model_list":
                print(f"  SKIP our model list page: {path} is shadowed by {resolve(path).view_name}")
                return None
            return path

        from mlflow import MlflowClient

        ml_client = MlflowClient(tracking_uri=ml_uri, registry_uri=ml_uri)
        print("\nour registry list endpoints:")
        api_path = ours_api_path()
        page_path = ours_page_path()
        page_rows = None
        if page_path:
            import apps.registry.views as registry_views

            page_rows = getattr(registry_views, "MODELS_PAGE_SIZE", None)
        if api_path and page_path:
            print(f"  both resolve; the page shows {page_rows or 'an unknown number of'} models a page")
        # Each size is timed on both sides: ours at --page-size and, when the page shows another number of
        # rows, at the page's size too, each against MLflow at the same max_results.
        sizes = [n] + ([page_rows] if page_rows and page_rows != n else [])
        targets = []
        for size in sizes:
            base = f"mlflow_rest_{size}"
            targets.append(Target(base, f"MLflow REST registered-models/search?max_results={size}",
                                  side="mlflow", group=size, port=ml_port,
                                  path=f"/api/2.0/mlflow/registered-models/search?max_results={size}"))
            if size == n:
                targets.append(Target("mlflow_client",
                                      f"MlflowClient().search_registered_models(max_results={n})",
                                      side="mlflow", group=size,
                                      call=lambda: ml_client.search_registered_models(max_results=n)))
                targets.append(Target("ours_floor", "ours: GET /api/v1/me/ (our stack's floor: no list)",
                                      side="ours", group=size, baseline=base, port=web_port,
                                      path="/api/v1/me/", headers=cookie))
            if api_path:
                targets.append(Target(f"ours_api_{size}", f"ours: GET {api_path}?page_size={size}",
                                      side="ours", group=size, baseline=base, port=web_port,
                                      path=f"{api_path}?page_size={size}", headers=cookie))
        if page_path:
            size = page_rows or n
            targets.append(Target("ours_page", f"ours: GET {page_path} (the page: {page_rows or '?'} rows)",
                                  side="ours", group=size, baseline=f"mlflow_rest_{size}", port=web_port,
                                  path=page_path, headers=cookie))
            # What any page of ours costs before its list: session, base template, navigation.
            targets.append(Target("ours_page_floor", "ours: GET /accounts/profile/ (a page's floor: no list)",
                                  side="ours", group=size, baseline=f"mlflow_rest_{size}",
                                  port=web_port, path=reverse("accounts:profile"), headers=cookie))
        # What each side returns, checked once: the comparison is only fair if the pages are full.
        for size in sizes:
            found = ml_client.search_registered_models(max_results=size)
            print(f"  MLflow returns {len(found)} models for max_results={size} (of {args.models}), "
                  f"each with tags, aliases and its latest version")
            if api_path:
                resp = client.get(f"{api_path}?page_size={size}")
                data = resp.json() if resp.status_code == 200 else {}
                rows = data.get("results", []) if isinstance(data, dict) else data
                print(f"  our API returns {len(rows)} models for page_size={size} (HTTP {resp.status_code}; "
                      f"of the {visible} the user may see); fields: "
                      f"{', '.join(sorted(rows[0])) if rows else '-'}")

        say(f"timing over HTTP on loopback ({args.repeat} rounds, interleaved)")
        live = run_interleaved(targets, repeat=args.repeat, warmup=args.warmup, time_cap=args.time_cap)
        ratios: dict[str, float] = {}
        for size in sizes:
            ratios.update(print_table(f"HTTP, {size} rows a page, ms per request (client wall clock on "
                                      f"loopback, a new connection each):",
                                      [t for t in live if t.group == size]))

        # The database layer alone, in-process: what exists whatever the views look like.
        from apps.core.actors import Actor
        from apps.registry.selectors import registeredmodel_list

        def ours_selector():
            user.__dict__.pop("_modelplane_roles", None)  # a request reads the user's roles once
            return list(registeredmodel_list(actor=Actor.for_user(user)).order_by("name")[:n])

        layer = [
            Target("store", f"MLflow SqlAlchemyStore.search_registered_models(max_results={n})",
                   side="mlflow", call=lambda: store.search_registered_models(max_results=n)),
            Target("selector", f"ours: registeredmodel_list(actor)[:{n}] (+ aliases prefetch)", side="ours",
                   baseline="store", call=ours_selector),
        ]
        layer_repeat = min(args.repeat, 100)
        say(f"timing the database layer in-process ({layer_repeat} rounds)")
        live_layer = run_interleaved(layer, repeat=layer_repeat, warmup=args.warmup, time_cap=30)
        ratios.update(print_table("database layer in-process (queries + ORM objects; no HTTP, no "
                                  "serializing):", live_layer))

        over = {k: r for k, r in ratios.items() if r > GOAL_RATIO and not k.endswith("_floor")}
        explain = args.explain or bool(over)
        print(f"\nprofile of our requests, in-process through django.test.Client as user 'bench'"
              f"{' (with EXPLAIN ANALYZE: ' + ', '.join(over) + ' above the goal)' if over else ''}:")
        for path in [p for p in (f"{api_path}?page_size={n}" if api_path else None, page_path) if p]:
            profile_request(client, path, explain=explain)
        if not (api_path or page_path):
            print("  (no registry endpoint yet) the selector's queries:")
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as captured:
            ours_selector()
        print(f"  selector: {len(captured.captured_queries)} queries, "
              f"{sum(float(q['time']) for q in captured.captured_queries) * 1000:.1f} ms in SQL")
        if explain:
            plan = registeredmodel_list(actor=Actor.for_user(user)).order_by("name")[:n].explain(
                analyze=True, buffers=True)
            print("  EXPLAIN ANALYZE of the selector's main query:")
            print("\n".join("    " + ln for ln in plan.splitlines()))

        load = os.getloadavg()
        print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; whole run "
              f"{time.monotonic() - run_started:.0f} s")
        failed = False
        return 0
    except ServiceProblem as exc:
        print(f"\nFAILED: {exc.details()}")
        return 1
    except KeyboardInterrupt:
        failed = False  # asked to stop: the servers' logs say nothing of interest
        say("interrupted; cleaning up")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean_up(sup, work, store, admin_url, created, show_logs=failed)


if __name__ == "__main__":
    sys.exit(main())
