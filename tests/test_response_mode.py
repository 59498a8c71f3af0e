"""Where the authorization response goes: ``response_mode``.

OAuth 2.0 Multiple Response Type Encoding Practices, section 2.1, lets a client
pick ``query`` or ``fragment``, except that the query encoding MUST NOT be used
for a response type that returns a token or an ID token: the query string ends
up in server logs, browser history and Referer headers. oauthlib honours
``response_mode=query`` for those anyway, so such a request is refused with
``invalid_request`` before anything is issued, in the fragment, the only place
the client reads for that response type. An unknown mode (``form_post``,
``jwt``, ...) is refused the same way, in the response type's default place:
the server supports only ``query`` and ``fragment`` and says so in
``response_modes_supported``, and a client that asked for another one should
learn it is not honoured instead of being answered elsewhere.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_grant_model, get_id_token_model

from . import factories
from .oauth import authorize_url, submit_consent
from .test_metadata import documents
from .test_rfc9207_iss import response_params

pytestmark = [
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 implicit grant:DeprecationWarning"),
]

#: Every response type that returns a token or an ID token from the authorization endpoint.
TOKEN_RESPONSE_TYPES = {
    "token": "implicit",
    "id_token": "implicit",
    "id_token token": "implicit",
    "code token": "openid-hybrid",
    "code id_token": "openid-hybrid",
    "code id_token token": "openid-hybrid",
}


def client_for(response_type: str):
    return factories.ApplicationFactory(authorization_grant_type=TOKEN_RESPONSE_TYPES[response_type])


def request_url(application, response_type: str, **params) -> str:
    if application.authorization_grant_type == "implicit":
        params.setdefault("code_challenge", None)
        params.setdefault("code_challenge_method", None)
    return authorize_url(application, scope="openid", response_type=response_type, **params)


def final_answer(browser: Client, url: str):
    """What the browser ends up with: the answer to GET, or to Allow when a consent screen is shown."""
    response = browser.get(url)
    if response.status_code == 200:
        response = submit_consent(browser, url, response)
    return response


def nothing_issued() -> bool:
    return not (
        get_access_token_model().objects.exists()
        or get_grant_model().objects.exists()
        or get_id_token_model().objects.exists()
    )


@pytest.mark.parametrize("response_type", sorted(TOKEN_RESPONSE_TYPES))
def test_query_mode_for_a_response_type_returning_tokens_is_refused(browser, response_type):
    """Section 2.1: the query encoding MUST NOT be used; no token ever reaches the query string."""
    application = client_for(response_type)
    response = final_answer(browser, request_url(application, response_type, response_mode="query"))
    query = parse_qs(urlsplit(response["Location"]).query) if response.has_header("Location") else {}
    assert not {"access_token", "id_token", "code"} & set(query), response["Location"]
    params = response_params(response, in_fragment=True)  # iss there, nothing in the query
    assert params["error"] == ["invalid_request"]
    assert "response_mode" in params["error_description"][0]
    assert params["state"] == ["state-123"]
    assert nothing_issued()


@pytest.mark.parametrize("response_type", ["token", "code id_token"])
def test_query_mode_is_refused_before_login_and_before_the_screen(db, response_type):
    application = client_for(response_type)
    response = Client().get(request_url(application, response_type, response_mode="query"))
    params = response_params(response, in_fragment=True)  # not the login page
    assert params["error"] == ["invalid_request"]
    assert params["state"] == ["state-123"]


@pytest.mark.parametrize("response_type", sorted(TOKEN_RESPONSE_TYPES))
def test_fragment_mode_for_a_response_type_returning_tokens_works(browser, response_type):
    application = client_for(response_type)
    response = final_answer(browser, request_url(application, response_type, response_mode="fragment"))
    params = response_params(response, in_fragment=True)
    returned = {"access_token" if part == "token" else part for part in response_type.split()}
    assert returned <= set(params), params


@pytest.mark.parametrize("response_mode", ["query", "fragment"])
def test_code_may_be_answered_in_either_place(browser, application, response_mode):
    response = final_answer(browser, authorize_url(application, response_mode=response_mode))
    assert "code" in response_params(response, in_fragment=response_mode == "fragment")


@pytest.mark.parametrize("response_mode", ["form_post", "jwt", "query.jwt", "web_message", "bogus", "QUERY"])
def test_unknown_response_mode_is_refused_in_the_default_place(browser, application, response_mode):
    """Not answered somewhere the client did not ask for: ``invalid_request`` (RFC 6749 4.1.2.1)."""
    response = final_answer(browser, authorize_url(application, response_mode=response_mode))
    params = response_params(response)  # response_type=code: the query
    assert params["error"] == ["invalid_request"]
    assert params["state"] == ["state-123"]
    assert "code" not in params
    assert nothing_issued()


def test_unknown_response_mode_of_a_hybrid_request_is_refused_in_the_fragment(browser):
    application = client_for("code id_token")
    response = final_answer(browser, request_url(application, "code id_token", response_mode="form_post"))
    params = response_params(response, in_fragment=True)
    assert params["error"] == ["invalid_request"]
    assert nothing_issued()


def test_repeated_response_mode_is_refused(browser, application):
    """RFC 6749 3.1: a parameter must not be sent twice (oauthlib would silently pick one)."""
    repeated = urlencode([("response_mode", "query"), ("response_mode", "fragment")])
    url = authorize_url(application) + "&" + repeated
    params = response_params(final_answer(browser, url))
    assert params["error"] == ["invalid_request"]
    assert nothing_issued()


def test_empty_response_mode_is_no_response_mode(browser, application):
    """RFC 6749 3.1: a parameter sent without a value is treated as omitted."""
    response = final_answer(browser, authorize_url(application, response_mode=""))
    assert "code" in response_params(response)


def test_refused_mode_with_an_untrusted_redirect_gets_the_page(browser):
    application = client_for("token")
    url = request_url(application, "token", response_mode="query", redirect_uri="https://attacker.example/cb")
    response = browser.get(url)
    assert response.status_code == 400
    assert not response.has_header("Location")


def test_metadata_lists_exactly_the_modes_accepted(api, db):
    """Discovery 3 / RFC 8414 2: ``response_modes_supported``, the same in both documents."""
    openid, oauth = documents(api)
    assert openid["response_modes_supported"] == ["query", "fragment"]
    assert oauth["response_modes_supported"] == openid["response_modes_supported"]
