"""The reconcile loop of a deployment: desired state (PostgreSQL) → replicas → status → the gateway's route.

One pass: decide which replicas should run (by the variants' roles, or none when stopping), drive each replica
(apps/deployments/replicas.py starts, health-checks, restarts and stops processes), move the deployment's
status as the system (blue-green: smoke-test the candidate, switch traffic at once, keep the old variant warm;
retire standbys whose rollback window ended), and publish the route. Every pass is safe to repeat; a
PostgreSQL advisory lock keeps two workers off the same deployment at once.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.locks import advisory_lock_try
from apps.deployments.models import Deployment, Replica, Variant
from apps.deployments.routing import routing_publish
from apps.deployments.services import deployment_event_add

log = logging.getLogger(__name__)

RECONCILE_LOCK = 0x4D50_4450  # "MPDP": advisory-lock namespace of deployment reconciles
# A variant whose replicas crashed this many times without ever becoming ready is given up on.
MAX_FAILED_STARTS = 3
SMOKE_TIMEOUT_SECONDS = 10.0
# How long a retired variant's replicas keep running after the route without them went out.
DRAIN_SECONDS = 2.0

SYSTEM = "reconciler"


def _deployment_lock(deployment_id: int):
    return advisory_lock_try(RECONCILE_LOCK, deployment_id)


def deployment_reconcile(*, deployment_id: int) -> Deployment | None:
    """One reconcile pass; returns the deployment as it stands after it (None if gone or locked elsewhere)."""
    from apps.deployments.replicas import replica_reconcile, replicas_sync

    with _deployment_lock(deployment_id) as acquired:
        if not acquired:
            return None
        deployment = Deployment.objects.filter(pk=deployment_id).first()
        if deployment is None:
            return None
        if deployment.status in (Deployment.Status.STOPPING, Deployment.Status.STOPPED):
            Replica.objects.filter(variant__deployment=deployment, desired=True).update(desired=False)
        else:
            _retire_expired_standbys(deployment)
            for variant in deployment.variants.all():
                replicas_sync(variant=variant)
        # The gateway hears of a retired variant (or a stop) before its replicas stop, and requests already on
        # their way finish: replicas of a variant retired less than DRAIN_SECONDS ago are stopped next pass.
        routing_publish(deployment_id)
        draining = set(Replica.objects.filter(
            variant__deployment=deployment, desired=False,
            variant__retired_at__gt=timezone.now() - timedelta(seconds=DRAIN_SECONDS),
        ).exclude(status=Replica.Status.STOPPED).values_list("pk", flat=True))
        for replica_id in (Replica.objects.filter(variant__deployment=deployment)
                           .exclude(status=Replica.Status.STOPPED, desired=False)
                           .values_list("pk", flat=True)):
            if replica_id not in draining:
                replica_reconcile(replica_id=replica_id)
        _advance(deployment_id)
        routing_publish(deployment_id)
        return Deployment.objects.filter(pk=deployment_id).first()


# --------------------------------------------------------------------------------------------- status

def _counts(variant: Variant) -> dict[str, Any]:
    replicas = list(variant.replica_set.filter(desired=True))
    ready = [r for r in replicas if r.status == Replica.Status.READY]
    failed = [r for r in replicas if r.ready_at is None and r.restart_count >= MAX_FAILED_STARTS]
    return {"desired": variant.replicas, "ready": len(ready), "rows": replicas,
            "given_up": bool(replicas) and len(failed) == len(replicas) and not ready,
            "last_exit": next((r.last_exit for r in replicas if r.last_exit), "")}


@transaction.atomic
def _system_move(deployment_id: int, expected: str, new_status: str, message: str, *, kind: str,
                 level: str = "info", data: dict | None = None) -> bool:
    """Move the status as the system, audited, if nobody moved it since we looked."""
    deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
    if deployment.status != expected or not deployment.can_transition_to(new_status):
        return False
    before = deployment.snapshot()
    deployment.transition_to(new_status)
    deployment.status_message = message
    deployment.save(update_fields=["status", "status_message", "updated_at"])
    actor = Actor.system(SYSTEM)
    audit_event_record(actor=actor, verb=f"deployment.{new_status}", target=deployment, before=before,
                       after=deployment.snapshot(), team_id=deployment.team_id)
    deployment_event_add(deployment=deployment, kind=kind, message=message, level=level, data=data, actor=actor)
    return True


def _advance(deployment_id: int) -> None:
    deployment = Deployment.objects.get(pk=deployment_id)
    status = deployment.status
    variants = list(deployment.variants.select_related("model_version__model"))
    live = [v for v in variants if v.role == Variant.Role.LIVE]
    candidate = next((v for v in variants if v.role == Variant.Role.CANDIDATE), None)

    if status == Deployment.Status.STOPPING:
        if not Replica.objects.filter(variant__deployment=deployment).exclude(status=Replica.Status.STOPPED).exists():
            _system_move(deployment_id, status, Deployment.Status.STOPPED, "Stopped: no replica is running.",
                         kind="stopped")
        return
    if status == Deployment.Status.STOPPED:
        return
    if status == Deployment.Status.PENDING:
        _system_move(deployment_id, status, Deployment.Status.DEPLOYING, "Starting replicas.", kind="deploying")
        status = Deployment.Status.DEPLOYING

    live_counts = [_counts(v) for v in live]
    desired = sum(c["desired"] for c in live_counts)
    ready = sum(c["ready"] for c in live_counts)
    all_ready = bool(live) and ready >= desired
    given_up = bool(live_counts) and all(c["given_up"] for c in live_counts)

    if candidate is not None and status == Deployment.Status.UPDATING:
        _advance_candidate(deployment, candidate)
        return
    if status in (Deployment.Status.DEPLOYING, Deployment.Status.UPDATING, Deployment.Status.ROLLING_BACK,
                  Deployment.Status.FAILED):
        if all_ready:
            names = ", ".join(f"{v.name} ({v.model_version})" for v in live)
            _system_move(deployment_id, status, Deployment.Status.RUNNING,
                         f"Running: {names}, {ready} of {desired} replicas ready.", kind="running")
        elif given_up and status != Deployment.Status.FAILED:
            reason = next((c["last_exit"] for c in live_counts if c["last_exit"]), "no replica became ready")
            _system_move(deployment_id, status, Deployment.Status.FAILED,
                         f"Failed: the replicas crashed {MAX_FAILED_STARTS} times without becoming ready "
                         f"({reason}). See the replica output.", kind="failed", level="error")
        return
    if status == Deployment.Status.RUNNING and not all_ready:
        _system_move(deployment_id, status, Deployment.Status.DEGRADED,
                     f"Degraded: {ready} of {desired} replicas ready.", kind="degraded", level="warning")
    elif status == Deployment.Status.DEGRADED and all_ready:
        _system_move(deployment_id, status, Deployment.Status.RUNNING,
                     f"Running again: {ready} of {desired} replicas ready.", kind="running")


def _advance_candidate(deployment: Deployment, candidate: Variant) -> None:
    counts = _counts(candidate)
    if counts["given_up"]:
        _abort_rollout(deployment.pk, candidate.pk,
                       f"{candidate.name} crashed {MAX_FAILED_STARTS} times without becoming ready "
                       f"({counts['last_exit'] or 'see the replica output'})")
        return
    if counts["ready"] < counts["desired"]:
        return
    ok, detail = smoke_test(candidate, counts["rows"])
    if not ok:
        _abort_rollout(deployment.pk, candidate.pk, f"smoke requests to {candidate.name} failed: {detail}")
        return
    _switch(deployment.pk, candidate.pk, detail)


def smoke_test(variant: Variant, replicas: list[Replica]) -> tuple[bool, str]:
    """Send the version's input example straight to each ready replica of the candidate; all must answer 200."""
    payload = scoring_payload(variant.model_version.input_example)
    if payload is None:
        return True, "no input example was logged with this version: health checks only"
    body = json.dumps(payload).encode()
    for replica in replicas:
        request = urllib.request.Request(f"{replica.url}/invocations", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=SMOKE_TIMEOUT_SECONDS) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            return False, f"replica {replica.index} answered {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        except OSError as exc:
            return False, f"replica {replica.index}: {exc}"
    return True, f"{len(replicas)} smoke request{'s' if len(replicas) != 1 else ''} answered 200"


