"""Replica reconcile: make each ``Replica`` row's actual state (a model-server process) match its desired state.

Called by the deployment reconcile loop (apps/deployments/reconcile.py), which decides *which* replicas should
run; here each one is started, health-checked, restarted after a crash (with exponential backoff), marked
unhealthy while /ping fails and stopped once no longer desired. Every function is safe to call repeatedly and
from several workers at once:

- a PostgreSQL session advisory lock per replica ("claim") keeps two workers off the same replica for the whole
  pass, including the process and HTTP work, which runs *outside* any transaction (a pass that finds the claim
  taken skips the replica: the other worker is on it);
- writes are short transactions that lock the row, change only the actual-state fields (never ``desired``, which
  belongs to the deployment reconcile) and record the timeline event and, for crashes and restarts, the audit
  event in the same transaction.

A killed worker loses nothing: the row holds pid + process start time, so the next worker (or
``replicas_adopt_and_sweep`` on a worker's start) finds the same process again, and a process whose row is gone
or not desired is stopped by the orphan sweep.

Model URI (``replica_model_uri``), resolved by MLflow through ``MLFLOW_TRACKING_URI``, first that applies:

1. the version's MLflow ``source`` when it is a local model directory (an absolute path or ``file://`` URI with an
   MLmodel file on this machine): served directly; it is what the registry would resolve to anyway, and it lets
   tests and single-machine installs serve models that no tracking server holds;
2. the ``source`` itself when it is ``runs:/<run>/<path>`` or a logged model's ``models:/m-<id>``: MLflow 3.17
   resolves ``models:/<name>/<version>`` of a version registered from ``runs:/`` to the run's artifact root, where
   MLflow 3 no longer puts logged models ("No such artifact: 'MLmodel'"), while the client resolves ``runs:/``
   to the logged model correctly;
3. ``models:/<mlflow_model_id>`` when the row knows the logged model;
4. ``models:/<name>/<version>``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.locks import advisory_lock_try
from apps.deployments.backends import backend_for
from apps.deployments.backends.base import BackendError, ReplicaHandle, ReplicaSpec, ServingBackend
from apps.deployments.backends.local import START_BANNER, LocalBackend
from apps.deployments.models import Deployment, DeploymentEvent, Environment, Replica, Variant

logger = logging.getLogger(__name__)

REPLICA_LOCK = 0x4D50_5250          # "MPRP": advisory-lock namespace of replica claims
HEALTH_FAILURE_LIMIT = 3            # consecutive failed /ping before a ready replica is marked unhealthy
BACKOFF_RESET = timedelta(minutes=10)   # ready this long before a crash: the backoff starts over
CRASH_OUTPUT_LINES = 20             # lines of output kept in a crash's timeline event

RECONCILER = "reconciler"

S = Replica.Status


# ----------------------------------------------------------------------------------------- specs and handles

def replica_model_uri(replica: Replica) -> str:
    """What the model server loads (see the module docstring for why not always ``models:/<name>/<version>``)."""
    version = replica.variant.model_version
    source = version.source or ""
    path = None
    if source.startswith("file://"):
        path = Path(unquote(urlsplit(source).path))
    elif source.startswith("/"):
        path = Path(source)
    if path is not None and (path / "MLmodel").is_file():
        return str(path)
    if source.startswith(("runs:/", "models:/m-")):
        return source
    if version.mlflow_model_id:
        return f"models:/{version.mlflow_model_id}"
    return f"models:/{version.model.name}/{version.version}"


def replica_spec(replica: Replica) -> ReplicaSpec:
    variant = replica.variant
    deployment = variant.deployment
    return ReplicaSpec(replica_id=replica.pk, model_uri=replica_model_uri(replica),
                       artifact_uri=variant.model_version.source or "", deployment_name=deployment.name,
                       variant_name=variant.name, index=replica.index, timeout_seconds=deployment.timeout_seconds,
                       cpu=float(deployment.cpu), memory_mb=deployment.memory_mb, replicas=variant.replicas)


def replica_handle(replica: Replica) -> ReplicaHandle | None:
    """The handle a row stores, or None when the row names no process."""
    if replica.pid is None:
        return None
    return ReplicaHandle(replica_id=replica.pk, host=replica.host, port=replica.port, pid=replica.pid,
                         process_started=replica.process_started, log_path=replica.log_path,
                         name=f"replica-{replica.pk}")


def backoff_seconds(crash_streak: int) -> float:
    """The wait before restarting after the n-th crash in a row: base x 2^(n-1), capped."""
    base = float(settings.MODELPLANE_REPLICA_BACKOFF_BASE_SECONDS)
    cap = float(settings.MODELPLANE_REPLICA_BACKOFF_MAX_SECONDS)
    return min(cap, base * (2 ** max(0, min(crash_streak - 1, 30))))


def _replica_claim(replica_id: int):
    """A session-level advisory lock on one replica, held across the non-transactional process work."""
    return advisory_lock_try(REPLICA_LOCK, replica_id)


def _load(replica_id: int, *, skip_locked: bool) -> Replica | None:
    with transaction.atomic():
        return (Replica.objects.select_for_update(skip_locked=skip_locked, of=("self",))
                .select_related("variant__deployment__environment", "variant__model_version__model")
                .filter(pk=replica_id).first())


# ------------------------------------------------------------------------------------------------- writes

@dataclass
class _Event:
    kind: str
    message: str
    level: str = DeploymentEvent.Level.INFO
    data: dict = field(default_factory=dict)


def _write(replica: Replica, changes: dict, *, event: _Event | None = None, audit_verb: str = "",
           reason: str = "") -> Replica | None:
    """Apply actual-state changes to the row, with its timeline (and audit) event, in one short transaction.

    Returns the updated row, or None if the row is gone (its deployment was deleted meanwhile)."""
    with transaction.atomic():
        row = (Replica.objects.select_for_update(of=("self",))
               .select_related("variant__deployment__environment", "variant__model_version__model")
               .filter(pk=replica.pk).first())
        if row is None:
            return None
        before = row.snapshot()
        for name, value in changes.items():
            setattr(row, name, value)
        row.save(update_fields=[*changes, "updated_at"])
        deployment = row.variant.deployment
        if event is not None:
            DeploymentEvent.objects.create(
                deployment=deployment, kind=event.kind, level=event.level, message=event.message, actor="system",
                data={"replica": row.pk, "variant": row.variant.name, "index": row.index, **event.data})
        if audit_verb:
            audit_event_record(actor=Actor.system(RECONCILER), verb=audit_verb, target=row, before=before,
                               after=row.snapshot(), reason=reason, team_id=deployment.team_id,
                               target_repr=f"{deployment.name}/{row.variant.name}#{row.index}")
    return row


def _label(replica: Replica) -> str:
    return f"Replica {replica.index} of {replica.variant.name}"


def _last_output(backend: ServingBackend, handle: ReplicaHandle | None, replica: Replica) -> str:
    """The last lines of the replica's latest run, for the crash event."""
    log_handle = handle or (ReplicaHandle(replica_id=replica.pk, log_path=replica.log_path)
                            if replica.log_path else None)
    if log_handle is None:
        return ""
    tail = backend.replica_log_tail(log_handle, max_bytes=16384)
    banner = tail.rfind(START_BANNER)
    if banner >= 0:
        tail = tail[tail.find("\n", banner) + 1:]
    return "\n".join(tail.splitlines()[-CRASH_OUTPUT_LINES:])


