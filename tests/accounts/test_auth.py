"""Signing in and out, login throttling, session timeouts, and bearer tokens on the API."""
from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts import services
from apps.accounts.authentication import LAST_USED_RESOLUTION
from apps.accounts.models import ApiToken
from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.middleware import SessionTimeoutMiddleware

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-7"
LOGIN = "/accounts/login/"


@pytest.fixture
def alice(make_user, teams):
    return make_user("alice", team=teams[0], roles=("viewer",), password=PASSWORD)


def _login(client: Client, username="alice", password=PASSWORD, meta=None, **fields):
    return client.post(LOGIN, {"username": username, "password": password, **fields}, **(meta or {}))


def _session(client: Client) -> Session:
    return Session.objects.get(session_key=client.cookies[settings.SESSION_COOKIE_NAME].value)


# ---------------------------------------------------------------- the login page

def test_login_page_renders_for_anonymous(client):
    response = client.get(LOGIN)
    assert response.status_code == 200
    assert b'name="username"' in response.content and b'name="password"' in response.content


def test_login_success_redirects_home_and_signs_in(client, alice):
    response = _login(client)
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200 and b"Welcome" in home.content
    assert int(client.session["_auth_user_id"]) == alice.pk


def test_login_follows_a_local_next_but_not_an_external_one(client, alice):
    assert _login(client, next="/teams/")["Location"] == "/teams/"
    client.post("/accounts/logout/")
    assert _login(client, next="https://evil.example/steal")["Location"] == "/"


def test_login_failure_shows_the_form_again_with_an_error(client, alice):
    response = _login(client, password="wrong-password")
    assert response.status_code == 200
    assert b"enter a correct username and password" in response.content.lower()
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


def test_login_of_an_inactive_user_fails(client, alice):
    alice.is_active = False
    alice.save()
    response = _login(client)
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_signed_in_user_visiting_login_goes_home(client, alice):
    client.force_login(alice)
    response = client.get(LOGIN)
    assert response.status_code == 302 and response["Location"] == "/"


def test_sign_in_is_recorded_in_the_audit_trail(client, alice):
    response = _login(client, meta={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 302
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "user.logged_in"
    assert event.actor_id == alice.pk and event.actor_name == "alice" and event.actor_kind == "user"
    assert event.target_type == "accounts.user" and event.target_id == str(alice.pk)
    assert event.request_id == response["X-Request-ID"]
    assert event.source_ip == "203.0.113.9"


def test_a_failed_sign_in_records_no_sign_in_event(client, alice):
    _login(client, password="nope-nope-nope")
    assert not AuditEvent.objects.filter(verb="user.logged_in").exists()


# ---------------------------------------------------------------- login throttling (django-axes)

def test_login_is_locked_after_the_failure_limit(client, alice):
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == int(os.environ.get("MODELPLANE_LOGIN_FAILURE_LIMIT") or 5)
    for _ in range(limit - 1):
        response = _login(client, password="wrong-password")
        assert response.status_code == 200  # the form again, not yet locked
    response = _login(client, password="wrong-password")
    assert response.status_code == 429
    response = _login(client)  # now even the correct password is refused
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    assert "_auth_user_id" not in client.session
    assert not AuditEvent.objects.filter(verb="user.logged_in").exists()


def test_the_lock_is_per_username_and_address(client, alice, make_user):
    make_user("bob", password=PASSWORD)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 429
    assert _login(Client(), username="bob").status_code == 302  # another user from the same address
    assert _login(Client(REMOTE_ADDR="198.51.100.4")).status_code == 302  # alice from another address


def test_the_failure_limit_is_read_from_settings_at_request_time(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 2  # axes reads settings.AXES_FAILURE_LIMIT on each attempt
    assert _login(client, password="wrong-password").status_code == 200
    assert _login(client, password="wrong-password").status_code == 429
    assert _login(client).status_code == 429


def test_a_success_before_the_limit_resets_the_count(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 302
    client.post("/accounts/logout/")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, password="wrong-password")
    assert _login(client).status_code == 302


# ---------------------------------------------------------------- logout

def test_logout_needs_post(client, alice):
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/").status_code == 200  # still signed in


def test_logout_via_post_ends_the_session_and_is_recorded(client, alice):
    _login(client)
    old_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == LOGIN
    assert not Session.objects.filter(session_key=old_key).exists()
    after = client.get("/")
    assert after.status_code == 302 and after["Location"].startswith(LOGIN)
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "user.logged_out" and event.actor_name == "alice"


def test_logout_when_not_signed_in_records_nothing(client):
    before = AuditEvent.objects.count()
    assert client.post("/accounts/logout/").status_code == 302
    assert AuditEvent.objects.count() == before


# ---------------------------------------------------------------- session timeouts

def test_the_idle_timeout_is_the_session_cookie_age_renewed_on_every_request(client, alice):
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_IDLE_SECONDS
    assert settings.SESSION_SAVE_EVERY_REQUEST is True
    response = _login(client)
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert int(cookie["max-age"]) == settings.SESSION_IDLE_SECONDS
    assert cookie["httponly"]

    session = _session(client)
    session.expire_date = timezone.now() + timedelta(seconds=60)  # nearly idle for the whole window
    session.save()
    assert client.get("/").status_code == 200
    renewed = _session(client).expire_date
    assert renewed > timezone.now() + timedelta(seconds=settings.SESSION_IDLE_SECONDS - 60)


def test_an_idle_session_is_signed_out(client, alice):
    _login(client)
    session = _session(client)
    session.expire_date = timezone.now() - timedelta(seconds=1)
    session.save()
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)


def test_the_absolute_timeout_counts_from_sign_in(client, alice):
    before = time.time()
    _login(client)
    login_at = client.session[SessionTimeoutMiddleware.KEY]
    assert before - 1 <= login_at <= time.time() + 1


def test_the_absolute_timeout_signs_out_even_an_active_session(client, alice):
    _login(client)
    assert client.get("/").status_code == 200
    session = client.session
    session[SessionTimeoutMiddleware.KEY] = time.time() - settings.SESSION_ABSOLUTE_SECONDS - 5
    session.save()
    response = client.get("/", follow=True)
    assert response.redirect_chain[-1][0].startswith(LOGIN)
    assert b"Your session has expired" in response.content  # the user is told why
    assert "_auth_user_id" not in client.session
    assert client.get("/teams/").status_code == 302  # stays signed out


def test_a_session_within_the_absolute_timeout_stays(client, alice):
    _login(client)
    session = client.session
    session[SessionTimeoutMiddleware.KEY] = time.time() - settings.SESSION_ABSOLUTE_SECONDS + 60
    session.save()
    assert client.get("/").status_code == 200


# ---------------------------------------------------------------- bearer tokens on the API

def _token(user, **kwargs) -> tuple[ApiToken, str]:
    return services.apitoken_create(actor=Actor.for_user(user), name=kwargs.pop("name", "t"), **kwargs)


def _get(secret_or_header: str, path="/api/v1/me/", raw=False):
    header = secret_or_header if raw else f"Bearer {secret_or_header}"
    return APIClient().get(path, HTTP_AUTHORIZATION=header)


def _assert_401(response, *, words: str | None = None):
    assert response.status_code == 401, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "not_authenticated"
    assert body["error"]["message"]
    assert response["WWW-Authenticate"] == "Bearer"
    if words:
        assert words in body["error"]["message"]


def test_a_valid_token_authenticates(alice, teams):
    _, secret = _token(alice, scopes=["read"])
    response = _get(secret)
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice" and body["auth"] == "token" and body["token_scopes"] == ["read"]
    assert body["teams"] == [{"team": teams[0].pk, "team_name": "Fraud", "team_slug": "fraud",
                              "roles": ["viewer"]}]


def test_the_bearer_scheme_is_case_insensitive(alice):
    _, secret = _token(alice)
    assert _get(f"bearer {secret}", raw=True).status_code == 200


def test_no_credentials_is_401(alice):
    _assert_401(APIClient().get("/api/v1/me/"))


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer  ", "Bearer one two", "Bearer not-a-token", "Bearer mp_short", "Bearer xx_abcdef12_secret",
    " ", "Basic YWxpY2U6cHc=",
])
def test_malformed_authorization_headers_are_401_not_500(alice, header):
    _assert_401(_get(header, raw=True))


