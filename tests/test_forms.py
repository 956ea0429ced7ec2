"""The HTML forms: bad input is a 400 with a visible error on the field it concerns; good input changes and audits."""
from __future__ import annotations

import html
import re

import pytest
from django.conf import settings

from apps.accounts.models import ApiToken, Membership, Team
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def _field_errors(response, field: str) -> list[str]:
    content = response.content.decode()
    return [html.unescape(m) for m in re.findall(
        rf'<p class="field-error" data-field-error="{re.escape(field)}">([^<]+)</p>', content)]


def _assert_field_error(response, field: str, *words: str) -> None:
    assert response.status_code == 400, response.status_code
    errors = _field_errors(response, field)
    assert errors, f"no visible error for {field!r} in the page"
    for word in words:
        assert any(word.lower() in e.lower() for e in errors), (word, errors)


def _events() -> int:
    return AuditEvent.objects.count()


@pytest.fixture
def team_a(teams):
    return teams[0]


@pytest.fixture
def alice(make_user, team_a):
    return make_user("alice", team=team_a, roles=("team_admin",))


@pytest.fixture
def root(make_user):
    return make_user("root", platform_admin=True)


# ---------------------------------------------------------------- API token form

TOKEN_URL = "/accounts/tokens/"
GOOD_TOKEN = {"name": "CI", "scopes": ["read"], "expires_in_days": "30"}


@pytest.mark.parametrize("changes, field, words", [
    ({"name": ""}, "name", ["required"]),
    ({"name": "n" * 101}, "name", ["100 characters"]),
    ({"expires_in_days": "ten"}, "expires_in_days", ["whole number"]),
    ({"expires_in_days": "0"}, "expires_in_days", ["greater than or equal to 1"]),
    ({"expires_in_days": str(settings.API_TOKEN_MAX_DAYS + 1)}, "expires_in_days",
     [f"less than or equal to {settings.API_TOKEN_MAX_DAYS}"]),
    ({"expires_in_days": ""}, "expires_in_days", ["required"]),
    ({"scopes": []}, "scopes", ["required"]),
    ({"scopes": ["admin"]}, "scopes", ["not one of the available choices"]),
])
def test_token_form_bad_input(client, alice, changes, field, words):
    client.force_login(alice)
    before = _events()
    response = client.post(TOKEN_URL, {**GOOD_TOKEN, **changes})
    _assert_field_error(response, field, *words)
    assert not ApiToken.objects.exists() and _events() == before
    assert b"data-new-token" not in response.content


def test_token_form_keeps_what_the_user_typed(client, alice):
    client.force_login(alice)
    response = client.post(TOKEN_URL, {**GOOD_TOKEN, "name": "my pipeline", "expires_in_days": "ten"})
    assert response.status_code == 400
    assert b'value="my pipeline"' in response.content


def test_token_form_duplicate_name_is_shown_on_the_name_field(client, alice):
    client.force_login(alice)
    assert client.post(TOKEN_URL, GOOD_TOKEN).status_code == 200
    response = client.post(TOKEN_URL, GOOD_TOKEN)
    _assert_field_error(response, "name", "already exists")
    assert ApiToken.objects.count() == 1


def test_token_form_success_shows_the_secret_once_and_audits(client, alice):
    client.force_login(alice)
    before = _events()
    response = client.post(TOKEN_URL, {**GOOD_TOKEN, "scopes": ["read", "write"]})
    assert response.status_code == 200
    token = ApiToken.objects.get()
    assert token.user == alice and token.scopes == ["read", "write"]
    secret = re.search(r'id="new-token-value">(mp_[^<]+)</code>', response.content.decode()).group(1)
    assert secret.split("_")[1] == token.prefix and token.matches(secret)
    assert "no-store" in response["Cache-Control"]
    assert _events() == before + 1
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "token.created" and event.actor_name == "alice" and event.target_id == str(token.pk)
    again = client.get(TOKEN_URL)
    assert secret not in again.content.decode() and token.prefix in again.content.decode()


def test_token_revoke_from_the_page(client, alice):
    client.force_login(alice)
    client.post(TOKEN_URL, GOOD_TOKEN)
    token = ApiToken.objects.get()
    response = client.post(f"/accounts/tokens/{token.pk}/revoke/", follow=True)
    assert response.status_code == 200 and b"revoked" in response.content
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.order_by("-seq").first().verb == "token.revoked"
    again = client.post(f"/accounts/tokens/{token.pk}/revoke/", follow=True)
    assert b"already revoked" in again.content  # a refusal the user can read, not a silent no-op


# ---------------------------------------------------------------- team form (platform admins)

