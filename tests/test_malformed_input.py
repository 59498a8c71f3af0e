"""Bad input to the OAuth endpoints gets an OAuth error, never a 500 (CONVENTIONS: Errors).

Authorization endpoint: errors found before the client and its redirect_uri are
known to be genuine are shown as a 400 page and never redirect (RFC 6749 4.1.2.1);
later errors go back to the client's registered redirect_uri with ``error=...``.
Token endpoint: a JSON error body (RFC 6749 5.2). Revocation and introspection
answer an unknown or malformed token as RFC 7009 2.2 and RFC 7662 2.2 require.
The REST API answers in DRF's error shape: every endpoint, with NUL bytes, lone
surrogates and other odd values in its query parameters, JSON and form bodies and
headers (issue 8); run it on PostgreSQL too, where a NUL that reaches a query is a 500.

The default test client re-raises a view's exception, so a 500 fails the test
with its traceback.
"""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from . import factories
from .oauth import (
    CHALLENGE,
    VERIFIER,
    authorize_url,
    client_auth,
    exchange_code,
    get_code,
    refresh,
    submit_consent,
)
from .test_api import (
    CONSENTS,
    ENDURING,
    MY_CONSENTS,
    MY_DEVICES,
    REVOKE_EVERYTHING,
    STAFF_PERMISSIONS,
    add_device,
    bearer_token,
    consent_revoke,
    database_state,
    my_consent_revoke,
    my_device_revoke,
    session_client,
    staff_member,
)

REDIRECT_URI = "https://client.example/callback"
STATE = "state-123"
HUGE = 100_000  # 100 KB


def authorize_query(application, *, drop=(), raw="", **params) -> str:
    """An authorization URL; a list value repeats the parameter, ``raw`` is appended as is."""
    query = {
        "response_type": "code",
        "client_id": application.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid",
        "state": STATE,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "nonce": "nonce-123",
    }
    query.update(params)
    for name in drop:
        query.pop(name, None)
    url = "/o/authorize/?" + urlencode(query, doseq=True)
    return url + ("&" + raw if raw else "")


def assert_error_page(response, error: str) -> None:
    """A 400 page for the user; nothing is sent to any redirect_uri."""
    assert response.status_code == 400, (response.status_code, response.get("Location"))
    assert not response.has_header("Location")
    assert response.context["error"].error == error
    assert error in response.content.decode()


