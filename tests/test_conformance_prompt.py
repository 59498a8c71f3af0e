"""OpenID conformance modules about ``prompt=none``, reproduced against the real endpoints.

Each test is named after the module of the OpenID Foundation's conformance suite
(oidcc-basic-certification-test-plan) it reproduces and asserts what that module
checks, through Django's test client: the authorization response (where it goes,
``error``, ``state``, RFC 9207 ``iss``), then the code exchange and the ID token
(signature against discovery's JWKS, OIDC Core 3.1.3.7 claims).
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from joserfc import jwt
from joserfc.jwk import KeySet
from oauth2_provider.models import get_grant_model

from offline_access import OFFLINE_ACCESS_SCOPE

from .oauth import authorize_url, exchange_code, get_code

Grant = get_grant_model()


@pytest.fixture(params=["without LoginRequiredMiddleware", "with LoginRequiredMiddleware"])
def site(request):
    """The example site as it ships, and with Django's LoginRequiredMiddleware (5.1+)."""
    if request.param == "with LoginRequiredMiddleware":
        request.getfixturevalue("login_required_middleware")


def discovery(client: Client) -> dict:
    response = client.get("/o/.well-known/openid-configuration")
    assert response.status_code == 200
    return response.json()


def authorization_response(response, redirect_uri: str) -> dict[str, str]:
    """The parameters of a code-flow authorization response: a redirect to the client, in the query."""
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri, response["Location"]
    assert not location.fragment
    params = parse_qs(location.query)
    assert all(len(values) == 1 for values in params.values()), params
    return {name: values[0] for name, values in params.items()}


def verified_id_token(client: Client, id_token: str, application, nonce: str) -> dict:
    """The ID token's claims, checked as the conformance suite and OIDC Core 3.1.3.7 require."""
    metadata = discovery(client)
    keys = KeySet.import_key_set(client.get("/o/.well-known/jwks.json").json())
    token = jwt.decode(id_token, keys, algorithms=metadata["id_token_signing_alg_values_supported"])
    claims = token.claims
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": metadata["issuer"]},
        aud={"essential": True, "value": application.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    ).validate(claims)
    now = timezone.now().timestamp()
    assert claims["iat"] <= now + 5
    assert claims["exp"] > now
    if isinstance(claims["aud"], list) and len(claims["aud"]) > 1 or "azp" in claims:
        assert claims["azp"] == application.client_id
    return claims


def test_oidcc_prompt_none_not_logged_in(site, application):
    """oidcc-prompt-none-not-logged-in: no session, prompt=none: login_required at the client."""
    client = Client()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    url = authorize_url(application, scope="openid", prompt="none", state=state, nonce=nonce)

    params = authorization_response(client.get(url), application.redirect_uris)

    assert params["error"] == "login_required"
    assert params["state"] == state
    assert params["iss"] == discovery(client)["issuer"]
    assert not {"code", "id_token", "access_token"} & set(params)
    assert not Grant.objects.exists()


@pytest.fixture(params=["remembered approval", "first-party client"])
def prior_approval(request, application, dot_settings):
    """How the site knows the user approved this client before (DOT's two mechanisms).

    A remembered approval is DOT's ``REQUEST_APPROVAL_PROMPT = "auto"``: a live access
    token for the same scopes. A first-party client has ``skip_authorization``. With
    DOT's default ("force") the app answers ``prompt=none`` with ``consent_required``.
    """
    if request.param == "remembered approval":
        dot_settings(REQUEST_APPROVAL_PROMPT="auto")
    else:
        application.skip_authorization = True
        application.save()
    return request.param


def test_oidcc_prompt_none_logged_in(site, prior_approval, browser, application):
    """oidcc-prompt-none-logged-in: after a first login and approval, prompt=none gets a code, no page.

    The second request asks for offline_access too: with no enduring consent,
    prompt=none cannot grant it (SPEC P4), so the token response has no refresh token.
    """
    back_end = Client()
    first_nonce = secrets.token_urlsafe(8)
    first = exchange_code(
        back_end, application, get_code(browser, application, scope="openid", nonce=first_nonce)
    )
    assert first.status_code == 200, first.content
    first_claims = verified_id_token(back_end, first.json()["id_token"], application, first_nonce)

    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    url = authorize_url(
        application, scope=f"openid {OFFLINE_ACCESS_SCOPE}", prompt="none", state=state, nonce=nonce
    )
    params = authorization_response(browser.get(url), application.redirect_uris)  # no page in between
    assert "error" not in params, params
    assert params["state"] == state
    assert params["iss"] == discovery(back_end)["issuer"]

    response = exchange_code(back_end, application, params["code"])
    assert response.status_code == 200, response.content
    body = response.json()
    claims = verified_id_token(back_end, body["id_token"], application, nonce)
    assert claims["sub"] == first_claims["sub"]
    if "auth_time" in first_claims and "auth_time" in claims:
        assert claims["auth_time"] == first_claims["auth_time"]  # the user did not log in again
    assert "refresh_token" not in body
    assert OFFLINE_ACCESS_SCOPE not in body["scope"].split()
