"""Request objects (OIDC Core 6): the server supports neither ``request`` nor ``request_uri``.

Discovery says so (``request_parameter_supported: false``,
``request_uri_parameter_supported: false``), and OIDC Core 6.1, 6.2 and 3.1.2.6
give the errors for a server that does not: ``request_not_supported`` and
``request_uri_not_supported``. They go back to the client as an error redirect
(with ``state`` and RFC 9207 ``iss``) when its client and redirect URI can be
trusted; silently ignoring the object would answer a request the client did not
make (its real parameters may be inside the object). The OpenID conformance
modules ``oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported``
and ``oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported``
accept exactly this rejection.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_grant_model

from . import factories
from .oauth import authorize_url, submit_consent
from .test_rfc9207_iss import response_params


def unsigned_request_object(application, **claims) -> str:
    """An unsigned (``alg: none``) request object, as the conformance suite sends it."""

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    body = {
        "iss": application.client_id,
        "aud": "http://testserver/o",
        "client_id": application.client_id,
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": application.redirect_uris.split()[0],
        "state": "state-in-object",
        "nonce": "nonce-in-object",
        **claims,
    }
    return f"{part({'alg': 'none'})}.{part(body)}."


def final_answer(browser: Client, url: str):
    response = browser.get(url)
    if response.status_code == 200:
        response = submit_consent(browser, url, response)
    return response


def nothing_issued() -> bool:
    return not (get_access_token_model().objects.exists() or get_grant_model().objects.exists())


def test_oidcc_unsigned_request_object_supported_correctly_or_rejected_as_unsupported(browser, application):
    """Only what OIDC Core 6.1 requires outside the object: the rest is inside it."""
    query = {
        "client_id": application.client_id,
        "response_type": "code",
        "scope": "openid",
        "request": unsigned_request_object(application),
    }
    params = response_params(final_answer(browser, "/o/authorize/?" + urlencode(query)))
    assert params["error"] == ["request_not_supported"]
    assert "state" not in params  # it was only in the object, which is not read
    assert nothing_issued()


def test_oidcc_request_uri_unsigned_supported_correctly_or_rejected_as_unsupported(browser, application):
    query = {
        "client_id": application.client_id,
        "response_type": "code",
        "scope": "openid",
        "request_uri": "https://client.example/request.jwt",
    }
    params = response_params(final_answer(browser, "/o/authorize/?" + urlencode(query)))
    assert params["error"] == ["request_uri_not_supported"]
    assert nothing_issued()


@pytest.mark.parametrize(
    ("parameter", "error"),
    [("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")],
)
def test_request_objects_are_refused_with_state_and_iss(browser, application, parameter, error):
    value = unsigned_request_object(application) if parameter == "request" else "https://client.example/r"
    params = response_params(final_answer(browser, authorize_url(application, **{parameter: value})))
    assert params["error"] == [error]
    assert params["state"] == ["state-123"]
    assert params["error_description"]
    assert nothing_issued()


@pytest.mark.parametrize("parameter", ["request", "request_uri"])
def test_request_objects_are_refused_before_login(db, application, parameter):
    response = Client().get(authorize_url(application, **{parameter: "x"}))
    params = response_params(response)  # to the client, not the login page
    assert params["error"] == [f"{parameter}_not_supported"]


def test_par_request_uri_is_refused_too(browser, application):
    """RFC 9126 4: a pushed request's URN; this server has no PAR endpoint."""
    query = {"client_id": application.client_id, "request_uri": "urn:ietf:params:oauth:request_uri:abc"}
    params = response_params(final_answer(browser, "/o/authorize/?" + urlencode(query)))
    assert params["error"] == ["request_uri_not_supported"]


def test_hybrid_request_object_is_refused_in_the_fragment(browser, db):
    application = factories.ApplicationFactory(authorization_grant_type="openid-hybrid")
    url = authorize_url(application, scope="openid", response_type="code id_token", request="e30.e30.")
    params = response_params(final_answer(browser, url), in_fragment=True)
    assert params["error"] == ["request_not_supported"]
    assert params["state"] == ["state-123"]


def test_both_parameters_are_invalid_request(browser, application):
    """OIDC Core 6: ``request`` and ``request_uri`` must not be used in the same request."""
    url = authorize_url(application, request="e30.e30.", request_uri="https://client.example/r")
    params = response_params(final_answer(browser, url))
    assert params["error"] == ["invalid_request"]
    assert params["state"] == ["state-123"]


@pytest.mark.parametrize("parameter", ["request", "request_uri"])
def test_empty_parameter_is_no_parameter(browser, application, parameter):
    """RFC 6749 3.1: a parameter sent without a value is treated as omitted."""
    assert "code" in response_params(final_answer(browser, authorize_url(application, **{parameter: ""})))


@pytest.mark.parametrize("parameter", ["request", "request_uri"])
def test_request_object_with_an_untrusted_redirect_gets_the_page(browser, application, parameter):
    url = authorize_url(application, redirect_uri="https://attacker.example/cb", **{parameter: "x"})
    response = browser.get(url)
    assert response.status_code == 400
    assert not response.has_header("Location")


def test_request_object_with_an_unknown_client_gets_the_page(browser, db):
    query = {"client_id": "no-such-client", "response_type": "code", "request": "e30.e30."}
    response = browser.get("/o/authorize/?" + urlencode(query))
    assert response.status_code == 400
    assert not response.has_header("Location")
