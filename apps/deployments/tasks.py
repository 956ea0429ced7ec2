"""Celery entry points of serving: thin, they load by id and run the reconcile loop as the system."""
from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready
from django.core.cache import cache

log = logging.getLogger(__name__)

# Statuses that are on their way somewhere: the reconcile task looks again after FOLLOW_UP_SECONDS.
SETTLING = frozenset({"pending", "deploying", "updating", "rolling_back", "stopping"})
FOLLOW_UP_SECONDS = 2


@shared_task(name="deployments.reconcile", acks_late=True, ignore_result=True)
def reconcile_deployment(deployment_id: int, follow_up: bool = False) -> str:
    """One reconcile pass of one deployment (queued by every service that changes it)."""
    from apps.deployments.reconcile import deployment_reconcile

    queued_key = f"deployments:reconcile-queued:{deployment_id}"
    if follow_up:
        cache.delete(queued_key)   # this is the follow-up that was queued: the next one may be queued now
    deployment = deployment_reconcile(deployment_id=deployment_id)
    if deployment is None:
        return "skipped"
    # Replicas start without waiting for them (a model server takes 10-30 s): while settling, look again soon
    # rather than at beat's next round. One follow-up at a time per deployment, however many passes were queued.
    if deployment.status in SETTLING and cache.add(queued_key, 1, timeout=FOLLOW_UP_SECONDS + 30):
        reconcile_deployment.apply_async((deployment_id,), {"follow_up": True}, countdown=FOLLOW_UP_SECONDS)
    return deployment.status


@shared_task(name="deployments.reconcile_all", ignore_result=True)
def reconcile_all() -> int:
    """Beat's safety net: every deployment that has or should have replicas gets a pass (crash restarts,
    health, rollback windows, a route Redis missed)."""
    from apps.deployments.models import Deployment, Replica
    from apps.deployments.reconcile import deployment_reconcile

    ids = set(Deployment.objects.exclude(status=Deployment.Status.STOPPED).values_list("pk", flat=True))
    ids |= set(Replica.objects.exclude(status=Replica.Status.STOPPED)
               .values_list("variant__deployment_id", flat=True))
    for deployment_id in sorted(ids):
        try:
            deployment_reconcile(deployment_id=deployment_id)
        except Exception:
            log.exception("reconcile of deployment %s failed", deployment_id)
    return len(ids)


@worker_ready.connect
def _adopt_replicas(**_kwargs) -> None:
    """A (re)started worker adopts the replica processes that are still running and stops orphans."""
    try:
        from apps.deployments.replicas import replicas_adopt_and_sweep

        summary = replicas_adopt_and_sweep()
        log.info("replicas adopted on worker start: %s", summary)
    except Exception:
        log.exception("adopting replicas on worker start failed; reconcile_all will retry")
