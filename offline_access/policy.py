"""Who gets offline access: the issuance rules of SPEC P1-P6 as plain functions.

Nothing here touches HTTP or the database; the validator, the authorization view
and the services gather the facts and call these functions. This is the file to
read first when reviewing the app's security.

OpenID Connect Core 1.0, section 11: ``offline_access`` yields a refresh token
only with a code-returning response type, and only with ``prompt=consent`` (and
the user's approval) unless "other conditions" permit it, here an active
enduring consent recorded by an administrator.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import OFFLINE_ACCESS_SCOPE

#: ``prompt`` values this server implements (OIDC Core 1.0, 3.1.2.1).
SUPPORTED_PROMPTS = frozenset({"none", "login", "consent"})
#: ``prompt=create`` (Prompt Create 1.0) is served by DOT when the site enables it.
OPTIONAL_PROMPTS = frozenset({"create"})


class PromptError(ValueError):
    """The ``prompt`` parameter is malformed; the request gets ``invalid_request``."""


def parse_prompt(values: Iterable[str], *, create_enabled: bool = False) -> frozenset[str]:
    """Parse the ``prompt`` parameter(s) of an authorization request.

    Space-delimited, case-sensitive (OIDC Core 1.0, 3.1.2.1). ``none`` cannot be
    combined with another value. Unknown values are rejected rather than silently
    ignored so that a client relying on one learns it is not honoured.
    """
    values = list(values)
    if len(values) > 1:
        raise PromptError("The prompt parameter must not be repeated.")
    prompt = frozenset(values[0].split()) if values else frozenset()
    allowed = SUPPORTED_PROMPTS | (OPTIONAL_PROMPTS if create_enabled else frozenset())
    unknown = prompt - allowed
    if unknown:
        raise PromptError(f"Unsupported prompt value: {' '.join(sorted(unknown))[:64]}.")
    if "none" in prompt and len(prompt) > 1:
        raise PromptError("prompt=none cannot be combined with other values.")
    return prompt


class MaxAgeError(ValueError):
    """The ``max_age`` parameter is malformed; the client gets ``invalid_request``."""


_DIGITS = re.compile(r"[0-9]+")


def parse_max_age(values: Iterable[str]) -> int | None:
    """Parse ``max_age`` (OIDC Core 1.0, 3.1.2.1): a non-negative integer number of seconds.

    Only ASCII digits: no sign, space, fraction or exponent. An empty value is an
    absent one (RFC 6749 3.1); a repeated parameter is an error (RFC 6749 3.1).
    There is no upper bound: a huge value simply never expires.
    """
    values = [value for value in values if value != ""]
    if len(values) > 1:
        raise MaxAgeError("The max_age parameter must not be repeated.")
    if not values:
        return None
    if not _DIGITS.fullmatch(values[0]) or len(values[0]) > 4000:  # int() refuses > 4300 digits
        raise MaxAgeError("max_age must be a non-negative integer number of seconds.")
    return int(values[0])


class Authentication:
    """What the authorization endpoint does about the user's authentication."""

    PROCEED = "proceed"  # the session's authentication is good enough for this request
    LOGIN = "login"  # send the user to log in, then back to the same request
    LOGIN_REQUIRED = "login_required"  # answer the client with error=login_required


def authentication_action(
    *,
    prompt: frozenset[str],
    max_age: int | None,
    auth_time: datetime | None,
    reauthentication_requested_at: datetime | None,
    now: datetime,
) -> str:
    """OIDC Core 1.0, 3.1.2.1 and 3.1.2.3: must this request authenticate the user again?

    ``auth_time`` is when this browser session authenticated (None: unknown, so too
    old for any ``max_age``). ``reauthentication_requested_at`` is set when this
    very request already sent the user to log in (for ``prompt=login`` or
    ``max_age``): it passes if the session authenticated since then, whatever
    ``max_age`` says (``max_age=0`` would otherwise never pass), and gets
    ``login_required`` if it came back without authenticating (the user followed
    the link back, or the login page let a signed-in user through), never a loop.
    ``prompt=login`` always sends the user to log in; the request comes back
    without ``login`` in its ``prompt``. ``prompt=none`` never shows the login page.
    """
    if "login" in prompt:
        return Authentication.LOGIN
    if reauthentication_requested_at is not None:
        if auth_time is not None and auth_time >= reauthentication_requested_at:
            return Authentication.PROCEED
        return Authentication.LOGIN_REQUIRED
    if max_age is not None and (auth_time is None or (now - auth_time).total_seconds() > max_age):
        return Authentication.LOGIN_REQUIRED if "none" in prompt else Authentication.LOGIN
    return Authentication.PROCEED