def assert_error_redirect(response, error: str, *, in_fragment: bool = False) -> dict[str, list[str]]:
    """A redirect to the client's registered redirect_uri with ``error`` and no code."""
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = urlparse(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    params = parse_qs(location.fragment if in_fragment else location.query)
    assert not (location.query if in_fragment else location.fragment)
    assert params.get("error") == [error], params
    assert "code" not in params
    return params


def assert_json_error(response, status: int, error: str) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


def post_form(client: Client, url: str, body: str):
    """POST a hand-written form body (for bytes that ``urlencode`` would not produce)."""
    return client.post(url, body, content_type="application/x-www-form-urlencoded")


def form_body(**fields: str) -> str:
    return "&".join(f"{name}={value}" for name, value in fields.items())


def secret_fields(application) -> dict[str, str]:
    return {name: quote(value, safe="") for name, value in client_auth(application).items()}


# Authorization endpoint: errors shown to the user, never redirected ------------------------


@pytest.mark.parametrize("param", ["client_id", "redirect_uri"])
@pytest.mark.parametrize("prompt", ["bogus", "none login"])
def test_malformed_prompt_with_an_untrusted_redirect_is_an_error_page(browser, application, param, prompt):
    """The prompt error cannot go back to a client or redirect URI that is not genuine."""
    other = {"client_id": "no-such-client", "redirect_uri": "https://attacker.example/cb"}[param]
    response = browser.get(authorize_query(application, prompt=prompt, **{param: other}))
    assert_error_page(response, "invalid_request")


# Authorization endpoint: errors of a genuine client's request go back to it ---------------------


def assert_prompt_error_redirect(response) -> None:
    """RFC 6749 4.1.2.1: invalid_request at the registered redirect_uri, with state and iss (RFC 9207)."""
    params = assert_error_redirect(response, "invalid_request")
    assert params["state"] == [STATE]
    assert params["iss"] == ["http://testserver/o"]
    assert params["error_description"][0]


@pytest.mark.parametrize(
    "prompt",
    ["bogus", "select_account", "create", "Consent", "consent bogus", "none consent", "none login"],
)
def test_unknown_or_contradictory_prompt_is_invalid_request(browser, application, prompt):
    response = browser.get(authorize_query(application, prompt=prompt, scope="openid offline_access"))
    assert_prompt_error_redirect(response)
    assert not application.grant_set.exists()


@pytest.mark.parametrize("prompt", ["bogus", "none login", "none consent"])
def test_malformed_prompt_is_refused_before_login(application, prompt):
    """An anonymous user is not sent to log in only to meet the client's error afterwards."""
    response = Client().get(authorize_query(application, prompt=prompt))
    assert_prompt_error_redirect(response)


@pytest.mark.parametrize("prompts", [["consent", "consent"], ["login", "consent"], ["none", "none"]])
def test_repeated_prompt_is_invalid_request(browser, application, prompts):
    response = browser.get(authorize_query(application, prompt=prompts, scope="openid offline_access"))
    assert_prompt_error_redirect(response)


# Authorization endpoint: errors shown to the user, never redirected ------------------------


@pytest.mark.parametrize("name", ["client_id", "scope", "redirect_uri", "response_type", "state"])
def test_repeated_parameter_is_invalid_request_without_redirect(browser, application, name):
    values = {
        "client_id": application.client_id,
        "scope": "openid offline_access",
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "state": STATE,
    }
    response = browser.get(authorize_query(application, prompt="consent", **{name: [values[name]] * 2}))
    assert_error_page(response, "invalid_request")


def test_missing_client_id_is_invalid_request(browser, application):
    response = browser.get(authorize_query(application, drop=["client_id"]))
    assert_error_page(response, "invalid_request")


# "calendar-sync " and "CALENDAR-SYNC" name the fixture's client only under a collation that
# ignores trailing spaces or case (MySQL/MariaDB's defaults): client IDs compare exactly.
@pytest.mark.parametrize(
    "client_id", ["unknown-client", "", "x" * HUGE, "calendar-sync ", "CALENDAR-SYNC", "Calendar-Sync"]
)
def test_unknown_client_id_is_invalid_request(browser, application, client_id):
    response = browser.get(authorize_query(application, client_id=client_id))
    assert_error_page(response, "invalid_request")


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://evil.example/callback",
        "https://client.example.evil.example/callback",
        "http://client.example/callback",
        "https://client.example/callback/../evil",
        "https://client.example/callback?next=https://evil.example/",
        "https://client.example/callback#fragment",
        "https://client.example/" + "a" * HUGE,
        "",
    ],
)
def test_unregistered_redirect_uri_is_never_redirected_to(browser, application, redirect_uri):
    response = browser.get(
        authorize_query(
            application, redirect_uri=redirect_uri, prompt="consent", scope="openid offline_access"
        )
    )
    assert_error_page(response, "invalid_request")


def test_unregistered_redirect_uri_with_prompt_none_is_not_redirected_either(browser, application):
    response = browser.get(
        authorize_query(application, redirect_uri="https://evil.example/cb", prompt="none")
    )
    assert_error_page(response, "invalid_request")


# Authorization endpoint: errors sent back to the registered redirect_uri -----------------------


