"""The app's settings: one ``OFFLINE_ACCESS`` dict, read on every access.

Reading ``django.conf.settings`` each time (rather than caching) keeps
``override_settings`` working in tests and avoids stale values after reloads.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    # A refresh token family (one device or installation) that is not used for
    # this long stops working. None disables the idle timeout.
    "REFRESH_TOKEN_IDLE_TIMEOUT": timedelta(days=30),
    # A refresh token family stops working this long after it was first issued,
    # however often it is used. None disables the absolute lifetime.
    "REFRESH_TOKEN_ABSOLUTE_LIFETIME": timedelta(days=365),
    # How long a rendered consent screen stays valid for its Allow/Deny POST.
    "CONSENT_FORM_MAX_AGE": timedelta(minutes=10),
    # The template of the consent screen.
    "CONSENT_TEMPLATE": "offline_access/consent.html",
    # The scope a bearer token needs to use the user's own REST API endpoints
    # (list and revoke the user's connected apps). It never opens the staff
    # endpoints: those take a signed-in staff session only, whatever the scope.
    "API_SCOPE": "connected_apps",
    # RFC 8628 5.1: failed user-code entries on the device page allowed per account
    # and per client address; the one that reaches it blocks that account or address
    # (right codes included) for DEVICE_CODE_ATTEMPT_WINDOW, answered with 429.
    # Only failures count (wrong, expired, used or taken codes), so connecting many
    # devices is never limited.
    "DEVICE_CODE_ATTEMPTS": 10,
    # The window in which DEVICE_CODE_ATTEMPTS failures are counted, and the length
    # of the block that follows.
    "DEVICE_CODE_ATTEMPT_WINDOW": timedelta(minutes=5),
    # The client address the limit counts against: None reads REMOTE_ADDR (never
    # X-Forwarded-For, which any client can send); or a callable, or its dotted
    # path, taking the request and returning the address. Behind a reverse proxy,
    # set REMOTE_ADDR from the proxy's header or name such a callable, or every
    # user shares the proxy's address.
    "DEVICE_CODE_CLIENT_ADDRESS": None,
    # The cache alias keeping the counts. It must be shared by all web workers
    # (Redis, Memcached, database); a per-process LocMemCache counts per worker.
    "DEVICE_CODE_ATTEMPT_CACHE": "default",
    # A password change or reset (set_password() then save(): Django's password
    # change and reset views, the admin's password form) ends all of the user's
    # offline access and every token issued before it, with a "password changed"
    # event on each consent. False keeps them. Deactivating a user always ends them.
    "REVOKE_ON_PASSWORD_CHANGE": True,
    # The secrets that key the hashes under which access tokens, refresh tokens,
    # authorization codes and device codes are stored (offline_access.token_storage):
    # a list of str or bytes kept outside the database. The first hashes new tokens;
    # all are accepted, so rotate by putting a new key first and removing the old
    # one after the longest-lived token hashed with it has expired (the refresh
    # token idle timeout). Empty (the default): SECRET_KEY, then SECRET_KEY_FALLBACKS.
    "TOKEN_HASH_KEYS": [],
    # DPoP (RFC 9449, offline_access.dpop). How long after its iat a proof is accepted.
    "DPOP_PROOF_MAX_AGE": timedelta(seconds=60),
    # How far a client's clock may be ahead of (or behind) the server's for iat.
    "DPOP_CLOCK_SKEW": timedelta(seconds=30),
    # The cache alias remembering each proof's jti while it could be accepted (replay
    # protection). It must be shared by all web workers (Redis, Memcached, database);
    # with a per-process LocMemCache a proof replayed to another worker passes (W004).
    "DPOP_REPLAY_CACHE": "default",
    # The JWS algorithms accepted in proofs, advertised as dpop_signing_alg_values_supported.
    # Symmetric algorithms and "none" are never accepted, whatever is listed.
    "DPOP_SIGNING_ALGS": ["ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512", "RS256"],
    # RFC 9449 8: proofs at the token endpoint must carry a server nonce (DPoP-Nonce);
    # a proof without a valid one gets use_dpop_nonce and a fresh nonce. Nonces are
    # signed with SECRET_KEY and a timestamp, so every worker accepts them.
    "DPOP_NONCE_REQUIRED": False,
    # How long a server nonce stays valid.
    "DPOP_NONCE_MAX_AGE": timedelta(minutes=5),
    # Public clients must send a DPoP proof with every code exchange, device poll and
    # refresh (their refresh tokens are then always key-bound, RFC 9449 5). A client's
    # ClientPolicy.require_dpop asks the same of one client, public or confidential.
    "DPOP_REQUIRED_FOR_PUBLIC_CLIENTS": False,
}

DURATION_KEYS = frozenset(
    {
        "REFRESH_TOKEN_IDLE_TIMEOUT",
        "REFRESH_TOKEN_ABSOLUTE_LIFETIME",
        "CONSENT_FORM_MAX_AGE",
        "DEVICE_CODE_ATTEMPT_WINDOW",
        "DPOP_PROOF_MAX_AGE",
        "DPOP_CLOCK_SKEW",
        "DPOP_NONCE_MAX_AGE",
    }
)
NULLABLE_KEYS = frozenset({"REFRESH_TOKEN_IDLE_TIMEOUT", "REFRESH_TOKEN_ABSOLUTE_LIFETIME"})
BOOLEAN_KEYS = frozenset(
    {"REVOKE_ON_PASSWORD_CHANGE", "DPOP_NONCE_REQUIRED", "DPOP_REQUIRED_FOR_PUBLIC_CLIENTS"}
)


def as_timedelta(value: Any) -> timedelta | None:
    """Accept a timedelta, a number of seconds, or None."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a timedelta or a number of seconds, got {type(value).__name__}")
    return timedelta(seconds=value)


class Settings:
    """Attribute access to ``settings.OFFLINE_ACCESS`` with the defaults above."""

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(django_settings, "OFFLINE_ACCESS", {})
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"OFFLINE_ACCESS has no setting {name!r}")
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in DURATION_KEYS:
            return as_timedelta(value)
        return value


settings = Settings()