def test_a_wrong_secret_is_refused(alice):
    token, secret = _token(alice)
    _assert_401(_get(f"mp_{token.prefix}_{'A' * 43}"), words="Invalid API token")
    _assert_401(_get(secret[:-1] + ("A" if secret[-1] != "A" else "B")), words="Invalid API token")
    _assert_401(_get("mp_00000000_" + secret.split("_", 2)[2]), words="Invalid API token")


def test_a_revoked_token_is_refused(alice):
    token, secret = _token(alice)
    services.apitoken_revoke(actor=Actor.for_user(alice), token_id=token.pk)
    _assert_401(_get(secret), words="revoked")


def test_an_expired_token_is_refused(alice):
    token, secret = _token(alice)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _assert_401(_get(secret), words="expired")


def test_the_token_of_an_inactive_user_is_refused(alice):
    _, secret = _token(alice)
    alice.is_active = False
    alice.save()
    _assert_401(_get(secret), words="inactive")


def test_a_read_scope_token_may_read_but_not_write(alice):
    _, secret = _token(alice, scopes=["read"])
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.get("/api/v1/tokens/").status_code == 200
    before = ApiToken.objects.count()
    response = client.post("/api/v1/tokens/", {"name": "escalate", "scopes": ["write"]}, format="json")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "permission_denied" and "write scope" in error["message"]
    assert ApiToken.objects.count() == before
    token_id = ApiToken.objects.get().pk
    assert client.post(f"/api/v1/tokens/{token_id}/revoke/").status_code == 403
    assert ApiToken.objects.get().revoked_at is None


def test_a_write_scope_token_may_write(alice):
    _, secret = _token(alice, scopes=["read", "write"])
    response = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}").post(
        "/api/v1/tokens/", {"name": "child"}, format="json")
    assert response.status_code == 201
    event = AuditEvent.objects.order_by("-seq").first()
    assert event.verb == "token.created" and event.actor_kind == "token"
    assert event.token_id == ApiToken.objects.get(name="t").pk


def test_last_used_is_recorded_at_most_once_a_minute(alice):
    token, secret = _token(alice)
    assert token.last_used_at is None
    APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {secret}", REMOTE_ADDR="192.0.2.10")
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and abs(timezone.now() - first) < timedelta(seconds=30)
    assert token.last_used_ip == "192.0.2.10"
    _get(secret)
    token.refresh_from_db()
    assert token.last_used_at == first  # within the resolution: no write
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - LAST_USED_RESOLUTION - timedelta(seconds=1))
    _get(secret)
    token.refresh_from_db()
    assert token.last_used_at > first


def test_session_auth_on_the_api_enforces_csrf_on_writes(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/v1/me/").json()["auth"] == "user"
    response = client.post("/api/v1/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert not ApiToken.objects.exists()
