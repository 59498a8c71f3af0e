"""Interoperability: Node's ``openid-client`` v6 drives the example site (issue 10).

openid-client (by panva, an OpenID Foundation certified relying party) is the
strictest common client: it checks the ID token (signature, ``iss``, ``aud``,
``exp``, ``iat``, ``nonce``, ``azp``, ``auth_time`` when ``max_age`` was sent),
``state``, the RFC 9207 ``iss`` of the authorization response when discovery
advertises it, the ``sub`` of userinfo, and the shape of every JSON answer.
Any error it raises fails the test, with its code and cause in the message.

The relying party is tests/interop/rp.mjs, one step per Node process: it reads
a JSON instruction on stdin, runs discovery, then the step, and prints JSON.
The user's part (logging in through the login form, pressing Allow on the
consent and device screens) runs on Django's test client, as in
tests/test_interop_authlib.py; both share the live server's database, hence
transactional tests.

Node is needed. Without it the tests are skipped, except on CI (``CI`` set),
where .ci/run installs it and a missing ``node`` fails the tests. The fixture
runs ``npm ci`` in tests/interop/ when its node_modules/ is missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk

from offline_access.models import Consent, OfflineTokenFamily

from . import factories
from .dpop import new_key
from .oauth import hidden_inputs

pytestmark = pytest.mark.django_db(transaction=True)

INTEROP_DIR = Path(__file__).parent / "interop"
RP_SCRIPT = INTEROP_DIR / "rp.mjs"
OFFLINE = "openid profile offline_access"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: The native app listens on whatever port it got; it registered the port-less loopback URI (RFC 8252).
LOOPBACK_REDIRECT = "http://127.0.0.1:53124/callback"


# The Node relying party -----------------------------------------------------------------


#: openid-client v6 and jose v6 use the global WebCrypto and fetch of Node.js 20 and later.
MIN_NODE_MAJOR = 20


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        reason = "Node.js is not installed: the openid-client interoperability tests need `node` and `npm`"
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
        major = int(version.strip().lstrip("v").split(".")[0] or 0)
        if major >= MIN_NODE_MAJOR:
            return node
        reason = f"Node.js {version.strip()} is too old for openid-client v6 (needs {MIN_NODE_MAJOR}+)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; .ci/run installs it before tox")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` binary, with tests/interop/node_modules installed from package-lock.json."""
    node = _node_or_skip()
    # Under pytest-xdist two workers may get here at once: one runs npm ci, the other waits.
    with open(INTEROP_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (INTEROP_DIR / "node_modules" / "openid-client").is_dir():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("node is installed but npm is not: cannot install tests/interop's openid-client")
            installed = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=INTEROP_DIR,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return node


class OpenIDClientError(AssertionError):
    """openid-client refused something the server did; ``details`` is what it raised."""

    def __init__(self, step: str, details: dict):
        self.step, self.details = step, details
        super().__init__(f"openid-client raised at step {step!r}: {json.dumps(details, indent=2)}")

    @property
    def code(self) -> str | None:
        return self.details.get("code")

    @property
    def error(self) -> str | None:
        """The OAuth ``error`` of a ResponseBodyError or AuthorizationResponseError."""
        return self.details.get("error")


class RelyingParty:
    """One registered client, as openid-client is configured with it."""

    def __init__(self, node: str, issuer: str, client_id: str, client_secret: str | None = None):
        self.node, self.issuer, self.client_id, self.client_secret = node, issuer, client_id, client_secret

    def __call__(self, step: str, **fields):
        """Run ``step``; return its result, or raise :class:`OpenIDClientError` (a test failure)."""
        instruction = {"step": step, "issuer": self.issuer, "client_id": self.client_id, **fields}
        if self.client_secret:
            instruction["client_secret"] = self.client_secret
        ran = subprocess.run(
            [self.node, str(RP_SCRIPT)],
            input=json.dumps(instruction),
            cwd=INTEROP_DIR,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert ran.returncode == 0, f"rp.mjs crashed at step {step!r}:\n{ran.stderr}"
        answer = json.loads(ran.stdout)
        if not answer["ok"]:
            raise OpenIDClientError(step, answer["error"])
        return answer["result"]

    def refused(self, step: str, **fields) -> OpenIDClientError:
        """Run a step that openid-client must refuse; return what it raised."""
        with pytest.raises(OpenIDClientError) as refused:
            self(step, **fields)
        return refused.value


@pytest.fixture
def issuer(live_server) -> str:
    return f"{live_server.url}/o"


@pytest.fixture
def web_rp(node, issuer, application) -> RelyingParty:
    """The confidential web client (``calendar-sync``), client_secret_basic."""
    return RelyingParty(node, issuer, application.client_id, factories.CLIENT_SECRET)


@pytest.fixture
def native_rp(node, issuer, native_application) -> RelyingParty:
    """The public native app (``phone-app``): token_endpoint_auth_method ``none``, PKCE."""
    return RelyingParty(node, issuer, native_application.client_id)


@pytest.fixture(params=["web", "native"])
def rp(request, web_rp, native_rp) -> RelyingParty:
    return web_rp if request.param == "web" else native_rp


@pytest.fixture
def resource_server(web_rp) -> RelyingParty:
    """A confidential client introspecting tokens (RFC 7662)."""
    return web_rp


@pytest.fixture(autouse=True)
def wait_for_request_threads(live_server):
    """Let the live server's request threads of this test end before the next one starts.

    A request thread still serving a closed keep-alive connection after the test
    would touch the database after pytest-django tore it down.
    """
    running = set(threading.enumerate())
    yield
    for request_thread in set(threading.enumerate()) - running:
        request_thread.join(timeout=10)
        assert not request_thread.is_alive(), f"{request_thread.name} still serves a connection"


# The user's part, on Django's test client -------------------------------------------------


@pytest.fixture
def alice(user) -> Client:
    """Alice's browser, signed in through the site's login form."""
    browser = Client()
    response = browser.post("/accounts/login/", {"username": user.username, "password": factories.PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return browser


def redirect_uri_of(application) -> str:
    return LOOPBACK_REDIRECT if application.client_type == "public" else application.redirect_uris.split()[0]


def decide_in_browser(browser: Client, authorization_url: str, *, decision="allow", offline_notice=True):
    """Open the authorization URL, check the consent screen, press a button; return the redirect."""
    parts = urlsplit(authorization_url)
    path = f"{parts.path}?{parts.query}"
    host = {"HTTP_HOST": parts.netloc}  # as a browser would send it: the issuer is derived from it
    screen = browser.get(path, **host)
    assert screen.status_code == 200, screen.content[:500]
    assert screen.context["offline_access"] is offline_notice
    signed = hidden_inputs(screen.content.decode())["request"]
    response = browser.post(path, {"request": signed, "decision": decision}, **host)
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def authorize(rp: RelyingParty, browser: Client, application, scope=OFFLINE, decision="allow", **params):
    """openid-client builds the request; the user answers; returns (request, callback URL)."""
    request = rp(
        "authorization_url",
        redirect_uri=redirect_uri_of(application),
        scope=scope,
        params={"prompt": "consent", **params},
    )
    query = parse_qs(urlsplit(request["url"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["nonce"] == [request["nonce"]] and query["state"] == [request["state"]]
    callback_url = decide_in_browser(browser, request["url"], decision=decision)
    return request, callback_url


def code_flow(rp: RelyingParty, browser: Client, application, scope=OFFLINE, **params) -> dict:
    """Authorization code flow with PKCE S256, state and nonce; openid-client redeems the code."""
    request, callback_url = authorize(rp, browser, application, scope, **params)
    tokens = rp(
        "callback",
        callback_url=callback_url,
        code_verifier=request["code_verifier"],
        state=request["state"],
        nonce=request["nonce"],
        **({"max_age": int(params["max_age"])} if "max_age" in params else {}),
    )
    return tokens


def approve_device(browser: Client, started: dict) -> None:
    """The user opens the verification URI, types the code, and presses Allow."""
    entered = browser.post(urlsplit(started["verification_uri"]).path, {"user_code": started["user_code"]})
    assert entered.status_code == 302, entered.content[:500]
    screen = browser.get(entered["Location"])
    assert screen.status_code == 200
    assert screen.context["offline_access"] is True
    answered = browser.post(entered["Location"], {"decision": "allow"})
    assert answered.status_code == 302, answered.content[:500]


# Discovery ---------------------------------------------------------------------------------------


def test_openid_client_discovery_openid_configuration(web_rp, issuer, live_server):
    metadata = web_rp("discover")

    assert metadata["issuer"] == issuer
    assert "offline_access" in metadata["scopes_supported"]
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert {"client_secret_basic", "none"} <= set(metadata["token_endpoint_auth_methods_supported"])
    for endpoint, path in [
        ("revocation_endpoint", "/o/revoke_token/"),
        ("introspection_endpoint", "/o/introspect/"),
        ("device_authorization_endpoint", "/o/device-authorization/"),
    ]:
        assert metadata[endpoint] == live_server.url + path
    # Absent, OIDC Discovery 3 means ["authorization_code", "implicit"]: the device grant and
    # refresh would be unannounced.
    assert {"authorization_code", "refresh_token", DEVICE_CODE_GRANT} <= set(
        metadata.get("grant_types_supported", [])
    )
    # RFC 9207: with this, openid-client refuses any authorization response without iss.
    assert metadata.get("authorization_response_iss_parameter_supported") is True
    # Absent means true (OIDC Discovery 3), and the server does not fetch request_uri.
    assert metadata.get("request_uri_parameter_supported") is False


def test_openid_client_discovery_rfc8414_metadata(web_rp, issuer):
    """``algorithm: 'oauth2'`` fetches /.well-known/oauth-authorization-server/o (RFC 8414 section 3)."""
    oauth_metadata = web_rp("discover", algorithm="oauth2")
    oidc_metadata = web_rp("discover")

    assert oauth_metadata["issuer"] == issuer
    # The two documents describe one server.
    for key in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "device_authorization_endpoint",
        "code_challenge_methods_supported",
        "token_endpoint_auth_methods_supported",
        "grant_types_supported",
        "authorization_response_iss_parameter_supported",
    ]:
        assert oauth_metadata.get(key) == oidc_metadata.get(key), key
    assert set(oauth_metadata["scopes_supported"]) == set(oidc_metadata["scopes_supported"])


# Authorization code flow, refresh, userinfo ---------------------------------------------


def test_openid_client_code_flow_with_pkce_and_offline_access(rp, alice, request, user):
    application = request.getfixturevalue("application" if rp.client_secret else "native_application")
    tokens = code_flow(rp, alice, application)

    assert tokens["token_type"] == "bearer"
    assert set(tokens["scope"].split()) == {"openid", "profile", "offline_access"}
    assert tokens["refresh_token"]
    claims = tokens["id_token_claims"]
    assert claims["iss"] == rp.issuer and claims["aud"] == application.client_id
    assert Consent.objects.active().filter(user=user, application=application).exists()

    userinfo = rp("userinfo", access_token=tokens["access_token"], expected_sub=claims["sub"])
    assert userinfo["sub"] == claims["sub"]

    refreshed = rp("refresh", refresh_token=tokens["refresh_token"])
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert "offline_access" in refreshed["scope"].split()
    # OIDC Core 12.2: the refreshed ID token names the same issuer, subject, audience and login.
    again = refreshed["id_token_claims"]
    for claim in ("iss", "sub", "aud", "auth_time"):
        assert again[claim] == claims[claim], claim
    assert again["iat"] >= claims["iat"]
    assert (
        rp("userinfo", access_token=refreshed["access_token"], expected_sub=claims["sub"])["sub"]
        == (claims["sub"])
    )


def test_openid_client_max_age_gets_auth_time(web_rp, alice, application):
    """With ``max_age`` openid-client requires ``auth_time`` and checks the age (OIDC Core 3.1.2.1)."""
    tokens = code_flow(web_rp, alice, application, max_age="300")
    assert tokens["id_token_claims"]["auth_time"] <= timezone.now().timestamp()


def test_openid_client_rfc9207_iss_in_authorization_responses(web_rp, alice, application):
    """Success and Deny both carry ``iss``, and discovery says so, so openid-client checks it."""
    request, allowed_url = authorize(web_rp, alice, application)
    web_rp(
        "callback",
        callback_url=allowed_url,
        code_verifier=request["code_verifier"],
        state=request["state"],
        nonce=request["nonce"],
    )
    request, denied_url = authorize(web_rp, alice, application, decision="deny")
    denied = web_rp.refused(
        "callback",
        callback_url=denied_url,
        code_verifier=request["code_verifier"],
        state=request["state"],
        nonce=request["nonce"],
    )
    # Not "iss missing" or "unexpected iss": openid-client got past its checks to the OAuth error.
    assert denied.details["name"] == "AuthorizationResponseError", denied
    assert denied.error == "access_denied", denied

    # Without the discovery flag openid-client checks iss only when present: both must hold.
    assert web_rp("discover").get("authorization_response_iss_parameter_supported") is True
    assert parse_qs(urlsplit(allowed_url).query).get("iss") == [web_rp.issuer], allowed_url
    assert parse_qs(urlsplit(denied_url).query).get("iss") == [web_rp.issuer], denied_url


# RFC 7009 revocation, RFC 7662 introspection ------------------------------------------------


def test_openid_client_revocation_ends_the_refresh_token_and_its_access_token(
    rp, alice, request, resource_server
):
    application = request.getfixturevalue("application" if rp.client_secret else "native_application")
    tokens = code_flow(rp, alice, application)
    sub = tokens["id_token_claims"]["sub"]

    assert rp("revoke", token=tokens["refresh_token"], token_type_hint="refresh_token") == {"revoked": True}

    refused = rp.refused("refresh", refresh_token=tokens["refresh_token"])
    assert (refused.details["name"], refused.error) == ("ResponseBodyError", "invalid_grant"), refused
    refused = rp.refused("userinfo", access_token=tokens["access_token"], expected_sub=sub)
    assert refused.details["name"] == "WWWAuthenticateChallengeError", refused
    assert resource_server("introspect", token=tokens["access_token"])["active"] is False


def test_openid_client_introspection_by_a_confidential_client(web_rp, alice, application, user):
    tokens = code_flow(web_rp, alice, application)

    answer = web_rp("introspect", token=tokens["access_token"], token_type_hint="access_token")
    assert answer["active"] is True
    assert answer["client_id"] == application.client_id
    assert set(answer["scope"].split()) == {"openid", "profile", "offline_access"}
    assert answer["exp"] > timezone.now().timestamp()
    # RFC 7662 2.2: a live refresh token is active for the client that owns it.
    answer = web_rp("introspect", token=tokens["refresh_token"], token_type_hint="refresh_token")
    assert answer["active"] is True
    assert answer["client_id"] == application.client_id

    web_rp("revoke", token=tokens["refresh_token"], token_type_hint="refresh_token")
    assert web_rp("introspect", token=tokens["refresh_token"])["active"] is False


def test_openid_client_introspection_by_a_public_client_is_invalid_client(
    web_rp, native_rp, alice, application
):
    """RFC 7662 2.3: a caller that cannot authenticate gets 401 invalid_client, not the token's data."""
    tokens = code_flow(web_rp, alice, application)

    refused = native_rp.refused("introspect", token=tokens["access_token"])

    # openid-client reads a 401's WWW-Authenticate challenge (RFC 6749 5.2) before its body
    # (the body's invalid_client is checked in tests/test_introspection.py).
    assert refused.details["name"] == "WWWAuthenticateChallengeError", refused
    assert refused.details["status"] == 401, refused
    assert [challenge["scheme"] for challenge in refused.details["cause"]] == ["basic"], refused


# RFC 8628 device authorization grant ------------------------------------------------------


def test_openid_client_device_grant_with_offline_access(node, issuer, cli, alice, user, dot_settings):
    # The server asks for one second between polls (DOT's default is 5); openid-client waits
    # whatever the server asks, before every poll.
    dot_settings(DEVICE_FLOW_INTERVAL=1)
    device_rp = RelyingParty(node, issuer, cli.client_id)

    started = device_rp("device_start", scope="openid offline_access")
    assert started["interval"] == 1

    # Before the user answers, openid-client meets authorization_pending and keeps polling.
    waiting = device_rp.refused("device_poll", device_authorization=started, timeout_seconds=2.5)
    assert waiting.code == "OAUTH_TIMEOUT", waiting

    approve_device(alice, started)
    tokens = device_rp("device_poll", device_authorization=started)

    assert set(tokens["scope"].split()) == {"openid", "offline_access"}
    assert tokens["refresh_token"]
    assert Consent.objects.active().filter(user=user, application=cli).exists()
    refreshed = device_rp("refresh", refresh_token=tokens["refresh_token"])
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    userinfo = device_rp("userinfo", access_token=refreshed["access_token"], expected_sub=str(user.pk))
    assert userinfo["sub"] == str(user.pk)

    # RFC 8628 3.3.1: the code prefilled, for a QR code.
    assert started.get("verification_uri_complete", "").endswith(started["user_code"]), started
    # As in the code flow, openid granted means an ID token, which openid-client validated.
    claims = tokens["id_token_claims"]
    assert claims is not None, "no id_token in the device grant's token response"
    assert claims["aud"] == cli.client_id and claims["iss"] == issuer


# RFC 9449 DPoP: openid-client's DPoP handle --------------------------------------------------


def dpop_key() -> dict:
    """A fresh EC P-256 key pair as a private JWK (jwcrypto); rp.mjs hands it to getDPoPHandle."""
    return new_key().export_private(as_dict=True)


def thumbprint(private_jwk: dict) -> str:
    """RFC 7638 SHA-256 thumbprint, by jwcrypto: independent of openid-client's own."""
    return jwk.JWK(**private_jwk).thumbprint()


def family_of(user, application) -> OfflineTokenFamily:
    (family,) = OfflineTokenFamily.objects.filter(user=user, application=application)
    return family


def code_flow_with_dpop(rp: RelyingParty, browser: Client, application, key: dict) -> dict:
    request, callback_url = authorize(rp, browser, application)
    return rp(
        "callback",
        callback_url=callback_url,
        code_verifier=request["code_verifier"],
        state=request["state"],
        nonce=request["nonce"],
        dpop_key=key,
    )


def test_openid_client_dpop_bound_code_exchange_refresh_and_userinfo(
    native_rp, alice, native_application, user
):
    """A public native app with openid-client's DPoP handle: every token it holds is bound to its key."""
    assert "ES256" in native_rp("discover")["dpop_signing_alg_values_supported"]
    key = dpop_key()
    jkt = thumbprint(key)

    tokens = code_flow_with_dpop(native_rp, alice, native_application, key)

    # openid-client lower-cases token_type (as "bearer" above).
    assert tokens["token_type"] == "dpop", tokens
    assert tokens["refresh_token"]
    assert tokens["dpop_handle_jkt"] == jkt  # both libraries agree on the RFC 7638 thumbprint
    assert family_of(user, native_application).dpop_jkt == jkt
    sub = tokens["id_token_claims"]["sub"]

    # Userinfo through fetchUserInfo with the handle: Authorization: DPoP, a proof with ath.
    assert (
        native_rp("userinfo", access_token=tokens["access_token"], expected_sub=sub, dpop_key=key)["sub"]
        == sub
    )
    # The same access token without the handle is a Bearer token: refused (RFC 9449 7.2).
    refused = native_rp.refused("userinfo", access_token=tokens["access_token"], expected_sub=sub)
    assert refused.details["name"] == "WWWAuthenticateChallengeError", refused
    assert refused.details["status"] == 401, refused

    # Refresh with the same key (a new process, a new handle: only the key is kept, as an app does).
    refreshed = native_rp("refresh", refresh_token=tokens["refresh_token"], dpop_key=key)
    assert refreshed["token_type"] == "dpop", refreshed
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["id_token_claims"]["sub"] == sub
    assert family_of(user, native_application).dpop_jkt == jkt
    assert (
        native_rp("userinfo", access_token=refreshed["access_token"], expected_sub=sub, dpop_key=key)["sub"]
        == sub
    )


@pytest.mark.parametrize("thief", ["another key", "no DPoP"])
def test_openid_client_dpop_bound_refresh_token_needs_its_key(
    thief, native_rp, alice, native_application, user
):
    """A copied refresh token is useless without the private key; the holder keeps working."""
    key = dpop_key()
    tokens = code_flow_with_dpop(native_rp, alice, native_application, key)
    assert family_of(user, native_application).dpop_jkt == thumbprint(key)

    stolen = {"refresh_token": tokens["refresh_token"]}
    if thief == "another key":
        stolen["dpop_key"] = dpop_key()
    refused = native_rp.refused("refresh", **stolen)

    # openid-client got past its own checks to the server's OAuth error (RFC 9449 5).
    assert (refused.details["name"], refused.error) == ("ResponseBodyError", "invalid_grant"), refused
    assert refused.details["status"] == 400, refused
    # The thief's try did not use the token up: its holder refreshes with the key.
    refreshed = native_rp("refresh", refresh_token=tokens["refresh_token"], dpop_key=key)
    assert refreshed["token_type"] == "dpop"


def test_openid_client_dpop_jkt_binds_the_authorization_code(native_rp, alice, native_application, user):
    """RFC 9449 10: the code of a request with dpop_jkt is redeemed only with that key's proof."""
    key = dpop_key()
    request, callback_url = authorize(native_rp, alice, native_application, dpop_jkt=thumbprint(key))
    checks = {
        "callback_url": callback_url,
        "code_verifier": request["code_verifier"],
        "state": request["state"],
        "nonce": request["nonce"],
    }

    refused = native_rp.refused("callback", **checks, dpop_key=dpop_key())
    assert (refused.details["name"], refused.error) == ("ResponseBodyError", "invalid_grant"), refused

    tokens = native_rp("callback", **checks, dpop_key=key)
    assert tokens["token_type"] == "dpop"
    assert family_of(user, native_application).dpop_jkt == thumbprint(key)