# ---------------------------------------------------------------------------------------------- the moves

def _start(replica: Replica, backend: ServingBackend, *, note: str = "") -> Replica | None:
    now = timezone.now()
    restarting = replica.status == S.CRASHED
    spec = replica_spec(replica)
    try:
        handle = backend.replica_start(spec)
    except BackendError as exc:
        return _crashed(replica, backend, None, None, str(exc))
    changes = {"status": S.STARTING, "status_message": f"Loading {spec.model_uri} on port {handle.port}.",
               "started_at": now, "pid": handle.pid, "process_started": handle.process_started,
               "host": handle.host, "port": handle.port, "log_path": handle.log_path, "next_restart_at": None,
               "health_failures": 0}
    data = {"pid": handle.pid, "port": handle.port, "model_uri": spec.model_uri}
    if restarting:
        event = _Event("replica_restarted", f"{_label(replica)} restarted (restart {replica.restart_count}) "
                                            f"on port {handle.port}.", data=data)
    else:
        event = _Event("replica_started", f"{_label(replica)} started on port {handle.port}"
                                          f"{' (' + note + ')' if note else ''}.", data=data)
    row = _write(replica, changes, event=event, audit_verb="replica.restarted" if restarting else "",
                 reason=replica.last_exit if restarting else "")
    if row is None:
        # The row went away while the server started: nobody would ever stop it.
        backend.replica_stop(handle)
    return row


def _crashed(replica: Replica, backend: ServingBackend, handle: ReplicaHandle | None, exit_code: int | None,
             reason: str) -> Replica | None:
    now = timezone.now()
    ran_long = (replica.ready_at is not None and replica.started_at is not None
                and replica.ready_at >= replica.started_at and now - replica.ready_at >= BACKOFF_RESET)
    streak = 1 if ran_long else replica.crash_streak + 1
    delay = backoff_seconds(streak)
    output = _last_output(backend, handle, replica)
    reason = reason or "exited"
    changes = {"status": S.CRASHED, "status_message": f"{reason[:1000]}. Restarting in {delay:.0f} s.",
               "pid": None, "process_started": None, "restart_count": replica.restart_count + 1,
               "crash_streak": streak, "next_restart_at": now + timedelta(seconds=delay),
               "last_exit": reason[:200], "health_failures": 0}
    event = _Event("replica_crashed", f"{_label(replica)} crashed: {reason[:500]}. Restarting in {delay:.0f} s.",
                   level=DeploymentEvent.Level.ERROR,
                   data={"exit_code": exit_code, "reason": reason[:1000], "output": output,
                         "restart_in_seconds": delay, "pid": replica.pid})
    return _write(replica, changes, event=event, audit_verb="replica.crashed", reason=reason[:500])


