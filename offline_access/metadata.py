"""Server metadata: one document for OpenID discovery and RFC 8414.

OpenID Connect Discovery 1.0 (``{issuer}/.well-known/openid-configuration``) and
OAuth 2.0 Authorization Server Metadata (RFC 8414, at
``/.well-known/oauth-authorization-server{issuer path}``) describe the same
server, so :func:`server_metadata` builds both from what the server really
does rather than from DOT's two sets of advertising settings, which disagree
with each other (response types, client authentication methods) and with the
app (PKCE methods, ``prompt`` values, the device grant).

Every value here is read off the code path that enforces it; a test
(tests/test_metadata.py) checks each against the real endpoints.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from oauth2_provider.models import AbstractApplication
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.views.metadata import bcp_filter_response_types

from . import dpop, languages, policy
from .validators import DEVICE_CODE_GRANT, PKCE_METHODS

#: RFC 8414 section 3: inserted between the host and the issuer's path.
WELL_KNOWN_SERVER_METADATA = "/.well-known/oauth-authorization-server"
#: OpenID Connect Discovery 1.0 section 4: appended to the issuer.
WELL_KNOWN_OPENID_CONFIGURATION = "/.well-known/openid-configuration"

#: RFC 6749 2.3.1 and public clients (``none``, RFC 7591 2): what DOT's
#: ``authenticate_client`` / ``authenticate_client_id`` accept. Anything else a
#: site lists (``private_key_jwt``, ``tls_client_auth``) DOT cannot check.
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

#: Introspection (RFC 7662 2.1) answers confidential clients only; a resource
#: server's bearer token with DOT's introspection scope is the other way in, and is
#: not a client authentication method, so it is not listed.
INTROSPECTION_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

#: Claims every ID token carries or may carry besides the user claims: DOT adds
#: ``iss``, ``exp``, ``auth_time``, ``jti`` (``get_id_token_dictionary``), oauthlib
#: ``aud``, ``iat``, ``nonce`` (when sent), ``at_hash`` (with an access token) and
#: ``c_hash`` (hybrid responses with a code). A claim added to ID tokens must be
#: added here: tests/test_metadata.py compares a real ID token with this list.
ID_TOKEN_CLAIMS = frozenset(
    {"iss", "sub", "aud", "exp", "iat", "auth_time", "jti", "nonce", "at_hash", "c_hash"}
)

#: The grant types oauthlib's servers route at the token endpoint (plus implicit,
#: which is an authorization-endpoint grant), in the order RFC 8414 examples use.
_GRANT_TYPES = (
    "authorization_code",
    "implicit",
    "password",
    "client_credentials",
    "refresh_token",
    DEVICE_CODE_GRANT,
)


def issuer(request: HttpRequest) -> str:
    """The issuer identifier: the OpenID discovery ``issuer``, ID tokens' ``iss``.

    ``OIDC_ISS_ENDPOINT`` when set, else the URL the app's URLs are mounted at
    (DOT's ``oidc_issuer``), e.g. ``http://host/o``.
    """
    return oauth2_settings.oidc_issuer(request)


def issuer_path(issuer_url: str) -> str:
    """The issuer's path without a trailing slash: ``/o`` for ``http://host/o``, ``""`` for a bare host."""
    return urlparse(issuer_url).path.rstrip("/")


def server_metadata_path(issuer_url: str) -> str:
    """Where RFC 8414 section 3 puts the document for ``issuer_url``, as a path on its host."""
    return WELL_KNOWN_SERVER_METADATA + issuer_path(issuer_url)


def server_metadata_url(issuer_url: str) -> str:
    """The absolute RFC 8414 URL: ``http://host/o`` -> ``http://host/.well-known/oauth-authorization-server/o``."""
    parsed = urlparse(issuer_url)
    return f"{parsed.scheme}://{parsed.netloc}{server_metadata_path(issuer_url)}"


def requested_issuer_path(request_path: str) -> str:
    """The issuer path a metadata URL stands for, whichever form it has.

    RFC 8414 form ``/.well-known/oauth-authorization-server/o`` and the appended
    form some clients use (``/o/.well-known/oauth-authorization-server``) both
    stand for ``/o``; ``/o/.well-known/oauth-authorization-server/x`` for ``/o/x``.
    """
    before, _marker, after = request_path.partition(WELL_KNOWN_SERVER_METADATA)
    parts = [part for part in (before.strip("/"), after.strip("/")) if part]
    return "/" + "/".join(parts) if parts else ""


def serves_issuer(request: HttpRequest) -> bool:
    """Whether the metadata URL of ``request`` is one for this server's issuer.

    RFC 8414 3.3: the ``issuer`` returned must be the one the URL was built from;
    a URL built from another issuer (``/.well-known/oauth-authorization-server``
    at the root when the issuer is ``http://host/o``) gets a 404, not this document.
    """
    return requested_issuer_path(request.path) == issuer_path(issuer(request))


def endpoint_url(request: HttpRequest, name: str) -> str | None:
    """An endpoint's absolute URL, on the issuer's host when ``OIDC_ISS_ENDPOINT`` is set.

    None when the site does not serve it (its name does not reverse), so an
    endpoint is advertised only where a view answers.
    """
    try:
        path = reverse(f"oauth2_provider:{name}")
    except NoReverseMatch:
        return None
    if oauth2_settings.OIDC_ISS_ENDPOINT:
        parsed = urlparse(oauth2_settings.OIDC_ISS_ENDPOINT)
        return f"{parsed.scheme}://{parsed.netloc}{path}"
    return request.build_absolute_uri(path)


def device_grant_enabled() -> bool:
    """RFC 8628: the device grant works only with a verification URI to show the user.

    DOT hands ``OAUTH_DEVICE_VERIFICATION_URI`` (or ``EXTRA_SERVER_KWARGS``'s
    ``verification_uri``) to oauthlib's device endpoint, which answers every device
    authorization request with it; without one the answer has no
    ``verification_uri`` (a required field), so the grant cannot be completed.
    """
    if not oauth2_settings.server_kwargs.get("verification_uri"):
        return False
    try:
        reverse("oauth2_provider:device-authorization")
    except NoReverseMatch:
        return False
    return True


def response_types() -> list[str]:
    """What oauthlib's server routes at the authorization endpoint, per DOT's settings.

    With OIDC on, DOT's server is oauthlib's OpenID server and takes every OpenID
    response type it lists; RFC 9700's implicit gate removes ``token``/``id_token``.
    """
    listed = (
        oauth2_settings.OIDC_RESPONSE_TYPES_SUPPORTED
        if oauth2_settings.OIDC_ENABLED
        else oauth2_settings.OAUTH2_RESPONSE_TYPES_SUPPORTED
    )
    return bcp_filter_response_types(listed)


def grant_types(response_types_supported: list[str]) -> list[str]:
    """The grant types the server completes, from DOT's list minus what it cannot do.

    A site narrows ``OAUTH2_GRANT_TYPES_SUPPORTED`` to what it registers clients
    for; removed here: the device grant without a verification URI, RFC 9700's
    gated grants (DOT's validator refuses them), and implicit when no implicit
    response type is served. ``refresh_token`` stays: it is how offline access works.
    """
    listed = set(oauth2_settings.OAUTH2_GRANT_TYPES_SUPPORTED) | {"refresh_token"}
    implicit = any({"token", "id_token"} & set(value.split()) for value in response_types_supported)
    refused = {
        DEVICE_CODE_GRANT: not device_grant_enabled(),
        # Implicit as OpenID registration counts it: any response type returning a token
        # or ID token from the authorization endpoint, hybrid ones included (RFC 9700's
        # implicit gate has already removed ``token`` and ``id_token`` themselves).
        "implicit": not implicit,
        "password": oauth2_settings.COMPLIANT_BCP_RFC9700_PASSWORD_GRANT,
        "authorization_code": not any("code" in value.split() for value in response_types_supported),
    }
    return [grant for grant in _GRANT_TYPES if grant in listed and not refused.get(grant, False)]


def client_auth_methods() -> list[str]:
    """The token endpoint's client authentication methods, as the site lists them.

    The site's list (``OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED``, or without
    OIDC ``OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED``) says whether it takes
    public clients (``none``); methods DOT cannot check are left out.
    """
    listed = (
        oauth2_settings.OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED
        if oauth2_settings.OIDC_ENABLED
        else oauth2_settings.OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED
    )
    return [method for method in dict.fromkeys(listed) if method in CLIENT_AUTH_METHODS]


def prompt_values() -> list[str]:
    """The ``prompt`` values the authorization view honours (:mod:`offline_access.policy`)."""
    create = oauth2_settings.OIDC_RP_INITIATED_REGISTRATION_ENABLED
    return sorted(policy.SUPPORTED_PROMPTS | (policy.OPTIONAL_PROMPTS if create else frozenset()))


def ui_locales() -> list[str]:
    """The site's languages the app's pages are translated into, as BCP47 tags (``pt-BR``)."""
    return [languages.bcp47(code) for code in languages.supported()]


def scopes() -> list[str]:
    """Every scope a client may request: ``offline_access`` among them (SPEC P8, check E002)."""
    return sorted(oauth2_settings.SCOPES_BACKEND_CLASS().get_available_scopes())


def claims(request: HttpRequest, scopes_supported: list[str]) -> list[str]:
    """The claims userinfo and ID tokens can contain.

    The user claims are those the validator declares (DOT's ``get_discovery_claims``,
    i.e. a request-agnostic ``get_additional_claims``) and would release for some
    supported scope (``oidc_claim_scope``); the rest are the ID token's own.
    """
    validator = oauth2_settings.OAUTH2_VALIDATOR_CLASS()
    claim_scope = validator.oidc_claim_scope
    user_claims = {
        claim
        for claim in validator.get_discovery_claims(request)
        if not claim_scope or claim_scope.get(claim) in scopes_supported
    }
    return sorted(user_claims | ID_TOKEN_CLAIMS)


def _oauth_metadata(request: HttpRequest) -> dict[str, Any]:
    """The RFC 8414 section 2 fields."""
    response_types_supported = response_types()
    auth_methods = client_auth_methods()
    data: dict[str, Any] = {
        "issuer": issuer(request),
        "authorization_endpoint": endpoint_url(request, "authorize"),
        "token_endpoint": endpoint_url(request, "token"),
        "scopes_supported": scopes(),
        "response_types_supported": response_types_supported,
        # The authorization endpoint refuses every other mode, and query for
        # token-returning response types (policy.response_mode_error).
        "response_modes_supported": list(policy.RESPONSE_MODES),
        "grant_types_supported": grant_types(response_types_supported),
        "token_endpoint_auth_methods_supported": auth_methods,
        # RFC 7636 4.2 / RFC 9700 2.1.1: the app refuses every other method.
        "code_challenge_methods_supported": list(PKCE_METHODS),
        # RFC 7009 2.1: DOT authenticates revoking clients as at the token endpoint,
        # public clients (client_id only) included.
        "revocation_endpoint": endpoint_url(request, "revoke-token"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint": endpoint_url(request, "introspect"),
        "introspection_endpoint_auth_methods_supported": [
            method for method in auth_methods if method in INTROSPECTION_AUTH_METHODS
        ]
        or list(INTROSPECTION_AUTH_METHODS),
        # RFC 9207: every authorization response carries ``iss``.
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": prompt_values(),
        # RFC 8414 2 / OIDC Discovery 3: the languages ui_locales can pick (offline_access.languages).
        "ui_locales_supported": ui_locales(),
        # draft-ietf-oauth-client-id-metadata-document, as DOT advertises it.
        "client_id_metadata_document_supported": oauth2_settings.CIMD_ENABLED,
        # RFC 9449 5.1: the algorithms the token endpoint accepts in DPoP proofs.
        "dpop_signing_alg_values_supported": dpop.signing_algs(),
    }
    if device_grant_enabled():
        data["device_authorization_endpoint"] = endpoint_url(request, "device-authorization")  # RFC 8628 4
    if oauth2_settings.DCR_ENABLED:
        data["registration_endpoint"] = endpoint_url(request, "dcr-register")
    if oauth2_settings.OIDC_RSA_PRIVATE_KEY:
        data["jwks_uri"] = endpoint_url(request, "jwks-info")
    return data


def _openid_metadata(request: HttpRequest, scopes_supported: list[str]) -> dict[str, Any]:
    """The OpenID Connect Discovery 1.0 section 3 fields that RFC 8414 lacks."""
    signing = [AbstractApplication.HS256_ALGORITHM]
    if oauth2_settings.OIDC_RSA_PRIVATE_KEY:
        signing.insert(0, AbstractApplication.RS256_ALGORITHM)
    data: dict[str, Any] = {
        "userinfo_endpoint": oauth2_settings.OIDC_USERINFO_ENDPOINT or endpoint_url(request, "user-info"),
        "jwks_uri": endpoint_url(request, "jwks-info"),
        "subject_types_supported": oauth2_settings.OIDC_SUBJECT_TYPES_SUPPORTED,
        "id_token_signing_alg_values_supported": signing,
        "claims_supported": claims(request, scopes_supported),
        # DOT stores the ``claims`` request parameter with the code but releases
        # claims by scope only (its get_oidc_claims has a TODO for it).
        "claims_parameter_supported": False,
        # Request objects (OIDC Core 6): oauthlib and DOT ignore ``request`` and
        # ``request_uri``; absent, request_uri_parameter_supported would mean true.
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
    if oauth2_settings.OIDC_RP_INITIATED_LOGOUT_ENABLED:
        data["end_session_endpoint"] = endpoint_url(request, "rp-initiated-logout")
    return data


def server_metadata(request: HttpRequest) -> dict[str, Any]:
    """The server's metadata, served both as OpenID discovery and as RFC 8414.

    With OIDC on, the two documents are the same JSON object (RFC 8414 section 5
    lets an OpenID Provider publish its discovery fields there too), so a client
    reading either learns the same thing. Endpoints the site does not serve are
    left out rather than sent as null.
    """
    data = _oauth_metadata(request)
    if oauth2_settings.OIDC_ENABLED:
        data.update(_openid_metadata(request, data["scopes_supported"]))
    return {key: value for key, value in data.items() if value is not None}