#: The response modes the authorization endpoint honours (``response_modes_supported``).
RESPONSE_MODES = ("query", "fragment")


def returns_tokens(response_type: str | None) -> bool:
    """True when the authorization endpoint itself returns an access token or an ID token."""
    return bool({"token", "id_token"} & set((response_type or "").split()))


def response_mode_error(response_type: str | None, values: Iterable[str]) -> str | None:
    """Why the request's ``response_mode`` is refused (``invalid_request``), or None.

    OAuth 2.0 Multiple Response Type Encoding Practices 2.1: the query encoding
    MUST NOT be used for a response type that returns a token or an ID token
    (tokens in the query string reach server logs, history and Referer headers).
    Only ``query`` and ``fragment`` are supported; any other mode (``form_post``,
    ``jwt``, ...) is refused rather than answered somewhere the client did not ask
    for (RFC 6749 4.1.2.1: an invalid parameter value). A repeated parameter is an
    error, an empty one is an absent one (RFC 6749 3.1). Descriptions never echo
    the value (RFC 6749 5.2 limits their characters).
    """
    values = [value for value in values if value != ""]
    if len(values) > 1:
        return "The response_mode parameter must not be repeated."
    if not values:
        return None
    if values[0] not in RESPONSE_MODES:
        return "Unsupported response_mode: this server answers in the query or the fragment."
    if values[0] == "query" and returns_tokens(response_type):
        return "response_mode=query must not be used when the response returns tokens; use fragment."
    return None


def answers_in_fragment(response_type: str | None, response_mode: str | None = None) -> bool:
    """Whether an authorization response (success or error) goes in the redirect URI's fragment.

    OAuth 2.0 Multiple Response Type Encoding Practices 2.1 and 3: ``response_mode``
    ``query`` or ``fragment`` when the client asks for one and may (see
    :func:`response_mode_error`), else the response type's default: the query for
    ``code`` (and ``none``), the fragment as soon as a token or an ID token is
    returned (RFC 6749 4.2.2 and 4.2.2.1, OIDC Core 3.2.2.5, 3.3.2.5). A refused or
    unknown mode gets its ``invalid_request`` in that default place, the one
    place the client is known to read; a token-returning response type's answer
    is never in the query.
    """
    if returns_tokens(response_type):
        return True
    return response_mode == "fragment"


