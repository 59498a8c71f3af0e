"""Authentication time: ``auth_time``, ``max_age``, ``prompt=login`` and ID tokens on refresh.

Named after the OpenID conformance modules they reproduce (OIDC Core 1.0 3.1.2.1,
3.1.2.3, 2 ``auth_time``, 12.2), each against the real endpoints of the example site:

- ``oidcc-max-age-1``: a session older than ``max_age`` logs in again, and the ID
  token's ``auth_time`` is that new login;
- ``oidcc-max-age-10000``: a fresh enough session passes and keeps its ``auth_time``;
- ``oidcc-prompt-login``: the user really logs in again, once, and ``auth_time`` moves;
- ``oidcc-refresh-token``: an ID token from a refresh has the first one's ``iss``,
  ``sub``, ``aud``, ``azp`` and ``auth_time``, a new ``iat``, a valid signature;
  the new refresh token works and the used one dies after the grace period.

"Waiting" is time travel: the session's recorded authentication time is set back.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk, jwt
from oauth2_provider.models import get_device_grant_model, get_grant_model, get_refresh_token_model
from oauth2_provider.settings import oauth2_settings

from offline_access.authentication import SESSION_AUTH_TIME, SESSION_REAUTH
from offline_access.models import GrantAuthentication, OfflineTokenFamily

from . import factories
from .oauth import (
    authorize_url,
    exchange_code,
    redirect_params,
    refresh,
    stored,
    stored_checksum,
    submit_consent,
)

Grant = get_grant_model()
RefreshToken = get_refresh_token_model()
DeviceGrant = get_device_grant_model()
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


# Helpers ---------------------------------------------------------------------------


def set_session_auth_time(client: Client, seconds_ago: float) -> int:
    """Time travel: this browser session authenticated ``seconds_ago``; returns that time (int)."""
    session = client.session
    when = time.time() - seconds_ago
    session[SESSION_AUTH_TIME] = when
    session.save()
    return int(when)


def age_session(client: Client, seconds: float) -> None:
    """Time travel for everything the session remembers: ``seconds`` pass before the next request."""
    session = client.session
    session[SESSION_AUTH_TIME] -= seconds
    markers = session.get(SESSION_REAUTH, {})
    session[SESSION_REAUTH] = {key: when - seconds for key, when in markers.items()}
    session.save()


def drop_session_auth_time(client: Client) -> None:
    """A session logged in before the upgrade: no authentication time recorded."""
    session = client.session
    session.pop(SESSION_AUTH_TIME, None)
    session.save()


def login_redirect(response) -> str:
    """The ``next`` URL of a redirect to the login page (asserting that it is one)."""
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = urlparse(response["Location"])
    assert location.path == "/accounts/login/", response["Location"]
    return parse_qs(location.query)["next"][0]


def log_in_with_form(client: Client, next_url: str) -> None:
    """The user types the password on the login form (a real authentication)."""
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": factories.PASSWORD, "next": next_url}
    )
    assert response.status_code == 302, response.content[:300]
    assert response["Location"] == next_url


def finish_authorization(client: Client, url: str, response=None) -> str:
    """From an authorization request (or its first answer) to the code, approving a screen."""
    response = response if response is not None else client.get(url)
    if response.status_code == 200:
        response = submit_consent(client, url, response)
    params = redirect_params(response)
    assert "code" in params, params
    return params["code"]


def tokens_for(client: Client, application, code: str) -> dict:
    response = exchange_code(Client(), application, code)
    assert response.status_code == 200, response.content
    return response.json()


def jwks(client: Client) -> jwk.JWKSet:
    response = client.get("/o/.well-known/jwks.json")
    assert response.status_code == 200
    return jwk.JWKSet.from_json(response.content)


def verified_claims(id_token: str) -> dict:
    """The claims of an ID token whose RS256 signature verifies against the published JWKS."""
    token = jwt.JWT(jwt=id_token, key=jwks(Client()), algs=["RS256"])
    return json.loads(token.claims)


def claims_after(client: Client, application, url: str, response=None) -> dict:
    """Finish the authorization request at ``url``; the verified claims of the code's ID token."""
    code = finish_authorization(client, url, response)
    return verified_claims(tokens_for(client, application, code)["id_token"])


def id_token_of(client: Client, application, scope="openid", **params) -> dict:
    return claims_after(client, application, authorize_url(application, scope=scope, **params))


def later_iat(monkeypatch, seconds: int) -> None:
    """Time travel for oauthlib's ``iat`` (``int(time.time())`` in its OpenID grant base)."""
    real_time = time.time
    monkeypatch.setattr(
        "oauthlib.openid.connect.core.grant_types.base.time",
        SimpleNamespace(time=lambda: real_time() + seconds),
    )


# oidcc-max-age-1 -------------------------------------------------------------------