@pytest.mark.parametrize(
    "scope",
    [
        "openid bogus",
        "openid OFFLINE_ACCESS",
        "openid " + "x" * HUGE,
        " ".join(f"unknown{n}" for n in range(HUGE // 12)),
    ],
    ids=["unknown-name", "wrong-case", "huge-single-name", "huge-many-names"],
)
def test_unknown_scope_names_are_invalid_scope(browser, application, scope):
    response = browser.get(authorize_query(application, scope=scope, prompt="consent"))
    params = assert_error_redirect(response, "invalid_scope")
    assert params["state"] == [STATE]


def test_huge_scope_of_repeated_known_names_grants_each_scope_once(browser, api, application):
    """A scope is a set (RFC 6749 3.3): 100 KB of repetitions is still "openid offline_access"."""
    scope = "openid offline_access " * (HUGE // 22 + 1)
    assert len(scope) >= HUGE
    url = authorize_query(application, scope=scope, prompt="consent")
    response = browser.get(url)
    assert response.status_code == 200
    assert [name for name, _description in response.context["scopes"]] == ["openid", "offline_access"]
    assert len(response.content) < 20_000


@pytest.mark.parametrize("method", ["bogus", "S512", "s256", ""])
def test_bogus_code_challenge_method_is_invalid_request(browser, application, method):
    response = browser.get(authorize_query(application, code_challenge_method=method))
    assert_error_redirect(response, "invalid_request")


def test_missing_code_challenge_is_invalid_request(browser, application):
    response = browser.get(authorize_query(application, drop=["code_challenge", "code_challenge_method"]))
    assert_error_redirect(response, "invalid_request")


@pytest.mark.parametrize(
    "response_type, error",
    [
        ("bogus", "unsupported_response_type"),
        # oauthlib answers a response type containing "code" that this client may not
        # use (or that it does not know) with unauthorized_client.
        ("token", "unauthorized_client"),
        ("code bogus", "unauthorized_client"),
    ],
)
def test_bogus_response_type_is_refused(browser, application, response_type, error):
    response = browser.get(authorize_query(application, response_type=response_type))
    if response_type == "token":
        # An implicit request reads its answer, errors included, in the fragment (RFC 6749 4.2.2.1).
        assert_error_redirect(response, error, in_fragment=True)
    else:
        assert_error_redirect(response, error)


# NUL bytes and bytes that are not UTF-8 ----------------------------------------------------------

#: Every parameter of an authorization request. None may hold a NUL (RFC 6749
#: appendix A), and PostgreSQL can neither store nor compare text containing one.
AUTHORIZATION_PARAMETERS = [
    "client_id",
    "redirect_uri",
    "prompt",
    "scope",
    "response_type",
    "code_challenge_method",
    "code_challenge",
    "state",
    "nonce",
]


@pytest.mark.parametrize("name", AUTHORIZATION_PARAMETERS)
def test_nul_byte_in_authorization_parameter_is_refused(browser, application, name):
    """Refused before anything is validated or stored: a 400 page, never a redirect."""
    params = {"prompt": "consent", "scope": "openid offline_access"}
    defaults = {
        "client_id": application.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "code_challenge_method": "S256",
        "code_challenge": CHALLENGE,
        "state": STATE,
        "nonce": "nonce-123",
        **params,
    }
    params[name] = defaults[name] + "\x00"
    response = browser.get(authorize_query(application, **params))
    assert_error_page(response, "invalid_request")
    assert not application.grant_set.exists()


def test_nul_byte_in_parameter_name_is_refused(browser, application):
    response = browser.get(authorize_query(application, raw="x%00y=1", prompt="consent"))
    assert_error_page(response, "invalid_request")


def test_nul_byte_posted_to_the_consent_form_is_refused(browser, application):
    url = authorize_query(application, prompt="consent", scope="openid offline_access")
    response = submit_consent(browser, url, browser.get(url), "allow", state="x\x00")
    assert_error_page(response, "invalid_request")
    assert not application.grant_set.exists()


#: Where a byte that is not UTF-8 goes (Django decodes it to U+FFFD), and the answer.
NON_UTF8_IN_AUTHORIZATION = {
    "client_id": ("page", "invalid_request"),
    "redirect_uri": ("page", "invalid_request"),
    "prompt": ("redirect", "invalid_request"),  # the client and redirect_uri are genuine
    "scope": ("redirect", "invalid_scope"),
    "response_type": ("redirect", "unauthorized_client"),
    "code_challenge_method": ("redirect", "invalid_request"),
}


@pytest.mark.parametrize("name", sorted(NON_UTF8_IN_AUTHORIZATION))
def test_non_utf8_bytes_in_authorization_parameter_are_refused(browser, application, name):
    url = authorize_query(
        application, drop=[name], raw=f"{name}=%FF%FEcode", prompt="consent", scope="openid offline_access"
    )
    response = browser.get(url)
    kind, error = NON_UTF8_IN_AUTHORIZATION[name]
    if kind == "page":
        assert_error_page(response, error)
    else:
        assert_error_redirect(response, error)


# Consent form POST ---------------------------------------------------------------------------------


def test_consent_post_without_csrf_token_is_403(user, application):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)
    assert screen.status_code == 200
    signed = screen.context["form"].initial["request"]

    response = browser.post(url, {"request": signed, "decision": "allow"})

    assert response.status_code == 403
    assert not application.grant_set.exists()
    # The same POST with the token goes through: the 403 was the CSRF check.
    token = screen.context["csrf_token"]
    response = browser.post(url, {"request": signed, "decision": "allow", "csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302
    assert "code" in parse_qs(urlparse(response["Location"]).query)


@pytest.mark.parametrize(
    "data",
    [
        {"decision": "allow"},
        {"request": "", "decision": "allow"},
        {"request": "not-a-signed-value", "decision": "allow"},
        {"request": "x" * HUGE, "decision": "allow"},
        {"request": "abc\x00def:ghi", "decision": "allow"},
    ],
    ids=["missing", "empty", "garbage", "huge", "nul"],
)
def test_consent_post_with_bad_request_field_is_invalid_request(browser, application, data):
    response = browser.post(authorize_url(application, prompt="consent"), data)
    assert_error_page(response, "invalid_request")
    assert not application.grant_set.exists()


@pytest.mark.parametrize("decision", ["", "yes", "ALLOW", "allow\x00"])
def test_consent_post_with_bogus_decision_is_invalid_request(browser, application, decision):
    url = authorize_url(application, prompt="consent")
    signed = browser.get(url).context["form"].initial["request"]
    response = browser.post(url, {"request": signed, "decision": decision})
    assert_error_page(response, "invalid_request")
    assert not application.grant_set.exists()


def test_consent_post_with_non_utf8_request_field_is_invalid_request(browser, application):
    response = post_form(
        browser, authorize_url(application, prompt="consent"), "request=%FF%FE&decision=allow"
    )
    assert_error_page(response, "invalid_request")


# Token endpoint ------------------------------------------------------------------------------------


def test_get_on_token_endpoint_is_405(api):
    response = api.get("/o/token/", {"grant_type": "client_credentials"})
    assert response.status_code == 405
    assert "POST" in response["Allow"]


@pytest.mark.parametrize("grant_type", ["bogus", "", "AUTHORIZATION_CODE", "implicit", "x" * HUGE])
def test_bogus_grant_type_is_unsupported_grant_type(api, application, grant_type):
    response = api.post("/o/token/", {"grant_type": grant_type, "code": "abc", **client_auth(application)})
    assert_json_error(response, 400, "unsupported_grant_type")


def test_missing_grant_type_is_unsupported_grant_type(api, application):
    response = api.post("/o/token/", {"code": "abc", **client_auth(application)})
    assert_json_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("code", ["bogus", "", "x" * HUGE], ids=["bogus", "empty", "huge"])
def test_bogus_code_is_invalid_grant(api, application, code):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        **client_auth(application),
    }
    assert_json_error(api.post("/o/token/", data), 400, "invalid_grant")


@pytest.mark.parametrize("refresh_token", ["bogus", "x" * HUGE], ids=["bogus", "huge"])
def test_bogus_refresh_token_is_invalid_grant(api, application, refresh_token):
    assert_json_error(refresh(api, application, refresh_token), 400, "invalid_grant")


def test_refresh_token_of_another_client_is_invalid_grant(browser, api, application):
    code = get_code(browser, application, prompt="consent")
    issued = exchange_code(api, application, code).json()
    thief = factories.ApplicationFactory(name="Other", client_id="other-client")

    response = refresh(api, thief, issued["refresh_token"])

    assert_json_error(response, 400, "invalid_grant")
    # The attempt neither used up nor revoked the owner's token.
    response = refresh(api, application, issued["refresh_token"])
    assert response.status_code == 200, response.content
    assert "refresh_token" in response.json()


def test_code_of_another_client_is_invalid_grant(browser, api, application):
    code = get_code(browser, application, prompt="consent")
    thief = factories.ApplicationFactory(name="Other", client_id="other-client")
    assert_json_error(exchange_code(api, thief, code), 400, "invalid_grant")
    assert exchange_code(api, application, code).status_code == 200


@pytest.mark.parametrize("field", ["code", "redirect_uri", "code_verifier", "client_id", "grant_type"])
def test_nul_byte_in_code_exchange_is_refused(browser, api, application, field):
    """400 invalid_request, and the code is not used up: the genuine exchange still works."""
    code = get_code(browser, application, prompt="consent")
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        **client_auth(application),
    }
    data[field] += "\x00"
    assert_json_error(api.post("/o/token/", data), 400, "invalid_request")
    assert exchange_code(api, application, code).status_code == 200


@pytest.mark.parametrize("field", ["refresh_token", "client_id", "client_secret", "scope"])
def test_nul_byte_in_refresh_is_refused(browser, api, application, field):
    code = get_code(browser, application, prompt="consent")
    issued = exchange_code(api, application, code).json()
    data = {
        "grant_type": "refresh_token",
        "refresh_token": issued["refresh_token"],
        "scope": "openid offline_access",
        **client_auth(application),
    }
    data[field] += "\x00"
    assert_json_error(api.post("/o/token/", data), 400, "invalid_request")
    assert refresh(api, application, issued["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "field, expected",
    [
        ("code", (400, "invalid_grant")),
        ("refresh_token", (400, "invalid_grant")),
        ("client_id", (401, "invalid_client")),
        ("grant_type", (400, "unsupported_grant_type")),
    ],
)
def test_non_utf8_bytes_at_token_endpoint_are_refused(api, application, field, expected):
    fields = {
        "grant_type": "refresh_token" if field == "refresh_token" else "authorization_code",
        "code": "abc",
        "refresh_token": "abc",
        "redirect_uri": quote(REDIRECT_URI, safe=""),
        "code_verifier": VERIFIER,
        **secret_fields(application),
    }
    fields[field] = "%FF%FE" + fields[field]
    assert_json_error(post_form(api, "/o/token/", form_body(**fields)), *expected)


# Revocation and introspection ------------------------------------------------------------------------


def test_revoke_without_token_is_invalid_request(api, application):
    response = api.post("/o/revoke_token/", {"token": "", **client_auth(application)})
    assert_json_error(response, 400, "invalid_request")


@pytest.mark.parametrize("token", ["x" * HUGE, "bogus"], ids=["huge", "unknown"])
def test_revoke_of_unknown_token_is_200(api, application, token):
    """RFC 7009 2.2: an invalid token is answered with 200, revealing nothing."""
    response = api.post("/o/revoke_token/", {"token": token, **client_auth(application)})
    assert response.status_code == 200
    assert response.content == b""


def test_revoke_with_non_utf8_token_is_200(api, application):
    body = form_body(token="%FF%FE", **secret_fields(application))
    response = post_form(api, "/o/revoke_token/", body)
    assert response.status_code == 200


def test_revoke_with_unknown_client_is_invalid_client(api, application):
    response = api.post("/o/revoke_token/", {"token": "abc", "client_id": "unknown", "client_secret": "x"})
    assert_json_error(response, 401, "invalid_client")


@pytest.mark.parametrize("token", ["", "x" * HUGE, "bogus"], ids=["empty", "huge", "unknown"])
def test_introspection_of_bad_token_is_inactive(api, application, token):
    """RFC 7662 2.2: a token that is not active reads ``{"active": false}`` and nothing else."""
    response = api.post("/o/introspect/", {"token": token, **client_auth(application)})
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspection_of_non_utf8_token_is_inactive(api, application):
    response = post_form(api, "/o/introspect/", form_body(token="%FF%FE", **secret_fields(application)))
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_introspection_with_unknown_client_is_refused(api, application):
    response = api.post("/o/introspect/", {"token": "abc", "client_id": "unknown", "client_secret": "x"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize("endpoint", ["/o/revoke_token/", "/o/introspect/"])
@pytest.mark.parametrize("field", ["token", "client_id"])
def test_nul_byte_at_revocation_and_introspection_is_invalid_request(api, application, endpoint, field):
    data = {"token": "abc", **client_auth(application)}
    data[field] += "\x00"
    assert_json_error(api.post(endpoint, data), 400, "invalid_request")


# REST API (offline_access.api): a DRF error, never a 500 ---------------------------------------------
#
# PostgreSQL can neither store nor compare text holding a NUL, and no database driver
# encodes a lone surrogate (JSON can spell one: "\ud800"). Run this section on
# PostgreSQL too: that is where a NUL that reaches a query turns into a 500.

#: Values for every query parameter, body field and header below.
ODD_TEXT = [
    "\x00",
    "alice\x00",
    "%00",
    "\ufffd\ufffe",
    "\u202eevil",
    "caf\xe9\U0001f600",
    "",
    "x" * HUGE,
    "-1",
    "1e999",
]
ODD_TEXT_IDS = [
    "nul",
    "trailing-nul",
    "escaped-nul",
    "replacement",
    "bidi",
    "non-ascii",
    "empty",
    "huge",
    "minus-one",
    "overflow",
]
#: JSON values that no text field expects.
ODD_JSON = [
    None,
    0,
    -1,
    10**400,
    1.5,
    True,
    [],
    ["alice"],
    {},
    {"username": "alice"},
    "\ud800",
    "a\udfffb",
    "\x00",
    "x" * HUGE,
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-13-45T25:61:61Z",
]
ODD_JSON_IDS = [
    "null",
    "zero",
    "minus-one",
    "bigint",
    "float",
    "true",
    "empty-list",
    "list",
    "empty-object",
    "object",
    "lone-surrogate",
    "embedded-surrogate",
    "nul",
    "huge",
    "max-datetime",
    "min-datetime",
    "bad-datetime",
]
NUL_NOT_ALLOWED = "Null characters are not allowed."

#: The body fields of each endpoint that takes one.
API_BODY_FIELDS = {
    "enduring": ("user", "application", "reason", "expires_at"),
    "revoke-everything": ("user", "application", "reason"),
    "revoke-consent": ("reason",),
    "my-consent": ("reason",),
    "my-device": ("reason",),
}
#: The query parameters each list reads (filters, pagination, DRF's format override).
API_QUERY_PARAMETERS = {
    "consents": ("user", "application", "kind", "state", "page", "page_size", "format"),
    "my-consents": ("page", "page_size", "format"),
    "my-devices": ("page", "page_size", "format"),
}
#: What a request may answer. 200/201 when an odd value happens to be acceptable (a
#: reason "0"); never 500.
API_STATUSES = {200, 201, 400, 401, 403, 404, 405, 406, 415}


@pytest.fixture
def rest_world(user, other_user, application):
    """alice's consent and device; a staff session holding every staff permission."""
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)
    factories.EnduringConsentFactory(user=other_user, application=application)
    operator = staff_member("operator", *STAFF_PERMISSIONS)
    return SimpleNamespace(
        consent=consent,
        family=family,
        staff=session_client(operator),
        me=session_client(user),
        bearer=bearer_token(user, application),
        urls={
            "consents": CONSENTS,
            "my-consents": MY_CONSENTS,
            "my-devices": MY_DEVICES,
            "enduring": ENDURING,
            "revoke-everything": REVOKE_EVERYTHING,
            "revoke-consent": consent_revoke(consent.pk),
            "my-consent": my_consent_revoke(consent.pk),
            "my-device": my_device_revoke(family.pk),
        },
    )


def api_client_for(world, endpoint: str) -> APIClient:
    """The client that may use ``endpoint``: the staff session, or alice's session."""
    return world.me if endpoint.startswith("my-") else world.staff


def valid_body(world, endpoint: str) -> dict:
    return {
        "enduring": {"user": "mallory", "application": "calendar-sync", "reason": "Contract"},
        "revoke-everything": {"user": "mallory", "reason": "Left"},
    }.get(endpoint, {"reason": "Lost"})


def assert_api_error(response, status: int = 400) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def assert_not_500(response, where) -> None:
    assert response.status_code in API_STATUSES, (where, response.status_code, response.content[:300])


@pytest.mark.parametrize("name", ["user", "application", "kind", "state"])
@pytest.mark.parametrize("value", ["\x00", "alice\x00", "calendar-sync\x00", "active\x00"])
def test_nul_byte_in_a_staff_list_filter_is_a_drf_error(rest_world, name, value):
    response = rest_world.staff.get(CONSENTS, {name: value})
    errors = assert_api_error(response)
    assert set(errors) == {name}
    if name in ("user", "application"):
        assert errors == {name: [NUL_NOT_ALLOWED]}


@pytest.mark.parametrize("body_format", ["json", "form", "multipart"])
@pytest.mark.parametrize(
    "endpoint, field",
    [(endpoint, field) for endpoint, fields in API_BODY_FIELDS.items() for field in fields],
)
def test_nul_byte_in_an_api_body_is_a_drf_error(rest_world, endpoint, field, body_format):
    body = {**valid_body(rest_world, endpoint), field: "mallory\x00"}
    client, url = api_client_for(rest_world, endpoint), rest_world.urls[endpoint]
    before = database_state()

    if body_format == "form":
        response = client.post(url, urlencode(body), content_type="application/x-www-form-urlencoded")
    else:
        response = client.post(url, body, format=body_format)

    errors = assert_api_error(response)
    assert set(errors) == {field}
    if field != "expires_at":
        assert errors == {field: [NUL_NOT_ALLOWED]}
    assert database_state() == before


@pytest.mark.parametrize("value", ["\ud800", "mallory\udfff"], ids=["lone", "trailing"])
@pytest.mark.parametrize(
    "endpoint, field",
    [(endpoint, field) for endpoint, fields in API_BODY_FIELDS.items() for field in fields],
)
def test_surrogate_in_a_json_body_is_a_drf_error(rest_world, endpoint, field, value):
    """JSON can spell a lone surrogate; no database driver can encode one."""
    body = {**valid_body(rest_world, endpoint), field: value}
    client, url = api_client_for(rest_world, endpoint), rest_world.urls[endpoint]
    before = database_state()

    response = client.post(url, json.dumps(body), content_type="application/json")

    errors = assert_api_error(response)
    assert set(errors) == {field}
    if field != "expires_at":
        surrogate = f"U+{ord(value[-1]):04X}"
        assert errors == {field: [f"Surrogate characters are not allowed: {surrogate}."]}
    assert database_state() == before


def test_odd_query_parameters_never_500(rest_world):
    for endpoint, names in API_QUERY_PARAMETERS.items():
        client, url = api_client_for(rest_world, endpoint), rest_world.urls[endpoint]
        for name in (*names, "unknown", "x\x00y"):
            for value in ODD_TEXT:
                assert_not_500(client.get(url, {name: value}), (endpoint, name, value[:20]))
            assert_not_500(client.get(url, {name: ["alice", "\x00"]}), (endpoint, name, "repeated"))
            # Bytes that are not UTF-8, raw (Django decodes them to U+FFFD), then a NUL.
            assert_not_500(client.get(f"{url}?{name}=%FF%FE%00"), (endpoint, name, "raw"))


@pytest.mark.parametrize("value", ODD_JSON, ids=ODD_JSON_IDS)
def test_odd_json_body_values_never_500(rest_world, value):
    for endpoint, fields in API_BODY_FIELDS.items():
        client, url = api_client_for(rest_world, endpoint), rest_world.urls[endpoint]
        for field in fields:
            body = json.dumps({**valid_body(rest_world, endpoint), field: value})
            assert_not_500(client.post(url, body, content_type="application/json"), (endpoint, field))
        # The odd value as the whole body.
        body = json.dumps(value)
        assert_not_500(client.post(url, body, content_type="application/json"), (endpoint, "body"))


def test_odd_form_body_values_never_500(rest_world):
    for endpoint, fields in API_BODY_FIELDS.items():
        client, url = api_client_for(rest_world, endpoint), rest_world.urls[endpoint]
        for field in fields:
            for value in ODD_TEXT:
                body = {**valid_body(rest_world, endpoint), field: value}
                form = urlencode(body)
                response = client.post(url, form, content_type="application/x-www-form-urlencoded")
                assert_not_500(response, (endpoint, field, value[:20], "form"))
                response = client.post(url, body, format="multipart")
                assert_not_500(response, (endpoint, field, value[:20], "multipart"))
            raw = urlencode(valid_body(rest_world, endpoint)) + f"&{field}=%FF%FE%00"
            response = client.post(url, raw, content_type="application/x-www-form-urlencoded")
            assert_not_500(response, (endpoint, field, "raw"))


@pytest.mark.parametrize(
    "body",
    [b"{", b"", b"\x00", b"\xff\xfe{}", b'{"reason": "\xff"}', b"[" * 10_000, b'{"reason": NaN}'],
    ids=["truncated", "empty", "nul", "bom-utf16", "non-utf8", "deep", "nan"],
)
def test_malformed_json_bodies_never_500(rest_world, body):
    for endpoint in API_BODY_FIELDS:
        client, url = api_client_for(rest_world, endpoint), rest_world.urls[endpoint]
        assert_not_500(client.post(url, body, content_type="application/json"), endpoint)


#: Authorization header values: a NUL, bytes a server decodes as Latin-1, a huge
#: token, a scheme this API does not use, half a header.
ODD_AUTHORIZATION = [
    "Bearer \x00",
    "Bearer abc\x00def",
    "Bearer\x00",
    "Bearer caf\xe9",
    "Bearer caf\xc3\xa9",
    "Bearer " + "x" * HUGE,
    "Bearer",
    "Bearer ",
    "Bearer a b",
    "bearer  no-such-token",
    "Basic junk",
    "Basic " + base64.b64encode(b"alice\x00:test-password").decode(),
    "Basic " + base64.b64encode(b"alice:test-password").decode(),
    "Basic \x00",
    "Digest username=alice",
    "\x00",
    "x" * HUGE,
]
ODD_AUTHORIZATION_IDS = [
    "bearer-nul",
    "bearer-embedded-nul",
    "scheme-nul",
    "bearer-latin1",
    "bearer-utf8-as-latin1",
    "bearer-huge",
    "bearer-alone",
    "bearer-empty",
    "bearer-two-tokens",
    "bearer-lowercase-unknown",
    "basic-junk",
    "basic-nul",
    "basic-valid-password",
    "basic-raw-nul",
    "digest",
    "nul",
    "huge",
]


@pytest.mark.parametrize("authorization", ODD_AUTHORIZATION, ids=ODD_AUTHORIZATION_IDS)
def test_odd_authorization_headers_never_authenticate_or_500(rest_world, authorization):
    """Nothing here is a valid bearer token: the user's endpoints answer 401, the staff ones 403."""
    before = database_state()
    for endpoint, url in rest_world.urls.items():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=authorization)
        if endpoint in API_BODY_FIELDS:
            response = client.post(url, valid_body(rest_world, endpoint), format="json")
        else:
            response = client.get(url)
        expected = 401 if endpoint.startswith("my-") else 403
        assert response.status_code == expected, (endpoint, response.status_code, response.content[:300])
        assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert database_state() == before


@pytest.mark.parametrize(
    "headers",
    [
        {"HTTP_ACCEPT": "\x00"},
        {"HTTP_ACCEPT": "application/json; indent=\x00"},
        {"HTTP_ACCEPT": "application/json; indent=99999999999999999999"},
        {"HTTP_ACCEPT": "text/html"},
        {"HTTP_ACCEPT": "application/xml"},
        {"HTTP_ACCEPT": "*/*; q=\x00"},
        {"HTTP_ACCEPT_LANGUAGE": "\x00"},
        {"HTTP_ACCEPT_LANGUAGE": "x" * HUGE},
        {"HTTP_X_CSRFTOKEN": "\x00"},
        {"HTTP_X_CSRFTOKEN": "x" * HUGE},
        {"HTTP_COOKIE": "csrftoken=\x00"},
        {"HTTP_ORIGIN": "\x00"},
        {"HTTP_REFERER": "\x00"},
        {"HTTP_X_FORWARDED_PROTO": "\x00"},
        {"CONTENT_TYPE": "application/json; charset=\x00"},
        {"CONTENT_TYPE": "application/json; charset=bogus"},
        {"CONTENT_TYPE": "application/json; charset=utf-16"},
        {"CONTENT_TYPE": "application/x-www-form-urlencoded; charset=bogus"},
        {"CONTENT_TYPE": "multipart/form-data"},
        {"CONTENT_TYPE": "multipart/form-data; boundary=\x00"},
        {"CONTENT_TYPE": "text/plain"},
        {"CONTENT_TYPE": "\x00"},
    ],
    ids=lambda headers: "-".join(f"{k}={v[:20]!r}" for k, v in headers.items()),
)
def test_odd_request_headers_never_500(rest_world, headers):
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {rest_world.bearer}")
    for endpoint, url in rest_world.urls.items():
        # Each endpoint with the session that may use it; the user's also with a bearer token.
        clients = [api_client_for(rest_world, endpoint)] + ([bearer] if endpoint.startswith("my-") else [])
        for client in clients:
            if endpoint in API_BODY_FIELDS:
                body = json.dumps(valid_body(rest_world, endpoint)).encode()
                extra = {"CONTENT_TYPE": "application/json", **headers}
                response = client.generic("POST", url, body, **extra)
            else:
                response = client.get(url, **headers)
            assert_not_500(response, (endpoint, client is bearer))


@pytest.mark.parametrize("session_key", ["\x00" * 32, "abcdefgh\x00", "x" * HUGE, "\xe9" * 32])
def test_odd_session_cookie_is_anonymous_not_500(rest_world, session_key):
    for endpoint, url in rest_world.urls.items():
        client = APIClient()
        client.cookies[settings.SESSION_COOKIE_NAME] = session_key
        response = client.post(url, {}, format="json") if endpoint in API_BODY_FIELDS else client.get(url)
        expected = 401 if endpoint.startswith("my-") else 403
        assert response.status_code == expected, (endpoint, response.status_code)


# The whole site: a session cookie is a header too ------------------------------------------

SITE_PAGES = [
    "/",
    "/admin/",
    "/accounts/login/",
    "/o/connected-apps/",
    "/o/device/",
    "/o/authorize/?client_id=x",
]


@pytest.mark.django_db
@pytest.mark.parametrize("session_key", ["\x00" * 32, "abcdefgh\x00", "\xe9" * 32])
@pytest.mark.parametrize("path", SITE_PAGES)
def test_odd_session_cookie_is_no_session_on_every_page(path, session_key):
    """On PostgreSQL Django's database sessions answered a NUL in the cookie with a 500."""
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key
    response = client.get(path)
    assert response.status_code < 500, (path, response.status_code)
    assert not response.wsgi_request.user.is_authenticated


@pytest.mark.parametrize(
    ("client_id", "status", "error"),
    [
        ("calendar-sync", 400, "unauthorized_client"),  # authenticated; the grant type is not its own
        ("calendar-sync ", 401, "invalid_client"),
        ("CALENDAR-SYNC", 401, "invalid_client"),
    ],
)
def test_a_near_client_id_authenticates_nobody(api, application, client_id, status, error):
    """The right secret beside a client ID that only a lax collation equates authenticates nobody."""
    credentials = {"client_id": client_id, "client_secret": factories.CLIENT_SECRET}
    response = api.post("/o/token/", {"grant_type": "client_credentials", **credentials})
    assert (response.status_code, response.json()["error"]) == (status, error), response.content
