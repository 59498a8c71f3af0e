"""Interoperability: a client library nobody here wrote drives the example site (issue 5).

Authlib's requests client (``OAuth2Session``) talks HTTP to pytest-django's live
server; ID tokens are checked with joserfc, the JOSE library Authlib itself
points to (``authlib.jose`` is deprecated). Only the user's part runs on
Django's test client: logging in and pressing Allow, as a person in a browser
would. Both share the database, hence transactional tests.

Every flow runs with ``offline_access`` (a refresh token that works) and
without it (no refresh token, and ``offline_access`` absent from ``scope``),
for a confidential web client (client_secret_basic) and a public native client
(PKCE, loopback redirect on any port, RFC 8252).
"""

from __future__ import annotations

import gc
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from django.test import Client
from django.utils import timezone
from joserfc import jwt
from joserfc.errors import BadSignatureError, InvalidClaimError
from joserfc.jwk import KeySet
from oauth2_provider.models import get_device_grant_model, get_refresh_token_model

from offline_access.models import Consent

from . import factories
from .oauth import hidden_inputs, stored, stored_checksum

pytestmark = pytest.mark.django_db(transaction=True)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
OFFLINE = "openid profile offline_access"
ONLINE = "openid profile"
#: The native app listens on whatever port it got; it registered the port-less loopback URI.
LOOPBACK_REDIRECT = "http://127.0.0.1:53123/callback"
#: The example site's REFRESH_TOKEN_GRACE_PERIOD_SECONDS.
GRACE_PERIOD = timedelta(seconds=30)

RefreshToken = get_refresh_token_model()
DeviceGrant = get_device_grant_model()


# The provider, as a client sees it ------------------------------------------------


class Provider:
    """What discovery tells a client, plus the RFC 7009/7662/8628 endpoints.

    OpenID discovery does not carry the revocation, introspection or device
    authorization endpoints, so they come from the site's documented URLs.
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        response = requests.get(f"{base_url}/o/.well-known/openid-configuration", timeout=10)
        assert response.status_code == 200, response.text
        self.metadata = response.json()
        jwks = requests.get(self.metadata["jwks_uri"], timeout=10)
        assert jwks.status_code == 200, jwks.text
        self.jwks = jwks.json()
        self.revocation_endpoint = f"{base_url}/o/revoke_token/"
        self.introspection_endpoint = f"{base_url}/o/introspect/"
        self.device_authorization_endpoint = f"{base_url}/o/device-authorization/"

    def __getattr__(self, name: str):
        try:
            return self.metadata[name]
        except KeyError:
            raise AttributeError(name) from None


@pytest.fixture
def provider(live_server) -> Provider:
    return Provider(live_server.url)


@pytest.fixture
def alice(user) -> Client:
    """Alice's browser, signed in through the site's login form."""
    browser = Client()
    response = browser.post("/accounts/login/", {"username": user.username, "password": factories.PASSWORD})
    assert response.status_code == 302, response.content[:500]
    assert browser.session["_auth_user_id"] == str(user.pk)
    return browser


@pytest.fixture
def web_app(application):
    """The confidential web client (``calendar-sync``), signing ID tokens with RS256."""
    assert application.algorithm == "RS256" and application.client_type == "confidential"
    return application


@pytest.fixture
def native_app(native_application):
    """The public native client (``phone-app``), registered as ``http://127.0.0.1/callback``."""
    assert native_application.algorithm == "RS256" and native_application.client_type == "public"
    return native_application


@pytest.fixture(params=["web", "native"])
def client_app(request, web_app, native_app):
    """Each code-flow test runs for the web client and for the native app."""
    return web_app if request.param == "web" else native_app


_open_sessions: list[OAuth2Session] = []


