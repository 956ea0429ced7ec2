"""Replica reconcile (apps/deployments/replicas.py) with real MLflow scoring-server processes and PostgreSQL.

The model is a local MLflow model directory (the version's ``source``), so no tracking server is involved. One
test walks a replica through its whole life with one server (start, ready, prediction, SIGKILL, crash, backoff,
restart, adoption by a fresh worker state, unhealthy and back, stop); the others need no healthy server.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.deployments import replicas
from apps.deployments.backends import local
from apps.deployments.backends.local import REPLICA_ID_VAR, REPLICA_SCOPE_VAR, LocalBackend, proc_pids
from apps.deployments.models import Deployment, DeploymentEvent, Replica, Variant
from tests.deployments.conftest import EXPECTED_PREDICTIONS, SCORING_ROWS, process_running

pytestmark = pytest.mark.slow


@pytest.fixture
def fast(settings, replica_dir):
    settings.MODELPLANE_REPLICA_BACKOFF_BASE_SECONDS = 1
    settings.MODELPLANE_REPLICA_STOP_GRACE_SECONDS = 10
    return settings


def _reconcile_until(replica_id: int, predicate, what: str, timeout: float = 150.0) -> Replica:
    deadline = time.monotonic() + timeout
    while True:
        replica = replicas.replica_reconcile(replica_id=replica_id)
        if predicate(replica):
            return replica
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {replica.status} {replica.status_message}")
        time.sleep(0.5)


def _kinds(variant: Variant) -> list[str]:
    return list(DeploymentEvent.objects.filter(deployment=variant.deployment).order_by("pk")
                .values_list("kind", flat=True))


def _marked_pids(replica_id: int) -> list[int]:
    scope = LocalBackend.from_settings().scope
    return [pid for pid in proc_pids() if process_running(pid)
            and local.proc_environ(pid).get(REPLICA_ID_VAR) == str(replica_id)
            and local.proc_environ(pid).get(REPLICA_SCOPE_VAR) == scope]


def _predict(replica: Replica) -> list:
    request = urllib.request.Request(f"{replica.url}/invocations", data=json.dumps(SCORING_ROWS).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["predictions"]


def test_sync_desires_rows_by_role_and_size_and_is_idempotent(serving_rows, fast):
    variant = serving_rows(model_source="/nowhere", replicas=3)
    replicas.replicas_sync(variant=variant)
    replicas.replicas_sync(variant=variant)
    rows = list(variant.replica_set.order_by("index"))
    assert [(r.index, r.desired, r.status) for r in rows] == [(0, True, "starting"), (1, True, "starting"),
                                                             (2, True, "starting")]
    Variant.objects.filter(pk=variant.pk).update(replicas=1)
    replicas.replicas_sync(variant=variant)
    assert list(variant.replica_set.order_by("index").values_list("desired", flat=True)) == [True, False, False]
    Variant.objects.filter(pk=variant.pk).update(replicas=2)
    replicas.replicas_sync(variant=variant)
    assert list(variant.replica_set.order_by("index").values_list("desired", flat=True)) == [True, True, False]
    Variant.objects.filter(pk=variant.pk).update(role=Variant.Role.RETIRED)
    replicas.replicas_sync(variant=variant)
    assert not variant.replica_set.filter(desired=True).exists() and variant.replica_set.count() == 3
    Variant.objects.filter(pk=variant.pk).update(role=Variant.Role.STANDBY)
    Deployment.objects.filter(pk=variant.deployment_id).update(status=Deployment.Status.STOPPING)
    replicas.replicas_sync(variant=variant)
    assert not variant.replica_set.filter(desired=True).exists()


def test_model_uri_is_the_local_source_a_run_uri_or_models_uri(serving_rows, sklearn_model_dir, fast):
    here = serving_rows(model_source=sklearn_model_dir)
    replicas.replicas_sync(variant=here)
    assert replicas.replica_model_uri(here.replica_set.get()) == str(sklearn_model_dir)
    file_uri = serving_rows(model_source=f"file://{sklearn_model_dir}")
    replicas.replicas_sync(variant=file_uri)
    assert replicas.replica_model_uri(file_uri.replica_set.get()) == str(sklearn_model_dir)
    run = serving_rows(model_source="runs:/0123abcd/model")
    replicas.replicas_sync(variant=run)
    assert replicas.replica_model_uri(run.replica_set.get()) == "runs:/0123abcd/model"
    remote = serving_rows(model_source="mlflow-artifacts:/1/abc/artifacts/model")
    replicas.replicas_sync(variant=remote)
    name = remote.model_version.model.name
    assert replicas.replica_model_uri(remote.replica_set.get()) == f"models:/{name}/1"


def test_replica_lifecycle_start_ready_crash_backoff_restart_adopt_unhealthy_stop(serving_rows, sklearn_model_dir,
                                                                                  fast):
    variant = serving_rows(model_source=sklearn_model_dir, timeout_seconds=7)
    replicas.replicas_sync(variant=variant)
    replica = variant.replica_set.get()

    # Start: non-blocking, the row says where the process is.
    replica = replicas.replica_reconcile(replica_id=replica.pk)
    assert replica.status == "starting" and replica.pid and replica.port and replica.started_at
    assert replica.process_started == local.proc_stat(replica.pid).starttime
    replica = _reconcile_until(replica.pk, lambda r: r.status == "ready", "ready")
    assert replica.ready_at and _predict(replica) == EXPECTED_PREDICTIONS
    assert "Uvicorn running on" in replicas.replica_log_tail(replica=replica)
    assert _kinds(variant) == ["replica_started", "replica_ready"]
    first_pid = replica.pid

    # Crash: SIGKILL the server's process group.
    os.killpg(first_pid, signal.SIGKILL)
    replica = _reconcile_until(replica.pk, lambda r: r.status == "crashed", "crashed", timeout=20)
    assert replica.pid is None and replica.restart_count == 1 and replica.crash_streak == 1
    assert replica.last_exit.startswith("killed by SIGKILL")
    assert replica.next_restart_at > timezone.now() - timedelta(seconds=5)
    crashed = DeploymentEvent.objects.get(deployment=variant.deployment, kind="replica_crashed")
    assert crashed.level == "error" and crashed.actor == "system" and crashed.data["exit_code"] == -9
    assert "Uvicorn running on" in crashed.data["output"]       # the last lines of the crashed run
    # Backing off: a pass before next_restart_at starts nothing.
    Replica.objects.filter(pk=replica.pk).update(next_restart_at=timezone.now() + timedelta(minutes=5))
    assert replicas.replica_reconcile(replica_id=replica.pk).pid is None
    Replica.objects.filter(pk=replica.pk).update(next_restart_at=timezone.now())

    # Restart after the backoff, ready again.
    replica = replicas.replica_reconcile(replica_id=replica.pk)
    assert replica.status == "starting" and replica.pid not in (None, first_pid)
    replica = _reconcile_until(replica.pk, lambda r: r.status == "ready", "ready again")
    assert replica.restart_count == 1 and _predict(replica) == EXPECTED_PREDICTIONS
    assert _kinds(variant) == ["replica_started", "replica_ready", "replica_crashed", "replica_restarted",
                               "replica_ready"]
    audit = list(AuditEvent.objects.filter(target_type="deployments.replica", target_id=str(replica.pk))
                 .order_by("seq").values_list("verb", "actor_kind", "actor_name"))
    assert audit == [("replica.crashed", "system", "reconciler"), ("replica.restarted", "system", "reconciler")]

    # A worker restart: nothing in memory but the row (pid + start time). The process is adopted, not replaced.
    local._children.clear()
    local._exit_codes.clear()
    summary = replicas.replicas_adopt_and_sweep()
    assert summary.adopted == [replica.pk] and summary.swept == [] and summary.crashed == []
    after = replicas.replica_reconcile(replica_id=replica.pk)
    assert (after.pid, after.process_started, after.status, after.restart_count) == \
        (replica.pid, replica.process_started, "ready", 1)
    assert set(_marked_pids(replica.pk)) >= {replica.pid} and len(_marked_pids(replica.pk)) == 2

    # Unhealthy: the process runs but does not answer (stopped with SIGSTOP); ready again once it answers.
    os.killpg(replica.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            after = replicas.replica_reconcile(replica_id=replica.pk)
        assert after.status == "unhealthy" and after.pid == replica.pid and after.health_failures == 3
    finally:
        os.killpg(replica.pid, signal.SIGCONT)
    after = _reconcile_until(replica.pk, lambda r: r.status == "ready", "recovered", timeout=20)
    assert "replica_unhealthy" in _kinds(variant) and _kinds(variant)[-1] == "replica_recovered"

    # Stop: not desired any more -> no process left behind.
    Variant.objects.filter(pk=variant.pk).update(role=Variant.Role.RETIRED)
    replicas.replicas_sync(variant=variant)
    stopped = replicas.replica_reconcile(replica_id=replica.pk)
    assert (stopped.status, stopped.pid, stopped.port) == ("stopped", None, None)
    assert _marked_pids(replica.pk) == [] and not process_running(replica.pid)
    assert _kinds(variant)[-1] == "replica_stopped"
    assert replicas.replica_reconcile(replica_id=replica.pk).status == "stopped"   # idempotent
    assert _kinds(variant).count("replica_stopped") == 1


def test_a_model_that_cannot_load_crashes_with_its_output_then_backs_off(serving_rows, tmp_path, fast):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("this: [is not an MLmodel file\n")
    variant = serving_rows(model_source=broken)
    replicas.replicas_sync(variant=variant)
    replica = replicas.replica_reconcile(replica_id=variant.replica_set.get().pk)
    replica = _reconcile_until(replica.pk, lambda r: r.status == "crashed", "crashed", timeout=60)
    assert replica.last_exit.startswith("exited with code 1") and replica.restart_count == 1
    event = DeploymentEvent.objects.get(deployment=variant.deployment, kind="replica_crashed")
    assert "Traceback" in event.data["output"] or "Error" in event.data["output"]
    assert event.data["restart_in_seconds"] == 1
    # The second crash in a row waits twice as long.
    Replica.objects.filter(pk=replica.pk).update(next_restart_at=timezone.now())
    replicas.replica_reconcile(replica_id=replica.pk)
    replica = _reconcile_until(replica.pk, lambda r: r.status == "crashed", "crashed again", timeout=60)
    assert (replica.restart_count, replica.crash_streak) == (2, 2)
    assert DeploymentEvent.objects.filter(kind="replica_crashed").latest("pk").data["restart_in_seconds"] == 2


def test_a_server_that_never_becomes_ready_is_stopped_and_counted_as_crashed(serving_rows, sklearn_model_dir,
                                                                              fast):
    fast.MODELPLANE_REPLICA_START_TIMEOUT_SECONDS = 1
    variant = serving_rows(model_source=sklearn_model_dir)
    replicas.replicas_sync(variant=variant)
    replica = replicas.replica_reconcile(replica_id=variant.replica_set.get().pk)
    pid = replica.pid
    Replica.objects.filter(pk=replica.pk).update(started_at=timezone.now() - timedelta(seconds=5))
    replica = replicas.replica_reconcile(replica_id=replica.pk)
    assert replica.status == "crashed" and replica.last_exit == "did not answer /ping within 1 s"
    assert not process_running(pid) and _marked_pids(replica.pk) == []


def test_a_replica_claimed_by_another_worker_is_skipped(serving_rows, sklearn_model_dir, fast):
    variant = serving_rows(model_source=sklearn_model_dir)
    replicas.replicas_sync(variant=variant)
    replica = variant.replica_set.get()
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
                         dbname=db["NAME"], autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", [replicas.REPLICA_LOCK, replica.pk])
        skipped = replicas.replica_reconcile(replica_id=replica.pk)
        assert skipped.pid is None and _marked_pids(replica.pk) == []
    started = replicas.replica_reconcile(replica_id=replica.pk)
    assert started.pid and started.status == "starting"


def test_adoption_records_gone_processes_as_crashed_and_sweeps_orphans(serving_rows, sklearn_model_dir, fast):
    variant = serving_rows(model_source=sklearn_model_dir, replicas=2)
    replicas.replicas_sync(variant=variant)
    gone, stale = variant.replica_set.order_by("index")
    # A row whose process exited while no worker ran (a real process, finished), ...
    finished = subprocess.Popen(["true"])
    finished_start = local.proc_stat(finished.pid).starttime
    finished.wait()
    Replica.objects.filter(pk=gone.pk).update(status="ready", pid=finished.pid, process_started=finished_start,
                                              port=1, ready_at=timezone.now())
    # ... and marked processes no desired row owns: one for a row not desired, one for a row that does not exist.
    scope = LocalBackend.from_settings().scope
    Replica.objects.filter(pk=stale.pk).update(desired=False, status="stopped")
    orphans = [subprocess.Popen(["sleep", "300"], start_new_session=True,
                                env={"PATH": os.environ["PATH"], REPLICA_ID_VAR: str(rid), REPLICA_SCOPE_VAR: scope})
               for rid in (stale.pk, 10**9)]
    try:
        summary = replicas.replicas_adopt_and_sweep()
        assert summary.crashed == [gone.pk] and summary.adopted == []
        assert sorted(summary.swept) == sorted(p.pid for p in orphans)
        assert all(p.wait(timeout=15) == -signal.SIGTERM for p in orphans)
        gone.refresh_from_db()
        assert (gone.status, gone.pid, gone.restart_count) == ("crashed", None, 1)
        assert gone.last_exit.startswith("exited (exit code unknown")
    finally:
        for p in orphans:
            if p.poll() is None:
                p.kill()
                p.wait()