def test_oidcc_max_age_1(browser, application):
    first = id_token_of(browser, application)
    assert "auth_time" in first
    set_session_auth_time(browser, 5)  # "wait" more than max_age

    url = authorize_url(application, scope="openid", max_age="1", state="after-wait")
    next_url = login_redirect(browser.get(url))
    assert parse_qs(urlparse(next_url).query)["max_age"] == ["1"]  # the request goes on unchanged
    before_login = int(time.time())
    log_in_with_form(browser, next_url)
    claims = claims_after(browser, application, next_url)

    # OIDC Core 3.1.2.1: auth_time is REQUIRED when max_age was requested.
    assert claims["auth_time"] >= before_login
    assert claims["auth_time"] > first["auth_time"] - 5
    assert claims["auth_time"] > int(time.time()) - 5 - 1  # the new login, not the old session
    assert claims["iat"] - claims["auth_time"] <= 1 + 1  # within max_age (1 s of clock rounding)


def test_max_age_returns_once_to_the_request_without_a_second_login(browser, application):
    set_session_auth_time(browser, 120)
    url = authorize_url(application, scope="openid", max_age="60")
    next_url = login_redirect(browser.get(url))
    log_in_with_form(browser, next_url)
    screen = browser.get(next_url)
    assert screen.status_code == 200  # the consent screen, not the login page again
    assert "code" in redirect_params(submit_consent(browser, next_url, screen))


def test_max_age_0_logs_in_again_then_continues(browser, application):
    """max_age=0 is prompt=login (OIDC Core 3.1.2.1): no loop, whatever time the login took."""
    url = authorize_url(application, scope="openid", max_age="0")
    next_url = login_redirect(browser.get(url))
    assert parse_qs(urlparse(next_url).query)["max_age"] == ["0"]
    log_in_with_form(browser, next_url)
    age_session(browser, 3)  # the way back took longer than max_age: still this login counts
    code = finish_authorization(browser, next_url)
    assert "auth_time" in verified_claims(tokens_for(browser, application, code)["id_token"])


def test_max_age_0_for_an_anonymous_user_needs_one_login(api, application, user):
    url = authorize_url(application, scope="openid", max_age="0")
    next_url = login_redirect(api.get(url))
    log_in_with_form(api, next_url)
    age_session(api, 2)
    screen = api.get(next_url)
    assert screen.status_code == 200, screen.get("Location")


def test_max_age_returning_without_logging_in_gets_login_required(browser, application):
    """Back from the login page without authenticating: the request does not pass."""
    set_session_auth_time(browser, 120)
    url = authorize_url(application, scope="openid", max_age="60")
    next_url = login_redirect(browser.get(url))
    params = redirect_params(browser.get(next_url))
    assert params["error"] == "login_required"
    assert params["state"] == "state-123"
    assert not Grant.objects.exists()


def test_max_age_with_prompt_none_and_an_old_session_is_login_required(browser, application):
    application.skip_authorization = True
    application.save()
    set_session_auth_time(browser, 120)
    response = browser.get(authorize_url(application, scope="openid", max_age="60", prompt="none"))
    params = redirect_params(response)
    assert params["error"] == "login_required"
    assert params["state"] == "state-123"
    assert not Grant.objects.exists()


def test_max_age_with_prompt_none_and_a_fresh_session_issues_a_code(browser, application):
    application.skip_authorization = True
    application.save()
    auth_time = set_session_auth_time(browser, 10)
    response = browser.get(authorize_url(application, scope="openid", max_age="60", prompt="none"))
    code = redirect_params(response)["code"]
    assert verified_claims(tokens_for(browser, application, code)["id_token"])["auth_time"] == auth_time


@pytest.mark.parametrize("max_age", ["abc", "-1", "1.5", "+5", " 5", "0x10", "1e3"])
def test_malformed_max_age_is_invalid_request_to_the_client(browser, application, max_age):
    response = browser.get(authorize_url(application, scope="openid", max_age=max_age))
    params = redirect_params(response)
    assert response["Location"].startswith(application.redirect_uris.split()[0])
    assert params["error"] == "invalid_request"
    assert "max_age" in params["error_description"]
    assert params["state"] == "state-123"
    assert not Grant.objects.exists()


def test_repeated_max_age_is_invalid_request(browser, application):
    url = authorize_url(application, scope="openid") + "&" + urlencode([("max_age", "5"), ("max_age", "6")])
    params = redirect_params(browser.get(url))
    assert params["error"] == "invalid_request"


def test_empty_max_age_is_absent(browser, application):
    """RFC 6749 3.1: a parameter sent without a value is treated as omitted."""
    set_session_auth_time(browser, 10**6)
    assert browser.get(authorize_url(application, scope="openid", max_age="")).status_code == 200


