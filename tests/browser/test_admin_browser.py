"""Issue #3 in a real browser (Chromium through Playwright) against the live example site.

Two walks: a user approves the consent screen and the client gets an offline
refresh token over HTTP; an administrator filters the consents changelist,
revokes a consent through the confirmation page, and the client's refresh token
stops working.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.test import Client

from offline_access.models import Consent, ConsentEvent
from tests import factories
from tests.oauth import VERIFIER, authorize_url, client_auth, exchange_code, get_code

pytestmark = pytest.mark.browser

REVOKE_ACTION = "Revoke selected consents and their tokens"

# Straight to the live server, whatever proxy the environment names.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_token(live_server, data: dict) -> tuple[int, dict]:
    """POST to the live /o/token/ as a client would; return the status and the JSON body."""
    request = urllib.request.Request(
        live_server.url + "/o/token/", data=urlencode(data).encode(), method="POST"
    )
    try:
        with _http.open(request, timeout=15) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def refresh_over_http(live_server, application, refresh_token: str) -> tuple[int, dict]:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **client_auth(application)}
    return post_token(live_server, data)


def log_in(page, url: str, username: str, password: str) -> None:
    page.goto(url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.locator("form [type=submit]").click()


def log_in_to(page, live_server, next_url: str, username: str = "alice") -> None:
    """Sign in on the example site's login page as ``username``, which then goes to ``next_url``."""
    log_in(
        page,
        f"{live_server.url}/accounts/login/?{urlencode({'next': next_url})}",
        username,
        factories.PASSWORD,
    )


def test_consent_screen_allow_in_chromium_gets_the_client_an_offline_refresh_token(
    live_server, new_page, artifacts
):
    from playwright.sync_api import expect

    user = factories.UserFactory(username="alice")
    application = factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")
    redirect_uri = application.redirect_uris.split()[0]
    page = new_page()

    next_url = authorize_url(application, prompt="consent")
    log_in_to(page, live_server, next_url)
    expect(page.get_by_role("heading", level=1)).to_have_text("Calendar Sync wants to access your account")
    expect(page.locator("#offline-access-scope")).to_have_text(
        "Keep access while you are away (offline access)"
    )
    expect(page.get_by_role("note")).to_contain_text("Access while you are away")
    page.screenshot(path=artifacts / "consent-screen.png", full_page=True)

    # A browser sends an Origin header with this POST, which Django's CSRF check
    # compares with the site (the test client sends none).
    # The redirect_uri's host does not resolve (and Playwright does not route
    # redirect targets): read the code from the consent POST's redirect itself.
    with page.expect_response(
        lambda response: response.request.method == "POST" and urlparse(response.url).path == "/o/authorize/"
    ) as answered:
        page.get_by_role("button", name="Allow").click()
    response = answered.value
    assert response.status == 302, (response.status, page.inner_text("body")[:300])
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    params = {key: values[0] for key, values in parse_qs(urlparse(location).query).items()}
    assert params["state"] == "state-123"
    assert Consent.objects.filter(user=user, application=application, status=Consent.Status.ACTIVE).exists()

    status, issued = post_token(
        live_server,
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": VERIFIER,
            **client_auth(application),
        },
    )
    assert status == 200, issued
    assert "offline_access" in issued["scope"].split()
    status, refreshed = refresh_over_http(live_server, application, issued["refresh_token"])
    assert status == 200, refreshed


def test_admin_filters_consents_and_revokes_one_on_the_confirmation_page_then_its_token_is_refused(
    live_server, new_page, artifacts, admin_user
):
    from playwright.sync_api import expect

    user = factories.UserFactory(username="alice")
    application = factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")
    # Rows the two filters must hide: an active consent to another client, and a
    # revoked consent to the same client.
    other_client = factories.ApplicationFactory(name="Photo Backup", client_id="photo-backup")
    other_client_consent = factories.ConsentFactory(application=other_client)
    factories.ConsentFactory(application=application, status=Consent.Status.REVOKED)

    # The user's offline token, through the real endpoints (Django's test client, same database)...
    session = Client()
    session.force_login(user)
    issued = exchange_code(Client(), application, get_code(session, application, prompt="consent"))
    assert issued.status_code == 200, issued.content
    # ...which refreshes over HTTP before the revocation (and rotates: keep the new one).
    status, refreshed = refresh_over_http(live_server, application, issued.json()["refresh_token"])
    assert status == 200, refreshed
    refresh_token = refreshed["refresh_token"]
    consent = Consent.objects.get(user=user, application=application, status=Consent.Status.ACTIVE)

    # The administrator logs in and narrows the changelist with the filters...
    page = new_page()
    changelist = f"{live_server.url}/admin/offline_access/consent/"
    log_in(page, f"{live_server.url}/admin/login/?next=/admin/offline_access/consent/", "admin", "password")
    expect(page).to_have_url(changelist)
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(3)

    filters = page.locator("#changelist-filter")
    filters.locator('details[data-filter-title="state"]').get_by_role(
        "link", name="Active", exact=True
    ).click()
    expect(page).to_have_url(re.compile(r"[?&]state=active(&|$)"))
    expect(rows).to_have_count(2)
    filters.locator('details[data-filter-title="client"]').get_by_role(
        "link", name="Calendar Sync", exact=True
    ).click()
    expect(page).to_have_url(re.compile(rf"[?&]application__id__exact={application.pk}(&|$)"))
    expect(page).to_have_url(re.compile(r"[?&]state=active(&|$)"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("alice")

    # ...ticks the consent and runs the action...
    page.locator(f'#result_list input.action-select[value="{consent.pk}"]').check()
    page.locator('select[name="action"]').select_option(label=REVOKE_ACTION)
    page.get_by_role("button", name="Go").click()

    # ...the confirmation page says what will be revoked, and nothing is revoked yet...
    expect(page.locator("#revocation-summary li")).to_have_text(
        ["1 consent", "1 refresh token", "1 access token"]
    )
    page.get_by_label("Reason (optional)").fill("Laptop stolen")
    page.screenshot(path=artifacts / "admin-revoke-confirmation.png", full_page=True)
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE

    # ...and once confirmed, back on the changelist, the counts are reported.
    page.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator("ul.messagelist li.success")).to_have_text(
        "Revoked 1 consent(s), 1 refresh token(s) and 1 access token(s)."
    )
    expect(page).to_have_url(re.compile("^" + re.escape(changelist)))

    consent.refresh_from_db()
    assert (consent.status, consent.ended_by, consent.end_reason) == (
        Consent.Status.REVOKED,
        admin_user,
        "Laptop stolen",
    )
    event = consent.events.get(action=ConsentEvent.Action.REVOKED)
    assert (event.via, event.actor, event.reason) == (ConsentEvent.Via.ADMIN, admin_user, "Laptop stolen")
    other_client_consent.refresh_from_db()
    assert other_client_consent.status == Consent.Status.ACTIVE

    # The client's refresh token is refused at the token endpoint.
    status, body = refresh_over_http(live_server, application, refresh_token)
    assert status == 400, body
    assert body["error"] == "invalid_grant"
