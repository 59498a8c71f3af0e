"""Device authorization grant (RFC 8628) with offline access (SPEC P7), on oauthlib 4."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_device_grant_model

from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import refresh, stored

DeviceGrant = get_device_grant_model()
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def form_post(client: Client, url: str, data: dict):
    """A form POST as RFC 8628 requires (application/x-www-form-urlencoded)."""
    return client.post(url, urlencode(data), content_type="application/x-www-form-urlencoded")


def start(api: Client, cli, scope="openid offline_access") -> dict:
    response = form_post(api, "/o/device-authorization/", {"client_id": cli.client_id, "scope": scope})
    assert response.status_code == 200, response.content
    return response.json()


def waited(device_code: str) -> None:
    """The device waited its interval since the last poll."""
    DeviceGrant.objects.filter(device_code=stored(device_code)).update(
        last_checked=timezone.now() - timedelta(seconds=60)
    )


def poll(api: Client, cli, device_code: str, *, wait=True):
    if wait:
        waited(device_code)
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
    assert (
        DeviceGrant.objects.get(device_code=stored(started["device_code"])).scope == "openid offline_access"
    )


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
    assert (
        DeviceGrant.objects.get(device_code=stored(started["device_code"])).interval
        == started["interval"] + 5
    )


def test_rfc8628_access_denied_after_deny(browser, api, cli):
    started = start(api, cli)
    approve(browser, started, decision="deny")
    response = poll(api, cli, started["device_code"])
    assert (response.status_code, response.json()["error"]) == (400, "access_denied")
    assert not Consent.objects.exists()


def test_rfc8628_expired_token_after_expiry(api, cli):
    started = start(api, cli)
    DeviceGrant.objects.filter(device_code=stored(started["device_code"])).update(
        expires=timezone.now() - timedelta(seconds=1)
    )
    response = poll(api, cli, started["device_code"])
    assert (response.status_code, response.json()["error"]) == (400, "expired_token")


def test_rfc8628_approved_but_expired_code_gets_no_tokens(browser, api, cli):
    started = start(api, cli)
    approve(browser, started)
    DeviceGrant.objects.filter(device_code=stored(started["device_code"])).update(
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


# Security review, issue 8 --------------------------------------------------------

AccessTokenModel = get_access_token_model()


def cache_control(response) -> set[str]:
    return {part.strip() for part in response.get("Cache-Control", "").split(",")}


def status_of(started: dict) -> str:
    return DeviceGrant.objects.get(device_code=stored(started["device_code"])).status


def claimed_by(browser: Client, started: dict) -> str:
    """``browser``'s user types the code and opens the approval page; returns its URL."""
    confirm_url = enter_code(browser, started["user_code"])
    assert browser.get(confirm_url).status_code == 200
    return confirm_url


