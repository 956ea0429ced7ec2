"""The dashboard shell in a real browser: sign-in, the navigation per role, the user menu, the team switcher,
error pages, the home counts and the small-screen layout."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVERY_AREA = ["home", "models", "deployments", "approvals", "monitoring", "costs", "audit", "admin"]
# Every team member reads models, deployments, approvals, monitoring, costs and their teams; only approvers,
# risk officers, team admins and platform admins read the audit trail.
# Admin (teams and roles) is shown to those who manage members: team admins and platform admins.
MEMBER_AREAS = [area for area in EVERY_AREA if area not in ("audit", "admin")]
AUDIT_READER_AREAS = [area for area in EVERY_AREA if area != "admin"]

NAV_BY_USER = {
    "admin": EVERY_AREA,
    "viewer": MEMBER_AREAS,
    "scientist": MEMBER_AREAS,
    "engineer": MEMBER_AREAS,
    "approver": AUDIT_READER_AREAS,
    "risk": AUDIT_READER_AREAS,
    "teamadmin": EVERY_AREA,
    "recs-scientist": MEMBER_AREAS,
    "recs-engineer": MEMBER_AREAS,
    "recs-admin": EVERY_AREA,
}


def nav_keys(page) -> list[str]:
    return page.locator("#mainnav [data-nav]").evaluate_all("els => els.map(e => e.dataset.nav)")


@pytest.mark.parametrize("username", list(NAV_BY_USER))
def test_each_demo_role_signs_in_and_sees_its_areas(signed_in, username):
    page = signed_in(username)
    page.goto("/")
    expect(page).to_have_title(re.compile(r"^Home"))
    assert nav_keys(page) == NAV_BY_USER[username]
    expect(page.locator("[data-nav=home]")).to_have_attribute("aria-current", "page")
    expect(page.locator("[data-user-menu]")).to_contain_text(username)
    # Every area the navigation offers opens for this role (no 403 or 404 behind a link).
    for key in NAV_BY_USER[username][1:]:
        href = page.locator(f"[data-nav={key}]").get_attribute("href")
        response = page.request.get(href)
        assert response.status == 200, f"{username}: {key} ({href}) answered {response.status}"


def test_user_menu_opens_and_signs_out(page, login, shot):
    login(page, "scientist")
    menu = page.locator(".user-menu .menu")
    expect(menu).to_be_hidden()
    page.locator("[data-user-menu]").click()
    expect(menu).to_be_visible()
    expect(menu.get_by_role("link", name="API tokens")).to_be_visible()
    shot(page, "user-menu", full_page=False)
    # It closes like a menu: on Escape and on a click elsewhere.
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    page.locator("[data-user-menu]").click()
    expect(menu).to_be_visible()
    page.locator("main h1").click()
    expect(menu).to_be_hidden()
    page.locator("[data-user-menu]").click()
    page.locator("[data-logout]").click()
    page.wait_for_url(re.compile(r"/accounts/login/"))
    expect(page.locator(".topbar")).to_have_count(0)
    # The session is gone: a page that needs it sends the browser back to sign in.
    page.goto("/accounts/tokens/")
    assert "/accounts/login/" in page.url and "next=" in page.url


def test_wrong_password_shows_an_error_on_the_login_page(page, shot):
    login_url = "/accounts/login/"
    page.goto(login_url)
    page.get_by_label("Username").fill("viewer")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".form-errors")).to_contain_text("correct username and password")
    assert page.url.endswith(login_url)
    expect(page.locator(".topbar")).to_have_count(0)
    expect(page.get_by_label("Username")).to_have_value("viewer")
    shot(page, "login-error")


def test_sign_in_returns_to_the_page_asked_for(page, login):
    page.goto("/audit/?verb=user.")
    assert "/accounts/login/" in page.url
    login(page, "risk")
    assert page.url.endswith("/audit/?verb=user.")
    expect(page.locator("h1")).to_have_text("Audit trail")


def test_home_counts_are_shown_and_kept_live(new_context, signed_in, shot):
    page = signed_in("engineer")
    page.clock.install()
    page.goto("/")
    counts = page.locator("[data-live-counts]")
    expect(counts.locator("[data-count]")).to_have_count(4)
    shown = {el.get_attribute("data-count"): el.inner_text()
             for el in counts.locator("[data-count]").all()}
    assert shown["teams"] == "1"
    assert shown["members"] == "7"  # the six Fraud Detection users of seed_demo, and the bridge user
    assert shown["audit_events_24h"] == "–"  # an ML engineer does not read the audit trail
    shot(page, "home")

    response = page.request.get("/home/counts/")
    assert response.status == 200 and response.headers["content-type"].startswith("application/json")
    data = response.json()
    assert data["teams"] == 1 and data["members"] == 7 and data["audit_events_24h"] is None
    before = data["active_tokens"]

    # A token made in another tab shows up on the home page at its next refresh, without a reload.
    other = page.context.new_page()
    other.goto("/accounts/tokens/")
    other.get_by_label("Name").fill("live-count")
    other.get_by_role("button", name="Create token").click()
    expect(other.locator("[data-new-token]")).to_be_visible()
    expect(counts.locator("[data-count=active_tokens]")).to_have_text(str(before))
    page.clock.run_for(16_000)
    expect(counts.locator("[data-count=active_tokens]")).to_have_text(str(before + 1))

    # Signed out, the endpoint answers with the way to sign in, not with counts.
    anonymous = new_context().request.get("/home/counts/", max_redirects=0)
    assert anonymous.status == 302 and "/accounts/login/" in anonymous.headers["location"]


def test_team_switcher_changes_the_current_team(signed_in, shot):
    page = signed_in("bridge")
    page.goto("/accounts/tokens/")
    switcher = page.locator("#team-switch")
    expect(switcher.locator("option")).to_have_text(["Fraud Detection", "Recommendations"])
    assert switcher.evaluate("s => s.selectedOptions[0].text") == "Fraud Detection"
    switcher.select_option(label="Recommendations")  # the change submits the form (data-autosubmit)
    expect(page.locator(".message.success")).to_have_text("Now working in Recommendations.")
    assert page.url.endswith("/accounts/tokens/"), "the switch keeps the user on the page they were on"
    assert switcher.evaluate("s => s.selectedOptions[0].text") == "Recommendations"
    page.goto("/")
    expect(page.locator("[data-current-team]")).to_have_text("Recommendations")
    shot(page, "team-switched", full_page=False)
    switcher.select_option(label="Fraud Detection")
    expect(page.locator("[data-current-team]")).to_have_text("Fraud Detection")


def test_a_member_of_one_team_sees_the_team_without_a_switcher(signed_in):
    page = signed_in("recs-admin")
    page.goto("/")
    expect(page.locator("#team-switch")).to_have_count(0)  # nothing to choose between
    expect(page.locator(".topbar [data-team-name]")).to_have_text("Recommendations")
    expect(page.locator("[data-current-team]")).to_have_text("Recommendations")


def test_platform_admin_switches_between_all_teams(signed_in):
    page = signed_in("admin")
    page.goto("/")
    expect(page.locator("#team-switch option")).to_have_text(["Fraud Detection", "Recommendations"])
    page.locator("#team-switch").select_option(label="Recommendations")
    expect(page.locator("[data-current-team]")).to_have_text("Recommendations")


def test_viewer_gets_the_403_page_for_audit(signed_in, shot):
    page = signed_in("viewer")
    response = page.goto("/audit/")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator("main")).to_contain_text("audit.view")
    assert "audit" not in nav_keys(page)
    shot(page, "403")


def test_another_teams_page_is_not_found(signed_in, shot):
    fraud_admin = signed_in("teamadmin")
    fraud_admin.goto("/teams/")
    links = fraud_admin.locator("table a[href^='/teams/']")
    expect(links).to_have_text(["Fraud Detection"])
    fraud_url = links.first.get_attribute("href")
    assert fraud_admin.goto(fraud_url).status == 200

    page = signed_in("recs-scientist")
    response = page.goto(fraud_url)
    assert response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("main")).not_to_contain_text("Fraud")
    shot(page, "404")


def test_an_area_not_built_yet_says_when_it_arrives(signed_in, shot):
    page = signed_in("scientist")
    page.goto("/")
    page.locator("[data-nav=monitoring]").click()
    page.wait_for_url(re.compile(r"/monitoring/$"))
    expect(page.locator("[data-nav=monitoring]")).to_have_attribute("aria-current", "page")
    expect(page.locator("[data-not-yet]")).to_contain_text("Not yet")
    expect(page.locator("[data-not-yet]")).to_contain_text("Monitoring (step 5 of 9)")
    shot(page, "not-yet")


def test_models_area_is_built_and_stays_marked_on_its_pages(signed_in):
    page = signed_in("scientist")
    page.goto("/")
    page.locator("[data-nav=models]").click()
    page.wait_for_url(re.compile(r"/models/$"))
    expect(page.locator("h1")).to_have_text("Models")
    expect(page.locator("[data-nav=models] .badge")).to_have_count(0)  # no "soon" badge any more
    for path in ("/models/", "/models/register/", "/models/experiments/"):
        page.goto(path)
        expect(page.locator("[data-nav=models]")).to_have_attribute("aria-current", "page")


def test_small_screen_has_no_sideways_scroll_and_a_working_menu(signed_in, shot):
    page = signed_in("admin", viewport={"width": 390, "height": 844})
    page.goto("/teams/")
    team_page = page.locator("table a[href^='/teams/']").first.get_attribute("href")
    audit_event = None
    too_wide = []
    for path in ["/", "/accounts/tokens/", "/audit/", "/teams/", team_page, "/accounts/profile/", "/models/",
                 "audit-event"]:
        if path == "audit-event":
            path = audit_event
        page.goto(path)
        if path == "/audit/":
            first_event = page.locator("[data-audit-table] tbody a[href^='/audit/']").first
            audit_event = first_event.get_attribute("href")
        width, viewport = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        if width > viewport:
            too_wide.append(f"{path}: {width}px")
        shot(page, "mobile-" + (path.strip("/").replace("/", "-") or "home"))
    assert not too_wide, f"pages that scroll sideways in a 390px viewport: {too_wide}"

    page.goto("/")
    toggle = page.get_by_role("button", name="Menu")
    nav = page.locator("#mainnav")
    expect(toggle).to_be_visible()
    expect(nav).to_be_hidden()
    toggle.click()
    expect(nav).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(nav.locator("[data-nav=audit]")).to_be_visible()
    shot(page, "mobile-menu-open", full_page=False)
    toggle.click()
    expect(nav).to_be_hidden()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    # The menu's links lead somewhere: open it and go to the audit trail.
    toggle.click()
    nav.locator("[data-nav=audit]").click()
    page.wait_for_url(re.compile(r"/audit/$"))
    expect(page.locator("h1")).to_have_text("Audit trail")


def test_wide_screen_keeps_the_top_bar_on_one_row(signed_in):
    page = signed_in("admin")  # the most areas and a team switcher: the widest top bar
    page.goto("/")
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    expect(page.locator("#mainnav [data-nav]")).to_have_count(8)
    tops = page.evaluate("""() => ['.brand', '#mainnav', '.topbar-right']
        .map(s => Math.round(document.querySelector(s).getBoundingClientRect().top))""")
    assert max(tops) - min(tops) < 20, f"the top bar wraps at 1280px (tops of brand, areas, user: {tops})"
