"""API tokens and the audit trail, through the pages a person uses, checked against the real API."""
from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def api_me(server, secret: str) -> tuple[int, dict]:
    request = urllib.request.Request(server.url("/api/v1/me/"), headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def create_token(page, name: str, *, write: bool = False) -> str:
    page.goto("/accounts/tokens/")
    page.get_by_label("Name").fill(name)
    if write:
        page.get_by_label("write").check()
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token-value").inner_text().strip()
    return secret


def test_token_is_shown_once_works_and_stops_working_when_revoked(signed_in, server, shot):
    page = signed_in("scientist")
    name = f"ci-{secrets.token_hex(3)}"
    secret = create_token(page, name, write=True)

    assert re.fullmatch(r"mp_[A-Za-z0-9]+_[A-Za-z0-9_-]+", secret), secret
    expect(page.locator("[data-new-token]")).to_contain_text("will not be shown again")
    row = page.locator("[data-token-table] tbody tr", has_text=name)
    expect(row).to_have_count(1)
    expect(row.locator(".status")).to_have_text("active")
    expect(row).to_contain_text("read, write")
    prefix = row.get_attribute("data-token")
    assert secret.startswith(f"mp_{prefix}_")
    assert secret not in row.inner_text(), "the table shows the prefix, never the secret"
    shot(page, "tokens-after-create")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("[data-new-token]").get_by_role("button", name="Copy").click()
    expect(page.locator("[data-new-token] button")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    status, me = api_me(server, secret)
    assert status == 200, me
    assert me["username"] == "scientist" and me["auth"] == "token" and me["token_scopes"] == ["read", "write"]

    # Coming back to the page, the secret is gone for good; the token is still listed.
    page.goto("/accounts/tokens/")
    expect(page.locator("[data-new-token]")).to_have_count(0)
    assert secret not in page.content()
    row = page.locator("[data-token-table] tbody tr", has_text=name)
    expect(row.locator(".status")).to_have_text("active")
    expect(row.locator("td").nth(5)).not_to_have_text("never")  # the API call above used it

    # Revoking asks first; cancelling keeps the token.
    dialogs: list[str] = []

    def answer(dialog, accept: bool):
        dialogs.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda d: answer(d, False))
    row.get_by_role("button", name="Revoke").click()
    assert dialogs and name in dialogs[0]
    expect(row.locator(".status")).to_have_text("active")
    assert api_me(server, secret)[0] == 200

    page.once("dialog", lambda d: answer(d, True))
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator(".message.success")).to_have_text(f"Token {name} revoked.")
    row = page.locator("[data-token-table] tbody tr", has_text=name)
    expect(row.locator(".status")).to_have_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    shot(page, "tokens-after-revoke")

    status, body = api_me(server, secret)
    assert status == 401
    assert "revoked" in json.dumps(body)


def test_token_form_errors_are_shown_next_to_the_field(signed_in, shot):
    page = signed_in("scientist")
    page.goto("/accounts/tokens/")
    page.get_by_label("Expires in (days)").fill("100000")
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("[data-field-error=name]")).to_be_visible()
    expect(page.locator("[data-field-error=expires_in_days]")).to_be_visible()
    expect(page.locator("[data-new-token]")).to_have_count(0)
    shot(page, "tokens-form-errors")


def test_audit_trail_shows_the_token_event_and_filters_by_verb(signed_in, shot):
    page = signed_in("teamadmin")
    name = f"audit-{secrets.token_hex(3)}"
    create_token(page, name)

    page.goto("/audit/")
    created = page.locator("[data-audit-table] tbody tr[data-verb='token.created']", has_text=name)
    expect(created).to_have_count(1)
    expect(created).to_contain_text("teamadmin")
    shot(page, "audit-list")

    page.get_by_label("Verb").fill("token.created")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"verb=token\.created"))
    verbs = page.locator("[data-audit-table] tbody tr").evaluate_all("rs => rs.map(r => r.dataset.verb)")
    assert verbs and set(verbs) == {"token.created"}
    expect(page.get_by_label("Verb")).to_have_value("token.created")

    page.get_by_label("Verb").fill("user.")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"verb=user\."))
    verbs = page.locator("[data-audit-table] tbody tr").evaluate_all("rs => rs.map(r => r.dataset.verb)")
    assert "user.logged_in" in verbs and all(v.startswith("user.") for v in verbs)

    page.get_by_label("Verb").fill("no.such.verb")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("[data-audit-table] tbody")).to_have_text("No events match.")

    page.get_by_role("link", name="Clear").click()
    created = page.locator("[data-audit-table] tbody tr[data-verb='token.created']", has_text=name)
    created.locator("a").first.click()
    page.wait_for_url(re.compile(r"/audit/\d+/$"))
    expect(page.locator("h1")).to_contain_text("token.created")
    expect(page.locator("[data-after] pre")).to_contain_text(name)
    expect(page.locator("[data-before]")).to_contain_text("Nothing recorded.")
    shot(page, "audit-detail")

    # From the event, its request id lists every event of that request: here just this one.
    page.locator(".facts a[href*='request_id=']").click()
    expect(page.locator("[data-audit-table] tbody tr")).to_have_count(1)
    expect(page.locator("[data-audit-table] tbody tr")).to_have_attribute("data-verb", "token.created")


@pytest.mark.parametrize("username", ["risk", "approver", "admin"])
def test_every_role_that_reads_audit_sees_its_token_event(signed_in, username):
    page = signed_in(username)
    name = f"audit-{username}-{secrets.token_hex(3)}"
    create_token(page, name)
    page.goto("/audit/?verb=token.created")
    created = page.locator("[data-audit-table] tbody tr[data-verb='token.created']", has_text=name)
    expect(created).to_have_count(1)
    expect(created).to_contain_text(username)


def test_team_admin_reads_only_their_teams_events(signed_in):
    page = signed_in("recs-admin")
    page.goto("/audit/?verb=membership.added")
    rows = page.locator("[data-audit-table] tbody tr[data-verb='membership.added']")
    expect(rows.first).to_be_visible()
    # seed_demo adds the Recommendations members; none of Fraud Detection's may show.
    text = page.locator("[data-audit-table] tbody").inner_text()
    assert "in Recommendations" in text and "Rae Scientist" in text
    assert "Fraud Detection" not in text