def test_huge_max_age_is_not_an_error(browser, application):
    set_session_auth_time(browser, 10**6)
    response = browser.get(authorize_url(application, scope="openid", max_age="9" * 40))
    assert response.status_code == 200


def test_session_without_recorded_auth_time_logs_in_again_for_max_age(browser, application):
    """A session from before the upgrade: its authentication time is unknown, so too old."""
    drop_session_auth_time(browser)
    login_redirect(browser.get(authorize_url(application, scope="openid", max_age="10000")))


def test_session_without_recorded_auth_time_gets_last_login_without_max_age(browser, application, user):
    drop_session_auth_time(browser)
    user.refresh_from_db()
    claims = id_token_of(browser, application)
    assert claims["auth_time"] == int(user.last_login.timestamp())


# oidcc-max-age-10000 ---------------------------------------------------------------


def test_oidcc_max_age_10000(browser, application):
    auth_time = set_session_auth_time(browser, 600)
    first = id_token_of(browser, application)
    assert first["auth_time"] == auth_time

    url = authorize_url(application, scope="openid", max_age="10000", state="second")
    response = browser.get(url)
    assert response.status_code == 200  # no login: the consent screen
    claims = claims_after(browser, application, url, response)
    assert claims["auth_time"] == first["auth_time"] == auth_time


# oidcc-prompt-login ----------------------------------------------------------------


def test_oidcc_prompt_login(browser, application):
    set_session_auth_time(browser, 60)
    first = id_token_of(browser, application)

    url = authorize_url(application, scope="openid", prompt="login", state="again")
    next_url = login_redirect(browser.get(url))  # logged in, and still asked to log in
    assert "prompt" not in parse_qs(urlparse(next_url).query)
    log_in_with_form(browser, next_url)
    response = browser.get(next_url)
    assert response.status_code == 200  # once: the consent screen now, not the login page
    claims = claims_after(browser, application, next_url, response)

    assert claims["auth_time"] > first["auth_time"]
    assert claims["sub"] == first["sub"]


def test_prompt_login_returning_without_logging_in_gets_login_required(browser, application):
    """A logged-in user must authenticate again, not just follow the ``next`` link."""
    set_session_auth_time(browser, 60)
    next_url = login_redirect(browser.get(authorize_url(application, scope="openid", prompt="login")))
    params = redirect_params(browser.get(next_url))
    assert params["error"] == "login_required"
    assert not Grant.objects.exists()


def test_prompt_login_consent_keeps_consent_and_moves_auth_time(browser, application):
    set_session_auth_time(browser, 60)
    url = authorize_url(application, prompt="login consent")
    next_url = login_redirect(browser.get(url))
    assert parse_qs(urlparse(next_url).query)["prompt"] == ["consent"]
    before_login = int(time.time())
    log_in_with_form(browser, next_url)
    tokens = tokens_for(browser, application, finish_authorization(browser, next_url))
    assert "refresh_token" in tokens
    assert verified_claims(tokens["id_token"])["auth_time"] >= before_login


# The auth time travels with the code and the token family ---------------------------


def test_code_carries_the_auth_time_it_was_issued_with(browser, application):
    auth_time = set_session_auth_time(browser, 300)
    code = finish_authorization(browser, authorize_url(application, scope="openid"))
    set_session_auth_time(browser, 1)  # the session logs in again before the exchange
    assert verified_claims(tokens_for(browser, application, code)["id_token"])["auth_time"] == auth_time


def test_auth_time_is_this_sessions_not_last_login_moved_by_another_device(browser, application, user):
    auth_time = set_session_auth_time(browser, 300)
    phone = Client()
    log_in_with_form(phone, "/")  # last_login moves to now
    user.refresh_from_db()
    assert int(user.last_login.timestamp()) > auth_time
    assert id_token_of(browser, application)["auth_time"] == auth_time


def test_auth_time_row_is_written_with_the_code_and_pruned_when_expired(browser, application):
    finish_authorization(browser, authorize_url(application, scope="openid"))
    row = GrantAuthentication.objects.get()
    assert row.code == Grant.objects.get().code  # keyed by the code's stored hash, never the code
    GrantAuthentication.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    finish_authorization(browser, authorize_url(application, scope="openid", state="two"))
    assert GrantAuthentication.objects.count() == 1
    assert GrantAuthentication.objects.get().pk != row.pk


# oidcc-refresh-token ---------------------------------------------------------------


def offline_tokens(browser, application) -> dict:
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    return tokens_for(browser, application, finish_authorization(browser, url))


