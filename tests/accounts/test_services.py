"""apps/accounts/services.py: each service's outcome, its audit event, its refusals and its bad inputs."""
from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.models import ApiToken, Membership, Team, User
from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed

pytestmark = pytest.mark.django_db

STRONG = "a-long-enough-passphrase-42"


@pytest.fixture
def admin(make_user):
    return make_user("root", platform_admin=True)


@pytest.fixture
def team_a(teams):
    return teams[0]


@pytest.fixture
def team_b(teams):
    return teams[1]


def _actor(user, **kw) -> Actor:
    return Actor.for_user(user, request_id=kw.pop("request_id", "req-" + user.username), **kw)


def _events() -> int:
    return AuditEvent.objects.count()


def _last() -> AuditEvent:
    return AuditEvent.objects.order_by("-seq").first()


def _assert_event(event: AuditEvent, *, actor: Actor, verb: str, target_type: str, target_id, team_id=None):
    assert event.verb == verb
    assert event.actor_name == actor.name
    assert event.actor_id == actor.user_id
    assert event.actor_kind == actor.kind
    assert event.request_id == actor.request_id
    assert event.target_type == target_type
    assert event.target_id == str(target_id)
    assert event.team_id == team_id


# ---------------------------------------------------------------- user_create

def test_user_create_creates_a_user_and_records_it(admin):
    actor = _actor(admin, source_ip="10.0.0.7")
    user = services.user_create(actor=actor, username="  newbie ", password=STRONG, email="n@example.org",
                                display_name="New Bie")
    user.refresh_from_db()
    assert user.username == "newbie" and user.email == "n@example.org" and user.display_name == "New Bie"
    assert user.check_password(STRONG) and user.password != STRONG
    event = _last()
    _assert_event(event, actor=actor, verb="user.created", target_type="accounts.user", target_id=user.pk)
    assert event.before is None
    assert event.after["username"] == "newbie" and event.after["is_platform_admin"] is False
    assert "password" not in event.after
    assert event.source_ip == "10.0.0.7"


def test_user_create_by_the_system_actor_is_audited_as_system():
    actor = Actor.system("seed_demo", request_id="sys-req-1")
    user = services.user_create(actor=actor, username="sysmade", password=STRONG)
    event = _last()
    assert event.actor_kind == "system" and event.actor_name == "seed_demo" and event.actor_id is None
    assert event.request_id == "sys-req-1" and event.target_id == str(user.pk)


def test_user_create_is_for_platform_admins_only(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    before = _events()
    with pytest.raises(PermissionDenied):
        services.user_create(actor=_actor(team_admin), username="sneaky", password=STRONG)
    assert not User.objects.filter(username="sneaky").exists()
    assert _events() == before


@pytest.mark.parametrize("kwargs, field, error", [
    ({"username": ""}, "username", ValidationFailed),
    ({"username": "   "}, "username", ValidationFailed),
    ({"username": "u" * 151}, "username", ValidationFailed),
    ({"username": "has space"}, "username", ValidationFailed),
    ({"username": "ok", "email": "not-an-email"}, "email", ValidationFailed),
    ({"username": "ok", "email": "a@" + "b" * 250 + ".org"}, "email", ValidationFailed),
    ({"username": "ok", "display_name": "d" * 151}, "display_name", ValidationFailed),
    ({"username": "ok", "password": "short"}, "password", ValidationFailed),
    ({"username": "ok", "password": "12345678901"}, "password", ValidationFailed),
    ({"username": "ROOT"}, "username", Conflict),  # usernames are unique regardless of case
])
def test_user_create_refuses_bad_input(admin, kwargs, field, error):
    args = {"password": STRONG, **kwargs}
    before_users, before_events = User.objects.count(), _events()
    with pytest.raises(error) as caught:
        services.user_create(actor=_actor(admin), **args)
    assert field in caught.value.fields
    assert User.objects.count() == before_users and _events() == before_events


# ---------------------------------------------------------------- team_create

def test_team_create_creates_and_records(admin):
    actor = _actor(admin)
    team = services.team_create(actor=actor, name=" Risk Models ", slug="risk-models", description="Scores.")
    assert (team.name, team.slug, team.description) == ("Risk Models", "risk-models", "Scores.")
    assert Team.objects.filter(slug="risk-models").count() == 1
    event = _last()
    _assert_event(event, actor=actor, verb="team.created", target_type="accounts.team", target_id=team.pk,
                  team_id=team.pk)
    assert event.before is None
    assert event.after == {"id": team.pk, "name": "Risk Models", "slug": "risk-models", "description": "Scores."}


@pytest.mark.parametrize("role", ["viewer", "team_admin", "risk_officer"])
def test_team_create_is_for_platform_admins_only(make_user, team_a, role):
    user = make_user("u", team=team_a, roles=(role,))
    before = _events()
    with pytest.raises(PermissionDenied):
        services.team_create(actor=_actor(user), name="Mine", slug="mine")
    assert not Team.objects.filter(slug="mine").exists() and _events() == before


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "", "slug": "ok"}, "name"),
    ({"name": "n" * 101, "slug": "ok"}, "name"),
    ({"name": "Ok", "slug": ""}, "slug"),
    ({"name": "Ok", "slug": "Not A Slug"}, "slug"),
    ({"name": "Ok", "slug": "double--hyphen"}, "slug"),
    ({"name": "Ok", "slug": "-leading"}, "slug"),
    ({"name": "Ok", "slug": "s" * 51}, "slug"),
    ({"name": "Ok", "slug": "ok", "description": "d" * 2001}, "description"),
])
def test_team_create_refuses_bad_input(admin, kwargs, field):
    before_teams, before_events = Team.objects.count(), _events()
    with pytest.raises(ValidationFailed) as caught:
        services.team_create(actor=_actor(admin), **kwargs)
    assert field in caught.value.fields and caught.value.status == 400
    assert Team.objects.count() == before_teams and _events() == before_events


