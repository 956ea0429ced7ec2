"""Serving reads scoped to the actor's teams: another team's deployment (or its keys, replicas, events) is a 404.

Environments are not team objects: every signed-in user may see them (to choose one), platform admins change
them.
"""
from __future__ import annotations

from django.db.models import Count, Prefetch, Q, QuerySet

from apps.core.actors import Actor
from apps.core.errors import NotFound
from apps.core.permissions import scope_to_teams
from apps.deployments.models import Deployment, DeploymentEvent, DeploymentKey, Environment, Replica, Variant


def environment_list(*, actor: Actor) -> QuerySet[Environment]:
    return Environment.objects.annotate(
        deployment_count=Count("deployments", filter=~Q(deployments__status="stopped"))).order_by("name")


def environment_get(*, actor: Actor, pk: int) -> Environment:
    env = environment_list(actor=actor).filter(pk=pk).first()
    if env is None:
        raise NotFound("No such environment.")
    return env


def deployment_list(*, actor: Actor, filters: dict | None = None) -> QuerySet[Deployment]:
    """Deployments of the actor's teams; ``filters``: q (name), team, environment, status, model (id)."""
    qs = scope_to_teams(Deployment.objects.select_related("team", "environment", "model"), actor,
                        "deployment.view")
    f = filters or {}
    if f.get("q"):
        qs = qs.filter(Q(name__icontains=f["q"]) | Q(model__name__icontains=f["q"]))
    for key in ("team", "environment", "model"):
        if f.get(key):
            qs = qs.filter(**{f"{key}_id": f[key]})
    if f.get("status"):
        qs = qs.filter(status=f["status"])
    live = Variant.objects.filter(role__in=Variant.ACTIVE_ROLES).select_related("model_version").order_by("pk")
    return qs.prefetch_related(Prefetch("variants", queryset=live, to_attr="active_variants"))


def deployment_get(*, actor: Actor, pk: int) -> Deployment:
    deployment = deployment_list(actor=actor).filter(pk=pk).first()
    if deployment is None:
        raise NotFound("No such deployment.")
    return deployment


def deployment_get_by_name(*, actor: Actor, name: str) -> Deployment:
    deployment = deployment_list(actor=actor).filter(name=name).first()
    if deployment is None:
        raise NotFound("No such deployment.")
    return deployment


def variant_list(*, deployment: Deployment, include_retired: bool = True) -> QuerySet[Variant]:
    """The variants of a deployment the caller already resolved through :func:`deployment_get`."""
    qs = deployment.variants.select_related("model_version__model").order_by("-pk")
    return qs if include_retired else qs.exclude(role=Variant.Role.RETIRED)


def replica_list(*, deployment: Deployment, include_stopped: bool = False) -> QuerySet[Replica]:
    qs = Replica.objects.filter(variant__deployment=deployment).select_related("variant").order_by(
        "variant_id", "index", "pk")
    return qs if include_stopped else qs.exclude(status=Replica.Status.STOPPED, desired=False)


def replica_all(*, actor: Actor) -> QuerySet[Replica]:
    """Replicas of the actor's teams' deployments (the API's /replicas/{id}/)."""
    return scope_to_teams(Replica.objects.select_related("variant"), actor, "deployment.view",
                          field="variant__deployment__team_id")


def replica_get(*, deployment: Deployment, pk: int) -> Replica:
    """A replica of a deployment the caller already resolved through :func:`deployment_get`."""
    replica = Replica.objects.select_related("variant").filter(pk=pk, variant__deployment=deployment).first()
    if replica is None:
        raise NotFound("No such replica.")
    return replica


def event_list(*, deployment: Deployment) -> QuerySet[DeploymentEvent]:
    return deployment.events.all()


def key_list(*, deployment: Deployment) -> QuerySet[DeploymentKey]:
    return deployment.keys.select_related("created_by").all()


def key_all(*, actor: Actor) -> QuerySet[DeploymentKey]:
    """Keys of the actor's teams' deployments (the API's /deployment-keys/{id}/)."""
    return scope_to_teams(DeploymentKey.objects.select_related("created_by"), actor, "deployment.view",
                          field="deployment__team_id")


def key_get(*, deployment: Deployment, pk: int) -> DeploymentKey:
    """A key of a deployment the caller already resolved through :func:`deployment_get`."""
    key = deployment.keys.filter(pk=pk).first()
    if key is None:
        raise NotFound("No such key.")
    return key


def replica_ready_counts(*, deployment_ids: list[int]) -> dict[int, int]:
    """Ready replicas of the live variants of each deployment (for lists: one query for the page's rows).

    The caller passes ids of deployments it already resolved through :func:`deployment_list`."""
    rows = (Replica.objects.filter(variant__deployment_id__in=deployment_ids, variant__role=Variant.Role.LIVE,
                                   desired=True, status=Replica.Status.READY)
            .values("variant__deployment_id").annotate(n=Count("id")).values_list("variant__deployment_id", "n"))
    return dict(rows)
