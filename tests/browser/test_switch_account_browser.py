"""Issue #13 in a real browser: the client's logo and pages, and "Not you? Switch account"."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

import pytest
from oauth2_provider.models import get_grant_model

from offline_access.models import ClientPolicy
from tests import factories
from tests.oauth import authorize_url

from .test_admin_browser import log_in_to

pytestmark = pytest.mark.browser

LOGO = "https://static.sync.example/logo.png"
#: A 1x1 PNG (one pixel, scaled into the 48px box), served for LOGO by the page's router (no network).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_switch_account_from_the_consent_screen_and_allow_as_the_other_user(live_server, new_page, artifacts):
    from playwright.sync_api import expect

    factories.UserFactory(username="alice")
    mallory = factories.UserFactory(username="mallory")
    application = factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")
    policy = ClientPolicy(
        application=application,
        logo_uri=LOGO,
        client_uri="https://sync.example/",
        policy_uri="https://sync.example/privacy",
        tos_uri="https://sync.example/terms",
    )
    policy.full_clean()
    policy.save()
    page = new_page()
    logo_requests = []

    def serve_logo(route, request):
        logo_requests.append(request.headers)
        route.fulfill(status=200, content_type="image/png", body=PNG)

    page.route(LOGO, serve_logo)
    next_url = authorize_url(application, prompt="consent")
    log_in_to(page, live_server, next_url)

    expect(page.get_by_role("heading", level=1)).to_have_text("Calendar Sync wants to access your account")
    logo = page.get_by_role("img", name="Calendar Sync")
    expect(logo).to_be_visible()
    box = logo.bounding_box()
    assert box is not None and box["width"] <= 48 and box["height"] <= 48, box
    # referrerpolicy="no-referrer": the client's server does not learn the authorization request.
    assert logo_requests and all("referer" not in headers for headers in logo_requests), logo_requests
    privacy = page.get_by_role("link", name="Privacy policy")
    expect(privacy).to_have_attribute("href", "https://sync.example/privacy")
    expect(privacy).to_have_attribute("target", "_blank")
    page.screenshot(path=artifacts / "consent-screen-client-pages.png", full_page=True)

    page.get_by_role("button", name="Not you? Switch account").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    page.get_by_label("Username").fill("mallory")
    page.get_by_label("Password").fill(factories.PASSWORD)
    page.locator("form [type=submit]").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Calendar Sync wants to access your account")
    expect(page.locator("main")).to_contain_text("You are signed in as mallory.")
    with page.expect_response(
        lambda response: response.request.method == "POST" and urlparse(response.url).path == "/o/authorize/"
    ) as answered:
        page.get_by_role("button", name="Allow").click()
    response = answered.value
    assert response.status == 302, (response.status, page.inner_text("body")[:300])
    params = parse_qs(urlparse(response.headers["location"]).query)
    assert "code" in params
    assert params["state"] == ["state-123"]
    assert get_grant_model().objects.get().user == mallory