class RequestObjectError(ValueError):
    """A request object was sent (OIDC Core 6); ``error`` is the code the client gets."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error


def check_request_object(request_values: Iterable[str], request_uri_values: Iterable[str]) -> None:
    """OIDC Core 6.1, 6.2, 3.1.2.6: refuse ``request`` and ``request_uri``; this server supports neither.

    Discovery says ``request_parameter_supported: false`` and
    ``request_uri_parameter_supported: false``. Ignoring the parameter would answer
    a different request from the one the client made (its parameters may be in the
    object), so it gets ``request_not_supported`` / ``request_uri_not_supported``;
    both at once is ``invalid_request`` (OIDC Core 6: they must not be used
    together). An empty value is an absent one (RFC 6749 3.1).
    """
    has_request = any(value != "" for value in request_values)
    has_request_uri = any(value != "" for value in request_uri_values)
    if has_request and has_request_uri:
        raise RequestObjectError("invalid_request", "request and request_uri must not be used together.")
    if has_request:
        raise RequestObjectError("request_not_supported", "Request objects (request) are not supported.")
    if has_request_uri:
        raise RequestObjectError("request_uri_not_supported", "request_uri is not supported.")


# OpenID scope and ID token signing --------------------------------------------------------

OPENID_SCOPE = "openid"


def scopes_for_client(
    scopes: Iterable[str], *, oidc_enabled: bool, client_signs_id_tokens: bool
) -> list[str]:
    """The scopes a client can hold: ``openid`` only if the server can sign its ID tokens.

    OIDC Core 3.1.3.3 makes the ID token a required part of the answer to an
    ``openid`` request, and ID tokens are signed (OIDC Core 2). A client registered
    with "No OIDC support" (no algorithm), or whose key DOT cannot use, cannot get
    one, so ``openid`` is not a scope it can have. Callers: asked for, it is
    ``invalid_scope`` (as any scope the client may not have); in a grant made
    before the registration changed, it is left out of what the token endpoint
    grants (RFC 6749 3.3, 5.1: the answer's ``scope`` says so), and with it the ID
    token (OIDC Core 12.2 allows a refresh answer without one). Without OIDC the
    ``openid`` scope is just a scope.
    """
    if not oidc_enabled or client_signs_id_tokens:
        return list(scopes)
    return [scope for scope in scopes if scope != OPENID_SCOPE]


def returns_code(response_type: str | None) -> bool:
    """True for the response types that return an authorization code (OIDC Core 11)."""
    return "code" in (response_type or "").split()


def without_offline_access(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope != OFFLINE_ACCESS_SCOPE]


class Decision:
    SHOW_SCREEN = "show_screen"
    APPROVE = "approve"
    CONSENT_REQUIRED = "consent_required"


class OfflineVia:
    SCREEN = "screen"  # the user approves it on the consent screen (prompt=consent)
    ENDURING = "enduring"  # an active enduring consent covers it (SPEC C3)


def authorization_scopes(
    requested_scopes: Iterable[str],
    *,
    response_type: str,
    prompt: frozenset[str],
    client_may_have_offline_access: bool,
    has_enduring_consent: bool,
) -> tuple[tuple[str, ...], str | None]:
    """SPEC P2: the scopes an authorization request may be granted, and why offline access.

    Returns the scopes (``offline_access`` silently dropped when the request does
    not qualify) and how ``offline_access`` is justified: on the consent screen
    (``prompt=consent``) or by an enduring consent. ``prompt=none`` shows no page,
    so it can only ride on an enduring consent (SPEC P4).
    """
    scopes = tuple(requested_scopes)
    eligible = (
        OFFLINE_ACCESS_SCOPE in scopes and returns_code(response_type) and client_may_have_offline_access
    )
    offline_via: str | None = None
    if eligible and "consent" in prompt:
        offline_via = OfflineVia.SCREEN
    elif eligible and has_enduring_consent:
        offline_via = OfflineVia.ENDURING
    if offline_via is None:
        scopes = tuple(without_offline_access(scopes))
    return scopes, offline_via


def device_approval_scopes(
    requested_scopes: Iterable[str], *, client_may_have_offline_access: bool
) -> tuple[tuple[str, ...], str | None]:
    """SPEC P7: the device grant's user-code approval screen is the consent screen.

    The user approves on a page showing the offline notice, as with
    ``prompt=consent``, and the grant ends in a code-like device code, so the
    same rule as :func:`authorization_scopes` applies.
    """
    return authorization_scopes(
        requested_scopes,
        response_type="code",
        prompt=frozenset({"consent"}),
        client_may_have_offline_access=client_may_have_offline_access,
        has_enduring_consent=False,
    )


class DevicePoll:
    """Answers to a device polling the token endpoint (RFC 8628, section 3.5)."""

    AUTHORIZED = "authorized"
    PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    EXPIRED = "expired_token"
    DENIED = "access_denied"


def device_poll(*, status: str, expired: bool, seconds_since_last_poll: float, interval: int) -> str | None:
    """What a poll with a device code gets; None for a code already redeemed (``invalid_grant``).

    ``status`` is DOT's DeviceGrant status. A device polling again sooner than
    ``interval`` seconds gets ``slow_down`` (and must then wait 5 s longer).
    """
    if status == "redeemed":
        return None
    if status == "denied":
        return DevicePoll.DENIED
    if expired or status == "expired":
        return DevicePoll.EXPIRED
    if status == "authorized":
        return DevicePoll.AUTHORIZED
    if seconds_since_last_poll < interval:
        return DevicePoll.SLOW_DOWN
    return DevicePoll.PENDING


def authorization_action(*, prompt: frozenset[str], already_approved: bool) -> str:
    """Show the consent screen, approve without it, or answer ``consent_required``.

    ``already_approved`` carries DOT's own reasons to skip the screen
    (``skip_authorization``, or ``approval_prompt=auto`` with a live token for the
    same scopes). ``prompt=consent`` overrides them: the screen is always shown.
    """
    if "consent" in prompt:
        return Decision.SHOW_SCREEN
    if already_approved:
        return Decision.APPROVE
    if "none" in prompt:
        return Decision.CONSENT_REQUIRED
    return Decision.SHOW_SCREEN


def may_issue_refresh_token(granted_scopes: Iterable[str]) -> bool:
    """SPEC P1: a refresh token exists only when ``offline_access`` was granted."""
    return OFFLINE_ACCESS_SCOPE in set(granted_scopes)


def direct_grant_keeps_offline_access(*, grant_type: str, has_enduring_consent: bool) -> bool:
    """SPEC P5: grants with nobody at a consent screen.

    The password grant keeps ``offline_access`` only under an enduring consent;
    client credentials act for no user and never get it.
    """
    if grant_type == "client_credentials":
        return False
    return has_enduring_consent


@dataclass(frozen=True)
class RefreshFacts:
    """What the token endpoint knows when a refresh token is presented (SPEC P6)."""

    user_is_active: bool
    client_may_have_offline_access: bool
    consent_active: bool
    family_ended: bool
    family_created_at: datetime
    family_last_used_at: datetime
    idle_timeout: timedelta | None
    absolute_lifetime: timedelta | None
    now: datetime


class RefreshRefusal:
    USER_INACTIVE = "user_inactive"
    CLIENT_NOT_ALLOWED = "client_not_allowed"
    NO_CONSENT = "no_consent"
    FAMILY_ENDED = "family_ended"
    IDLE_TIMEOUT = "idle_timeout"
    ABSOLUTE_LIFETIME = "absolute_lifetime"


def refresh_refusal(facts: RefreshFacts) -> str | None:
    """SPEC P6: why a refresh must be refused (``invalid_grant``), or None if it may proceed."""
    if not facts.user_is_active:
        return RefreshRefusal.USER_INACTIVE
    if not facts.client_may_have_offline_access:
        return RefreshRefusal.CLIENT_NOT_ALLOWED
    if facts.family_ended:
        return RefreshRefusal.FAMILY_ENDED
    if not facts.consent_active:
        return RefreshRefusal.NO_CONSENT
    if facts.absolute_lifetime is not None and facts.now >= facts.family_created_at + facts.absolute_lifetime:
        return RefreshRefusal.ABSOLUTE_LIFETIME
    if facts.idle_timeout is not None and facts.now >= facts.family_last_used_at + facts.idle_timeout:
        return RefreshRefusal.IDLE_TIMEOUT
    return None


def refresh_token_expires_at(
    facts: RefreshFacts, *, consent_expires_at: datetime | None, token_expires_at: datetime | None
) -> datetime | None:
    """When a live refresh token stops being accepted if nothing else happens, or None.

    The earliest of its family's absolute lifetime, its idle timeout (counted from
    the last refresh), its consent's expiry and DOT's ``REFRESH_TOKEN_EXPIRE_SECONDS``
    (``token_expires_at``). RFC 7662 2.2's ``exp`` of an introspected refresh token.
    """
    limits = [consent_expires_at, token_expires_at]
    if facts.absolute_lifetime is not None:
        limits.append(facts.family_created_at + facts.absolute_lifetime)
    if facts.idle_timeout is not None:
        limits.append(facts.family_last_used_at + facts.idle_timeout)
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


# Introspection (RFC 7662) and revocation (RFC 7009) ----------------------------------


def may_introspect_as_client(*, client_type: str, secret_presented: bool) -> bool:
    """RFC 7662 2.1: may a client that authenticated to the introspection endpoint ask?

    Only a confidential client that proved itself with a non-empty secret. A public
    client cannot keep a secret (RFC 6749 2.1), so its client_id (or a secret it
    was once given) proves nothing: answering it would let anyone read any token's
    client, user, scope and expiry. Resource servers may also authenticate with a
    bearer token holding DOT's ``introspection`` scope; DOT checks that itself.
    """
    return client_type == "confidential" and secret_presented


def introspection_shows_refresh_token(*, owner_client_id: str | None, caller_client_id: str | None) -> bool:
    """Whether a live refresh token reads as active to this caller (else ``{"active": false}``).

    Only to the client it was issued to, authenticated with its secret
    (``caller_client_id`` is None for a resource server's bearer token). A refresh
    token is only ever presented to the authorization server, by its own client
    (RFC 6749 1.5, 10.4); nobody else has a reason to learn about it, and RFC 7662
    2.2 lets the server answer inactive to a caller it does not want to tell.
    """
    return caller_client_id is not None and caller_client_id == owner_client_id


# DPoP (RFC 9449): which token requests need a proof, what a proof binds --------------------


def dpop_required(
    *, client_requires_dpop: bool, client_is_public: bool, required_for_public_clients: bool
) -> bool:
    """Whether a client's code exchanges, device polls and refreshes must carry a DPoP proof.

    Its own policy (``ClientPolicy.require_dpop``) or, for a public client,
    ``OFFLINE_ACCESS["DPOP_REQUIRED_FOR_PUBLIC_CLIENTS"]``: RFC 9700 4.14.2 asks that a
    public client's refresh tokens be sender-constrained (or rotated, which they are).
    """
    return client_requires_dpop or (client_is_public and required_for_public_clients)


def binds_refresh_token(*, client_is_public: bool) -> bool:
    """Whether a refresh token issued with a DPoP proof is bound to the proof's key (RFC 9449 5).

    Public clients: yes, it MUST be. Confidential clients: no; their refresh tokens
    are already sender-constrained by client authentication, and they may change
    DPoP keys between refreshes. Their access tokens are bound all the same.
    """
    return client_is_public


class DPoPRefusal:
    """Why a token request is refused for its DPoP proof (or its absence)."""

    #: ``invalid_dpop_proof``: a proof is required (client policy) and none came.
    PROOF_REQUIRED = "proof_required"
    #: ``invalid_grant``: the code or refresh token is bound to a key and no proof came.
    BOUND_WITHOUT_PROOF = "bound_without_proof"
    #: ``invalid_grant``: the proof is signed with another key than the one bound.
    OTHER_KEY = "other_key"


def dpop_refusal(*, bound_jkt: str, proof_jkt: str | None, proof_required: bool) -> str | None:
    """RFC 9449 5, 10: may a token request go on, given the key it is bound to and its proof?

    ``bound_jkt`` is the thumbprint the presented grant is bound to ("" for none):
    a code's ``dpop_jkt`` (section 10), a refresh token family's key (section 5).
    A bad proof never gets here: the view answers ``invalid_dpop_proof`` first.
    """
    if bound_jkt and proof_jkt is None:
        return DPoPRefusal.BOUND_WITHOUT_PROOF
    if bound_jkt and proof_jkt != bound_jkt:
        return DPoPRefusal.OTHER_KEY
    if proof_required and proof_jkt is None:
        return DPoPRefusal.PROOF_REQUIRED
    return None