def scoring_payload(example: Any) -> dict | None:
    """An MLflow scoring request built from a logged input example (split-orient frames, records or tensors)."""
    if example is None:
        return None
    if isinstance(example, dict):
        if {"dataframe_split", "dataframe_records", "instances", "inputs"} & set(example):
            return example
        if "columns" in example and "data" in example:
            return {"dataframe_split": {"columns": example["columns"], "data": example["data"]}}
        return {"dataframe_records": [example]}
    if isinstance(example, list):
        if example and all(isinstance(row, dict) for row in example):
            return {"dataframe_records": example}
        return {"inputs": example}
    return None


@transaction.atomic
def _switch(deployment_id: int, candidate_id: int, smoke_detail: str) -> None:
    """Blue-green: all traffic to the candidate in one route change; the old live variant stays warm."""
    deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
    candidate = Variant.objects.select_for_update().filter(pk=candidate_id, role=Variant.Role.CANDIDATE).first()
    if candidate is None or deployment.status != Deployment.Status.UPDATING:
        return
    before = deployment.snapshot()
    now = timezone.now()
    old = list(deployment.variants.select_for_update().filter(role=Variant.Role.LIVE))
    for variant in old:
        variant.role, variant.weight = Variant.Role.STANDBY, 0
        variant.standby_until = now + timedelta(seconds=deployment.rollback_window_seconds)
        variant.save(update_fields=["role", "weight", "standby_until", "updated_at"])
    candidate.role, candidate.weight, candidate.smoke_passed_at = Variant.Role.LIVE, 100, now
    candidate.save(update_fields=["role", "weight", "smoke_passed_at", "updated_at"])
    deployment.transition_to(Deployment.Status.RUNNING)
    window = deployment.rollback_window_seconds
    deployment.status_message = (f"Switched to {candidate.name} ({candidate.model_version}); "
                                 f"{', '.join(v.name for v in old) or 'nothing'} kept warm for {window} s.")
    deployment.generation += 1
    deployment.save(update_fields=["status", "status_message", "generation", "updated_at"])
    actor = Actor.system(SYSTEM)
    audit_event_record(actor=actor, verb="deployment.switched", target=deployment, before=before,
                       after={**deployment.snapshot(), "live": candidate.name,
                              "standby": [v.name for v in old]}, team_id=deployment.team_id)
    deployment_event_add(deployment=deployment, kind="switched", actor=actor,
                         message=f"Smoke test passed ({smoke_detail}). {deployment.status_message}",
                         data={"live": candidate.name, "standby": [v.name for v in old]})


