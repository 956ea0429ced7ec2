"""The one permission function: may this actor do this verb on this object?

Roles are held per team (``Membership``). Each role grants a set of verbs; a verb is ``<entity>.<action>``.
Verbs that end in ``.view`` are reads (an API token with only the ``read`` scope may use those alone).
Platform verbs (teams, users, environments, backends, prices) belong to platform admins. A platform admin may
do every team verb too, except the decisions that separation of duties reserves for an approver or a risk
officer. Separation of duties between requester and approver is checked by the approval service itself.

Every service calls :func:`require`; every selector narrows with :func:`team_ids_with`.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apps.core.actors import Actor
from apps.core.errors import NotFound, PermissionDenied

VIEWER = "viewer"
DATA_SCIENTIST = "data_scientist"
ML_ENGINEER = "ml_engineer"
APPROVER = "approver"
RISK_OFFICER = "risk_officer"
TEAM_ADMIN = "team_admin"

ROLE_CHOICES = [
    (VIEWER, "Viewer"),
    (DATA_SCIENTIST, "Data scientist"),
    (ML_ENGINEER, "ML engineer"),
    (APPROVER, "Approver"),
    (RISK_OFFICER, "Risk officer"),
    (TEAM_ADMIN, "Team admin"),
]
ROLES = [r for r, _ in ROLE_CHOICES]

# What every member of a team may read.
_READ = {
    "team.view", "membership.view", "model.view", "deployment.view", "promotion.view",
    "monitoring.view", "job.view", "cost.view",
}
_BUILD = {"model.register", "model.update", "alias.set", "experiment.view", "promotion.request", "job.create",
          "deployment.invoke"}
_OPERATE = {
    "deployment.create", "deployment.update", "deployment.rollback", "deployment.key_manage", "deployment.invoke",
    "alert.manage", "promotion.request", "job.create",
}

ROLE_VERBS: dict[str, frozenset[str]] = {
    VIEWER: frozenset(_READ),
    DATA_SCIENTIST: frozenset(_READ | _BUILD),
    ML_ENGINEER: frozenset(_READ | _BUILD | _OPERATE),
    APPROVER: frozenset(_READ | {"promotion.approve", "audit.view"}),
    RISK_OFFICER: frozenset(_READ | {"promotion.risk_signoff", "audit.view", "audit.export", "fairness.view"}),
    TEAM_ADMIN: frozenset(
        _READ | _BUILD | _OPERATE
        | {"team.update", "membership.manage", "audit.view", "audit.export", "budget.manage"}
    ),
}

# Verbs that are not about one team: only platform admins hold them.
PLATFORM_VERBS = frozenset({
    "team.create", "user.manage", "environment.manage", "backend.manage", "price.manage",
    "scan.override", "audit.view_all", "audit.export_all",
})

# Decisions a platform admin does not get by being one: they need the role in the team.
ROLE_ONLY_VERBS = frozenset({"promotion.approve", "promotion.risk_signoff"})

# Verbs every signed-in user holds on their own things.
SELF_VERBS = frozenset({"token.manage_own", "profile.view"})


def is_read_verb(verb: str) -> bool:
    return verb.endswith(".view") or verb.endswith(".view_all")


def all_verbs() -> frozenset[str]:
    verbs: set[str] = set(PLATFORM_VERBS) | set(SELF_VERBS)
    for granted in ROLE_VERBS.values():
        verbs |= granted
    return frozenset(verbs)


def _as_actor(actor: Any) -> Actor:
    if isinstance(actor, Actor):
        return actor
    return Actor.for_user(actor)


def roles_by_team(actor: Actor) -> dict[int, frozenset[str]]:
    """The actor's roles in each team, read once per user object."""
    user = actor.user
    if user is None or not user.is_active:
        return {}
    cached = getattr(user, "_modelplane_roles", None)
    if cached is None:
        from apps.accounts.models import Membership

        found: dict[int, set[str]] = {}
        for team_id, role in Membership.objects.filter(user_id=user.pk).values_list("team_id", "role"):
            found.setdefault(team_id, set()).add(role)
        cached = {team_id: frozenset(roles) for team_id, roles in found.items()}
        user._modelplane_roles = cached
    return cached


def team_id_of(obj: Any) -> int | None:
    """The team an object belongs to: a Team itself, anything with ``team_id``, or ``get_team_id()``."""
    if obj is None:
        return None
    if isinstance(obj, int):
        return obj
    from apps.accounts.models import Team

    if isinstance(obj, Team):
        return obj.pk
    if hasattr(obj, "get_team_id"):
        return obj.get_team_id()
    return getattr(obj, "team_id", None)


def has_perm(actor: Any, verb: str, obj: Any = None) -> bool:
    """True when the actor may do ``verb`` on ``obj`` (an object of a team, a Team, a team id, or None)."""
    actor = _as_actor(actor)
    if actor.is_system:
        return True
    if actor.user is None or not actor.user.is_active:
        return False
    if actor.kind == "token" and "write" not in actor.scopes and not is_read_verb(verb):
        return False
    if verb in SELF_VERBS:
        return True
    if verb in PLATFORM_VERBS:
        return actor.is_platform_admin
    if actor.is_platform_admin and verb not in ROLE_ONLY_VERBS:
        return True
    team_id = team_id_of(obj)
    if team_id is None:
        # A team verb without an object ("may they register models anywhere?"): any team will do.
        return any(verb in _verbs(roles) for roles in roles_by_team(actor).values())
    return verb in _verbs(roles_by_team(actor).get(team_id, frozenset()))


def _verbs(roles: Iterable[str]) -> frozenset[str]:
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_VERBS.get(role, frozenset())
    return frozenset(granted)


def require(actor: Any, verb: str, obj: Any = None) -> None:
    """Raise unless the actor may do ``verb`` on ``obj``.

    An object of a team the actor cannot see at all answers NotFound, so that ids of other teams leak nothing.
    """
    actor = _as_actor(actor)
    if has_perm(actor, verb, obj):
        return
    team_id = team_id_of(obj)
    if team_id is not None and not actor.is_platform_admin and not roles_by_team(actor).get(team_id):
        raise NotFound("Not found.")
    if actor.kind == "token" and "write" not in actor.scopes and not is_read_verb(verb):
        raise PermissionDenied("This API token has the read scope only; this action needs the write scope.",
                               code="token_scope")
    raise PermissionDenied(f"You do not have permission to do this ({verb}).")


def team_ids_with(actor: Any, verb: str) -> set[int] | None:
    """The ids of the teams in which the actor holds ``verb``; None means every team (platform admin)."""
    actor = _as_actor(actor)
    if actor.is_system or (actor.is_platform_admin and verb not in ROLE_ONLY_VERBS):
        return None
    return {team_id for team_id, roles in roles_by_team(actor).items() if verb in _verbs(roles)}


def scope_to_teams(queryset, actor: Any, verb: str, field: str = "team_id"):
    """Narrow a queryset to the objects of teams where the actor holds ``verb``."""
    ids = team_ids_with(actor, verb)
    if ids is None:
        return queryset
    return queryset.filter(**{f"{field}__in": ids})