def _stop(replica: Replica, backend: ServingBackend, handle: ReplicaHandle | None) -> Replica | None:
    stopped = False
    if handle is not None:
        try:
            stopped = backend.replica_stop(handle)
        except BackendError as exc:
            return _write(replica, {"status": S.STOPPING, "status_message": f"Could not stop: {exc}"})
    if replica.status == S.STOPPED and replica.pid is None:
        return replica
    changes = {"status": S.STOPPED, "status_message": "Stopped.", "pid": None, "process_started": None,
               "port": None, "next_restart_at": None, "health_failures": 0}
    message = f"{_label(replica)} stopped" + ("." if stopped else " (no process was running).")
    return _write(replica, changes, event=_Event("replica_stopped", message, data={"pid": replica.pid}))


def _drive(replica: Replica, backend: ServingBackend) -> Replica | None:
    """One step of actual → desired for a claimed replica."""
    now = timezone.now()
    handle = replica_handle(replica)
    if not replica.desired:
        return _stop(replica, backend, handle)
    if handle is None:
        if replica.status == S.CRASHED and replica.next_restart_at and now < replica.next_restart_at:
            return replica    # backing off
        return _start(replica, backend)

    observed = backend.replica_observe(handle, check_health=True)
    if not observed.alive:
        if observed.port_in_use and replica.status == S.STARTING:
            # Another process took the port between our pick and the server's bind: not the model's fault.
            return _start(replica, backend, note=f"port {replica.port} was taken, another port chosen")
        return _crashed(replica, backend, handle, observed.exit_code, observed.exit_reason)

    if replica.status not in (S.READY, S.UNHEALTHY):
        if observed.healthy:
            return _write(replica, {"status": S.READY, "ready_at": now, "health_failures": 0,
                                    "status_message": f"Answering on port {replica.port}."},
                          event=_Event("replica_ready", f"{_label(replica)} is ready on port {replica.port}.",
                                       data={"pid": replica.pid, "port": replica.port}))
        timeout = float(settings.MODELPLANE_REPLICA_START_TIMEOUT_SECONDS)
        if replica.started_at and (now - replica.started_at).total_seconds() > timeout:
            try:
                backend.replica_stop(handle)
            except BackendError as exc:
                logger.warning("replica %s: stopping a server that never became ready: %s", replica.pk, exc)
            return _crashed(replica, backend, handle, None, f"did not answer /ping within {timeout:.0f} s")
        if replica.status != S.STARTING:   # e.g. a stop that a killed worker left half done, desired again
            return _write(replica, {"status": S.STARTING})
        return replica

    if observed.healthy:
        if replica.status == S.UNHEALTHY:
            return _write(replica, {"status": S.READY, "health_failures": 0,
                                    "status_message": f"Answering on port {replica.port} again."},
                          event=_Event("replica_recovered", f"{_label(replica)} answers its health check again."))
        if replica.health_failures:
            return _write(replica, {"health_failures": 0})
        return replica
    failures = replica.health_failures + 1
    if failures >= HEALTH_FAILURE_LIMIT and replica.status == S.READY:
        return _write(replica, {"status": S.UNHEALTHY, "health_failures": failures,
                                "status_message": f"/ping failed {failures} times in a row; the process runs."},
                      event=_Event("replica_unhealthy", f"{_label(replica)} stopped answering its health check "
                                                        f"({failures} failures in a row); it gets no traffic "
                                                        "until it answers again.",
                                   level=DeploymentEvent.Level.WARNING))
    return _write(replica, {"health_failures": failures})


# ------------------------------------------------------------------------------------------------- the API

def replicas_sync(*, variant: Variant) -> None:
    """Desired replicas of a variant: rows 0..replicas-1 desired while its role is active, the rest not.

    A variant that is retired (or whose deployment is stopping or stopped) wants none. Rows are kept after they
    stop (history, restart counts) and desired again if the variant scales back up.
    """
    with transaction.atomic():
        locked = (Variant.objects.select_for_update(of=("self",)).select_related("deployment")
                  .filter(pk=variant.pk).first())
        if locked is None:
            return
        stopping = locked.deployment.status in (Deployment.Status.STOPPING, Deployment.Status.STOPPED)
        want = locked.replicas if (locked.role in Variant.ACTIVE_ROLES and not stopping) else 0
        now = timezone.now()
        rows = Replica.objects.filter(variant=locked)
        existing = set(rows.values_list("index", flat=True))
        Replica.objects.bulk_create([Replica(variant=locked, index=index, desired=True, status=S.STARTING)
                                     for index in range(want) if index not in existing])
        rows.filter(index__lt=want, desired=False).update(desired=True, updated_at=now)
        rows.filter(index__gte=want, desired=True).update(desired=False, updated_at=now)