def test_oidcc_refresh_token(browser, application, monkeypatch):
    set_session_auth_time(browser, 120)
    tokens = offline_tokens(browser, application)
    first = verified_claims(tokens["id_token"])

    later_iat(monkeypatch, 5)
    refreshed = refresh(Client(), application, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    body = refreshed.json()
    assert "id_token" in body  # openid is in the scope: OIDC Core 12.2
    claims = verified_claims(body["id_token"])

    for claim in ("iss", "sub", "aud", "auth_time"):
        assert claims[claim] == first[claim], claim
    assert claims.get("azp") == first.get("azp")
    assert claims["iat"] > first["iat"]
    assert claims["jti"] != first["jti"]
    assert "nonce" not in claims or claims["nonce"] == first["nonce"]

    # The refreshed refresh token works...
    again = refresh(Client(), application, body["refresh_token"])
    assert again.status_code == 200, again.content
    assert verified_claims(again.json()["id_token"])["auth_time"] == first["auth_time"]

    # ...and the used one is refused once the grace period is over (before it, a retry
    # gets the pair it was rotated into: see test_token_storage's grace-period tests).
    grace = oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS
    RefreshToken.objects.filter(token_checksum=stored_checksum(tokens["refresh_token"])).update(
        revoked=timezone.now() - timedelta(seconds=grace + 1)
    )
    replay = refresh(Client(), application, tokens["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_refresh_with_basic_auth_keeps_aud(browser, application):
    tokens = offline_tokens(browser, application)
    import base64

    basic = base64.b64encode(f"{application.client_id}:{factories.CLIENT_SECRET}".encode()).decode()
    response = Client().post(
        "/o/token/",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )
    assert response.status_code == 200, response.content
    assert verified_claims(response.json()["id_token"])["aud"] == verified_claims(tokens["id_token"])["aud"]


def test_refreshed_id_token_keeps_auth_time_after_a_login_elsewhere(browser, application, user):
    auth_time = set_session_auth_time(browser, 300)
    tokens = offline_tokens(browser, application)
    assert verified_claims(tokens["id_token"])["auth_time"] == auth_time

    phone = Client()
    log_in_with_form(phone, "/")  # another device: last_login moves
    user.refresh_from_db()
    assert int(user.last_login.timestamp()) > auth_time

    refreshed = refresh(Client(), application, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    assert verified_claims(refreshed.json()["id_token"])["auth_time"] == auth_time
    assert OfflineTokenFamily.objects.get().auth_time.timestamp() == pytest.approx(auth_time, abs=1)


def test_refresh_without_openid_has_no_id_token(browser, application):
    tokens = offline_tokens(browser, application)
    refreshed = refresh(Client(), application, tokens["refresh_token"], scope="offline_access")
    assert refreshed.status_code == 200, refreshed.content
    assert "id_token" not in refreshed.json()


def test_family_from_before_the_upgrade_keeps_a_fixed_auth_time(browser, application, user):
    """No auth time stored: the earlier of last_login and the family's start, fixed from then on."""
    tokens = offline_tokens(browser, application)
    family = OfflineTokenFamily.objects.get()
    OfflineTokenFamily.objects.update(auth_time=None)
    user.refresh_from_db()
    expected = int(min(user.last_login, family.created_at).timestamp())

    body = refresh(Client(), application, tokens["refresh_token"]).json()
    assert verified_claims(body["id_token"])["auth_time"] == expected

    log_in_with_form(Client(), "/")  # last_login moves past the family's start
    body = refresh(Client(), application, body["refresh_token"]).json()
    assert verified_claims(body["id_token"])["auth_time"] == int(family.created_at.timestamp())


# Device grant: the auth time of the session that approved -----------------------------


def test_device_family_carries_the_approving_sessions_auth_time(browser, api, cli):
    auth_time = set_session_auth_time(browser, 400)
    started = api.post(
        "/o/device-authorization/",
        urlencode({"client_id": cli.client_id, "scope": "openid offline_access"}),
        content_type="application/x-www-form-urlencoded",
    ).json()
    confirm = browser.post("/o/device/", {"user_code": started["user_code"]})["Location"]
    assert browser.get(confirm).status_code == 200
    assert browser.post(confirm, {"decision": "allow"}).status_code == 302
    assert GrantAuthentication.objects.get().code == DeviceGrant.objects.get().device_code
    assert GrantAuthentication.objects.get().code == stored(started["device_code"])

    DeviceGrant.objects.update(last_checked=timezone.now() - timedelta(seconds=60))
    tokens = api.post(
        "/o/token/",
        urlencode(
            {
                "grant_type": DEVICE_CODE_GRANT,
                "device_code": started["device_code"],
                "client_id": cli.client_id,
            }
        ),
        content_type="application/x-www-form-urlencoded",
    ).json()
    assert "refresh_token" in tokens, tokens
    assert int(OfflineTokenFamily.objects.get().auth_time.timestamp()) == auth_time
    refreshed = refresh(Client(), cli, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    assert verified_claims(refreshed.json()["id_token"])["auth_time"] == auth_time