@pytest.fixture(autouse=True)
def close_client_connections(live_server):
    """Close the clients' keep-alive connections after each test and wait for the server's side.

    A live-server request thread left waiting on a keep-alive connection outlives
    the test; on SQLite it ends after the session-wide server stopped sharing the
    in-memory connection with it, and pytest reports an exception in that thread.
    """
    running = set(threading.enumerate())
    yield
    while _open_sessions:
        _open_sessions.pop().close()
    # A response caught in an exception's reference cycle (pytest.raises) still holds its socket.
    gc.collect()
    for request_thread in set(threading.enumerate()) - running:
        request_thread.join(timeout=10)
        assert not request_thread.is_alive(), f"{request_thread.name} still serves a connection"


def authlib_session(**config) -> OAuth2Session:
    session = OAuth2Session(**config)
    _open_sessions.append(session)
    return session


def oauth_session(app, scope: str) -> OAuth2Session:
    """The Authlib client as the application itself would configure it."""
    if app.client_type == "confidential":
        return authlib_session(
            client_id=app.client_id,
            client_secret=factories.CLIENT_SECRET,
            token_endpoint_auth_method="client_secret_basic",
            revocation_endpoint_auth_method="client_secret_basic",
            scope=scope,
            redirect_uri=app.redirect_uris.split()[0],
            code_challenge_method="S256",
        )
    redirect_uri = LOOPBACK_REDIRECT if app.redirect_uris else None
    return authlib_session(
        client_id=app.client_id,
        token_endpoint_auth_method="none",
        revocation_endpoint_auth_method="none",
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )


@pytest.fixture
def resource_server(web_app) -> OAuth2Session:
    """The confidential client's credentials, used to introspect any token (RFC 7662)."""
    return oauth_session(web_app, ONLINE)


# The user's part, on Django's test client -------------------------------------------


def approve_in_browser(browser: Client, authorization_url: str, provider: Provider, *, offline_notice: bool):
    """Open the authorization URL, check the screen, press Allow; return the redirect Location."""
    assert authorization_url.startswith(provider.authorization_endpoint + "?")
    parts = urlsplit(authorization_url)
    path = f"{parts.path}?{parts.query}"
    host = {"HTTP_HOST": parts.netloc}  # as a browser would send it: the issuer is derived from it
    screen = browser.get(path, **host)
    assert screen.status_code == 200, screen.content[:500]
    assert screen.context["offline_access"] is offline_notice
    assert ("Access while you are away" in screen.content.decode()) is offline_notice
    # The form posts back to the same URL; only the signed request and the button count.
    signed = hidden_inputs(screen.content.decode())["request"]
    response = browser.post(path, {"request": signed, "decision": "allow"}, **host)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def code_flow(provider: Provider, browser: Client, app, scope: str, offline_notice=None, **authorize_params):
    """Authorization code flow with PKCE S256, nonce and state, driven by Authlib.

    Returns ``(session, token, nonce)``; the state round trip is checked on the way.
    The consent screen must show the offline notice exactly when ``offline_notice``
    (by default: offline_access requested with ``prompt=consent``).
    """
    if offline_notice is None:
        offline_notice = "offline_access" in scope.split() and "consent" in authorize_params.get("prompt", "")
    session = oauth_session(app, scope)
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = session.create_authorization_url(
        provider.authorization_endpoint, code_verifier=verifier, nonce=nonce, **authorize_params
    )
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["nonce"] == [nonce]

    location = approve_in_browser(
        browser,
        url,
        provider,
        offline_notice=offline_notice,
    )
    assert location.startswith(session.redirect_uri + "?"), location
    returned = parse_qs(urlsplit(location).query)
    assert returned["state"] == [state]
    # RFC 9207: the issuer that discovery names, for the client's mix-up check.
    assert set(returned) == {"code", "state", "iss"}
    assert returned["iss"] == [provider.issuer]

    # Authlib refuses an authorization response whose state differs from its own.
    token = session.fetch_token(
        provider.token_endpoint, authorization_response=location, state=state, code_verifier=verifier
    )
    return session, token, nonce


