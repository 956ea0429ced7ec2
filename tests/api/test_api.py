"""Every endpoint under /api/v1/: outcomes, scoping, pagination, filters, the one error shape, idempotency, schema."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.models import ApiToken, Membership, Team, User
from apps.audit.models import AuditEvent
from apps.audit.services import audit_event_record
from apps.core.actors import Actor

pytestmark = pytest.mark.django_db

STRONG = "a-long-enough-passphrase-42"


class World:
    """Team A (alice: team admin, bob: viewer), team B (carol: team admin), root: platform admin, no team."""

    def __init__(self, make_user, teams):
        self.a, self.b = teams
        self.alice = make_user("alice", team=self.a, roles=("team_admin",))
        self.bob = make_user("bob", team=self.a, roles=("viewer",))
        self.carol = make_user("carol", team=self.b, roles=("team_admin",))
        self.root = make_user("root", platform_admin=True)
        self._clients: dict[str, APIClient] = {}
        for user in (self.alice, self.bob, self.carol, self.root):
            self.client(user)  # their tokens (and those tokens' audit events) exist before any test counts

    def client(self, user: User, scopes=("read", "write")) -> APIClient:
        """An API client that authenticates with a real bearer token of ``user``."""
        key = f"{user.username}:{','.join(scopes)}"
        if key not in self._clients:
            _, secret = services.apitoken_create(actor=Actor.for_user(user), name=f"api-{key}", scopes=list(scopes))
            self._clients[key] = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return self._clients[key]


@pytest.fixture
def w(make_user, teams):
    return World(make_user, teams)


def _error(response, status: int, code: str | None = None, field: str | None = None) -> dict:
    """Assert the one error shape and return its inner object."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) <= {"code", "message", "fields"} and {"code", "message"} <= set(error)
    assert isinstance(error["message"], str) and error["message"]
    if code:
        assert error["code"] == code, error
    if field:
        assert any(k == field or k.startswith(field + ".") for k in error.get("fields", {})), error
        assert all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in error["fields"].values())
    return error


def _results(response) -> list[dict]:
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert set(body) == {"next", "previous", "results"}
    return body["results"]


def _events() -> int:
    return AuditEvent.objects.count()


# ---------------------------------------------------------------- /me/

def test_me_describes_the_caller(w):
    body = w.client(w.alice).get("/api/v1/me/").json()
    assert body["username"] == "alice" and body["is_platform_admin"] is False
    assert body["auth"] == "token" and body["token_scopes"] == ["read", "write"]
    assert body["teams"] == [{"team": w.a.pk, "team_name": "Fraud", "team_slug": "fraud", "roles": ["team_admin"]}]
    root = w.client(w.root).get("/api/v1/me/").json()
    assert root["is_platform_admin"] is True and root["teams"] == []


def test_me_is_read_only(w):
    _error(w.client(w.alice).post("/api/v1/me/", {}, format="json"), 405, "method_not_allowed")


def test_api_root_lists_the_resources(w):
    body = w.client(w.bob).get("/api/v1/").json()
    assert set(body) >= {"users", "teams", "memberships", "tokens", "audit-events", "models", "versions",
                         "environments", "deployments"}


# ---------------------------------------------------------------- users

def test_users_are_scoped_to_the_callers_teams(w):
    names = {u["username"] for u in _results(w.client(w.bob).get("/api/v1/users/"))}
    assert names == {"alice", "bob"}
    everyone = {u["username"] for u in _results(w.client(w.root).get("/api/v1/users/"))}
    assert {"alice", "bob", "carol", "root"} <= everyone


def test_user_detail_own_team_other_team_unknown(w):
    client = w.client(w.bob)
    assert client.get(f"/api/v1/users/{w.alice.pk}/").json()["username"] == "alice"
    _error(client.get(f"/api/v1/users/{w.carol.pk}/"), 404, "not_found")
    _error(client.get("/api/v1/users/987654/"), 404, "not_found")
    _error(client.get("/api/v1/users/abc/"), 404, "not_found")
    assert w.client(w.root).get(f"/api/v1/users/{w.carol.pk}/").status_code == 200


def test_user_filters(w):
    root = w.client(w.root)
    assert [u["username"] for u in _results(root.get("/api/v1/users/?username=carol"))] == ["carol"]
    admins = _results(root.get("/api/v1/users/?is_platform_admin=true"))
    assert {u["username"] for u in admins} == {"root"}


