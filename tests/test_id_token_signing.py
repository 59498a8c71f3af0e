"""Clients the server cannot sign ID tokens for never get ``openid``, and never a 500.

A DOT Application registered with "No OIDC support" (``algorithm = ""``), or whose
key DOT cannot use (HS256 with a hashed or empty secret), cannot be given an ID
token: DOT raises while signing one, and the token endpoint answered 500 for
such a client granted ``openid`` (code exchange, refresh, hybrid and implicit
responses at the authorization endpoint).

The rule (``offline_access.policy.scopes_for_client``): ``openid`` is not a scope
such a client can have, because OIDC Core 3.1.3.3 makes the ID token a required
part of the answer to an ``openid`` request.

- Asked for (authorization request, device authorization, password and client
  credentials grants): ``invalid_scope`` (RFC 6749 4.1.2.1, 5.2), as for any other
  scope the client may not have; nothing is issued and the developer learns why.
  A site's default scopes lose ``openid`` for it instead (the client asked for nothing).
- Already granted (a code, an approved device code or a refresh token family from
  before the client's registration was changed): the token endpoint answers as
  OAuth 2.0 does, without ``openid`` in the granted ``scope`` and without an ID
  token (RFC 6749 3.3 and 5.1: the server may grant less and says so in
  ``scope``; OIDC Core 12.2 allows a refresh answer without an ID token). The
  user's approval is kept for everything else, ``offline_access`` included.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_grant_model

from . import factories
from .oauth import authorize_url, exchange_code, get_code, refresh, submit_consent
from .test_device import approve, form_post, poll, start
from .test_rfc9207_iss import response_params

pytestmark = [
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 implicit grant:DeprecationWarning"),
]


@pytest.fixture
def no_oidc(db):
    """A confidential web client registered with "No OIDC support"."""
    return factories.ApplicationFactory(name="Plain OAuth", client_id="plain-oauth", algorithm="")


def userinfo_status(api: Client, access_token: str) -> int:
    return api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}").status_code


def final_answer(browser: Client, url: str):
    response = browser.get(url)
    if response.status_code == 200:
        response = submit_consent(browser, url, response)
    return response


def tokens(browser, api, application, scope="openid offline_access") -> dict:
    code = get_code(browser, application, scope=scope, prompt="consent")
    response = exchange_code(api, application, code)
    assert response.status_code == 200, response.content[:300]
    return response.json()


def no_longer_signs(application) -> None:
    """An administrator changes the client to "No OIDC support"."""
    application.algorithm = ""
    application.save()


# Asking for openid: invalid_scope ------------------------------------------------------------


def test_code_flow_openid_for_a_client_without_an_algorithm_is_invalid_scope(browser, api, no_oidc):
    api.raise_request_exception = False
    browser.raise_request_exception = False
    response = final_answer(browser, authorize_url(no_oidc, scope="openid offline_access", prompt="consent"))
    if "code" in parse_qs(urlsplit(response["Location"]).query):
        code = parse_qs(urlsplit(response["Location"]).query)["code"][0]
        exchanged = exchange_code(api, no_oidc, code)
        assert exchanged.status_code != 500, "the token endpoint answered 500"
    params = response_params(response)
    assert params["error"] == ["invalid_scope"]
    assert params["state"] == ["state-123"]
    assert not get_grant_model().objects.exists()


def test_code_flow_without_openid_still_works_for_such_a_client(browser, api, no_oidc):
    body = tokens(browser, api, no_oidc, scope="offline_access read")
    assert "id_token" not in body
    assert set(body["scope"].split()) == {"offline_access", "read"}
    assert "refresh_token" in body


def test_default_scopes_lose_openid_for_such_a_client(browser, api, no_oidc, dot_settings):
    dot_settings(DEFAULT_SCOPES=["openid", "read"])
    url = authorize_url(no_oidc, scope=None)
    params = response_params(final_answer(browser, url))
    assert "code" in params, params
    body = exchange_code(api, no_oidc, params["code"][0]).json()
    assert body["scope"] == "read"
    assert "id_token" not in body


@pytest.mark.parametrize(
    ("grant_type", "response_type"),
    [("openid-hybrid", "code id_token"), ("openid-hybrid", "code token"), ("implicit", "id_token token")],
)
def test_front_channel_openid_for_such_a_client_is_invalid_scope(browser, db, grant_type, response_type):
    application = factories.ApplicationFactory(authorization_grant_type=grant_type, algorithm="")
    browser.raise_request_exception = False
    extra = {"code_challenge": None, "code_challenge_method": None} if grant_type == "implicit" else {}
    url = authorize_url(application, scope="openid", response_type=response_type, **extra)
    response = final_answer(browser, url)
    assert response.status_code != 500, "the authorization endpoint answered 500"
    params = response_params(response, in_fragment=True)
    assert params["error"] == ["invalid_scope"]
    assert not get_access_token_model().objects.exists()


def test_hs256_client_with_a_hashed_secret_is_treated_alike(browser, api, db):
    """DOT cannot sign with a hashed secret (it refuses it in clean(), not on save)."""
    application = factories.ApplicationFactory(algorithm="HS256", hash_client_secret=True)
    browser.raise_request_exception = False
    api.raise_request_exception = False
    response = final_answer(browser, authorize_url(application, scope="openid", prompt="consent"))
    query = parse_qs(urlsplit(response["Location"]).query)
    if "code" in query:
        assert exchange_code(api, application, query["code"][0]).status_code != 500
    assert response_params(response)["error"] == ["invalid_scope"]


def test_device_authorization_asking_openid_for_such_a_client_is_invalid_scope(api, cli):
    no_longer_signs(cli)
    response = form_post(api, "/o/device-authorization/", {"client_id": cli.client_id, "scope": "openid"})
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_scope"


def test_client_credentials_asking_openid_for_such_a_client_is_invalid_scope(api, db):
    application = factories.ApplicationFactory(authorization_grant_type="client-credentials", algorithm="")
    data = {"grant_type": "client_credentials", "scope": "openid read"}
    data.update(client_id=application.client_id, client_secret=factories.CLIENT_SECRET)
    response = api.post("/o/token/", data)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_scope"


# Granted before the registration changed: OAuth 2.0 answers, never a 500 ---------------------


def test_code_exchanged_after_the_client_lost_its_algorithm(browser, api, application):
    code = get_code(browser, application, scope="openid offline_access", prompt="consent")
    no_longer_signs(application)
    api.raise_request_exception = False
    response = exchange_code(api, application, code)
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert "id_token" not in body
    assert body["scope"] == "offline_access"  # RFC 6749 5.1: says what was granted
    assert "refresh_token" in body
    assert userinfo_status(api, body["access_token"]) == 401  # no openid, no userinfo


def test_refresh_after_the_client_lost_its_algorithm(browser, api, application):
    first = tokens(browser, api, application)
    assert "id_token" in first
    no_longer_signs(application)
    api.raise_request_exception = False
    response = refresh(api, application, first["refresh_token"])
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert "id_token" not in body  # OIDC Core 12.2: a refresh answer may carry none
    assert body["scope"] == "offline_access"
    second = refresh(api, application, body["refresh_token"])  # offline access goes on
    assert second.status_code == 200, second.content[:300]


def test_refresh_asking_openid_again_after_the_client_lost_its_algorithm(browser, api, application):
    first = tokens(browser, api, application)
    no_longer_signs(application)
    api.raise_request_exception = False
    response = refresh(api, application, first["refresh_token"], scope="openid offline_access")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"] == "invalid_scope"


def test_device_poll_after_the_client_lost_its_algorithm(api, browser, cli):
    started = start(api, cli, scope="openid offline_access")
    approve(browser, started)
    no_longer_signs(cli)
    api.raise_request_exception = False
    response = poll(api, cli, started["device_code"])
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert "id_token" not in body
    assert body["scope"] == "offline_access"
    refreshed = refresh(api, cli, body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content[:300]
    assert "id_token" not in refreshed.json()


def test_clients_that_sign_still_get_their_id_tokens(browser, api, application, cli):
    body = tokens(browser, api, application)
    assert "id_token" in body and "openid" in body["scope"].split()
    refreshed = refresh(api, application, body["refresh_token"]).json()
    assert "id_token" in refreshed and "openid" in refreshed["scope"].split()