def id_token_claims(provider: Provider, id_token: str, app, nonce: str | None) -> dict:
    """Verify the signature against discovery's JWKS and the OIDC Core 3.1.3.7 claims.

    ``nonce=None`` for an ID token from a refresh, which carries no nonce to check.
    """
    keys = KeySet.import_key_set(provider.jwks)
    decoded = jwt.decode(id_token, keys, algorithms=provider.id_token_signing_alg_values_supported)
    assert decoded.header["alg"] == "RS256"
    assert decoded.header["kid"] in {key["kid"] for key in provider.jwks["keys"]}
    claims_options = {
        "iss": {"essential": True, "value": provider.issuer},
        "aud": {"essential": True, "value": app.client_id},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }
    if nonce is not None:
        claims_options["nonce"] = {"essential": True, "value": nonce}
    jwt.JWTClaimsRegistry(**claims_options).validate(decoded.claims)
    now = timezone.now().timestamp()
    assert decoded.claims["iat"] <= now + 5  # issued now, give or take clock skew
    assert decoded.claims["exp"] > now
    return decoded.claims


def introspect(resource_server: OAuth2Session, provider: Provider, token: str, hint="access_token") -> dict:
    response = resource_server.introspect_token(
        provider.introspection_endpoint, token=token, token_type_hint=hint
    )
    assert response.status_code == 200, response.text
    return response.json()


def refresh_error(session: OAuth2Session, provider: Provider, refresh_token: str) -> str:
    with pytest.raises(OAuthError) as refused:
        session.refresh_token(provider.token_endpoint, refresh_token=refresh_token)
    return refused.value.error


def refresh_token_row(token: str):
    return RefreshToken.objects.get(token_checksum=stored_checksum(token))


# Discovery -----------------------------------------------------------------------------


