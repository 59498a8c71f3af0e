"""Bad input to the OAuth endpoints gets an OAuth error, never a 500 (CONVENTIONS: Errors).

Authorization endpoint: errors found before the client and its redirect_uri are
known to be genuine are shown as a 400 page and never redirect (RFC 6749 4.1.2.1);
later errors go back to the client's registered redirect_uri with ``error=...``.
Token endpoint: a JSON error body (RFC 6749 5.2). Revocation and introspection
answer an unknown or malformed token as RFC 7009 2.2 and RFC 7662 2.2 require.

The default test client re-raises a view's exception, so a 500 fails the test
with its traceback.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest
from django.test import Client

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


def assert_error_redirect(response, error: str) -> dict[str, list[str]]:
    """A redirect to the client's registered redirect_uri with ``error`` and no code."""
    assert response.status_code == 302, (response.status_code, response.content[:300])
    location = urlparse(response["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    params = parse_qs(location.query)
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


@pytest.mark.parametrize(
    "prompt",
    ["bogus", "select_account", "create", "Consent", "consent bogus", "none consent", "none login"],
)
def test_unknown_or_contradictory_prompt_is_invalid_request(browser, application, prompt):
    response = browser.get(authorize_query(application, prompt=prompt, scope="openid offline_access"))
    assert_error_page(response, "invalid_request")


@pytest.mark.parametrize("prompt", ["bogus", "none login", "none consent"])
def test_malformed_prompt_is_refused_before_login(application, prompt):
    """An anonymous user is not sent to log in only to meet the client's error afterwards."""
    response = Client().get(authorize_query(application, prompt=prompt))
    assert_error_page(response, "invalid_request")


@pytest.mark.parametrize("prompts", [["consent", "consent"], ["login", "consent"], ["none", "none"]])
def test_repeated_prompt_is_invalid_request(browser, application, prompts):
    response = browser.get(authorize_query(application, prompt=prompts, scope="openid offline_access"))
    assert_error_page(response, "invalid_request")


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


@pytest.mark.parametrize("client_id", ["unknown-client", "", "x" * HUGE, "calendar-sync "])
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
    "prompt": ("page", "invalid_request"),
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
    assert response.status_code == 403


@pytest.mark.parametrize("endpoint", ["/o/revoke_token/", "/o/introspect/"])
@pytest.mark.parametrize("field", ["token", "client_id"])
def test_nul_byte_at_revocation_and_introspection_is_invalid_request(api, application, endpoint, field):
    data = {"token": "abc", **client_auth(application)}
    data[field] += "\x00"
    assert_json_error(api.post(endpoint, data), 400, "invalid_request")
