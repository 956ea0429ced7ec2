"""Publishing a deployment's route to the gateway (the document apps/gateway/contract.py describes).

The route is derived from PostgreSQL alone, so publishing is idempotent: reconcile calls
:func:`routing_publish` on every pass, and a document that did not change is not written again. A change bumps
the deployment's ``generation`` so that a gateway never goes back to an older document. When Redis is away the
publish fails quietly and the next reconcile pass publishes again: the gateway keeps serving its last table.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.deployments.models import Deployment, DeploymentKey, Replica, Variant
from apps.gateway import contract

log = logging.getLogger(__name__)

_client: tuple[str, redis.Redis] | None = None


def routes_key() -> str:
    return getattr(settings, "MODELPLANE_GATEWAY_ROUTES_KEY", contract.ROUTES_KEY)


def routes_channel() -> str:
    return getattr(settings, "MODELPLANE_GATEWAY_ROUTES_CHANNEL", contract.ROUTES_CHANNEL)


def redis_client() -> redis.Redis:
    """One client per process, on the Redis the gateway reads its routes from (MODELPLANE_GATEWAY_REDIS_URL,
    which defaults to REDIS_URL); tests may point it elsewhere: a new URL gets a new client."""
    global _client
    url = getattr(settings, "MODELPLANE_GATEWAY_REDIS_URL", "") or settings.REDIS_URL
    if _client is None or _client[0] != url:
        _client = (url, redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))
    return _client[1]


def route_document(deployment: Deployment) -> dict[str, Any]:
    """What the gateway needs to serve this deployment, without ``generation`` (added when published)."""
    now = timezone.now()
    keys = [{"id": k.pk, "hash": k.key_hash}
            for k in DeploymentKey.objects.filter(deployment=deployment, revoked_at__isnull=True).order_by("pk")
            if k.expires_at is None or k.expires_at > now]
    variants = []
    active = (Variant.objects.filter(deployment=deployment, role__in=Variant.ACTIVE_ROLES)
              .select_related("model_version__model").order_by("pk"))
    replicas_by_variant: dict[int, list[Replica]] = {}
    for replica in Replica.objects.filter(variant__in=active, desired=True).order_by("index", "pk"):
        replicas_by_variant.setdefault(replica.variant_id, []).append(replica)
    for variant in active:
        version = variant.model_version
        variants.append({
            "name": variant.name,
            "role": variant.role,
            "model_name": version.model.name,
            "model_version": version.version,
            "weight": variant.weight if variant.role == Variant.Role.LIVE else 0,
            "signature": version.signature,
            "replicas": [{"id": str(r.pk), "url": r.url, "ready": r.status == Replica.Status.READY and bool(r.port)}
                         for r in replicas_by_variant.get(variant.pk, [])],
        })
    rate_limit = None
    if deployment.rate_limit_rps:
        rate_limit = {"requests_per_second": deployment.rate_limit_rps,
                      "burst": deployment.rate_limit_burst or max(1, int(deployment.rate_limit_rps))}
    return {
        "name": deployment.name,
        "deployment_id": deployment.pk,
        "team": deployment.team.slug,
        "environment": deployment.environment.name,
        "status": deployment.status,
        "serving": deployment.is_serving,
        "keys": keys,
        "rate_limit": rate_limit,
        "max_payload_bytes": deployment.max_payload_bytes,
        "timeout_seconds": deployment.timeout_seconds,
        "sampling_rate": deployment.sampling_rate,
        "variants": variants,
    }


def routing_publish(deployment_id: int) -> bool:
    """Publish the deployment's route if it changed; True when a new document went out.

    Returns False (and logs) when Redis cannot be reached: the caller's next pass tries again.
    """
    deployment = Deployment.objects.select_related("team", "environment").filter(pk=deployment_id).first()
    client = redis_client()
    try:
        if deployment is None:
            return False
        document = route_document(deployment)
        current = client.hget(routes_key(), deployment.name)
        if current is not None:
            try:
                held = json.loads(current)
            except ValueError:
                held = {}
            generation = held.pop("generation", None)
            if held == document and generation is not None and generation >= deployment.generation:
                return False
        with transaction.atomic():
            Deployment.objects.filter(pk=deployment.pk).update(generation=F("generation") + 1)
            generation = Deployment.objects.values_list("generation", flat=True).get(pk=deployment.pk)
        document["generation"] = generation
        pipe = client.pipeline(transaction=True)
        pipe.hset(routes_key(), deployment.name, json.dumps(document, separators=(",", ":")))
        pipe.publish(routes_channel(), deployment.name)
        pipe.execute()
        return True
    except redis.RedisError as exc:
        log.warning("routing: could not publish %s: %s (the next reconcile pass tries again)",
                    getattr(deployment, "name", deployment_id), exc)
        return False


def routing_unpublish(name: str) -> None:
    """Remove a deployment's route (the gateway then answers 404 for it)."""
    client = redis_client()
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hdel(routes_key(), name)
        pipe.publish(routes_channel(), name)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("routing: could not remove %s: %s", name, exc)
