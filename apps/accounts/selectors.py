"""Reads scoped to what the user may see: another team's object is a 404, never a leak."""
from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import ApiToken, Membership, Team, User
from apps.core.actors import Actor
from apps.core.errors import NotFound
from apps.core.permissions import scope_to_teams


def team_list(*, actor: Actor) -> QuerySet[Team]:
    return scope_to_teams(Team.objects.all(), actor, "team.view", field="id")


def team_get(*, actor: Actor, pk: int) -> Team:
    team = team_list(actor=actor).filter(pk=pk).first()
    if team is None:
        raise NotFound("Team not found.")
    return team


def membership_list(*, actor: Actor, team_id: int | None = None) -> QuerySet[Membership]:
    qs = scope_to_teams(Membership.objects.select_related("user", "team"), actor, "membership.view")
    if team_id is not None:
        qs = qs.filter(team_id=team_id)
    return qs


def membership_get(*, actor: Actor, pk: int) -> Membership:
    membership = membership_list(actor=actor).filter(pk=pk).first()
    if membership is None:
        raise NotFound("Membership not found.")
    return membership


def apitoken_list(*, actor: Actor) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user_id=actor.user_id)


def apitoken_get(*, actor: Actor, pk: int) -> ApiToken:
    token = apitoken_list(actor=actor).filter(pk=pk).first()
    if token is None:
        raise NotFound("Token not found.")
    return token


def user_list(*, actor: Actor) -> QuerySet[User]:
    """Users the actor may see: all for platform admins, else the members of the actor's teams."""
    if actor.is_platform_admin:
        return User.objects.all()
    team_ids = team_list(actor=actor).values("id")
    return User.objects.filter(memberships__team_id__in=team_ids).distinct()
