"""RFC 9207: every authorization response to the client carries ``iss``, the issuer of discovery.

A client that talks to several servers compares ``iss`` with the issuer it sent the
user to (mix-up attacks, RFC 9700 4.4). Success and error alike, in the query for
``response_type=code`` and in the fragment for the implicit and hybrid response
types, which answer there (errors included: RFC 6749 4.2.2.1, OIDC Core 3.3.2.6).
The device grant has no authorization response. ``form_post`` is not supported: such a
request gets ``invalid_request`` in the response type's default place, with ``iss``
(tests/test_response_mode.py).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from . import factories
from .oauth import authorize_url, discovery_issuer, exchange_code, submit_consent

pytestmark = [
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 implicit grant:DeprecationWarning"),
]


def response_params(response, *, in_fragment: bool = False) -> dict[str, list[str]]:
    """The parameters of an authorization response, from where the client reads them.

    Fails unless it is a redirect to the client carrying exactly one ``iss`` there,
    and nothing of the response (``iss`` included) in the other component.
    """
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = urlsplit(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" in (
        "https://client.example/callback",
        "http://127.0.0.1/callback",
    ), response["Location"]
    here, there = (location.fragment, location.query) if in_fragment else (location.query, location.fragment)
    params = parse_qs(here)
    assert params.get("iss") == [discovery_issuer()], response["Location"]
    assert not {"iss", "error", "code", "state"} & set(parse_qs(there)), response["Location"]
    return params


def consent_then(browser: Client, url: str, decision: str = "allow"):
    screen = browser.get(url)
    assert screen.status_code == 200, (screen.status_code, screen.get("Location"))
    return submit_consent(browser, url, screen, decision)


# response_type=code: the query ----------------------------------------------------------------


def test_code_response_carries_iss(browser, api, application):
    params = response_params(consent_then(browser, authorize_url(application, prompt="consent")))
    assert params["state"] == ["state-123"]
    assert exchange_code(api, application, params["code"][0]).status_code == 200


def test_code_response_without_a_screen_carries_iss(browser, application):
    application.skip_authorization = True
    application.save()
    params = response_params(browser.get(authorize_url(application)))
    assert "code" in params


def test_deny_carries_iss(browser, application):
    params = response_params(consent_then(browser, authorize_url(application), decision="deny"))
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["state-123"]


def test_login_required_carries_iss(application):
    params = response_params(Client().get(authorize_url(application, prompt="none")))
    assert params["error"] == ["login_required"]
    assert params["state"] == ["state-123"]


def test_consent_required_carries_iss(browser, application):
    params = response_params(browser.get(authorize_url(application, prompt="none")))
    assert params["error"] == ["consent_required"]
    assert params["state"] == ["state-123"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"prompt": "bogus"}, "invalid_request"),
        ({"prompt": "none consent"}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),  # PKCE required
        ({"code_challenge_method": "plain"}, "invalid_request"),  # S256 only
        ({"scope": "openid no-such-scope"}, "invalid_scope"),
        ({"resource": "not-an-absolute-uri"}, "invalid_target"),
    ],
)
def test_error_responses_carry_iss(browser, application, params, error):
    answer = response_params(browser.get(authorize_url(application, **params)))
    assert answer["error"] == [error]
    assert answer["state"] == ["state-123"]


def test_untrusted_redirect_gets_the_page_and_no_iss_anywhere(browser, application):
    response = browser.get(authorize_url(application, redirect_uri="https://attacker.example/cb"))
    assert response.status_code == 400
    assert not response.has_header("Location")


def test_iss_of_dots_own_rfc9700_setting_is_not_repeated(browser, application, dot_settings):
    dot_settings(COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS=True)
    response = consent_then(browser, authorize_url(application))
    assert response["Location"].count("iss=") == 1
    response_params(response)


def test_iss_follows_the_configured_issuer(browser, application, dot_settings):
    dot_settings(OIDC_ISS_ENDPOINT="https://id.example.com/o")
    assert discovery_issuer() == "https://id.example.com/o"
    allowed = response_params(consent_then(browser, authorize_url(application)))
    assert "code" in allowed
    denied = response_params(consent_then(browser, authorize_url(application), decision="deny"))
    assert denied["error"] == ["access_denied"]


def test_iss_replaces_one_in_the_registered_redirect_uri(browser, db):
    application = factories.ApplicationFactory(
        client_id="with-query",
        redirect_uris="https://client.example/callback?tenant=7&iss=https://evil.example",
    )
    location = urlsplit(consent_then(browser, authorize_url(application))["Location"])
    params = parse_qs(location.query)
    assert params["tenant"] == ["7"]
    assert params["iss"] == [discovery_issuer()]
    assert "code" in params


# Implicit and hybrid: the fragment ----------------------------------------------------------------


@pytest.mark.parametrize("response_type", ["code id_token", "code token", "code id_token token"])
def test_hybrid_response_carries_iss_in_the_fragment(browser, api, hybrid_application, response_type):
    url = authorize_url(hybrid_application, response_type=response_type)
    params = response_params(consent_then(browser, url), in_fragment=True)
    assert params["state"] == ["state-123"]
    assert exchange_code(api, hybrid_application, params["code"][0]).status_code == 200


@pytest.mark.parametrize("response_type", ["id_token token", "token"])
def test_implicit_response_carries_iss_in_the_fragment(browser, implicit_application, response_type):
    url = authorize_url(
        implicit_application, response_type=response_type, code_challenge=None, code_challenge_method=None
    )
    params = response_params(consent_then(browser, url), in_fragment=True)
    assert "access_token" in params


def test_hybrid_deny_answers_in_the_fragment_with_iss(browser, hybrid_application):
    url = authorize_url(hybrid_application, response_type="code id_token")
    params = response_params(consent_then(browser, url, decision="deny"), in_fragment=True)
    assert params["error"] == ["access_denied"]
    assert params["state"] == ["state-123"]


def test_implicit_deny_answers_in_the_fragment_with_iss(browser, implicit_application):
    url = authorize_url(
        implicit_application, response_type="id_token token", code_challenge=None, code_challenge_method=None
    )
    params = response_params(consent_then(browser, url, decision="deny"), in_fragment=True)
    assert params["error"] == ["access_denied"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"prompt": "bogus"}, "invalid_request"),
        ({"scope": "openid no-such-scope"}, "invalid_scope"),
        ({"resource": "not-an-absolute-uri"}, "invalid_target"),
    ],
)
def test_hybrid_errors_answer_in_the_fragment_with_iss(browser, hybrid_application, params, error):
    response = browser.get(authorize_url(hybrid_application, response_type="code id_token", **params))
    answer = response_params(response, in_fragment=True)
    assert answer["error"] == [error]
    assert answer["state"] == ["state-123"]


def test_hybrid_login_required_answers_in_the_fragment_with_iss(hybrid_application):
    response = Client().get(authorize_url(hybrid_application, response_type="code id_token", prompt="none"))
    assert response_params(response, in_fragment=True)["error"] == ["login_required"]


def test_hybrid_consent_required_answers_in_the_fragment_with_iss(browser, hybrid_application):
    response = browser.get(authorize_url(hybrid_application, response_type="code id_token", prompt="none"))
    assert response_params(response, in_fragment=True)["error"] == ["consent_required"]


@pytest.mark.parametrize(("response_mode", "in_fragment"), [("query", False), ("fragment", True)])
def test_iss_follows_an_explicit_response_mode(browser, application, response_mode, in_fragment):
    """OAuth 2.0 Multiple Response Type Encoding Practices 2.1: the client may choose where."""
    url = authorize_url(application, response_mode=response_mode)
    allowed = response_params(consent_then(browser, url), in_fragment=in_fragment)
    assert "code" in allowed
    denied = response_params(consent_then(browser, url, decision="deny"), in_fragment=in_fragment)
    assert denied["error"] == ["access_denied"]


def test_form_post_is_not_supported_and_refused_in_the_default_place(browser, application):
    params = response_params(browser.get(authorize_url(application, response_mode="form_post")))
    assert params["error"] == ["invalid_request"]
    assert params["state"] == ["state-123"]
