"""The introspection endpoint (RFC 7662): who may ask, and what a token reads as.

Replaces DOT's view under DOT's URL name (``offline_access.urls``). DOT answers
any caller that names a client, public ones included; here only an authenticated
confidential client or a resource server's token with the introspection scope
gets an answer, and a refresh token reads active only to its own client.
"""

from __future__ import annotations

import calendar
from datetime import datetime

from django.db.models import F
from django.http import JsonResponse
from django.utils import timezone
from oauth2_provider.models import (
    get_application_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
)
from oauth2_provider.views import IntrospectTokenView

from . import hardening, policy, token_storage
from .models import OfflineTokenFamily
from .validators import find_access_token, refresh_facts


class OfflineAccessIntrospectTokenView(IntrospectTokenView):
    """Token introspection (RFC 7662) for authorized callers only; refresh tokens for their owner.

    Who may ask (RFC 7662 2.1, :func:`offline_access.policy.may_introspect_as_client`):
    a confidential client authenticated with its secret (``client_secret_basic`` or
    ``client_secret_post``), or a resource server presenting a bearer token with
    DOT's ``introspection`` scope (``required_scopes``). DOT also accepts a public
    client that names itself, which would let anyone read any live token's client,
    user, scope and expiry. Everyone else gets ``401 invalid_client`` as JSON with a
    ``WWW-Authenticate`` challenge (RFC 6749 5.2, RFC 7662 2.3), not DOT's bare 403.

    What a token reads as (RFC 7662 2.2): an access token as DOT answers it, to any
    authorized caller (resource servers need that); a refresh token as active only
    to the client it was issued to, and only while the token endpoint would accept
    it (SPEC P6: consent in force, family not ended, within its lifetimes, not
    rotated or revoked). Tokens are found by their stored hash (issue 9).

    DOT's hooks used: ``authenticate_client`` and ``unauthenticated_response`` of
    ``ClientProtectedResourceMixin`` (its ``dispatch`` is kept, with DOT's
    csrf-exempt and login-not-required markers).
    """

    #: The client that authenticated with its secret; None for a resource server's bearer token.
    caller = None

    def authenticate_client(self, request) -> bool:
        """RFC 7662 2.1: DOT's client authentication, then only confidential clients with a secret."""
        presented = hardening.presented_client_credentials(request)
        if presented is None:  # none, or more than one method (RFC 6749 2.3)
            return False
        client_id, secret = presented
        if not super().authenticate_client(request):
            return False
        # DOT checked the secret of this client (one method only, so no other one).
        client = get_application_model().objects.filter(client_id=client_id).first()
        if client is None or not policy.may_introspect_as_client(
            client_type=client.client_type, secret_presented=bool(secret)
        ):
            return False
        self.caller = client
        return True

    def unauthenticated_response(self, request, oauthlib_request=None):
        """RFC 6749 5.2 / RFC 7662 2.3: ``401 invalid_client``, JSON, with a challenge."""
        scheme = request.META.get("HTTP_AUTHORIZATION", "").strip().partition(" ")[0].lower()
        if scheme == "bearer":
            error = getattr(oauthlib_request, "oauth2_error", None) or {}
            code = error.get("error", "invalid_token")
            challenge = f'Bearer realm="oauth", error="{code}"'
            if code == "insufficient_scope":
                challenge += f', scope="{" ".join(self.get_scopes())}"'
            description = "The bearer token is not valid for token introspection."
        else:
            challenge = hardening.BASIC_CHALLENGE
            description = (
                "Authenticate as a confidential client (client_secret_basic or client_secret_post), "
                "or present a bearer token with the introspection scope."
            )
        return hardening.oauth_error("invalid_client", description, status=401, challenge=challenge)

    def get(self, request, *args, **kwargs):
        return self.introspect(request.GET)

    def post(self, request, *args, **kwargs):
        return self.introspect(request.POST)

    def introspect(self, params) -> JsonResponse:
        """RFC 7662 2.2: the answer about ``params["token"]``; the hint only orders the search."""
        token_value = params.get("token")
        if token_value is None:
            return IntrospectTokenView.get_token_response(None)  # DOT's invalid_request
        lookups = [self._access_token_answer, self._refresh_token_answer]
        if params.get("token_type_hint") == "refresh_token":
            lookups.reverse()
        for lookup in lookups:
            answer = lookup(token_value)
            if answer is not None:
                return JsonResponse(answer)
        return JsonResponse({"active": False})

    @staticmethod
    def _access_token_answer(token_value: str) -> dict | None:
        """DOT's answer for an access token (``get_token_response``), or None if there is no such token."""
        token = find_access_token(token_value)
        if token is None:
            return None
        if not token.is_valid():
            return {"active": False}
        data = {
            "active": True,
            "scope": token.scope,
            "exp": int(calendar.timegm(token.expires.timetuple())),
        }
        if token.offline_access_dpop_jkt:
            # RFC 9449 6.2: a resource server must demand proofs of this key.
            data["token_type"] = "DPoP"
            data["cnf"] = {"jkt": token.offline_access_dpop_jkt}
        if token.application:
            data["client_id"] = token.application.client_id
        if token.user:
            data["username"] = token.user.get_username()
        if token.resource:
            data["aud"] = token.resource  # RFC 8707 audiences
        return data

    @staticmethod
    def get_token_response(token_value=None):
        """DOT's entry point, kept for code that calls it: access tokens only, by stored hash."""
        if token_value is None:
            return IntrospectTokenView.get_token_response(None)
        answer = OfflineAccessIntrospectTokenView._access_token_answer(token_value)
        return JsonResponse(answer or {"active": False})

    def _refresh_token_answer(self, token_value: str) -> dict | None:
        """The answer for a refresh token, or None when there is no such token (or the caller may not ask)."""
        if self.caller is None:
            return None  # a resource server's bearer token: refresh tokens are never its business
        token = (
            get_refresh_token_model()
            .objects.select_related("user", "application", "access_token")
            .filter(token_checksum__in=token_storage.checksum_candidates(token_value))
            .order_by(F("revoked").desc(nulls_first=True))  # a live row first, as the token endpoint
            .first()
        )
        if token is None:
            return None
        if not policy.introspection_shows_refresh_token(
            owner_client_id=token.application.client_id, caller_client_id=self.caller.client_id
        ):
            return {"active": False}
        live, expires_at = _refresh_token_lifetime(token)
        if not live:
            return {"active": False}
        data = {
            "active": True,
            # RFC 7662 2.2 leaves the meaning of token_type to the server; this says
            # the token is a refresh token, not an access token of some type.
            "token_type": "refresh_token",
            "scope": token.access_token.scope,
            "client_id": token.application.client_id,
            "username": token.user.get_username(),
        }
        if expires_at is not None:
            data["exp"] = int(calendar.timegm(expires_at.timetuple()))
        return data


def _refresh_token_lifetime(token) -> tuple[bool, datetime | None]:
    """Whether the token endpoint would take this refresh token now (SPEC P6), and until when.

    A rotated token is not live, even within DOT's grace period: that period only
    replays an answer already given, it mints nothing new. The time is None when
    no lifetime limits the token.
    """
    now = timezone.now()
    if token.revoked is not None or token.access_token is None or token.token_family is None:
        return False, None
    dot_lifetime = refresh_token_expire_timedelta()  # DOT's REFRESH_TOKEN_EXPIRE_SECONDS
    dot_expiry = token.access_token.expires + dot_lifetime if dot_lifetime else None
    if dot_expiry is not None and dot_expiry <= now:
        return False, None
    family = (
        OfflineTokenFamily.objects.select_related("consent", "application__offline_access_policy")
        .filter(token_family=token.token_family)
        .first()
    )
    if family is None:
        return False, None  # no consent on record behind it: the token endpoint refuses it
    facts = refresh_facts(token, family, token.user, now)
    if policy.refresh_refusal(facts) is not None or family.consent is None:
        return False, None
    return True, policy.refresh_token_expires_at(
        facts, consent_expires_at=family.consent.expires_at, token_expires_at=dot_expiry
    )