GOOD_TEAM = {"name": "Vision", "slug": "vision", "description": "Image models."}


@pytest.mark.parametrize("changes, field, words", [
    ({"name": ""}, "name", ["required"]),
    ({"name": "n" * 101}, "name", ["100 characters"]),
    ({"slug": ""}, "slug", ["required"]),
    ({"slug": "Not a slug!"}, "slug", ["slug"]),
    ({"slug": "under_score"}, "slug", ["lower-case"]),  # the form's SlugField allows it; the service does not
    ({"slug": "s" * 51}, "slug", ["50 characters"]),
    ({"description": "d" * 2001}, "description", ["2000 characters"]),
    ({"name": "FRAUD"}, "name", ["already exists"]),
    ({"slug": "recs"}, "slug", ["already exists"]),
])
def test_team_form_bad_input(client, root, teams, changes, field, words):
    client.force_login(root)
    before = _events()
    response = client.post("/teams/", {**GOOD_TEAM, **changes})
    _assert_field_error(response, field, *words)
    assert Team.objects.count() == 2 and _events() == before


def test_team_form_success_redirects_to_the_team_and_audits(client, root):
    client.force_login(root)
    response = client.post("/teams/", GOOD_TEAM)
    team = Team.objects.get(slug="vision")
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.pk}/"
    assert team.description == "Image models."
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "team.created" and event.actor_name == "root" and event.team_id == team.pk
    page = client.get(response["Location"])
    assert page.status_code == 200 and b"Vision" in page.content and b"created" in page.content


def test_team_form_is_not_offered_to_members(client, alice):
    client.force_login(alice)
    page = client.get("/teams/")
    assert page.status_code == 200 and b'name="slug"' not in page.content
    assert client.post("/teams/", GOOD_TEAM).status_code == 403
    assert not Team.objects.filter(slug="vision").exists()


# ---------------------------------------------------------------- membership form (team admins)

@pytest.mark.parametrize("data, field, words", [
    ({"username": "", "role": "viewer"}, "username", ["required"]),
    ({"username": "nobody", "role": "viewer"}, "username", ["no active user"]),
    ({"username": "bob", "role": "overlord"}, "role", ["valid choice"]),
    ({"username": "bob"}, "role", ["required"]),
    ({"username": "u" * 151, "role": "viewer"}, "username", ["150 characters"]),
    ({"username": "alice", "role": "team_admin"}, "role", ["already held"]),
])
def test_membership_form_bad_input(client, alice, make_user, team_a, data, field, words):
    make_user("bob")
    client.force_login(alice)
    before = Membership.objects.count(), _events()
    response = client.post(f"/teams/{team_a.pk}/", data)
    _assert_field_error(response, field, *words)
    assert (Membership.objects.count(), _events()) == before


def test_membership_form_for_an_inactive_user(client, alice, make_user, team_a):
    gone = make_user("gone")
    gone.is_active = False
    gone.save()
    client.force_login(alice)
    _assert_field_error(client.post(f"/teams/{team_a.pk}/", {"username": "gone", "role": "viewer"}), "username")
    assert not gone.memberships.exists()


def test_membership_form_success_adds_and_audits(client, alice, make_user, team_a):
    bob = make_user("bob")
    client.force_login(alice)
    response = client.post(f"/teams/{team_a.pk}/", {"username": "bob", "role": "ml_engineer"})
    assert response.status_code == 302 and response["Location"] == f"/teams/{team_a.pk}/"
    assert Membership.objects.filter(team=team_a, user=bob, role="ml_engineer").exists()
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "membership.added" and event.team_id == team_a.pk and event.after["user"] == "bob"
    page = client.get(response["Location"])
    assert b"bob" in page.content and b"ML engineer" in page.content


def test_membership_remove_from_the_page_and_the_last_admin_rule(client, alice, make_user, team_a):
    bob = make_user("bob", team=team_a, roles=("viewer",))
    client.force_login(alice)
    response = client.post(f"/memberships/{bob.memberships.get().pk}/remove/")
    assert response.status_code == 302 and not bob.memberships.exists()
    assert AuditEvent.objects.order_by("-seq").first().verb == "membership.removed"

    last = alice.memberships.get()
    response = client.post(f"/memberships/{last.pk}/remove/", follow=True)
    assert response.status_code == 200 and b"at least one team admin" in response.content
    assert Membership.objects.filter(pk=last.pk).exists()


def test_an_empty_post_is_a_400_naming_the_field_not_a_silent_200(make_user):
    from django.test import Client

    client = Client()
    client.force_login(make_user("empty-poster"))
    response = client.post("/accounts/tokens/", {})
    assert response.status_code == 400
    assert b'data-field-error="name"' in response.content