def replica_reconcile(*, replica_id: int) -> Replica | None:
    """One pass of actual → desired for one replica; returns the row as it stands after it (None if gone).

    Skips (returning the row unchanged) when another worker holds the replica or its row is locked.
    """
    with _replica_claim(replica_id) as claimed:
        if not claimed:
            return Replica.objects.filter(pk=replica_id).first()
        replica = _load(replica_id, skip_locked=True)
        if replica is None:
            return Replica.objects.filter(pk=replica_id).first()
        environment = replica.variant.deployment.environment
        if environment.backend != Environment.Backend.LOCAL:
            message = ("Kubernetes replicas are driven through their InferenceService "
                       "(apps/deployments/backends/kubernetes.py), not by the local reconciler.")
            if replica.status_message != message:
                return _write(replica, {"status_message": message})
            return replica
        return _drive(replica, backend_for(environment))


@dataclass
class AdoptionSummary:
    """What a worker found on its start: replicas adopted, found crashed, stopped, and orphans swept."""

    adopted: list[int] = field(default_factory=list)
    crashed: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)       # claimed by another worker: left to it
    swept: list[int] = field(default_factory=list)      # pids of orphan process groups stopped

    def __str__(self) -> str:
        return (f"{len(self.adopted)} adopted, {len(self.crashed)} crashed, {len(self.stopped)} stopped, "
                f"{len(self.busy)} busy elsewhere, {len(self.swept)} orphans swept")


def replicas_adopt_and_sweep() -> AdoptionSummary:
    """On a worker's start: take over the replica processes recorded in PostgreSQL, then stop orphans.

    A row whose process (same pid *and* start time) still runs is adopted as it is, with no restart and no
    write; a row whose process is gone is recorded as crashed (and restarted after its backoff by the next
    reconcile); a row no longer desired has its process stopped. Then any process carrying this installation's
    replica marker that no desired row owns is stopped.
    """
    summary = AdoptionSummary()
    backend = LocalBackend.from_settings()
    ids = list(Replica.objects.filter(variant__deployment__environment__backend=Environment.Backend.LOCAL)
               .exclude(pid=None).values_list("pk", flat=True))
    for replica_id in ids:
        with _replica_claim(replica_id) as claimed:
            if not claimed:
                summary.busy.append(replica_id)
                continue
            replica = _load(replica_id, skip_locked=True)
            if replica is None or replica.pid is None:
                continue
            handle = replica_handle(replica)
            if replica.desired and backend.is_alive(handle):
                summary.adopted.append(replica_id)
                continue
            after = _drive(replica, backend)
            if after is not None and after.status == S.CRASHED:
                summary.crashed.append(replica_id)
            elif after is not None and after.status == S.STOPPED:
                summary.stopped.append(replica_id)
    summary.swept = [handle.pid for handle in replicas_sweep_orphans(backend=backend)]
    logger.info("replica adoption: %s", summary)
    return summary


def replicas_sweep_orphans(*, backend: LocalBackend | None = None) -> list[ReplicaHandle]:
    """Stop replica processes of this installation that no desired row owns (pid and start time must match).

    A replica claimed by another worker right now is left alone: it may be starting, with its new pid not
    written yet.
    """
    backend = backend or LocalBackend.from_settings()

    def owned(replica_id: int, handle: ReplicaHandle) -> bool:
        with _replica_claim(replica_id) as claimed:
            if not claimed:
                return True
            row = Replica.objects.filter(pk=replica_id).values("pid", "process_started", "desired").first()
        return bool(row and row["desired"] and row["pid"] == handle.pid
                    and row["process_started"] == handle.process_started)

    return backend.orphans_sweep(owned=owned)


def replica_log_tail(*, replica: Replica, max_bytes: int = 65536) -> str:
    """The end of a replica's output (all its runs, each after a banner line), for the deployment page."""
    environment = replica.variant.deployment.environment
    if not replica.log_path or environment.backend != Environment.Backend.LOCAL:
        return ""
    backend = backend_for(environment)
    handle = replica_handle(replica) or ReplicaHandle(replica_id=replica.pk, log_path=replica.log_path)
    return backend.replica_log_tail(handle, max_bytes=max(1, min(int(max_bytes), 1024 * 1024)))