def test_P8_discovery_lists_offline_access_prompts_endpoints_and_jwks(provider, live_server):
    assert provider.issuer == f"{live_server.url}/o"
    assert "offline_access" in provider.scopes_supported
    assert {"none", "login", "consent"} <= set(provider.prompt_values_supported)
    assert "code" in provider.response_types_supported
    assert "S256" in provider.code_challenge_methods_supported
    assert "RS256" in provider.id_token_signing_alg_values_supported
    assert "client_secret_basic" in provider.token_endpoint_auth_methods_supported
    for endpoint, path in [
        ("authorization_endpoint", "/o/authorize/"),
        ("token_endpoint", "/o/token/"),
        ("userinfo_endpoint", "/o/userinfo/"),
        ("jwks_uri", "/o/.well-known/jwks.json"),
    ]:
        assert provider.metadata[endpoint] == live_server.url + path
    [key] = provider.jwks["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("RSA", "RS256", "sig")
    assert key["kid"] and "d" not in key  # the public half only


# Authorization code flow -----------------------------------------------------------------


def test_P2_code_flow_with_prompt_consent_grants_offline_access(provider, alice, client_app, user):
    session, token, nonce = code_flow(provider, alice, client_app, OFFLINE, prompt="consent")

    assert token["token_type"].lower() == "bearer"
    assert set(token["scope"].split()) == {"openid", "profile", "offline_access"}
    assert token["refresh_token"]
    assert Consent.objects.active().filter(user=user, application=client_app).exists()

    claims = id_token_claims(provider, token["id_token"], client_app, nonce)
    userinfo = session.get(provider.userinfo_endpoint)
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == claims["sub"]

    refreshed = session.refresh_token(provider.token_endpoint, refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]
    assert "offline_access" in refreshed["scope"].split()
    # OIDC Core 12.2: a refreshed ID token names the same issuer, subject, audience and login.
    again = id_token_claims(provider, refreshed["id_token"], client_app, nonce=None)
    assert again["sub"] == claims["sub"]
    assert again["auth_time"] == claims["auth_time"]
    assert session.get(provider.userinfo_endpoint).json()["sub"] == claims["sub"]


def test_P1_code_flow_without_offline_access_has_no_refresh_token(provider, alice, client_app, user):
    session, token, nonce = code_flow(provider, alice, client_app, ONLINE, prompt="consent")

    assert set(token["scope"].split()) == {"openid", "profile"}
    assert "refresh_token" not in token
    assert not Consent.objects.filter(user=user, application=client_app).exists()

    claims = id_token_claims(provider, token["id_token"], client_app, nonce)
    userinfo = session.get(provider.userinfo_endpoint)
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == claims["sub"]


def test_P2_offline_access_without_prompt_consent_is_dropped(provider, alice, client_app):
    """OIDC Core 11: no ``prompt=consent`` and no enduring consent, so offline_access is ignored."""
    _session, token, nonce = code_flow(provider, alice, client_app, OFFLINE)

    assert set(token["scope"].split()) == {"openid", "profile"}
    assert "refresh_token" not in token
    id_token_claims(provider, token["id_token"], client_app, nonce)


def test_P2_enduring_consent_grants_offline_access_without_prompt_consent(provider, alice, web_app, user):
    factories.EnduringConsentFactory(user=user, application=web_app)
    session, token, _nonce = code_flow(provider, alice, web_app, OFFLINE, offline_notice=True)

    assert "offline_access" in token["scope"].split()
    assert session.refresh_token(provider.token_endpoint, refresh_token=token["refresh_token"])[
        "refresh_token"
    ]


def test_native_app_loopback_redirect_keeps_its_port(provider, alice, native_app):
    session, token, _nonce = code_flow(provider, alice, native_app, ONLINE, prompt="consent")
    assert native_app.redirect_uris == "http://127.0.0.1/callback"
    assert session.redirect_uri == LOOPBACK_REDIRECT
    assert token["access_token"]


def test_id_token_with_a_forged_signature_or_wrong_nonce_is_rejected(provider, alice, web_app):
    """The checks above are real: a tampered token or another request's nonce fails them."""
    _session, token, nonce = code_flow(provider, alice, web_app, ONLINE, prompt="consent")
    header, payload, signature = token["id_token"].split(".")
    forged = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
    with pytest.raises(BadSignatureError):
        id_token_claims(provider, forged, web_app, nonce)
    with pytest.raises(InvalidClaimError):
        id_token_claims(provider, token["id_token"], web_app, "another-nonce")


def test_pkce_wrong_code_verifier_is_invalid_grant(provider, alice, native_app):
    session = oauth_session(native_app, OFFLINE)
    url, state = session.create_authorization_url(
        provider.authorization_endpoint, code_verifier=generate_token(64), nonce="n-1", prompt="consent"
    )
    location = approve_in_browser(alice, url, provider, offline_notice=True)
    with pytest.raises(OAuthError) as refused:
        session.fetch_token(
            provider.token_endpoint,
            authorization_response=location,
            state=state,
            code_verifier=generate_token(64),
        )
    assert refused.value.error == "invalid_grant"


# Refresh with rotation -----------------------------------------------------------------


def test_P6_refresh_rotates_and_replay_after_grace_period_revokes_the_family(
    provider, alice, client_app, resource_server
):
    session, first, _nonce = code_flow(provider, alice, client_app, OFFLINE, prompt="consent")

    second = dict(session.refresh_token(provider.token_endpoint, refresh_token=first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert "offline_access" in second["scope"].split()
    assert introspect(resource_server, provider, second["access_token"])["active"] is True

    # The rotated token was used up longer ago than the grace period allows a retry.
    old = refresh_token_row(first["refresh_token"])
    assert old.revoked is not None
    RefreshToken.objects.filter(pk=old.pk).update(
        revoked=timezone.now() - GRACE_PERIOD - timedelta(seconds=5)
    )

    assert refresh_error(session, provider, first["refresh_token"]) == "invalid_grant"
    # Reuse protection: a replay is a sign of theft, so the whole family ends.
    assert refresh_error(session, provider, second["refresh_token"]) == "invalid_grant"
    assert introspect(resource_server, provider, second["access_token"])["active"] is False


def test_refresh_retry_within_grace_period_returns_the_same_pair(provider, alice, client_app):
    """A client that lost the rotated answer retries with the old token and gets it again."""
    session, first, _nonce = code_flow(provider, alice, client_app, OFFLINE, prompt="consent")
    second = dict(session.refresh_token(provider.token_endpoint, refresh_token=first["refresh_token"]))
    retried = dict(session.refresh_token(provider.token_endpoint, refresh_token=first["refresh_token"]))
    assert (retried["access_token"], retried["refresh_token"]) == (
        second["access_token"],
        second["refresh_token"],
    )
    assert session.refresh_token(provider.token_endpoint, refresh_token=second["refresh_token"])[
        "refresh_token"
    ]


def test_P6_refresh_dropping_offline_access_gets_no_new_refresh_token(provider, alice, client_app):
    session, token, _nonce = code_flow(provider, alice, client_app, OFFLINE, prompt="consent")
    answers = []

    def keep_raw_answer(response):
        answers.append(response.json())
        return response

    session.register_compliance_hook("refresh_token_response", keep_raw_answer)
    narrowed = session.refresh_token(
        provider.token_endpoint, refresh_token=token["refresh_token"], scope="openid profile"
    )
    assert "refresh_token" not in answers[-1]
    assert set(narrowed["scope"].split()) == {"openid", "profile"}
    # Authlib keeps the old refresh token when none comes back; it is used up.
    assert narrowed["refresh_token"] == token["refresh_token"]
    RefreshToken.objects.filter(pk=refresh_token_row(token["refresh_token"]).pk).update(
        revoked=timezone.now() - GRACE_PERIOD - timedelta(seconds=5)
    )
    assert refresh_error(session, provider, token["refresh_token"]) == "invalid_grant"


# RFC 7009 revocation and RFC 7662 introspection ------------------------------------------


def test_rfc7009_revoked_refresh_token_is_invalid_grant(provider, alice, client_app, resource_server):
    session, token, _nonce = code_flow(provider, alice, client_app, OFFLINE, prompt="consent")
    assert introspect(resource_server, provider, token["access_token"])["active"] is True

    response = session.revoke_token(
        provider.revocation_endpoint, token=token["refresh_token"], token_type_hint="refresh_token"
    )
    assert response.status_code == 200, response.text

    assert refresh_error(session, provider, token["refresh_token"]) == "invalid_grant"
    # Revoking the refresh token takes its access token with it (RFC 7009 2.1).
    assert introspect(resource_server, provider, token["access_token"])["active"] is False
    assert session.get(provider.userinfo_endpoint).status_code == 401


def test_rfc7009_revoked_access_token_without_offline_access(provider, alice, client_app, resource_server):
    session, token, _nonce = code_flow(provider, alice, client_app, ONLINE, prompt="consent")
    assert "refresh_token" not in token

    response = session.revoke_token(
        provider.revocation_endpoint, token=token["access_token"], token_type_hint="access_token"
    )
    assert response.status_code == 200, response.text
    assert introspect(resource_server, provider, token["access_token"])["active"] is False
    assert session.get(provider.userinfo_endpoint).status_code == 401


@pytest.mark.parametrize(("scope", "offline"), [(OFFLINE, True), (ONLINE, False)])
def test_rfc7662_introspection_reports_the_granted_scope(
    provider, alice, client_app, resource_server, user, scope, offline
):
    _session, token, _nonce = code_flow(provider, alice, client_app, scope, prompt="consent")
    answer = introspect(resource_server, provider, token["access_token"])
    assert answer["active"] is True
    assert answer["client_id"] == client_app.client_id
    assert answer["username"] == user.username
    assert ("offline_access" in answer["scope"].split()) is offline
    assert answer["exp"] > timezone.now().timestamp()


def test_rfc7662_introspection_needs_client_credentials(provider, alice, web_app):
    _session, token, _nonce = code_flow(provider, alice, web_app, ONLINE, prompt="consent")
    stranger = authlib_session(
        client_id=web_app.client_id,
        client_secret="wrong-secret",
        token_endpoint_auth_method="client_secret_basic",
    )
    response = stranger.introspect_token(provider.introspection_endpoint, token=token["access_token"])
    # RFC 7662 section 2.3: 401 invalid_client (DOT alone answers a bare 403).
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert "active" not in response.text


# Device authorization grant (RFC 8628) ---------------------------------------------------


def start_device_flow(provider: Provider, session: OAuth2Session) -> dict:
    response = session.post(
        provider.device_authorization_endpoint,
        data={"client_id": session.client_id, "scope": session.scope},
        withhold_token=True,
    )
    assert response.status_code == 200, response.text
    started = response.json()
    assert {"device_code", "user_code", "verification_uri", "expires_in", "interval"} <= set(started)
    assert urlsplit(started["verification_uri"]).path == "/o/device/"
    return started


def poll(provider: Provider, session: OAuth2Session, device_code: str):
    # The device waited its interval since the last poll.
    DeviceGrant.objects.filter(device_code=stored(device_code)).update(
        last_checked=timezone.now() - timedelta(seconds=60)
    )
    return session.fetch_token(provider.token_endpoint, grant_type=DEVICE_CODE_GRANT, device_code=device_code)


def approve_device(browser: Client, started: dict, *, offline_notice: bool) -> None:
    """The user opens the verification URI, types the code, and presses Allow."""
    verification_path = urlsplit(started["verification_uri"]).path
    entered = browser.post(verification_path, {"user_code": started["user_code"]})
    assert entered.status_code == 302, entered.content[:500]
    confirm_url = entered["Location"]
    screen = browser.get(confirm_url)
    assert screen.status_code == 200
    assert screen.context["offline_access"] is offline_notice
    answered = browser.post(confirm_url, {"decision": "allow"})
    assert answered.status_code == 302, answered.content[:500]


def test_P7_device_grant_with_offline_access(provider, alice, cli, user, resource_server):
    session = oauth_session(cli, "openid offline_access")
    started = start_device_flow(provider, session)

    with pytest.raises(OAuthError) as pending:
        poll(provider, session, started["device_code"])
    assert pending.value.error == "authorization_pending"

    approve_device(alice, started, offline_notice=True)
    token = poll(provider, session, started["device_code"])
    assert set(token["scope"].split()) == {"openid", "offline_access"}
    assert token["refresh_token"]
    assert Consent.objects.active().filter(user=user, application=cli).exists()
    assert introspect(resource_server, provider, token["access_token"])["active"] is True

    # Redeemed once: polling again gets no second token pair.
    with pytest.raises(OAuthError) as again:
        poll(provider, session, started["device_code"])
    assert again.value.error == "invalid_grant"

    refreshed = session.refresh_token(provider.token_endpoint, refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert "offline_access" in refreshed["scope"].split()
    userinfo = session.get(provider.userinfo_endpoint)
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == str(user.pk)


def test_P7_device_grant_without_offline_access_has_no_refresh_token(provider, alice, cli, user):
    session = oauth_session(cli, "openid")
    started = start_device_flow(provider, session)
    approve_device(alice, started, offline_notice=False)

    token = poll(provider, session, started["device_code"])
    assert token["scope"].split() == ["openid"]
    assert "refresh_token" not in token
    assert not Consent.objects.filter(user=user, application=cli).exists()
    assert session.get(provider.userinfo_endpoint).status_code == 200
