"""Device authorization grant (RFC 8628) with offline access (SPEC P7), on oauthlib 4."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_device_grant_model

from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import refresh

DeviceGrant = get_device_grant_model()
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def cli(db):
    """A command-line tool: public client using the device grant."""
    return factories.PublicApplicationFactory(
        name="Deploy CLI",
        client_id="deploy-cli",
        authorization_grant_type=DEVICE_CODE_GRANT,
        redirect_uris="",
    )


def form_post(client: Client, url: str, data: dict):
    """A form POST as RFC 8628 requires (application/x-www-form-urlencoded)."""
    return client.post(url, urlencode(data), content_type="application/x-www-form-urlencoded")


def start(api: Client, cli, scope="openid offline_access") -> dict:
    response = form_post(api, "/o/device-authorization/", {"client_id": cli.client_id, "scope": scope})
    assert response.status_code == 200, response.content
    return response.json()


def poll(api: Client, cli, device_code: str, *, wait=True):
    if wait:  # the device waited its interval since the last poll
        DeviceGrant.objects.filter(device_code=device_code).update(
            last_checked=timezone.now() - timedelta(seconds=60)
        )
    return form_post(
        api,
        "/o/token/",
        {"grant_type": DEVICE_CODE_GRANT, "device_code": device_code, "client_id": cli.client_id},
    )


def enter_code(browser: Client, user_code: str):
    """The user types the code on the verification page, which leads to the approval screen."""
    response = browser.post("/o/device/", {"user_code": user_code})
    assert response.status_code == 302, response.content
    return response["Location"]


def approve(browser: Client, started: dict, decision="allow"):
    confirm_url = enter_code(browser, started["user_code"])
    screen = browser.get(confirm_url)
    assert screen.status_code == 200
    response = browser.post(confirm_url, {"decision": decision})
    assert response.status_code == 302
    return screen


def test_P7_device_authorization_response_works_on_oauthlib_4(api, cli):
    started = start(api, cli)
    assert set(started) >= {"device_code", "user_code", "verification_uri", "expires_in", "interval"}
    assert started["verification_uri"].endswith("/o/device/")
    assert DeviceGrant.objects.get(device_code=started["device_code"]).scope == "openid offline_access"


def test_P7_approval_screen_is_the_consent_screen(browser, api, cli):
    screen = approve(browser, start(api, cli))
    html = screen.content.decode()
    assert screen.templates[0].name == "offline_access/consent.html"
    assert screen.context["offline_access"] is True
    assert "Access while you are away" in html
    assert ">Allow</button>" in html and ">Deny</button>" in html


def test_P7_allow_records_consent_and_issues_a_refresh_token_once(browser, api, cli, user):
    started = start(api, cli)
    approve(browser, started)

    consent = Consent.objects.get(user=user, application=cli)
    assert consent.kind == Consent.Kind.INTERACTIVE
    assert consent.events.get().via == ConsentEvent.Via.CONSENT_SCREEN

    response = poll(api, cli, started["device_code"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body
    assert "offline_access" in body["scope"].split()
    assert OfflineTokenFamily.objects.get().consent == consent

    # Redeemed exactly once: the next poll gets an error and no tokens.
    again = poll(api, cli, started["device_code"])
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert "access_token" not in again.json()

    # The refresh token works later, with nobody present.
    assert refresh(api, cli, body["refresh_token"]).status_code == 200


def test_P7_without_offline_access_no_refresh_token(browser, api, cli, user):
    started = start(api, cli, scope="openid")
    approve(browser, started)
    body = poll(api, cli, started["device_code"]).json()
    assert "access_token" in body
    assert "refresh_token" not in body
    assert not Consent.objects.exists()


def test_P7_client_barred_from_offline_access_gets_no_refresh_token(browser, api, cli):
    from offline_access.models import ClientPolicy

    ClientPolicy.objects.create(application=cli, allow_offline_access=False)
    started = start(api, cli)
    screen = approve(browser, started)
    assert screen.context["offline_access"] is False
    body = poll(api, cli, started["device_code"]).json()
    assert "refresh_token" not in body
    assert "offline_access" not in body["scope"].split()


def test_P7_revoked_consent_before_the_poll_gives_no_refresh_token(browser, api, cli, user):
    from offline_access import services

    started = start(api, cli)
    approve(browser, started)
    services.revoke_consents(Consent.objects.all(), via=ConsentEvent.Via.COMMAND)
    body = poll(api, cli, started["device_code"]).json()
    assert "refresh_token" not in body


def test_rfc8628_authorization_pending_until_the_user_acts(api, cli):
    started = start(api, cli)
    response = poll(api, cli, started["device_code"])
    assert (response.status_code, response.json()["error"]) == (400, "authorization_pending")


def test_rfc8628_slow_down_when_polling_faster_than_the_interval(api, cli):
    started = start(api, cli)
    poll(api, cli, started["device_code"])  # waited: pending
    response = poll(api, cli, started["device_code"], wait=False)  # at once again
    assert (response.status_code, response.json()["error"]) == (400, "slow_down")
    # RFC 8628 3.5: the interval grows by 5 seconds for all later polls.
    assert DeviceGrant.objects.get(device_code=started["device_code"]).interval == started["interval"] + 5


def test_rfc8628_access_denied_after_deny(browser, api, cli):
    started = start(api, cli)
    approve(browser, started, decision="deny")
    response = poll(api, cli, started["device_code"])
    assert (response.status_code, response.json()["error"]) == (400, "access_denied")
    assert not Consent.objects.exists()


def test_rfc8628_expired_token_after_expiry(api, cli):
    started = start(api, cli)
    DeviceGrant.objects.filter(device_code=started["device_code"]).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    response = poll(api, cli, started["device_code"])
    assert (response.status_code, response.json()["error"]) == (400, "expired_token")


def test_rfc8628_approved_but_expired_code_gets_no_tokens(browser, api, cli):
    started = start(api, cli)
    approve(browser, started)
    DeviceGrant.objects.filter(device_code=started["device_code"]).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    response = poll(api, cli, started["device_code"])
    assert response.json()["error"] == "expired_token"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"device_code": "no-such-code"}, "invalid_grant"),
        ({}, "invalid_request"),
        ({"device_code": ""}, "invalid_request"),
    ],
)
def test_rfc8628_unknown_or_missing_device_code_is_a_400(api, cli, data, error):
    response = api.post("/o/token/", {"grant_type": DEVICE_CODE_GRANT, "client_id": cli.client_id, **data})
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_device_code_of_another_client_is_invalid_grant(api, cli):
    started = start(api, cli)
    other = factories.PublicApplicationFactory(
        client_id="other-cli", authorization_grant_type=DEVICE_CODE_GRANT, redirect_uris=""
    )
    response = poll(api, other, started["device_code"])
    assert response.json()["error"] == "invalid_grant"


def test_approval_page_of_another_users_code_is_404(api, cli, other_user, browser):
    started = start(api, cli)
    confirm_url = enter_code(browser, started["user_code"])
    intruder = Client()
    intruder.force_login(other_user)
    assert intruder.get(confirm_url).status_code == 404
    assert intruder.post(confirm_url, {"decision": "allow"}).status_code == 404


def test_code_entry_page_and_status_page_use_the_apps_look(browser, api, cli):
    page = browser.get("/o/device/")
    assert page.status_code == 200
    assert page.templates[0].name == "offline_access/device/user_code.html"
    assert '<label for="id_user_code">Code</label>' in page.content.decode()
    assert page["X-Frame-Options"] == "DENY"

    wrong = browser.post("/o/device/", {"user_code": "NOPE-NOPE"})
    assert wrong.status_code == 200
    assert "Incorrect user code" in wrong.content.decode()

    started = start(api, cli)
    confirm_url = enter_code(browser, started["user_code"])
    status_url = browser.post(confirm_url, {"decision": "allow"})["Location"]
    assert "Device connected" in browser.get(status_url).content.decode()
    poll(api, cli, started["device_code"])  # redeemed: the page still says connected
    assert "Device connected" in browser.get(status_url).content.decode()