@transaction.atomic
def _abort_rollout(deployment_id: int, candidate_id: int, reason: str) -> None:
    deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
    candidate = Variant.objects.select_for_update().filter(pk=candidate_id, role=Variant.Role.CANDIDATE).first()
    if candidate is None:
        return
    before = deployment.snapshot()
    candidate.role, candidate.weight, candidate.retired_at = Variant.Role.RETIRED, 0, timezone.now()
    candidate.save(update_fields=["role", "weight", "retired_at", "updated_at"])
    target = Deployment.Status.RUNNING if deployment.can_transition_to("running") else deployment.status
    if target != deployment.status:
        deployment.transition_to(target)
    deployment.status_message = f"Rollout aborted: {reason}. The previous version keeps serving."
    deployment.generation += 1
    deployment.save(update_fields=["status", "status_message", "generation", "updated_at"])
    actor = Actor.system(SYSTEM)
    audit_event_record(actor=actor, verb="deployment.rollout_aborted", target=deployment, before=before,
                       after=deployment.snapshot(), reason=reason, team_id=deployment.team_id)
    deployment_event_add(deployment=deployment, kind="rollout_aborted", actor=actor, level="error",
                         message=deployment.status_message)


def _retire_expired_standbys(deployment: Deployment) -> None:
    expired = list(deployment.variants.filter(role=Variant.Role.STANDBY, standby_until__lte=timezone.now()))
    if not expired:
        return
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        actor = Actor.system(SYSTEM)
        for variant in Variant.objects.select_for_update().filter(pk__in=[v.pk for v in expired],
                                                                 role=Variant.Role.STANDBY):
            variant.role, variant.retired_at = Variant.Role.RETIRED, timezone.now()
            variant.save(update_fields=["role", "retired_at", "updated_at"])
            audit_event_record(actor=actor, verb="variant.retired", target=variant, team_id=locked.team_id,
                               after={"variant": variant.name, "reason": "rollback window ended"})
            deployment_event_add(deployment=locked, kind="standby_retired", actor=actor,
                                 message=f"{variant.name} stopped: its rollback window ended.")
        locked.generation += 1
        locked.save(update_fields=["generation", "updated_at"])