def test_team_create_reports_every_bad_field_at_once(admin):
    with pytest.raises(ValidationFailed) as caught:
        services.team_create(actor=_actor(admin), name="", slug="Bad Slug")
    assert set(caught.value.fields) == {"name", "slug"}


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "fraud", "slug": "fraud-2"}, "name"),  # names are unique regardless of case
    ({"name": "Fraud Two", "slug": "fraud"}, "slug"),
])
def test_team_create_duplicate_is_a_conflict(admin, team_a, kwargs, field):
    before = _events()
    with pytest.raises(Conflict) as caught:
        services.team_create(actor=_actor(admin), **kwargs)
    assert caught.value.status == 409 and field in caught.value.fields
    assert Team.objects.count() == 2 and _events() == before


# ---------------------------------------------------------------- team_update

def test_team_update_by_its_team_admin_records_before_and_after(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    actor = _actor(team_admin)
    team = services.team_update(actor=actor, team_id=team_a.pk, name="Fraud Squad", description="New words.")
    team_a.refresh_from_db()
    assert team_a.name == "Fraud Squad" and team_a.description == "New words."
    event = _last()
    _assert_event(event, actor=actor, verb="team.updated", target_type="accounts.team", target_id=team.pk,
                  team_id=team_a.pk)
    assert event.before["name"] == "Fraud" and event.after["name"] == "Fraud Squad"
    assert event.before["description"] == "" and event.after["description"] == "New words."


def test_team_update_leaves_unnamed_fields_alone(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    team_a.description = "Keep me."
    team_a.save()
    services.team_update(actor=_actor(team_admin), team_id=team_a.pk, name="Renamed")
    team_a.refresh_from_db()
    assert team_a.name == "Renamed" and team_a.description == "Keep me."


@pytest.mark.parametrize("role", ["viewer", "data_scientist", "ml_engineer", "approver", "risk_officer"])
def test_team_update_needs_team_admin(make_user, team_a, role):
    user = make_user("u", team=team_a, roles=(role,))
    before = _events()
    with pytest.raises(PermissionDenied):
        services.team_update(actor=_actor(user), team_id=team_a.pk, name="Hijacked")
    team_a.refresh_from_db()
    assert team_a.name == "Fraud" and _events() == before


def test_team_update_of_another_team_is_not_found(make_user, team_a, team_b):
    other_admin = make_user("tb", team=team_b, roles=("team_admin",))
    with pytest.raises(NotFound):
        services.team_update(actor=_actor(other_admin), team_id=team_a.pk, name="Hijacked")
    with pytest.raises(NotFound):
        services.team_update(actor=_actor(other_admin), team_id=999999, name="Nobody")
    team_a.refresh_from_db()
    assert team_a.name == "Fraud"


@pytest.mark.parametrize("kwargs, field, error", [
    ({"name": "   "}, "name", ValidationFailed),
    ({"name": "n" * 101}, "name", ValidationFailed),
    ({"description": "d" * 2001}, "description", ValidationFailed),
    ({"name": "RECS"}, "name", Conflict),
])
def test_team_update_refuses_bad_input(make_user, team_a, team_b, kwargs, field, error):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    before = _events()
    with pytest.raises(error) as caught:
        services.team_update(actor=_actor(team_admin), team_id=team_a.pk, **kwargs)
    assert field in caught.value.fields
    team_a.refresh_from_db()
    assert team_a.name == "Fraud" and team_a.description == "" and _events() == before


# ---------------------------------------------------------------- membership_add / membership_remove

def test_membership_add_by_team_admin(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    newcomer = make_user("newcomer")
    actor = _actor(team_admin)
    membership = services.membership_add(actor=actor, team_id=team_a.pk, user_id=newcomer.pk, role="approver")
    assert Membership.objects.filter(team=team_a, user=newcomer, role="approver").count() == 1
    event = _last()
    _assert_event(event, actor=actor, verb="membership.added", target_type="accounts.membership",
                  target_id=membership.pk, team_id=team_a.pk)
    assert event.after == {"user": "newcomer", "user_id": newcomer.pk, "team_id": team_a.pk, "role": "approver"}


def test_membership_add_a_second_role_in_the_same_team(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    member = make_user("m", team=team_a, roles=("viewer",))
    services.membership_add(actor=_actor(team_admin), team_id=team_a.pk, user_id=member.pk, role="risk_officer")
    assert set(member.memberships.values_list("role", flat=True)) == {"viewer", "risk_officer"}


def test_membership_add_by_platform_admin_without_a_team_role(admin, make_user, team_b):
    newcomer = make_user("newcomer")
    services.membership_add(actor=_actor(admin), team_id=team_b.pk, user_id=newcomer.pk, role="viewer")
    assert Membership.objects.filter(team=team_b, user=newcomer).exists()


@pytest.mark.parametrize("role", ["viewer", "data_scientist", "ml_engineer", "approver", "risk_officer"])
def test_membership_add_needs_team_admin(make_user, team_a, role):
    user = make_user("u", team=team_a, roles=(role,))
    newcomer = make_user("newcomer")
    before = _events()
    with pytest.raises(PermissionDenied):
        services.membership_add(actor=_actor(user), team_id=team_a.pk, user_id=newcomer.pk, role="team_admin")
    assert not Membership.objects.filter(user=newcomer).exists() and _events() == before


def test_membership_add_in_another_team_is_not_found(make_user, team_a, team_b):
    other_admin = make_user("tb", team=team_b, roles=("team_admin",))
    newcomer = make_user("newcomer")
    with pytest.raises(NotFound):
        services.membership_add(actor=_actor(other_admin), team_id=team_a.pk, user_id=newcomer.pk, role="viewer")
    with pytest.raises(NotFound):
        services.membership_add(actor=_actor(other_admin), team_id=424242, user_id=newcomer.pk, role="viewer")
    assert not Membership.objects.filter(user=newcomer).exists()


def test_membership_add_refuses_bad_input(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    member = make_user("m", team=team_a, roles=("viewer",))
    gone = make_user("gone")
    gone.is_active = False
    gone.save()
    actor = _actor(team_admin)
    before_rows, before_events = Membership.objects.count(), _events()
    with pytest.raises(ValidationFailed) as caught:
        services.membership_add(actor=actor, team_id=team_a.pk, user_id=member.pk, role="overlord")
    assert "role" in caught.value.fields and caught.value.code == "invalid_choice"
    with pytest.raises(ValidationFailed) as caught:
        services.membership_add(actor=actor, team_id=team_a.pk, user_id=987654, role="viewer")
    assert "user" in caught.value.fields
    with pytest.raises(ValidationFailed) as caught:
        services.membership_add(actor=actor, team_id=team_a.pk, user_id=gone.pk, role="viewer")
    assert "user" in caught.value.fields
    with pytest.raises(Conflict) as caught:
        services.membership_add(actor=actor, team_id=team_a.pk, user_id=member.pk, role="viewer")
    assert "role" in caught.value.fields
    assert Membership.objects.count() == before_rows and _events() == before_events


def test_membership_remove_by_team_admin(make_user, team_a):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    member = make_user("m", team=team_a, roles=("ml_engineer",))
    membership = member.memberships.get()
    actor = _actor(team_admin)
    services.membership_remove(actor=actor, membership_id=membership.pk)
    assert not Membership.objects.filter(pk=membership.pk).exists()
    event = _last()
    _assert_event(event, actor=actor, verb="membership.removed", target_type="accounts.membership",
                  target_id=membership.pk, team_id=team_a.pk)
    assert event.before == {"user": "m", "user_id": member.pk, "team_id": team_a.pk, "role": "ml_engineer"}
    assert event.after is None
    assert "ml_engineer" in event.target_repr


@pytest.mark.parametrize("role", ["viewer", "data_scientist", "ml_engineer", "approver", "risk_officer"])
def test_membership_remove_needs_team_admin(make_user, team_a, role):
    user = make_user("u", team=team_a, roles=(role,))
    member = make_user("m", team=team_a, roles=("viewer",))
    with pytest.raises(PermissionDenied):
        services.membership_remove(actor=_actor(user), membership_id=member.memberships.get().pk)
    assert member.memberships.exists()


def test_membership_remove_in_another_team_is_not_found(make_user, team_a, team_b):
    make_user("ta", team=team_a, roles=("team_admin",))
    other_admin = make_user("tb", team=team_b, roles=("team_admin",))
    member = make_user("m", team=team_a, roles=("viewer",))
    with pytest.raises(NotFound):
        services.membership_remove(actor=_actor(other_admin), membership_id=member.memberships.get().pk)
    with pytest.raises(NotFound):
        services.membership_remove(actor=_actor(other_admin), membership_id=555555)
    assert member.memberships.exists()


def test_the_last_team_admin_cannot_be_removed(admin, make_user, team_a):
    only_admin = make_user("ta", team=team_a, roles=("team_admin",))
    membership = only_admin.memberships.get()
    before = _events()
    for actor in (_actor(only_admin), _actor(admin)):  # not by themselves, not even by a platform admin
        with pytest.raises(Conflict) as caught:
            services.membership_remove(actor=actor, membership_id=membership.pk)
        assert caught.value.fields == {"role": ["last team admin"]}
    assert Membership.objects.filter(pk=membership.pk).exists() and _events() == before

    second = make_user("ta2", team=team_a, roles=("team_admin",))
    services.membership_remove(actor=_actor(second), membership_id=membership.pk)
    assert not Membership.objects.filter(pk=membership.pk).exists()
    with pytest.raises(Conflict):  # now the second one is the last
        services.membership_remove(actor=_actor(admin), membership_id=second.memberships.get().pk)


def test_removing_another_role_of_the_last_team_admin_is_allowed(make_user, team_a):
    only_admin = make_user("ta", team=team_a, roles=("team_admin", "approver"))
    approver_role = only_admin.memberships.get(role="approver")
    services.membership_remove(actor=_actor(only_admin), membership_id=approver_role.pk)
    assert list(only_admin.memberships.values_list("role", flat=True)) == ["team_admin"]


# ---------------------------------------------------------------- apitoken_create

TOKEN_RE = re.compile(r"^mp_([0-9a-f]{8})_([A-Za-z0-9_-]+)$")


def test_apitoken_create_returns_the_secret_once_and_stores_only_its_hash(make_user, team_a):
    user = make_user("alice", team=team_a, roles=("viewer",))
    actor = _actor(user)
    token, secret = services.apitoken_create(actor=actor, name=" CI pipeline ", scopes=["read", "write"],
                                             expires_in_days=30)
    match = TOKEN_RE.match(secret)
    assert match, secret
    prefix, random_part = match.groups()
    assert len(random_part) * 6 >= 128  # URL-safe base64: 6 bits a character; at least 128 bits of randomness
    assert len(random_part) >= 43  # 32 random bytes
    token.refresh_from_db()
    assert token.name == "CI pipeline" and token.user == user
    assert token.prefix == prefix
    assert token.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert not any(isinstance(v, str) and random_part in v for v in row.values())
    assert token.scopes == ["read", "write"]
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert token.status == "active" and token.revoked_at is None and token.last_used_at is None

    event = _last()
    _assert_event(event, actor=actor, verb="token.created", target_type="accounts.apitoken", target_id=token.pk)
    assert event.after["prefix"] == prefix and event.after["name"] == "CI pipeline"
    assert "key_hash" not in event.after
    assert random_part not in str(event.after) and token.key_hash not in str(event.after)


def test_each_token_is_different(make_user):
    actor = _actor(make_user("alice"))
    (t1, s1), (t2, s2) = (services.apitoken_create(actor=actor, name=n) for n in ("one", "two"))
    assert s1 != s2 and t1.prefix != t2.prefix and t1.key_hash != t2.key_hash


@pytest.mark.parametrize("given, stored", [
    (None, ["read"]),
    (["read"], ["read"]),
    (["write"], ["read", "write"]),  # write implies read
    (["write", "read"], ["write", "read"]),
    (["read", "read", "write", "write"], ["read", "write"]),
])
def test_apitoken_scopes_are_normalised(make_user, given, stored):
    token, _ = services.apitoken_create(actor=_actor(make_user("alice")), name="t", scopes=given)
    token.refresh_from_db()
    assert token.scopes == stored


@pytest.mark.parametrize("days", [1, settings.API_TOKEN_MAX_DAYS])
def test_apitoken_expiry_bounds_accepted(make_user, days):
    token, _ = services.apitoken_create(actor=_actor(make_user("alice")), name="t", expires_in_days=days)
    assert abs(token.expires_at - (timezone.now() + timedelta(days=days))) < timedelta(minutes=1)


@pytest.mark.parametrize("kwargs, field", [
    ({"name": ""}, "name"),
    ({"name": "  "}, "name"),
    ({"name": "n" * 101}, "name"),
    ({"name": "t", "scopes": []}, "scopes"),
    ({"name": "t", "scopes": ["admin"]}, "scopes"),
    ({"name": "t", "scopes": ["read", "delete"]}, "scopes"),
    ({"name": "t", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "t", "expires_in_days": -5}, "expires_in_days"),
    ({"name": "t", "expires_in_days": settings.API_TOKEN_MAX_DAYS + 1}, "expires_in_days"),
    ({"name": "t", "expires_in_days": "ten"}, "expires_in_days"),
    ({"name": "t", "expires_in_days": 1.5}, "expires_in_days"),
    ({"name": "t", "expires_in_days": True}, "expires_in_days"),
])
def test_apitoken_create_refuses_bad_input(make_user, kwargs, field):
    before = _events()
    with pytest.raises(ValidationFailed) as caught:
        services.apitoken_create(actor=_actor(make_user("alice")), **kwargs)
    assert field in caught.value.fields
    assert not ApiToken.objects.exists() and _events() == before


def test_apitoken_duplicate_name_per_user_is_a_conflict(make_user):
    alice, bob = make_user("alice"), make_user("bob")
    services.apitoken_create(actor=_actor(alice), name="ci")
    with pytest.raises(Conflict) as caught:
        services.apitoken_create(actor=_actor(alice), name="ci")
    assert "name" in caught.value.fields
    services.apitoken_create(actor=_actor(bob), name="ci")  # another user may use the same name
    assert ApiToken.objects.filter(name="ci").count() == 2


def test_a_read_only_token_cannot_create_or_revoke_tokens(make_user):
    alice = make_user("alice")
    token, _ = services.apitoken_create(actor=_actor(alice), name="ro", scopes=["read"])
    read_only = _actor(alice, kind="token", token_id=token.pk, scopes=frozenset({"read"}))
    with pytest.raises(PermissionDenied) as caught:
        services.apitoken_create(actor=read_only, name="escalate", scopes=["read", "write"])
    assert caught.value.code == "token_scope"
    with pytest.raises(PermissionDenied):
        services.apitoken_revoke(actor=read_only, token_id=token.pk)
    assert ApiToken.objects.count() == 1 and ApiToken.objects.get().revoked_at is None


def test_a_token_actor_is_recorded_with_its_token_id(make_user):
    alice = make_user("alice")
    token, _ = services.apitoken_create(actor=_actor(alice), name="rw", scopes=["write"])
    via_token = _actor(alice, kind="token", token_id=token.pk, scopes=frozenset({"read", "write"}))
    services.apitoken_create(actor=via_token, name="child")
    event = _last()
    assert event.actor_kind == "token" and event.token_id == token.pk and event.actor_name == "alice"


def test_the_system_cannot_own_a_token():
    with pytest.raises(ValidationFailed):
        services.apitoken_create(actor=Actor.system(), name="robot")
    assert not ApiToken.objects.exists()


# ---------------------------------------------------------------- apitoken_revoke

def test_apitoken_revoke_is_immediate(make_user):
    alice = make_user("alice")
    token, secret = services.apitoken_create(actor=_actor(alice), name="ci", scopes=["read"])
    client = APIClient()
    assert client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200

    actor = _actor(alice)
    revoked = services.apitoken_revoke(actor=actor, token_id=token.pk)
    assert revoked.revoked_at is not None and revoked.status == "revoked"
    event = _last()
    _assert_event(event, actor=actor, verb="token.revoked", target_type="accounts.apitoken", target_id=token.pk)
    assert event.before["revoked_at"] is None and event.after["revoked_at"] is not None

    response = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert "revoked" in response.json()["error"]["message"]


def test_apitoken_revoke_twice_is_a_conflict(make_user):
    alice = make_user("alice")
    token, _ = services.apitoken_create(actor=_actor(alice), name="ci")
    services.apitoken_revoke(actor=_actor(alice), token_id=token.pk)
    before = _events()
    with pytest.raises(Conflict):
        services.apitoken_revoke(actor=_actor(alice), token_id=token.pk)
    assert _events() == before


def test_apitoken_revoke_of_someone_elses_token_is_not_found(make_user, admin, team_a):
    alice = make_user("alice", team=team_a, roles=("team_admin",))
    bob = make_user("bob", team=team_a, roles=("viewer",))
    token, _ = services.apitoken_create(actor=_actor(bob), name="bob's")
    with pytest.raises(NotFound):  # not even a team admin of the owner's team
        services.apitoken_revoke(actor=_actor(alice), token_id=token.pk)
    with pytest.raises(NotFound):
        services.apitoken_revoke(actor=_actor(alice), token_id=7777777)
    token.refresh_from_db()
    assert token.revoked_at is None
    services.apitoken_revoke(actor=_actor(admin), token_id=token.pk)  # a platform admin may
    token.refresh_from_db()
    assert token.revoked_at is not None and _last().actor_name == "root"


# ---------------------------------------------------------------- sign-in / sign-out records

def test_session_login_and_logout_are_recorded(make_user):
    alice = make_user("alice")
    actor = _actor(alice)
    services.session_login_record(actor=actor)
    event = _last()
    _assert_event(event, actor=actor, verb="user.logged_in", target_type="accounts.user", target_id=alice.pk)
    assert event.target_repr == "alice"
    services.session_logout_record(actor=actor)
    assert _last().verb == "user.logged_out" and _last().seq == event.seq + 1


# ---------------------------------------------------------------- a failed service leaves nothing behind

def _fail_after_recording(monkeypatch):
    """Let the audit event be written, then fail: the service's transaction must take back row and event."""
    from apps.audit.services import audit_event_record as real

    def record_then_fail(**kwargs):
        real(**kwargs)
        raise RuntimeError("boom after the audit event")

    monkeypatch.setattr(services, "audit_event_record", record_then_fail)


def test_a_failed_team_create_leaves_no_row_and_no_event(admin, monkeypatch):
    before = _events()
    _fail_after_recording(monkeypatch)
    with pytest.raises(RuntimeError):
        services.team_create(actor=_actor(admin), name="Ghost", slug="ghost")
    assert not Team.objects.filter(slug="ghost").exists()
    assert _events() == before


def test_a_failed_apitoken_create_leaves_no_row_and_no_event(make_user, monkeypatch):
    alice = make_user("alice")
    before = _events()
    _fail_after_recording(monkeypatch)
    with pytest.raises(RuntimeError):
        services.apitoken_create(actor=_actor(alice), name="ghost")
    assert not ApiToken.objects.exists() and _events() == before


def test_a_failed_membership_remove_keeps_the_membership(make_user, team_a, monkeypatch):
    team_admin = make_user("ta", team=team_a, roles=("team_admin",))
    member = make_user("m", team=team_a, roles=("viewer",))
    membership = member.memberships.get()
    before = _events()
    _fail_after_recording(monkeypatch)
    with pytest.raises(RuntimeError):
        services.membership_remove(actor=_actor(team_admin), membership_id=membership.pk)
    assert Membership.objects.filter(pk=membership.pk).exists() and _events() == before


def test_a_failed_revoke_leaves_the_token_working(make_user, monkeypatch):
    alice = make_user("alice")
    token, secret = services.apitoken_create(actor=_actor(alice), name="ci")
    before = _events()
    _fail_after_recording(monkeypatch)
    with pytest.raises(RuntimeError):
        services.apitoken_revoke(actor=_actor(alice), token_id=token.pk)
    token.refresh_from_db()
    assert token.revoked_at is None and _events() == before
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 200
