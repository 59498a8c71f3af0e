"""Issue #4 in a real browser: Deny on the consent screen, and revoking on the connected-apps page."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client

from offline_access.models import Consent, ConsentEvent
from tests import factories
from tests.oauth import authorize_url, exchange_code, get_code

from .test_admin_browser import log_in_to, refresh_over_http

pytestmark = pytest.mark.browser


def test_deny_on_the_consent_screen_sends_access_denied_and_records_nothing(live_server, new_page):
    user = factories.UserFactory(username="alice")
    application = factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")
    page = new_page()
    next_url = authorize_url(application, prompt="consent")
    log_in_to(page, live_server, next_url)

    with page.expect_response(
        lambda response: response.request.method == "POST" and urlparse(response.url).path == "/o/authorize/"
    ) as answered:
        page.get_by_role("button", name="Deny").click()

    response = answered.value
    assert response.status == 302
    location = response.headers["location"]
    assert location.startswith(application.redirect_uris.split()[0] + "?")
    params = parse_qs(urlparse(location).query)
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["state-123"]
    assert "code" not in params
    assert not Consent.objects.filter(user=user).exists()


def test_user_revokes_an_app_on_the_connected_apps_page_and_its_token_stops_working(
    live_server, new_page, artifacts
):
    from playwright.sync_api import expect

    user = factories.UserFactory(username="alice")
    application = factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")
    other = factories.PublicApplicationFactory(name="Phone App", client_id="phone-app")
    session = Client()
    session.force_login(user)
    tokens = {
        app.client_id: exchange_code(Client(), app, get_code(session, app, prompt="consent")).json()
        for app in (application, other)
    }

    page = new_page()
    connected = f"{live_server.url}/o/connected-apps/"
    log_in_to(page, live_server, "/o/connected-apps/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected apps")
    expect(page.get_by_role("heading", level=2)).to_have_text(["Calendar Sync", "Phone App"])
    page.screenshot(path=artifacts / "connected-apps.png", full_page=True)

    page.get_by_role("button", name="Revoke access of Calendar Sync", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Revoke access of Calendar Sync?")
    page.screenshot(path=artifacts / "connected-apps-confirm.png", full_page=True)
    page.get_by_role("button", name="Revoke access of Calendar Sync").click()

    expect(page).to_have_url(connected)
    expect(page.get_by_role("status")).to_contain_text("Calendar Sync no longer has access to your account.")
    expect(page.get_by_role("heading", level=2)).to_have_text(["Phone App"])

    consent = Consent.objects.get(user=user, application=application)
    assert consent.status == Consent.Status.REVOKED
    assert consent.events.filter(
        action=ConsentEvent.Action.REVOKED, via=ConsentEvent.Via.USER, actor=user
    ).exists()
    status, body = refresh_over_http(live_server, application, tokens["calendar-sync"]["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = refresh_over_http(live_server, other, tokens["phone-app"]["refresh_token"])
    assert status == 200, body


def test_connected_apps_page_works_on_a_phone_sized_screen(live_server, chromium, artifacts):
    session = Client()
    session.force_login(factories.UserFactory(username="alice"))
    application = factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")
    exchange_code(Client(), application, get_code(session, application, prompt="consent"))

    context = chromium.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    try:
        page = context.new_page()
        log_in_to(page, live_server, "/o/connected-apps/")
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        button = page.get_by_role("button", name="Revoke access of Calendar Sync", exact=True)
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
        page.screenshot(path=artifacts / "connected-apps-phone.png", full_page=True)
    finally:
        context.close()
