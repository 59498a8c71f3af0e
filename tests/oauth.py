"""Drive the real DOT endpoints of the example site through Django's test client."""

from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser
from urllib.parse import parse_qs, quote_plus, urlencode, urlparse

from django.conf import settings
from django.test import Client

from .factories import CLIENT_SECRET

VERIFIER = "v" * 64
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


def authorize_url(application, scope="openid offline_access", **params) -> str:
    query = {
        "response_type": "code",
        "client_id": application.client_id,
        "redirect_uri": application.redirect_uris.split()[0],
        "scope": scope,
        "state": "state-123",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "nonce": "nonce-123",
    }
    query.update(params)
    query = {key: value for key, value in query.items() if value is not None}
    return "/o/authorize/?" + urlencode(query)


def redirect_params(response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, getattr(response, "content", b"")[:500])
    location = urlparse(response["Location"])
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def consent_form_data(response) -> dict[str, str]:
    """The hidden fields of the rendered consent form."""
    assert response.status_code == 200, response.status_code
    form = response.context["form"]
    return {"request": form.initial["request"]}


def submit_consent(client: Client, url: str, response, decision: str = "allow", **extra):
    data = consent_form_data(response)
    data["decision"] = decision
    data.update(extra)
    return client.post(url, data)


def get_code(client: Client, application, scope="openid offline_access", decision="allow", **params) -> str:
    """Run the authorization step (consenting when a screen is shown) and return the code."""
    url = authorize_url(application, scope=scope, **params)
    response = client.get(url)
    if response.status_code == 200:
        response = submit_consent(client, url, response, decision)
    result = redirect_params(response)
    assert "code" in result, result
    return result["code"]


def client_auth(application) -> dict:
    if application.client_type == "public":
        return {"client_id": application.client_id}
    return {"client_id": application.client_id, "client_secret": CLIENT_SECRET}


def exchange_code(client: Client, application, code: str):
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": application.redirect_uris.split()[0],
        "code_verifier": VERIFIER,
        **client_auth(application),
    }
    return client.post("/o/token/", data)


def offline_tokens(browser: Client, api: Client, application) -> dict:
    """The user approves offline access (prompt=consent, Allow); the client exchanges the code."""
    response = exchange_code(api, application, get_code(browser, application, prompt="consent"))
    assert response.status_code == 200, response.content
    tokens = response.json()
    assert "refresh_token" in tokens, tokens
    return tokens


def basic_authorization(client_id: str, secret: str) -> str:
    """An ``Authorization: Basic`` value; RFC 6749 2.3.1 form-encodes both parts first."""
    return "Basic " + base64.b64encode(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()).decode()


def refresh(client: Client, application, refresh_token: str, **extra):
    data = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        **client_auth(application),
        **extra,
    }
    return client.post("/o/token/", data)


def random_state() -> str:
    return secrets.token_urlsafe(8)


# Tokens at rest (issue 9): the database keeps keyed hashes, never the value a client holds.


def stored(value: str) -> str:
    """What the database keeps for an issued token, code or device code."""
    from offline_access import token_storage

    return token_storage.stored_value(value)


def stored_checksum(value: str) -> str:
    """DOT's ``token_checksum`` of an issued access or refresh token."""
    from offline_access import token_storage

    return token_storage.checksum(token_storage.stored_value(value))


class _HiddenInputs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}
        self._in_other_form = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form":
            self._in_other_form = bool(attributes.get("action"))
        if self._in_other_form:
            return
        if tag == "input" and attributes.get("type") == "hidden" and attributes.get("name"):
            self.values[attributes["name"]] = attributes.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_other_form = False


def hidden_inputs(html: str) -> dict[str, str]:
    """The hidden fields of the page's form that posts back to it, as a browser would post them.

    Forms posting elsewhere (the consent screen's "Not you? Switch account") are left out.
    """
    parser = _HiddenInputs()
    parser.feed(html)
    return parser.values


def discovery_issuer(client: Client | None = None) -> str:
    """The ``issuer`` of the OpenID discovery document: what RFC 9207's ``iss`` must equal."""
    response = (client or Client()).get("/o/.well-known/openid-configuration")
    assert response.status_code == 200, response.status_code
    return response.json()["issuer"]


LOGIN_REQUIRED_MIDDLEWARE = "django.contrib.auth.middleware.LoginRequiredMiddleware"


def login_required_middleware_enabled() -> bool:
    """Whether this request will pass Django's LoginRequiredMiddleware (the tox env
    py311-dj52-loginrequired, or the ``login_required_middleware`` fixture)."""
    return LOGIN_REQUIRED_MIDDLEWARE in settings.MIDDLEWARE


def login_redirect_next(response) -> str:
    """The ``next`` URL of a redirect to the login page (fails on any other answer)."""
    assert response.status_code == 302, (response.status_code, getattr(response, "content", b"")[:300])
    location = urlparse(response["Location"])
    assert location.path == "/accounts/login/", response["Location"]
    return parse_qs(location.query)["next"][0]


# A plain django-oauth-toolkit site, for comparisons (issue 12) ----------------------------------

#: DOT's own validator, as a site without this app configures it.
STOCK_VALIDATOR = "oauth2_provider.oauth2_validators.OAuth2Validator"
#: DOT's own URLs (its AuthorizationView and TokenView) at /o/.
PLAIN_DOT_URLCONF = "benchmarks.plain_dot_urls"


def plain_dot_site():
    """Settings of a plain DOT site: DOT's URLs and stock validator, every other setting the same.

    The app stays installed in the process (its receivers on the user model run),
    but no request reaches its views or validator. Use as a context manager; DOT's
    cached oauthlib servers are dropped on the way in and out.
    """
    from contextlib import contextmanager

    from django.test import override_settings

    from .conftest import reset_oauthlib_cores

    @contextmanager
    def site():
        provider = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": STOCK_VALIDATOR}
        reset_oauthlib_cores()
        try:
            with override_settings(ROOT_URLCONF=PLAIN_DOT_URLCONF, OAUTH2_PROVIDER=provider):
                reset_oauthlib_cores()
                yield
        finally:
            reset_oauthlib_cores()

    return site()


def plain_dot_code(client: Client, application, scope="openid offline_access", **params) -> str:
    """The authorization step on a plain DOT site: DOT's form, posted back with "allow"."""
    url = authorize_url(application, scope=scope, **params)
    response = client.get(url)
    assert response.status_code == 200, (response.status_code, response.content[:300])
    data = {key: value for key, value in response.context["form"].initial.items() if value is not None}
    data["allow"] = "Authorize"
    result = redirect_params(client.post("/o/authorize/", data))
    assert "code" in result, result
    return result["code"]
