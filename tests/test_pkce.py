"""PKCE: S256 only (RFC 7636 section 4.2, RFC 9700 section 2.1.1).

``plain`` sends the verifier itself as the challenge, so anyone who sees the
authorization request can redeem a stolen code. The app refuses it whatever
DOT's own ``COMPLIANT_BCP_RFC9700_PKCE_METHOD`` says, and so does a request
with a challenge but no method, which RFC 7636 section 4.3 reads as ``plain``.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.test import override_settings
from oauth2_provider.models import get_grant_model

from .oauth import VERIFIER, authorize_url, exchange_code, get_code, redirect_params, stored, submit_consent

Grant = get_grant_model()


def assert_invalid_request_redirect(response, application) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = urlparse(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == application.redirect_uris
    params = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert params["error"] == "invalid_request", params
    assert "code" not in params
    assert params["state"] == "state-123"
    return params


@pytest.mark.parametrize("prompt", [None, "consent"])
def test_plain_method_is_refused_before_any_page(browser, application, prompt):
    url = authorize_url(application, code_challenge=VERIFIER, code_challenge_method="plain", prompt=prompt)
    params = assert_invalid_request_redirect(browser.get(url), application)
    assert "S256" in params["error_description"]
    assert not Grant.objects.exists()


def test_challenge_without_method_means_plain_and_is_refused(browser, application):
    url = authorize_url(application, code_challenge=VERIFIER, code_challenge_method=None, prompt="consent")
    assert_invalid_request_redirect(browser.get(url), application)


def test_plain_is_refused_on_the_auto_approval_path(browser, db):
    from . import factories

    trusted = factories.ApplicationFactory(client_id="trusted", skip_authorization=True)
    url = authorize_url(trusted, code_challenge=VERIFIER, code_challenge_method="plain")
    assert_invalid_request_redirect(browser.get(url), trusted)
    assert not Grant.objects.exists()


def test_plain_is_refused_when_the_code_is_created(browser, user, application):
    """Defence in depth: a signed form carrying ``plain`` (from an older version) gets no code."""
    from offline_access.forms import sign_consent_request

    signed = sign_consent_request(
        {
            "user": user.pk,
            "scopes": ["openid"],
            "offline_via": None,
            "credentials": {
                "client_id": application.client_id,
                "redirect_uri": application.redirect_uris,
                "response_type": "code",
                "state": "state-123",
                "code_challenge": VERIFIER,
                "code_challenge_method": "plain",
            },
        }
    )
    url = authorize_url(application, prompt="consent")
    response = browser.post(url, {"request": signed, "decision": "allow"})
    assert not Grant.objects.exists()
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert "code=" not in response["Location"]


@override_settings(ROOT_URLCONF="tests.urls_dot_authorize")
def test_plain_is_refused_even_behind_dot_s_own_authorization_view(browser, application):
    """A site that mounts DOT's view still gets no code for ``plain``: the validator refuses it."""
    url = authorize_url(application, code_challenge=VERIFIER, code_challenge_method="plain")
    response = browser.post(
        url,
        {
            "client_id": application.client_id,
            "redirect_uri": application.redirect_uris,
            "response_type": "code",
            "scope": "openid",
            "state": "state-123",
            "code_challenge": VERIFIER,
            "code_challenge_method": "plain",
            "allow": "Authorize",
        },
    )
    assert not Grant.objects.exists()
    if response.status_code == 302:
        assert "code=" not in response["Location"]


def test_s256_still_works_end_to_end(browser, api, application):
    code = get_code(browser, application, prompt="consent")
    assert Grant.objects.get(code=stored(code)).code_challenge_method == "S256"
    assert "refresh_token" in exchange_code(api, application, code).json()


def test_s256_consent_round_trip(browser, application):
    url = authorize_url(application, prompt="consent")
    assert "code" in redirect_params(submit_consent(browser, url, browser.get(url)))


@pytest.mark.parametrize(
    "path", ["/o/.well-known/openid-configuration", "/o/.well-known/oauth-authorization-server"]
)
def test_discovery_advertises_s256_only(api, db, path):
    response = api.get(path)
    assert response.status_code == 200
    assert response.json()["code_challenge_methods_supported"] == ["S256"]