@pytest.fixture
def attacker(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


def test_device_approval_race_victim_typing_the_code_mid_approval_gets_no_tokens(
    attacker, api, cli, user, other_user, monkeypatch
):
    """Issue 8: the victim types the attacker's code while the attacker's Allow is in flight.

    The victim's code entry lands after the Allow handler read the grant (as the
    attacker's) and before it writes the decision: the approval must not go through
    for an account that did not click Allow.
    """
    from offline_access import policy, services

    services.record_interactive_consent(user=user, application=cli, scopes=["openid", "offline_access"])
    started = start(api, cli)
    confirm_url = claimed_by(attacker, started)
    original = policy.device_approval_scopes

    def victim_types_the_code_now(*args, **kwargs):
        DeviceGrant.objects.filter(device_code=stored(started["device_code"])).update(user=user)
        return original(*args, **kwargs)

    monkeypatch.setattr(policy, "device_approval_scopes", victim_types_the_code_now)

    response = attacker.post(confirm_url, {"decision": "allow"})

    body = poll(api, cli, started["device_code"]).json()
    assert "access_token" not in body, body
    assert not AccessTokenModel.objects.filter(user=user).exists()
    grant = DeviceGrant.objects.get(device_code=stored(started["device_code"]))
    assert grant.status == DeviceGrant.AUTHORIZATION_PENDING
    # Nor is a consent recorded for the attacker by an approval that did not happen.
    assert not Consent.objects.filter(user=other_user).exists()
    # The attacker is told, with a page rather than an error.
    assert response.status_code == 409
    assert "no longer waiting for your approval" in response.content.decode()


def test_device_approval_after_the_code_was_reassigned_between_page_and_post(
    attacker, api, cli, user, other_user
):
    """The victim typed the code after the attacker's page was shown: the Allow is refused, clearly."""
    started = start(api, cli)
    confirm_url = claimed_by(attacker, started)
    DeviceGrant.objects.filter(device_code=stored(started["device_code"])).update(user=user)

    response = attacker.post(confirm_url, {"decision": "allow"})

    assert response.status_code in (404, 409)
    assert "no longer waiting for your approval" in response.content.decode()
    assert status_of(started) == DeviceGrant.AUTHORIZATION_PENDING
    assert "access_token" not in poll(api, cli, started["device_code"]).json()
    assert not AccessTokenModel.objects.filter(user=user).exists()


def test_device_deny_is_bound_to_the_approver_too(attacker, api, cli, user, monkeypatch):
    from offline_access import policy

    started = start(api, cli)
    confirm_url = claimed_by(attacker, started)
    original = policy.device_approval_scopes

    def victim_types_the_code_now(*args, **kwargs):
        DeviceGrant.objects.filter(device_code=stored(started["device_code"])).update(user=user)
        return original(*args, **kwargs)

    monkeypatch.setattr(policy, "device_approval_scopes", victim_types_the_code_now)
    response = attacker.post(confirm_url, {"decision": "deny"})
    assert status_of(started) == DeviceGrant.AUTHORIZATION_PENDING
    assert response.status_code == 409


def test_device_code_claimed_by_another_account_is_not_reassigned(attacker, browser, api, cli, other_user):
    """A code already being approved from one account cannot be switched to another.

    RFC 8628 lets whoever holds the code approve, but switching the grant's
    account while an approval page is open is what the race above feeds on; the
    second account is told, and the first keeps its page.
    """
    started = start(api, cli)
    confirm_url = claimed_by(attacker, started)

    response = browser.post("/o/device/", {"user_code": started["user_code"]})

    assert response.status_code == 200
    assert "already being approved from another account" in response.content.decode()
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user == other_user
    # The first account can still decide.
    assert attacker.post(confirm_url, {"decision": "allow"}).status_code == 302


def test_device_approval_consent_stands_or_falls_with_the_approval(
    attacker, api, cli, other_user, monkeypatch
):
    """The consent is written in the transaction of the approval, or not at all.

    Here the approval fails after the consent was written (a database error,
    simulated): neither the consent, nor its event, nor the approval may remain.
    """
    from offline_access import services

    started = start(api, cli)
    confirm_url = claimed_by(attacker, started)
    original = services.record_interactive_consent

    def consent_then_failure(**kwargs):
        original(**kwargs)
        raise RuntimeError("simulated failure after the consent was written")

    monkeypatch.setattr(services, "record_interactive_consent", consent_then_failure)
    attacker.raise_request_exception = False

    response = attacker.post(confirm_url, {"decision": "allow"})

    assert not Consent.objects.filter(user=other_user).exists()
    assert not ConsentEvent.objects.exists()
    assert status_of(started) == DeviceGrant.AUTHORIZATION_PENDING
    assert response.status_code == 500  # the failure itself is an honest server error


def test_device_authorization_with_client_id_in_the_query_is_a_400_not_a_500(cli):
    """Issue 8: client_id only in the query string used to raise a KeyError in DOT's view."""
    api = Client(raise_request_exception=False)
    response = form_post(api, f"/o/device-authorization/?client_id={cli.client_id}", {"scope": "openid"})
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert "no-store" in cache_control(response)


def test_device_authorization_response_is_not_cached(api, cli):
    """RFC 8628 3.2 / RFC 6749 5.1: the response carries the device_code."""
    response = form_post(api, "/o/device-authorization/", {"client_id": cli.client_id, "scope": "openid"})
    assert response.status_code == 200
    assert "no-store" in cache_control(response)
    error = form_post(api, "/o/device-authorization/", {"client_id": "no-such-client"})
    assert error.status_code in (400, 401)
    assert "no-store" in cache_control(error)


def test_device_poll_answers_are_not_cached(browser, api, cli):
    started = start(api, cli)
    answers = [poll(api, cli, started["device_code"])]  # authorization_pending
    answers.append(poll(api, cli, started["device_code"], wait=False))  # slow_down
    approve(browser, started)
    answers.append(poll(api, cli, started["device_code"]))  # tokens
    answers.append(poll(api, cli, started["device_code"]))  # redeemed: invalid_grant
    answers.append(poll(api, cli, "no-such-code"))
    assert [answer.status_code for answer in answers] == [400, 400, 200, 400, 400]
    for answer in answers:
        assert "no-store" in cache_control(answer), answer.content


def test_rfc8628_5_4_remote_phishing_warning_on_the_device_approval_page_only(browser, api, cli, application):
    from .oauth import authorize_url

    device_page = approve(browser, start(api, cli))
    assert 'id="device-phishing-warning"' in device_page.content.decode()
    assert "Only continue if you started this on a device that you own" in device_page.content.decode()

    consent_page = browser.get(authorize_url(application, prompt="consent"))
    assert consent_page.status_code == 200
    assert consent_page.templates[0].name == "offline_access/consent.html"
    assert "device-phishing-warning" not in consent_page.content.decode()


# RFC 8628 5.1: user-code guessing is limited -----------------------------------------------


@pytest.fixture(autouse=True)
def empty_cache():
    """The attempt counts live in the (locmem) cache, which outlives a test."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def attempt_limit(settings):
    settings.OFFLINE_ACCESS = {
        **getattr(settings, "OFFLINE_ACCESS", {}),
        "DEVICE_CODE_ATTEMPTS": 3,
        "DEVICE_CODE_ATTEMPT_WINDOW": timedelta(minutes=5),
    }
    return 3


def browser_at(user, address: str, **extra) -> Client:
    client = Client(REMOTE_ADDR=address, **extra)
    client.force_login(user)
    return client


def guess(client: Client, code="WRONG000"):
    return client.post("/o/device/", {"user_code": code})


@pytest.fixture
def clock(monkeypatch):
    """Move the process's clock forward (time.time: the limit and the locmem cache both read it)."""
    import time

    real = time.time
    offset = {"seconds": 0.0}
    monkeypatch.setattr(time, "time", lambda: real() + offset["seconds"])

    def advance(seconds: float) -> None:
        offset["seconds"] += seconds

    return advance


def test_rfc8628_5_1_wrong_codes_are_limited_per_account(api, cli, user, attempt_limit):
    started = start(api, cli)
    guesser = browser_at(user, "192.0.2.1")
    assert [guess(guesser).status_code for _ in range(attempt_limit)] == [200] * attempt_limit

    refused = guess(guesser, started["user_code"])  # even the right code

    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 300
    assert refused.templates[0].name == "offline_access/device/rate_limited.html"
    assert "offline_access/base.html" in [template.name for template in refused.templates]
    assert "You can try again in 5 minutes." in refused.content.decode()
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user is None
    # The same account from another address is limited too; the address is not.
    assert guess(browser_at(user, "198.51.100.7"), started["user_code"]).status_code == 429


def test_rfc8628_5_1_wrong_codes_are_limited_per_client_address(api, cli, user, other_user, attempt_limit):
    started = start(api, cli)
    third = factories.UserFactory(username="trudy")
    guess(browser_at(user, "192.0.2.9"))
    guess(browser_at(other_user, "192.0.2.9"))
    guess(browser_at(third, "192.0.2.9"))

    fresh_account = browser_at(factories.UserFactory(username="zoe"), "192.0.2.9")
    assert guess(fresh_account, started["user_code"]).status_code == 429
    # Another address, with an account that failed only once, gets through.
    assert enter_code(browser_at(user, "203.0.113.5"), started["user_code"]).startswith("/o/device-confirm/")


def test_rfc8628_5_1_the_limit_ignores_x_forwarded_for_by_default(user, other_user, attempt_limit):
    for number in range(attempt_limit):
        guess(browser_at(user, "192.0.2.20", HTTP_X_FORWARDED_FOR=f"10.0.0.{number}"))
    assert guess(browser_at(other_user, "192.0.2.20", HTTP_X_FORWARDED_FOR="10.9.9.9")).status_code == 429


def test_rfc8628_5_1_a_site_can_name_how_to_find_the_client_address(
    settings, user, other_user, attempt_limit
):
    settings.OFFLINE_ACCESS = {
        **settings.OFFLINE_ACCESS,
        "DEVICE_CODE_CLIENT_ADDRESS": lambda request: request.META.get("HTTP_X_REAL_IP"),
    }
    for _ in range(attempt_limit):
        guess(browser_at(user, "10.0.0.1", HTTP_X_REAL_IP="192.0.2.30"))
    assert guess(browser_at(other_user, "10.0.0.1", HTTP_X_REAL_IP="192.0.2.30")).status_code == 429
    assert guess(browser_at(other_user, "10.0.0.1", HTTP_X_REAL_IP="192.0.2.31")).status_code == 200


def test_rfc8628_5_1_the_limit_lifts_after_the_window(api, cli, user, attempt_limit, clock):
    started = start(api, cli)
    guesser = browser_at(user, "192.0.2.40")
    for _ in range(attempt_limit):
        guess(guesser)
    clock(4 * 60)
    assert guess(guesser, started["user_code"]).status_code == 429  # still inside the window
    clock(61)
    response = guess(guesser, started["user_code"])
    assert response.status_code == 302
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user == user


def test_rfc8628_5_1_successful_entries_do_not_count(api, cli, user, attempt_limit):
    browser = browser_at(user, "192.0.2.50")
    for _ in range(attempt_limit + 2):
        enter_code(browser, start(api, cli)["user_code"])
    assert guess(browser).status_code == 200


# Issue 10: standards --------------------------------------------------------------------
#
# RFC 8628 3.2 verification_uri_complete -------------------------------------------------


def path_of(uri: str) -> str:
    """What the test client requests for an absolute URI of the site (path and query)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def code_field_value(page) -> str:
    """The value the user-code field is rendered with."""
    return page.context["form"]["user_code"].value() or ""


def test_rfc8628_3_2_verification_uri_complete_carries_the_user_code(api, cli):
    from urllib.parse import parse_qs, urlsplit

    started = start(api, cli)
    complete = urlsplit(started["verification_uri_complete"])
    plain = urlsplit(started["verification_uri"])
    assert (complete.scheme, complete.netloc, complete.path) == (plain.scheme, plain.netloc, plain.path)
    assert parse_qs(complete.query) == {"user_code": [started["user_code"]]}


@pytest.mark.parametrize(
    ("verification_uri", "user_code", "expected"),
    [
        ("https://id.example/device", "ABCD-EFGH", "https://id.example/device?user_code=ABCD-EFGH"),
        # An existing query is kept as it is, the code appended.
        (
            "https://id.example/device?lang=fr&x=a%20b",
            "WDJB",
            "https://id.example/device?lang=fr&x=a%20b&user_code=WDJB",
        ),
        # Characters a custom OAUTH_DEVICE_USER_CODE_GENERATOR may produce are encoded.
        ("https://id.example/d/", "a b&c=d+é", "https://id.example/d/?user_code=a+b%26c%3Dd%2B%C3%A9"),
        # A fragment stays last.
        ("https://id.example/d#top", "X1", "https://id.example/d?user_code=X1#top"),
        # A user_code already in the configured URI is replaced, not doubled.
        ("https://id.example/d?user_code=OLD&a=1", "NEW", "https://id.example/d?a=1&user_code=NEW"),
    ],
)
def test_rfc8628_3_2_verification_uri_complete_encoding(verification_uri, user_code, expected):
    from offline_access.device import verification_uri_complete

    assert verification_uri_complete(verification_uri, user_code) == expected


def test_rfc8628_3_2_verification_uri_complete_respects_the_configured_query(api, cli, dot_settings):
    from urllib.parse import parse_qs, urlsplit

    dot_settings(OAUTH_DEVICE_VERIFICATION_URI="https://id.example/o/device/?lang=fr")
    started = start(api, cli)
    assert started["verification_uri"] == "https://id.example/o/device/?lang=fr"
    query = parse_qs(urlsplit(started["verification_uri_complete"]).query)
    assert query == {"lang": ["fr"], "user_code": [started["user_code"]]}


def test_rfc8628_3_2_a_site_setting_for_verification_uri_complete_wins(api, cli, dot_settings):
    from offline_access.device import normalise_user_code

    dot_settings(OAUTH_DEVICE_VERIFICATION_URI_COMPLETE=lambda code: f"https://qr.example/{code}")
    started = start(api, cli)
    # The site's function gets the code as DOT generated it (ungrouped): entry accepts both.
    assert (
        started["verification_uri_complete"]
        == f"https://qr.example/{normalise_user_code(started['user_code'])}"
    )


def test_rfc8628_3_3_1_verification_uri_complete_prefills_the_code_for_a_logged_in_user(browser, api, cli):
    started = start(api, cli)

    page = browser.get(path_of(started["verification_uri_complete"]))

    assert page.status_code == 200
    assert page.templates[0].name == "offline_access/device/user_code.html"
    assert code_field_value(page) == started["user_code"]
    html = page.content.decode()
    assert f'value="{started["user_code"]}"' in html
    # RFC 8628 3.3.1: the user is asked to compare it with the code on the device.
    assert "Check that this code matches the one your device" in html
    # RFC 8628 5.4: nothing is submitted for the user: the code is not claimed.
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user is None
    # The user confirms: the same POST as typing it.
    assert enter_code(browser, code_field_value(page)).startswith("/o/device-confirm/")


def test_rfc8628_3_3_1_anonymous_visit_logs_in_and_comes_back_with_the_code(api, cli, user):
    from urllib.parse import parse_qs, urlsplit

    from .factories import PASSWORD

    started = start(api, cli)
    visitor = Client()

    to_login = visitor.get(path_of(started["verification_uri_complete"]))
    assert to_login.status_code == 302
    login_url = to_login["Location"]
    assert urlsplit(login_url).path == "/accounts/login/"
    next_url = parse_qs(urlsplit(login_url).query)["next"][0]

    logged_in = visitor.post(login_url, {"username": user.username, "password": PASSWORD})
    assert logged_in.status_code == 302
    assert logged_in["Location"] == next_url
    page = visitor.get(logged_in["Location"])

    assert page.status_code == 200
    assert code_field_value(page) == started["user_code"]
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user is None


def test_rfc8628_5_1_prefilled_codes_are_not_attempts_and_do_not_bypass_the_limit(
    api, cli, user, attempt_limit
):
    started = start(api, cli)
    browser = browser_at(user, "192.0.2.60")
    # Opening pages with wrong codes in the query is not an attempt: nothing is checked.
    for _ in range(attempt_limit + 2):
        page = browser.get("/o/device/?" + urlencode({"user_code": "WRONG000"}))
        assert page.status_code == 200
    assert guess(browser).status_code == 200  # still allowed to try
    for _ in range(attempt_limit - 1):
        guess(browser)

    # Limited now: the right code in the query is shown, but neither claims nor checks anything...
    page = browser.get(path_of(start(api, cli)["verification_uri_complete"]))
    assert page.status_code == 200
    assert DeviceGrant.objects.filter(user__isnull=False).count() == 0
    # ...and confirming it is refused like any entry.
    assert guess(browser, started["user_code"]).status_code == 429
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user is None


def test_prefilled_user_code_is_escaped(browser):
    page = browser.get("/o/device/?" + urlencode({"user_code": '"><script>alert(1)</script>'}))
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.content.decode()
    assert "&quot;&gt;&lt;script&gt;" in page.content.decode()


# RFC 8628 3.1 / RFC 6749 2.3.1: confidential clients authenticate with HTTP Basic ----------


@pytest.fixture
def tv(db):
    """A confidential client using the device grant (a set-top box with a provisioned secret)."""
    return factories.ApplicationFactory(
        name="Living-room TV",
        client_id="living-room-tv",
        authorization_grant_type=DEVICE_CODE_GRANT,
        redirect_uris="",
    )


def basic(client_id: str, secret: str) -> dict:
    """RFC 6749 2.3.1: form-encode both parts, then base64 (as the test client's extra header)."""
    import base64
    from urllib.parse import quote_plus

    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(pair).decode()}


def form_post_with(client: Client, url: str, data: dict, **headers):
    return client.post(url, urlencode(data), content_type="application/x-www-form-urlencoded", **headers)


def test_rfc8628_3_1_confidential_client_authenticates_with_basic(api, browser, tv, user):
    from .factories import CLIENT_SECRET

    response = form_post_with(
        api,
        "/o/device-authorization/",
        {"scope": "openid offline_access"},
        **basic(tv.client_id, CLIENT_SECRET),
    )
    assert response.status_code == 200, response.content
    started = response.json()
    grant = DeviceGrant.objects.get(device_code=stored(started["device_code"]))
    assert (grant.client_id, grant.scope) == (tv.client_id, "openid offline_access")
    assert "no-store" in cache_control(response)

    approve(browser, started)
    waited(started["device_code"])
    tokens = form_post_with(
        api,
        "/o/token/",
        {"grant_type": DEVICE_CODE_GRANT, "device_code": started["device_code"]},
        **basic(tv.client_id, CLIENT_SECRET),
    )
    assert tokens.status_code == 200, tokens.content
    assert {"access_token", "refresh_token"} <= set(tokens.json())
    assert AccessTokenModel.objects.get().application == tv


def test_rfc8628_3_1_basic_and_the_same_client_id_in_the_body(api, tv):
    from .factories import CLIENT_SECRET

    response = form_post_with(
        api, "/o/device-authorization/", {"client_id": tv.client_id}, **basic(tv.client_id, CLIENT_SECRET)
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("credentials", "body"),
    [
        (("living-room-tv", "wrong-secret"), {}),
        (("living-room-tv", ""), {}),
        (("no-such-client", "test-client-secret"), {}),
        # Basic for one client, client_id of another in the body: RFC 6749 2.3 allows one method.
        (("living-room-tv", "wrong-secret"), {"client_id": "deploy-cli"}),
        (("living-room-tv", "test-client-secret"), {"client_id": "deploy-cli"}),
    ],
)
def test_rfc8628_3_1_wrong_basic_credentials_are_invalid_client(api, tv, cli, credentials, body):
    response = form_post_with(
        api, "/o/device-authorization/", {"scope": "openid", **body}, **basic(*credentials)
    )
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"].startswith("Basic")
    assert "no-store" in cache_control(response)
    assert not DeviceGrant.objects.exists()


def test_rfc8628_3_1_basic_with_client_id_also_in_the_query_is_a_400_not_a_500(tv):
    from .factories import CLIENT_SECRET

    api = Client(raise_request_exception=False)
    response = form_post_with(
        api,
        f"/o/device-authorization/?client_id={tv.client_id}",
        {"scope": "openid"},
        **basic(tv.client_id, CLIENT_SECRET),
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"


def test_rfc8628_3_1_public_client_sending_basic_with_an_empty_secret(api, cli):
    """Some client libraries always send Basic; a public client's secret is empty (RFC 6749 2.3.1)."""
    response = form_post_with(
        api, "/o/device-authorization/", {"scope": "openid"}, **basic(cli.client_id, "")
    )
    assert response.status_code == 200, response.content
    assert DeviceGrant.objects.get().client_id == cli.client_id


def test_rfc8628_3_1_confidential_client_without_credentials_is_refused(api, tv):
    response = form_post(api, "/o/device-authorization/", {"client_id": tv.client_id, "scope": "openid"})
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_client"
    assert not DeviceGrant.objects.exists()


def test_rfc8628_3_1_confidential_client_with_its_secret_in_the_body(api, tv):
    from .factories import CLIENT_SECRET

    response = form_post(
        api, "/o/device-authorization/", {"client_id": tv.client_id, "client_secret": CLIENT_SECRET}
    )
    assert response.status_code == 200, response.content


def test_rfc8628_3_1_request_without_any_client_identification_is_a_400(api, db):
    response = form_post(api, "/o/device-authorization/", {"scope": "openid"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# id_token in the device token response (as in the code flow) -------------------------------


def jwks(api: Client):
    from jwcrypto import jwk

    response = api.get("/o/.well-known/jwks.json")
    assert response.status_code == 200
    return jwk.JWKSet.from_json(response.content)


def verified_claims(api: Client, id_token: str) -> dict:
    """The claims of ``id_token`` after checking its signature against the provider's JWKS."""
    from jwcrypto import jwt

    keys = jwks(api)
    token = jwt.JWT(jwt=id_token, key=keys, algs=["RS256"], expected_type="JWS")
    header = json.loads(token.header)
    assert header["alg"] == "RS256"
    assert keys.get_key(header["kid"]) is not None
    return json.loads(token.claims)


def at_hash(access_token: str) -> str:
    import base64
    import hashlib

    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def device_tokens(api, browser, cli, scope="openid offline_access") -> dict:
    started = start(api, cli, scope=scope)
    approve(browser, started)
    response = poll(api, cli, started["device_code"])
    assert response.status_code == 200, response.content
    return response.json()


def test_device_token_response_has_a_signed_id_token_when_openid_was_granted(
    api, browser, cli, user, application
):
    from .oauth import exchange_code, get_code

    body = device_tokens(api, browser, cli)
    assert "id_token" in body, body

    claims = verified_claims(api, body["id_token"])
    assert claims["aud"] == cli.client_id
    assert "nonce" not in claims  # the device sent none
    assert claims["at_hash"] == at_hash(body["access_token"])
    assert claims["exp"] > claims["iat"] >= int(time.time()) - 60
    assert isinstance(claims["auth_time"], int)

    # Same issuer and subject as the code flow's id_token for the same user.
    code_flow = exchange_code(api, application, get_code(browser, application)).json()
    code_claims = verified_claims(api, code_flow["id_token"])
    assert claims["sub"] == code_claims["sub"]
    assert claims["iss"] == code_claims["iss"]
    assert "at_hash" in code_claims  # the device flow matches the code flow here

    # DOT's bookkeeping as in the code flow: the IDToken row, linked to the access token.
    access_token = AccessTokenModel.objects.get(application=cli)
    assert access_token.id_token is not None
    assert str(access_token.id_token.jti) == claims["jti"]
    assert access_token.id_token.user == user


def test_device_token_response_has_no_id_token_without_openid(api, browser, cli):
    body = device_tokens(api, browser, cli, scope="offline_access")
    assert "access_token" in body
    assert "id_token" not in body


def test_device_id_token_for_a_confidential_client_with_basic(api, browser, tv):
    from .factories import CLIENT_SECRET

    started = form_post_with(
        api, "/o/device-authorization/", {"scope": "openid"}, **basic(tv.client_id, CLIENT_SECRET)
    ).json()
    approve(browser, started)
    waited(started["device_code"])
    body = form_post_with(
        api,
        "/o/token/",
        {"grant_type": DEVICE_CODE_GRANT, "device_code": started["device_code"]},
        **basic(tv.client_id, CLIENT_SECRET),
    ).json()
    assert verified_claims(api, body["id_token"])["aud"] == tv.client_id


def test_device_id_token_survives_the_refresh_as_in_the_code_flow(api, browser, cli):
    body = device_tokens(api, browser, cli)
    first = verified_claims(api, body["id_token"])
    refreshed = refresh(api, cli, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    second = verified_claims(api, refreshed.json()["id_token"])
    assert (second["sub"], second["aud"], second["iss"]) == (first["sub"], first["aud"], first["iss"])


def test_stock_oauthlib_device_grant_still_lacks_the_id_token(db):
    """Pins why offline_access.device wraps oauthlib's device grant.

    oauthlib's OpenID ``Server`` registers the plain OAuth 2 device grant, whose
    token response runs no token modifiers: no id_token. If this fails, oauthlib
    (or DOT) has started adding one itself; drop the app's wrapper then.
    """
    import inspect

    from oauthlib.oauth2.rfc8628.grant_types import DeviceCodeGrant
    from oauthlib.openid import Server

    server = Server(request_validator=None, verification_uri="https://id.example/device")
    assert type(server.grant_types[DEVICE_CODE_GRANT]) is DeviceCodeGrant
    assert "_token_modifiers" not in inspect.getsource(DeviceCodeGrant.create_token_response)


# Issue 13: the code entry page -----------------------------------------------------------------


def test_rfc8628_6_1_user_code_is_shown_grouped_for_reading(api, cli):
    started = start(api, cli)
    assert len(started["user_code"]) == 9 and started["user_code"][4] == "-", started["user_code"]
    assert started["user_code"].replace("-", "").isalnum()
    assert started["user_code"] == started["user_code"].upper()


@pytest.mark.parametrize(
    "as_typed",
    [
        lambda code: code,  # as the device shows it, with the dash
        lambda code: code.replace("-", ""),
        lambda code: code.lower(),
        lambda code: f"  {code[:2]} {code[2:4]}  {code[5:]} ",
        lambda code: code.replace("-", "\u2013"),  # a phone keyboard's en dash
        lambda code: code.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789ABCDEFGHIJKLMNOPQRSTUV-"}),
    ],
    ids=["as-shown", "no-dash", "lower-case", "spaces", "en-dash", "full-width"],
)
def test_rfc8628_6_1_the_code_is_accepted_however_it_is_typed(browser, api, cli, as_typed):
    started = start(api, cli)

    confirm_url = enter_code(browser, as_typed(started["user_code"]))

    canonical = started["user_code"].replace("-", "")
    assert confirm_url == f"/o/device-confirm/{cli.client_id}/{canonical}"
    assert browser.get(confirm_url).status_code == 200
    assert browser.post(confirm_url, {"decision": "allow"}).status_code == 302
    assert status_of(started) == "authorized"


def test_a_wrong_code_in_any_form_is_refused(browser, api, cli):
    started = start(api, cli)
    wrong = started["user_code"][:-1] + ("0" if started["user_code"][-1] != "0" else "1")
    for typed in (wrong, wrong.lower(), "----", "   "):
        response = browser.post("/o/device/", {"user_code": typed})
        assert response.status_code == 200, typed
        assert response.context["form"].errors["user_code"], typed
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user is None


def test_code_field_is_large_labelled_and_typed_for_a_code(browser):
    html = browser.get("/o/device/").content.decode()
    field = re.search(r"<input[^>]*name=\"user_code\"[^>]*>", html).group(0)
    for attribute in (
        'id="id_user_code"',
        'class="user-code"',
        'autocomplete="one-time-code"',
        'inputmode="text"',
        'autocapitalize="characters"',
        'spellcheck="false"',
        "autofocus",
        "required",
        'aria-describedby="user-code-hint"',
    ):
        assert attribute in field, attribute
    assert '<label for="id_user_code">Code</label>' in html
    assert 'id="user-code-hint"' in html
    assert re.search(r"input\.user-code \{[^}]*monospace", html)


def test_a_wrong_code_marks_the_field_invalid(browser):
    html = browser.post("/o/device/", {"user_code": "WRONG000"}).content.decode()
    field = re.search(r"<input[^>]*name=\"user_code\"[^>]*>", html).group(0)
    assert 'aria-invalid="true"' in field
    assert 'aria-describedby="user-code-hint user-code-error"' in field
    assert 'id="user-code-error"' in html


@pytest.mark.parametrize("in_link", ["frrt-e0tk", "FRRTE0TK", " frrt e0tk "])
def test_a_code_from_a_link_is_shown_as_the_device_shows_it(browser, in_link):
    page = browser.get("/o/device/?" + urlencode({"user_code": in_link}))
    assert code_field_value(page) == "FRRT-E0TK"


def test_rfc8628_5_4_a_code_from_a_link_waits_for_the_user(browser, api, cli):
    started = start(api, cli)
    html = browser.get(path_of(started["verification_uri_complete"])).content.decode()
    # No script and no auto-submitting markup: only the user's Continue submits the form.
    assert "<script" not in html.lower()
    assert 'http-equiv="refresh"' not in html.lower()
    assert html.count("<form") == 1 + html.count('class="sign-out"')
    assert DeviceGrant.objects.get(device_code=stored(started["device_code"])).user is None


BAD_CODES = [
    "",
    "\x00",
    "ABCD\x00EFGH",
    "x" * 100_000,
    "🙂🙂🙂🙂-🙂🙂🙂🙂",
    "ß" * 50,
    "ＡＢＣＤ－ＥＦＧＨ",
    "../../etc/passwd",
    "h1$" + "0" * 64,
    '"><script>alert(1)</script>',
    "%00",
    "a/b?c#d",
]


@pytest.mark.parametrize("code", BAD_CODES, ids=range(len(BAD_CODES)))
def test_bad_codes_never_500(browser, code):
    # A wrong code gets the form again; a NUL byte the app's hardening's 400.
    entered = browser.post("/o/device/", {"user_code": code})
    assert entered.status_code in (200, 400), entered.status_code
    assert "<script>alert(1)</script>" not in entered.content.decode()
    shown = browser.get("/o/device/?" + urlencode({"user_code": code}))
    assert shown.status_code in (200, 400), shown.status_code
    assert "<script>alert(1)</script>" not in shown.content.decode()


@pytest.mark.parametrize("raw", ["%ED%A0%80", "%FF%FE", "%C0%AF"], ids=["surrogate", "not-utf8", "overlong"])
def test_undecodable_codes_never_500(browser, raw):
    entered = browser.post("/o/device/", f"user_code={raw}", content_type="application/x-www-form-urlencoded")
    assert entered.status_code == 200, entered.status_code
    assert browser.get(f"/o/device/?user_code={raw}").status_code == 200


def test_a_code_posted_twice_or_not_at_all_never_500(browser):
    assert browser.post("/o/device/", {"user_code": ["ABCD-EFGH", "WXYZ-0000"]}).status_code == 200
    assert browser.post("/o/device/", {}).status_code == 200
    assert browser.get("/o/device/?user_code=A&user_code=B").status_code == 200
    assert browser.get("/o/device-confirm/deploy-cli/not-a-code").status_code == 404