def test_user_create_by_platform_admin(w):
    before = _events()
    response = w.client(w.root).post("/api/v1/users/", {
        "username": "dave", "password": STRONG, "email": "dave@example.org", "display_name": "Dave"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["username"] == "dave" and "password" not in body
    assert User.objects.get(username="dave").check_password(STRONG)
    assert _events() == before + 1 and AuditEvent.objects.order_by("-seq").first().verb == "user.created"


def test_user_create_refused_for_a_team_admin(w):
    _error(w.client(w.alice).post("/api/v1/users/", {"username": "dave", "password": STRONG}, format="json"),
           403, "permission_denied")
    assert not User.objects.filter(username="dave").exists()


@pytest.mark.parametrize("payload, status, field", [
    ({}, 400, "username"),
    ({"username": "dave"}, 400, "password"),
    ({"username": "d" * 151, "password": STRONG}, 400, "username"),
    ({"username": "dave", "password": STRONG, "email": "nope"}, 400, "email"),
    ({"username": "dave", "password": STRONG, "is_platform_admin": "perhaps"}, 400, "is_platform_admin"),
    ({"username": "dave", "password": "short"}, 400, "password"),
    ({"username": "ALICE", "password": STRONG}, 409, "username"),
    ({"username": ["dave"], "password": STRONG}, 400, "username"),
])
def test_user_create_bad_input(w, payload, status, field):
    before = User.objects.count()
    _error(w.client(w.root).post("/api/v1/users/", payload, format="json"), status, field=field)
    assert User.objects.count() == before


# ---------------------------------------------------------------- teams

def test_teams_are_scoped(w):
    assert [t["slug"] for t in _results(w.client(w.bob).get("/api/v1/teams/"))] == ["fraud"]
    assert {t["slug"] for t in _results(w.client(w.root).get("/api/v1/teams/"))} == {"fraud", "recs"}
    assert [t["slug"] for t in _results(w.client(w.root).get("/api/v1/teams/?slug=recs"))] == ["recs"]


def test_team_detail(w):
    body = w.client(w.bob).get(f"/api/v1/teams/{w.a.pk}/").json()
    assert body["name"] == "Fraud" and body["slug"] == "fraud"
    _error(w.client(w.bob).get(f"/api/v1/teams/{w.b.pk}/"), 404, "not_found")
    _error(w.client(w.bob).get("/api/v1/teams/999999/"), 404, "not_found")


def test_team_create(w):
    response = w.client(w.root).post("/api/v1/teams/", {"name": "Vision", "slug": "vision"}, format="json")
    assert response.status_code == 201 and response.json()["slug"] == "vision"
    assert Team.objects.filter(slug="vision").exists()
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "team.created" and event.actor_name == "root" and event.actor_kind == "token"
    assert event.request_id == response["X-Request-ID"]


@pytest.mark.parametrize("payload, status, field", [
    ({"slug": "vision"}, 400, "name"),
    ({"name": "Vision"}, 400, "slug"),
    ({"name": "V" * 101, "slug": "vision"}, 400, "name"),
    ({"name": "Vision", "slug": "Not a slug!"}, 400, "slug"),
    ({"name": "Vision", "slug": "under_score"}, 400, "slug"),  # SlugField allows it; our slugs do not
    ({"name": "Vision", "slug": "vision", "description": "d" * 2001}, 400, "description"),
    ({"name": 12, "slug": {"a": 1}}, 400, "slug"),
    ({"name": "fraud", "slug": "fraud-2"}, 409, "name"),
    ({"name": "Vision", "slug": "recs"}, 409, "slug"),
])
def test_team_create_bad_input(w, payload, status, field):
    _error(w.client(w.root).post("/api/v1/teams/", payload, format="json"), status, field=field)
    assert Team.objects.count() == 2


def test_team_create_refused_for_members(w):
    _error(w.client(w.alice).post("/api/v1/teams/", {"name": "Mine", "slug": "mine"}, format="json"),
           403, "permission_denied")


def test_team_partial_update(w):
    response = w.client(w.alice).patch(f"/api/v1/teams/{w.a.pk}/", {"description": "Fraud models."}, format="json")
    assert response.status_code == 200 and response.json()["description"] == "Fraud models."
    w.a.refresh_from_db()
    assert w.a.description == "Fraud models." and w.a.name == "Fraud"
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "team.updated" and event.team_id == w.a.pk
    assert event.before["description"] == "" and event.after["description"] == "Fraud models."


def test_team_partial_update_refusals(w):
    _error(w.client(w.bob).patch(f"/api/v1/teams/{w.a.pk}/", {"name": "X"}, format="json"), 403,
           "permission_denied")
    _error(w.client(w.alice).patch(f"/api/v1/teams/{w.b.pk}/", {"name": "X"}, format="json"), 404, "not_found")
    _error(w.client(w.alice).patch(f"/api/v1/teams/{w.a.pk}/", {"name": "n" * 101}, format="json"), 400,
           field="name")
    _error(w.client(w.alice).patch(f"/api/v1/teams/{w.a.pk}/", {"name": "Recs"}, format="json"), 409,
           field="name")
    _error(w.client(w.alice).patch(f"/api/v1/teams/{w.a.pk}/", {"name": None}, format="json"), 400, field="name")
    _error(w.client(w.alice).put(f"/api/v1/teams/{w.a.pk}/", {"name": "X", "slug": "x"}, format="json"), 405,
           "method_not_allowed")
    _error(w.client(w.root).delete(f"/api/v1/teams/{w.a.pk}/"), 405, "method_not_allowed")
    w.a.refresh_from_db()
    assert w.a.name == "Fraud"


# ---------------------------------------------------------------- memberships

def test_memberships_are_scoped_and_filterable(w):
    rows = _results(w.client(w.bob).get("/api/v1/memberships/"))
    assert {(r["username"], r["team"], r["role"]) for r in rows} == {("alice", w.a.pk, "team_admin"),
                                                                     ("bob", w.a.pk, "viewer")}
    root = w.client(w.root)
    assert {r["username"] for r in _results(root.get(f"/api/v1/memberships/?team={w.b.pk}"))} == {"carol"}
    assert {r["username"] for r in _results(root.get("/api/v1/memberships/?role=viewer"))} == {"bob"}
    assert {r["role"] for r in _results(root.get(f"/api/v1/memberships/?user={w.alice.pk}"))} == {"team_admin"}
    _error(root.get("/api/v1/memberships/?team=abc"), 400, field="team")
    _error(root.get("/api/v1/memberships/?role=overlord"), 400, field="role")


def test_membership_detail(w):
    mine = w.bob.memberships.get()
    theirs = w.carol.memberships.get()
    assert w.client(w.alice).get(f"/api/v1/memberships/{mine.pk}/").json()["username"] == "bob"
    _error(w.client(w.alice).get(f"/api/v1/memberships/{theirs.pk}/"), 404, "not_found")


def test_membership_create_and_delete(w, make_user):
    dave = make_user("dave")
    client = w.client(w.alice)
    response = client.post("/api/v1/memberships/", {"team": w.a.pk, "user": dave.pk, "role": "ml_engineer"},
                           format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["team"], body["user"], body["role"], body["username"]) == (w.a.pk, dave.pk, "ml_engineer", "dave")
    assert AuditEvent.objects.order_by("-seq").first().verb == "membership.added"

    response = client.delete(f"/api/v1/memberships/{body['id']}/")
    assert response.status_code == 204 and not response.content
    assert not Membership.objects.filter(pk=body["id"]).exists()
    assert AuditEvent.objects.order_by("-seq").first().verb == "membership.removed"


@pytest.mark.parametrize("payload, status, field", [
    ({}, 400, "team"),
    ({"team": "A", "user": 1, "role": "viewer"}, 400, "team"),
    ({"team": "{a}", "user": "x", "role": "viewer"}, 400, "user"),
    ({"team": "{a}", "user": "{dave}", "role": "overlord"}, 400, "role"),
    ({"team": "{a}", "user": "{dave}"}, 400, "role"),
    ({"team": "{a}", "user": 987654, "role": "viewer"}, 400, "user"),
    ({"team": 987654, "user": "{dave}", "role": "viewer"}, 404, None),
    ({"team": "{b}", "user": "{dave}", "role": "viewer"}, 404, None),
    ({"team": "{a}", "user": "{bob}", "role": "viewer"}, 409, "role"),
])
def test_membership_create_bad_input(w, make_user, payload, status, field):
    dave = make_user("dave")
    ids = {"{a}": w.a.pk, "{b}": w.b.pk, "{dave}": dave.pk, "{bob}": w.bob.pk}
    payload = {k: ids.get(v, v) if isinstance(v, str) else v for k, v in payload.items()}
    before = Membership.objects.count(), _events()
    _error(w.client(w.alice).post("/api/v1/memberships/", payload, format="json"), status, field=field)
    assert (Membership.objects.count(), _events()) == before


def test_membership_delete_refusals(w):
    _error(w.client(w.bob).delete(f"/api/v1/memberships/{w.bob.memberships.get().pk}/"), 403, "permission_denied")
    _error(w.client(w.alice).delete(f"/api/v1/memberships/{w.carol.memberships.get().pk}/"), 404, "not_found")
    error = _error(w.client(w.alice).delete(f"/api/v1/memberships/{w.alice.memberships.get().pk}/"), 409,
                   "conflict", field="role")
    assert "team admin" in error["message"]
    assert Membership.objects.count() == 3


# ---------------------------------------------------------------- tokens

def test_tokens_list_only_the_callers_own_and_never_the_secret(w):
    client = w.client(w.bob)
    services.apitoken_create(actor=Actor.for_user(w.alice), name="alice's")
    rows = _results(client.get("/api/v1/tokens/"))
    assert [r["name"] for r in rows] == ["api-bob:read,write"]
    assert set(rows[0]) == {"id", "name", "prefix", "scopes", "status", "created_at", "expires_at", "revoked_at",
                            "last_used_at"}
    alice_token = ApiToken.objects.get(name="alice's")
    _error(client.get(f"/api/v1/tokens/{alice_token.pk}/"), 404, "not_found")


def test_token_create_shows_the_secret_once(w):
    client = w.client(w.bob)
    response = client.post("/api/v1/tokens/", {"name": "ci", "scopes": ["write"], "expires_in_days": 7},
                           format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert re.fullmatch(r"mp_[0-9a-f]{8}_[A-Za-z0-9_-]{43,}", body["token"])
    assert body["prefix"] == body["token"].split("_")[1] and body["scopes"] == ["read", "write"]
    assert body["status"] == "active"
    assert body["expires_at"].endswith("Z") and body["created_at"].endswith("Z")  # UTC ISO 8601
    expires = datetime.fromisoformat(body["expires_at"])
    assert abs(expires - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    detail = client.get(f"/api/v1/tokens/{body['id']}/").json()
    assert "token" not in detail and detail["prefix"] == body["prefix"]
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {body['token']}").status_code == 200


@pytest.mark.parametrize("payload, status, field", [
    ({}, 400, "name"),
    ({"name": ""}, 400, "name"),
    ({"name": "n" * 101}, 400, "name"),
    ({"name": "ci", "expires_in_days": "ten"}, 400, "expires_in_days"),
    ({"name": "ci", "expires_in_days": 0}, 400, "expires_in_days"),
    ({"name": "ci", "expires_in_days": settings.API_TOKEN_MAX_DAYS + 1}, 400, "expires_in_days"),
    ({"name": "ci", "expires_in_days": 2.5}, 400, "expires_in_days"),
    ({"name": "ci", "scopes": []}, 400, "scopes"),
    ({"name": "ci", "scopes": "write"}, 400, "scopes"),
    ({"name": "ci", "scopes": ["admin"]}, 400, "scopes"),
    ({"name": "api-bob:read,write"}, 409, "name"),
])
def test_token_create_bad_input(w, payload, status, field):
    client = w.client(w.bob)
    before = ApiToken.objects.count()
    _error(client.post("/api/v1/tokens/", payload, format="json"), status, field=field)
    assert ApiToken.objects.count() == before


def test_token_revoke_action(w):
    client = w.client(w.bob)
    token, secret = services.apitoken_create(actor=Actor.for_user(w.bob), name="old")
    response = client.post(f"/api/v1/tokens/{token.pk}/revoke/")
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    assert response.json()["revoked_at"]
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 401
    _error(client.post(f"/api/v1/tokens/{token.pk}/revoke/"), 409, "conflict")
    _error(client.get(f"/api/v1/tokens/{token.pk}/revoke/"), 405, "method_not_allowed")
    alice_token, _ = services.apitoken_create(actor=Actor.for_user(w.alice), name="alice's")
    _error(client.post(f"/api/v1/tokens/{alice_token.pk}/revoke/"), 404, "not_found")
    _error(client.post("/api/v1/tokens/999999/revoke/"), 404, "not_found")
    alice_token.refresh_from_db()
    assert alice_token.revoked_at is None


def test_a_token_can_revoke_itself_and_stops_working(w):
    client = w.client(w.bob)
    me = ApiToken.objects.get(user=w.bob)
    assert client.post(f"/api/v1/tokens/{me.pk}/revoke/").status_code == 200
    _error(client.get("/api/v1/me/"), 401, "not_authenticated")


# ---------------------------------------------------------------- audit events

def _event(team_id, verb="thing.done", actor=None, target="thing", target_id=1):
    with transaction.atomic():
        return audit_event_record(actor=actor or Actor.system("tests"), verb=verb, target=target,
                                  target_id=target_id, target_repr="t", team_id=team_id)


def test_audit_events_need_audit_view(w):
    _error(w.client(w.bob).get("/api/v1/audit-events/"), 403, "permission_denied")


def test_audit_events_are_scoped_to_the_team_and_own_actions(w):
    a = _event(w.a.pk, "a.thing")
    b = _event(w.b.pk, "b.thing")
    seqs = {e["seq"] for e in _results(w.client(w.alice).get("/api/v1/audit-events/?page_size=500"))}
    assert a.seq in seqs and b.seq not in seqs
    own = AuditEvent.objects.filter(actor_name="alice").values_list("seq", flat=True)
    assert set(own) and set(own) <= seqs  # alice's own token creation (no team) is hers to see
    root_seqs = {e["seq"] for e in _results(w.client(w.root).get("/api/v1/audit-events/?page_size=500"))}
    assert {a.seq, b.seq} <= root_seqs


def test_audit_event_detail(w):
    a = _event(w.a.pk)
    b = _event(w.b.pk)
    body = w.client(w.alice).get(f"/api/v1/audit-events/{a.seq}/").json()
    assert body["seq"] == a.seq and body["hash"] == a.hash and body["prev_hash"] == a.prev_hash
    _error(w.client(w.alice).get(f"/api/v1/audit-events/{b.seq}/"), 404, "not_found")
    _error(w.client(w.alice).get("/api/v1/audit-events/99999999/"), 404, "not_found")
    _error(w.client(w.alice).get("/api/v1/audit-events/abc/"), 404, "not_found")


def test_audit_event_filters(w):
    client = w.client(w.root)
    alice = Actor.for_user(w.alice)
    e1 = _event(w.a.pk, "deployment.rolled_back", actor=alice, target="deployments.deployment", target_id=7)
    e2 = _event(w.b.pk, "deployment.created", target="deployments.deployment", target_id=8)
    e3 = _event(w.a.pk, "model.registered", target="registry.model", target_id=7)

    def seqs(query):
        return {e["seq"] for e in _results(client.get(f"/api/v1/audit-events/?page_size=500&{query}"))}

    assert seqs("actor=ALICE") >= {e1.seq} and e2.seq not in seqs("actor=alice")
    assert seqs("verb=deployment.") == {e1.seq, e2.seq}
    assert seqs("verb=deployment.created") == {e2.seq}
    assert seqs("target_type=deployments.deployment") == {e1.seq, e2.seq}
    assert seqs("target_type=deployments.deployment&target_id=7") == {e1.seq}
    assert seqs("target_id=7") == {e1.seq, e3.seq}
    assert seqs(f"team={w.b.pk}") == {e2.seq}
    assert seqs(f"actor_id={w.alice.pk}&team={w.a.pk}") == {e1.seq}
    assert seqs(f"request_id={e3.request_id}") == {e3.seq}

    since = e2.occurred_at.isoformat().replace("+00:00", "Z")
    assert {e1.seq, e2.seq, e3.seq} & seqs(f"since={since}") == {e2.seq, e3.seq}
    assert {e1.seq, e2.seq, e3.seq} & seqs(f"until={since}") == {e1.seq}
    future = (timezone.now() + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert seqs(f"since={future}") == set()


@pytest.mark.parametrize("query, field", [
    ("since=yesterday", "since"),
    ("until=2024-13-45T00:00:00Z", "until"),
    ("team=abc", "team"),
    ("actor_id=x", "actor_id"),
])
def test_audit_event_bad_filters_name_the_field(w, query, field):
    error = _error(w.client(w.root).get(f"/api/v1/audit-events/?{query}"), 400, "invalid", field=field)
    assert field in error["message"]


def test_audit_events_are_read_only(w):
    e = _event(w.a.pk)
    client = w.client(w.root)
    _error(client.post("/api/v1/audit-events/", {"verb": "x"}, format="json"), 405, "method_not_allowed")
    _error(client.delete(f"/api/v1/audit-events/{e.seq}/"), 405, "method_not_allowed")
    _error(client.patch(f"/api/v1/audit-events/{e.seq}/", {"verb": "x"}, format="json"), 405)


# ---------------------------------------------------------------- cursor pagination

def _walk(client, url) -> list[dict]:
    seen, pages = [], 0
    while url:
        response = client.get(url)
        body = response.json()
        assert response.status_code == 200 and set(body) == {"next", "previous", "results"}
        seen.extend(body["results"])
        url = body["next"]
        if url:
            parts = urlsplit(url)
            assert parts.path.startswith("/api/v1/") and "cursor=" in parts.query
            url = f"{parts.path}?{parts.query}"
        pages += 1
        assert pages < 50
    return seen


def test_cursor_pagination_walks_every_team_once(w):
    for i in range(9):
        Team.objects.create(name=f"Team {i}", slug=f"team-{i}")
    client = w.client(w.root)
    first = client.get("/api/v1/teams/?page_size=4").json()
    assert len(first["results"]) == 4 and first["next"] and first["previous"] is None
    rows = _walk(client, "/api/v1/teams/?page_size=4")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == Team.objects.count() == 11
    assert ids == sorted(ids, reverse=True)  # newest first
    second = client.get(first["next"]).json()
    assert second["previous"] and not {r["id"] for r in second["results"]} & {r["id"] for r in first["results"]}


def test_cursor_pagination_is_stable_under_inserts(w):
    for i in range(6):
        _event(w.a.pk, f"e.{i}")
    client = w.client(w.root)
    first = client.get("/api/v1/audit-events/?page_size=3").json()
    _event(w.a.pk, "e.new")  # a new event arrives while the caller pages
    rest = _walk(client, urlsplit(first["next"]).path + "?" + urlsplit(first["next"]).query)
    seqs = [e["seq"] for e in first["results"] + rest]
    assert len(seqs) == len(set(seqs)) and seqs == sorted(seqs, reverse=True)
    assert AuditEvent.objects.count() == len(seqs) + 1  # the new one is above the cursor, not repeated


def test_page_size_is_capped_and_garbage_cursor_is_404(w):
    for i in range(3):
        Team.objects.create(name=f"Team {i}", slug=f"team-{i}")
    client = w.client(w.root)
    assert len(client.get("/api/v1/teams/?page_size=100000").json()["results"]) == 5
    assert len(client.get("/api/v1/teams/?page_size=abc").json()["results"]) == 5
    _error(client.get("/api/v1/teams/?cursor=not-a-cursor"), 404, "not_found")


# ---------------------------------------------------------------- the one error shape

def test_error_shape_401(w):
    _error(APIClient().get("/api/v1/teams/"), 401, "not_authenticated")
    _error(APIClient().post("/api/v1/teams/", {"name": "x", "slug": "x"}, format="json"), 401, "not_authenticated")


def test_error_shape_404_for_an_unknown_url(w):
    _error(w.client(w.bob).get("/api/v1/no-such-thing/"), 404, "not_found")
    _error(APIClient().get("/api/v1/no-such-thing/"), 404, "not_found")


def test_error_shape_415(w):
    response = w.client(w.root).post("/api/v1/teams/", "name=x&slug=x", content_type="text/plain")
    _error(response, 415, "unsupported_media_type")


def test_error_shape_for_malformed_json(w):
    client = w.client(w.root)
    error = _error(client.post("/api/v1/teams/", '{"name": "x", "slug":', content_type="application/json"),
                   400, "parse_error", field="body")
    assert "JSON" in error["message"]
    _error(client.post("/api/v1/teams/", "[1, 2]", content_type="application/json"), 400, "invalid")
    _error(client.post("/api/v1/teams/", b"\xff\xfe\x00garbage", content_type="application/json"), 400)
    assert Team.objects.count() == 2


def test_a_huge_payload_is_a_clean_413(w):
    body = json.dumps({"name": "Big", "slug": "big", "description": "x" * (3 * 1024 * 1024)})
    assert len(body) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    client = w.client(w.root)
    before = Team.objects.count(), _events()
    error = _error(client.post("/api/v1/teams/", body, content_type="application/json"), 413,
                   "payload_too_large", field="body")
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in error["message"]
    _error(client.post("/api/v1/teams/", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="big-1"),
           413, "payload_too_large")
    assert (Team.objects.count(), _events()) == before
    # the key was not left "in flight": a proper request with it goes through
    ok = client.post("/api/v1/teams/", {"name": "Small", "slug": "small"}, format="json",
                     HTTP_IDEMPOTENCY_KEY="big-1")
    assert ok.status_code == 201


def test_a_big_but_allowed_payload_is_a_validation_error(w):
    body = json.dumps({"name": "Big", "slug": "big", "description": "x" * (1024 * 1024)})
    _error(w.client(w.root).post("/api/v1/teams/", body, content_type="application/json"), 400,
           field="description")


def test_a_huge_form_post_to_a_page_is_413_not_500(w, client):
    client.force_login(w.root)
    response = client.post("/teams/", {"name": "Big", "slug": "big", "description": "x" * (3 * 1024 * 1024)})
    assert response.status_code == 413
    assert Team.objects.count() == 2


def test_a_request_django_refuses_early_is_a_400_in_the_error_shape(w):
    error = _error(w.client(w.bob).get("/api/v1/me/", HTTP_HOST="evil.example"), 400, "bad_request")
    assert "evil" not in error["message"]
    page = w.client(w.bob).get("/teams/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and b"Bad request" in page.content


# ---------------------------------------------------------------- Idempotency-Key

def test_idempotent_replay_returns_the_first_answer_and_changes_once(w):
    client = w.client(w.root)
    payload = {"name": "Vision", "slug": "vision"}
    before = _events()
    first = client.post("/api/v1/teams/", payload, format="json", HTTP_IDEMPOTENCY_KEY="key-123")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    second = client.post("/api/v1/teams/", payload, format="json", HTTP_IDEMPOTENCY_KEY="key-123")
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Team.objects.filter(slug="vision").count() == 1
    assert _events() == before + 1


def test_an_idempotent_token_create_is_done_once_and_its_secret_is_not_kept(w):
    from django.core.cache import cache

    client = w.client(w.bob)
    first = client.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="tok-1")
    assert first.status_code == 201 and first["Cache-Control"] == "no-store"
    secret = first.json()["token"]
    second = client.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="tok-1")
    error = _error(second, 409, "idempotency_answer_not_kept")
    assert second["Idempotent-Replayed"] == "true" and secret not in second.content.decode()
    assert "secret" in error["message"]
    assert ApiToken.objects.filter(user=w.bob, name="ci").count() == 1
    # the secret is nowhere in Redis
    raw = cache._cache.get_client(None)
    # (string keys: the database also holds other tests' streams and hashes, which the cache never writes)
    assert not [k for k in raw.scan_iter("*") if raw.type(k) == b"string" and secret.encode() in (raw.get(k) or b"")]


def test_same_key_with_a_different_body_is_422(w):
    client = w.client(w.root)
    assert client.post("/api/v1/teams/", {"name": "Vision", "slug": "vision"}, format="json",
                       HTTP_IDEMPOTENCY_KEY="key-9").status_code == 201
    _error(client.post("/api/v1/teams/", {"name": "Other", "slug": "other"}, format="json",
                       HTTP_IDEMPOTENCY_KEY="key-9"), 422, "idempotency_key_reused", field="Idempotency-Key")
    _error(client.post("/api/v1/users/", {"name": "Vision", "slug": "vision"}, format="json",
                       HTTP_IDEMPOTENCY_KEY="key-9"), 422, "idempotency_key_reused")  # another path
    assert not Team.objects.filter(slug="other").exists()


def test_different_callers_with_the_same_key_do_not_collide(w):
    bob, carol = w.client(w.bob), w.client(w.carol)
    r1 = bob.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    r2 = carol.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    assert r1.status_code == r2.status_code == 201
    assert "Idempotent-Replayed" not in r2 and r1.json()["token"] != r2.json()["token"]
    assert ApiToken.objects.filter(name="ci").count() == 2


def test_session_callers_with_the_same_key_do_not_collide(w):
    sessions = []
    for user in (w.bob, w.carol):
        c = APIClient()
        c.force_login(user)
        sessions.append(c)
    for c in sessions:
        response = c.post("/api/v1/tokens/", {"name": "ci"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
        assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert ApiToken.objects.filter(name="ci").count() == 2


def test_idempotency_key_must_be_sane(w):
    client = w.client(w.root)
    _error(client.post("/api/v1/teams/", {"name": "V", "slug": "v"}, format="json",
                       HTTP_IDEMPOTENCY_KEY="k" * 256), 400, "invalid", field="Idempotency-Key")
    _error(client.post("/api/v1/teams/", {"name": "V", "slug": "v"}, format="json", HTTP_IDEMPOTENCY_KEY=""),
           400, "invalid", field="Idempotency-Key")
    assert not Team.objects.filter(slug="v").exists()


def test_an_error_answer_is_replayed_too_and_changes_nothing(w):
    client = w.client(w.root)
    payload = {"name": "fraud", "slug": "dupe"}
    first = client.post("/api/v1/teams/", payload, format="json", HTTP_IDEMPOTENCY_KEY="dup")
    second = client.post("/api/v1/teams/", payload, format="json", HTTP_IDEMPOTENCY_KEY="dup")
    assert first.status_code == second.status_code == 409
    assert second["Idempotent-Replayed"] == "true" and second.json() == first.json()


# ---------------------------------------------------------------- OpenAPI schema and docs

def _api_v1_routes() -> dict[str, set[str]]:
    """Every /api/v1/ route of the URLconf as an OpenAPI path, with its HTTP methods."""
    routes: dict[str, set[str]] = {}

    def walk(patterns, prefix):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
                continue
            route = prefix + str(p.pattern)
            if not route.startswith("api/v1/") or "format" in p.pattern.regex.groupindex:
                continue  # format-suffix twins (.json) document nothing new
            if p.name == "api-root":
                continue  # the browsable index of the router, not a resource
            path = "/" + route.replace("^", "").replace("$", "")
            path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{%s}" % ("id" if m[1] == "pk" else m[1]), path)
            actions = getattr(p.callback, "actions", None)
            if actions:
                methods = set(actions) - {"head"}
            else:
                view = p.callback.view_class
                methods = {m for m in view.http_method_names if hasattr(view, m) and m not in ("options", "head")}
            routes[path] = methods

    walk(get_resolver().url_patterns, "")
    return routes


def test_schema_renders(w):
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.") and schema["info"]["title"] == "Modelplane API"
    assert "bearerAuth" in schema["components"]["securitySchemes"]
    as_json = APIClient().get("/api/schema/?format=json")
    assert as_json.status_code == 200 and json.loads(as_json.content)["paths"] == schema["paths"]


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "/api/v1/teams/" in yaml.safe_load(target.read_text())["paths"]


def test_every_api_route_is_in_the_schema_with_its_methods(w):
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    documented = {path: {m for m in ops if m in {"get", "post", "put", "patch", "delete"}}
                  for path, ops in schema["paths"].items()}
    routes = _api_v1_routes()
    assert len(routes) >= 12
    assert routes == documented


def test_api_docs_render_from_local_files_only(w):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html and "/api/schema/" in html
    srcs = re.findall(r"""<(?:script|link)[^>]+(?:src|href)=["']([^"']+)["']""", html)
    assert any(s.endswith("swagger-ui-bundle.js") for s in srcs)
    external = [s for s in srcs if re.match(r"^(https?:)?//", s)]
    assert external == []
    assert not re.search(r"https?://(?!testserver)[\w.-]+/[^\"' ]*\.(js|css)", html)
    for src in srcs:  # and each is really served
        assert APIClient().get(src).status_code == 200, src
