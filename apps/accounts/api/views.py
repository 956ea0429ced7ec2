"""API for me, users, teams, memberships and tokens."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import selectors, services
from apps.accounts.api import serializers as s
from apps.core.actors import Actor
from apps.core.api.views import ApiViewSet, ApiViewSetMixin


class MeView(ApiViewSetMixin, APIView):
    """Who am I: the signed-in user, how they authenticated, and their roles per team."""

    @extend_schema(responses=s.MeSerializer)
    def get(self, request):
        actor = Actor.from_request(request)
        teams: dict[int, dict] = {}
        for m in selectors.membership_list(actor=actor).filter(user_id=actor.user_id):
            entry = teams.setdefault(m.team_id, {"team": m.team_id, "team_name": m.team.name,
                                                 "team_slug": m.team.slug, "roles": []})
            entry["roles"].append(m.role)
        user = request.user
        data = {
            "id": user.pk, "username": user.username, "display_name": user.display_name, "email": user.email,
            "is_platform_admin": user.is_platform_admin, "auth": actor.kind,
            "token_scopes": sorted(actor.scopes) if actor.kind == "token" else None,
            "teams": list(teams.values()),
        }
        return Response(s.MeSerializer(data).data)


class UserViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Users: platform admins see and create all; members see the members of their teams."""

    serializer_class = s.UserSerializer
    filterset_fields = ["username", "is_platform_admin"]
    ordering = "id"

    def scoped_queryset(self):
        return selectors.user_list(actor=self.actor)

    @extend_schema(request=s.UserCreateSerializer, responses={201: s.UserSerializer})
    def create(self, request):
        data = self.validated(s.UserCreateSerializer)
        user = services.user_create(actor=self.actor, **data)
        return Response(s.UserSerializer(user).data, status=status.HTTP_201_CREATED)


class TeamViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Teams the caller belongs to (all for platform admins)."""

    serializer_class = s.TeamSerializer
    filterset_fields = ["slug"]

    def scoped_queryset(self):
        return selectors.team_list(actor=self.actor)

    @extend_schema(request=s.TeamCreateSerializer, responses={201: s.TeamSerializer})
    def create(self, request):
        team = services.team_create(actor=self.actor, **self.validated(s.TeamCreateSerializer))
        return Response(s.TeamSerializer(team).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.TeamUpdateSerializer, responses=s.TeamSerializer)
    def partial_update(self, request, pk=None):
        team = self.get_object()
        data = self.validated(s.TeamUpdateSerializer, partial=True)
        team = services.team_update(actor=self.actor, team_id=team.pk, **data)
        return Response(s.TeamSerializer(team).data)


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Roles held in teams; team admins add and remove them."""

    serializer_class = s.MembershipSerializer
    filterset_fields = ["team", "user", "role"]
    ordering = "id"

    def scoped_queryset(self):
        return selectors.membership_list(actor=self.actor)

    @extend_schema(request=s.MembershipCreateSerializer, responses={201: s.MembershipSerializer})
    def create(self, request):
        data = self.validated(s.MembershipCreateSerializer)
        membership = services.membership_add(actor=self.actor, team_id=data["team"], user_id=data["user"],
                                             role=data["role"])
        return Response(s.MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, pk=None):
        membership = self.get_object()
        services.membership_remove(actor=self.actor, membership_id=membership.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """The caller's own API tokens. The secret appears once, in the create response."""

    serializer_class = s.ApiTokenSerializer
    ordering = "-id"

    def scoped_queryset(self):
        return selectors.apitoken_list(actor=self.actor)

    @extend_schema(request=s.ApiTokenCreateSerializer, responses={201: s.ApiTokenCreatedSerializer})
    def create(self, request):
        data = self.validated(s.ApiTokenCreateSerializer)
        token, secret = services.apitoken_create(actor=self.actor, **data)
        body = s.ApiTokenSerializer(token).data
        body["token"] = secret
        # The secret is shown once: no cache (nor the Idempotency-Key store) may keep this answer.
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    @extend_schema(request=None, responses=s.ApiTokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = self.get_object()
        token = services.apitoken_revoke(actor=self.actor, token_id=token.pk)
        return Response(s.ApiTokenSerializer(token).data)
