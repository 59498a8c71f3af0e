"""The DOT validator that enforces the offline-access policy at the token endpoint.

Point ``OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"]`` at :class:`OfflineAccessValidator`
(or a subclass). Decisions come from :mod:`offline_access.policy`; this class only
gathers facts from DOT's request objects and applies the outcome.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.db import OperationalError, connections, router
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_device_grant_model,
    get_grant_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
    revoke_access_token,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error, InvalidGrantError, InvalidRequestError

from . import OFFLINE_ACCESS_SCOPE, authentication, dpop, policy, services, signals, token_storage
from .conf import settings
from .models import (
    ClientPolicy,
    Consent,
    ConsentEvent,
    DPoPBoundAccessToken,
    GrantAuthentication,
    OfflineTokenFamily,
    SealedSuccessorPair,
)

log = logging.getLogger("offline_access")
#: MySQL's ER_LOCK_DEADLOCK ("Deadlock found when trying to get lock; try restarting transaction"):
#: InnoDB rolled the transaction back, which the application may run again (also offline_access.maintenance).
MYSQL_LOCK_DEADLOCK = 1213

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: DeviceGrant status of a device code whose tokens were issued (DOT has none for it).
DEVICE_CODE_REDEEMED = "redeemed"


class _RevokedWhileRefreshing(InvalidGrantError):
    """``invalid_grant`` raised from inside DOT's token transaction.

    DOT turns it into the response with the error's own headers, which for a
    validation-time error oauthlib would have filled in.
    """

    @property
    def headers(self):
        return {**super().headers, "Content-Type": "application/json", "Cache-Control": "no-store"}


class _ReusedWhileRefreshing(_RevokedWhileRefreshing):
    """A refresh token presented again while its rotation was committing (RFC 9700 4.14.2)."""

    def __init__(self, *args, token_family, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_family = token_family


def _end_reused_family(token_family) -> None:
    """Reuse protection: a refresh token used twice ends its whole family (DOT's own sweep)."""
    if oauth2_settings.REFRESH_TOKEN_REUSE_PROTECTION and token_family:
        get_refresh_token_model().revoke_family(token_family)


#: The PKCE methods accepted (RFC 7636 4.2): S256 only. ``plain`` puts the verifier
#: itself in the front channel, so it protects nothing against a code thief (RFC 9700 2.1.1).
PKCE_METHODS = ("S256",)


def pkce_method_error(code_challenge, code_challenge_method) -> InvalidRequestError | None:
    """``invalid_request`` for a PKCE challenge whose method is not S256, else None.

    A challenge without a method means ``plain`` (RFC 7636 4.3), so it is refused
    too. This holds whatever DOT's ``COMPLIANT_BCP_RFC9700_PKCE_METHOD`` says.
    """
    if not code_challenge or (code_challenge_method or "plain") in PKCE_METHODS:
        return None
    return InvalidRequestError(
        description='Unsupported code_challenge_method: use "S256" (RFC 7636 4.2); "plain" is not accepted.'
    )


def client_policy(application) -> ClientPolicy | None:
    """The client's own offline-access rules, or None when it follows the defaults."""
    try:
        return application.offline_access_policy
    except ObjectDoesNotExist:
        return None


def client_may_have_offline_access(application, request=None) -> bool:
    """Whether the client may have ``offline_access`` at all.

    Both DOT's scopes backend (the scopes a client may request) and the client's
    policy in admin (:class:`~offline_access.models.ClientPolicy`) must allow it.
    """
    available = get_scopes_backend().get_available_scopes(application=application, request=request)
    if OFFLINE_ACCESS_SCOPE not in available:
        return False
    rules = client_policy(application)
    return rules is None or rules.allow_offline_access


def client_signs_id_tokens(application) -> bool:
    """Whether DOT can sign an ID token for this client: it has an algorithm and a usable key.

    "No OIDC support" (``algorithm = ""``), RS256 without ``OIDC_RSA_PRIVATE_KEY`` and
    HS256 without a plaintext secret make DOT's ``jwk_key`` raise (a 500 when an ID
    token is made). No query: the RSA key is parsed once (DOT caches it).
    """
    if application is None or not getattr(application, "algorithm", ""):
        return False
    try:
        application.jwk_key  # noqa: B018 -- raises when DOT cannot sign for it
    except ImproperlyConfigured:
        return False
    return True


def scopes_for_client(scopes, application) -> list[str]:
    """:func:`offline_access.policy.scopes_for_client` for this client."""
    return policy.scopes_for_client(
        scopes,
        oidc_enabled=oauth2_settings.OIDC_ENABLED,
        client_signs_id_tokens=client_signs_id_tokens(application),
    )


def lifetimes(rules: ClientPolicy | None) -> tuple[timedelta | None, timedelta | None]:
    """The idle timeout and absolute lifetime of a client's token families."""
    idle, absolute = settings.REFRESH_TOKEN_IDLE_TIMEOUT, settings.REFRESH_TOKEN_ABSOLUTE_LIFETIME
    if rules is not None:
        idle = rules.refresh_token_idle_timeout or idle
        absolute = rules.refresh_token_absolute_lifetime or absolute
    return idle, absolute


def _grant_auth_time(code_field: str = "code"):
    """Subquery: the authentication time recorded with a code (read with the code, no extra query)."""
    return Subquery(GrantAuthentication.objects.filter(code=OuterRef(code_field)).values("auth_time")[:1])


def _grant_dpop_jkt(code_field: str = "code"):
    """Subquery: the ``dpop_jkt`` of the authorization request behind a code (RFC 9449 10)."""
    return Subquery(GrantAuthentication.objects.filter(code=OuterRef(code_field)).values("dpop_jkt")[:1])


def _client_requires_dpop(application_field: str = "application_id"):
    """Subquery: the client's ``ClientPolicy.require_dpop`` (None without a policy row)."""
    return Subquery(
        ClientPolicy.objects.filter(application_id=OuterRef(application_field)).values("require_dpop")[:1]
    )


def _grants_with_facts():
    """Codes with their user and, as annotations, everything the code exchange decides on.

    The covering consent's id, the approving session's auth_time, the request's
    ``dpop_jkt`` and the client's ``require_dpop``: one query instead of one each.
    """
    return (
        get_grant_model()
        .objects.select_related("user")
        .annotate(
            offline_access_consent_id=Subquery(
                services.covering_consent(OuterRef("user_id"), OuterRef("application_id"))
            ),
            offline_access_auth_time=_grant_auth_time(),
            offline_access_dpop_jkt=_grant_dpop_jkt(),
            offline_access_require_dpop=_client_requires_dpop(),
        )
    )


class DPoPProofRequired(CustomOAuth2Error):
    """RFC 9449 5: ``invalid_dpop_proof`` for a client that must send a proof and sent none."""

    error = "invalid_dpop_proof"

    def __init__(self, request=None):
        super().__init__(
            error=self.error,
            description="This client must send a DPoP proof (RFC 9449) with its token requests.",
            request=request,
            status_code=400,
        )


def dpop_allows(request, *, bound_jkt: str, client_requires_dpop: bool | None) -> bool:
    """RFC 9449 5 and 10 at the token endpoint, given the key the grant is bound to ("" for none).

    False (``invalid_grant``) when the grant is bound and the request proves another
    key or none; raises :class:`DPoPProofRequired` when the client's policy asks for
    a proof and none came. The proof itself was checked by the view.
    """
    proof = dpop.proof_of(request)
    refusal = policy.dpop_refusal(
        bound_jkt=bound_jkt or "",
        proof_jkt=proof.jkt if proof else None,
        proof_required=policy.dpop_required(
            client_requires_dpop=bool(client_requires_dpop),
            client_is_public=_is_public(request.client),
            required_for_public_clients=settings.DPOP_REQUIRED_FOR_PUBLIC_CLIENTS,
        ),
    )
    if refusal == policy.DPoPRefusal.PROOF_REQUIRED:
        raise DPoPProofRequired(request=request)
    if refusal is not None:
        log.info("Token request refused (DPoP: %s) for client %s.", refusal, request.client.client_id)
        return False
    return True


def _is_public(application) -> bool:
    return getattr(application, "client_type", None) == "public"


def find_access_token(token_value: str):
    """The access token with this value, found by its stored hash (issue 9), or None.

    With its application and user, and annotated with the DPoP key it is bound to
    (``offline_access_dpop_jkt``, None when unbound), all in one query.
    """
    return (
        get_access_token_model()
        .objects.select_related("application", "user")
        .annotate(
            offline_access_dpop_jkt=Subquery(
                DPoPBoundAccessToken.objects.filter(token_checksum=OuterRef("token_checksum")).values("jkt")[
                    :1
                ]
            )
        )
        .filter(token_checksum__in=token_storage.checksum_candidates(token_value))
        .first()
    )


class OfflineAccessValidator(OAuth2Validator):
    """OAuth2Validator that issues refresh tokens only under a recorded consent (SPEC P1-P6)."""

    # Clients --------------------------------------------------------------------

    def _load_application(self, client_id, request):
        """DOT's lookup, held to an exact match of the client ID.

        MySQL's and MariaDB's default collations compare case-insensitively and ignore
        trailing spaces, so ``"calendar-sync "`` or ``"CALENDAR-SYNC"`` would
        load the client ``calendar-sync``; RFC 6749 2.2 makes the identifier a string the
        server issued, compared as such.
        """
        application = super()._load_application(client_id, request)
        if application is not None and application.client_id != client_id:
            request.client = None
            return None
        return application

    # Scopes -------------------------------------------------------------------

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        # A client the server cannot sign ID tokens for asks for openid: invalid_scope,
        # as for any scope it may not have (policy.scopes_for_client).
        if len(scopes_for_client(scopes, client)) != len(list(scopes)):
            return False
        # SPEC P2: a client that may not have offline_access loses it silently later
        # instead of failing the whole request with invalid_scope.
        return super().validate_scopes(
            client_id, policy.without_offline_access(scopes), client, request, *args, **kwargs
        )

    def get_default_scopes(self, client_id, request, *args, **kwargs):
        """DOT's defaults, less ``openid`` for a client that cannot get ID tokens (it asked for nothing)."""
        defaults = super().get_default_scopes(client_id, request, *args, **kwargs)
        return scopes_for_client(defaults, request.client)

    def get_original_scopes(self, refresh_token, request, *args, **kwargs):
        """The family's scopes, without ``openid`` once the client can no longer get ID tokens.

        The refresh then answers as OAuth 2.0 does, without an ID token (OIDC Core
        12.2), instead of failing in DOT while signing one; asking for ``openid``
        again is ``invalid_scope`` (RFC 6749 6: not within the original scope).
        """
        original = super().get_original_scopes(refresh_token, request, *args, **kwargs)
        return " ".join(scopes_for_client(str(original or "").split(), request.client))

    # prompt=none ------------------------------------------------------------------
    #
    # oauthlib calls these for OpenID requests with prompt=none; stock DOT leaves them
    # unimplemented (NotImplementedError, a 500). The authorization view answers
    # prompt=none itself before any page is shown: anonymous users get login_required
    # and requests that would need the consent screen get consent_required, so by the
    # time oauthlib asks, both conditions have been settled.

    def validate_silent_login(self, request) -> bool:
        return True

    def validate_silent_authorization(self, request) -> bool:
        return True

    # Issuing tokens ---------------------------------------------------------------

    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        """Refuse a code for a PKCE method other than S256 (RFC 7636 4.2), then let DOT save it.

        The authorization view refuses such requests before any page; this also
        covers a site that mounts DOT's own view, and does not depend on DOT's
        ``COMPLIANT_BCP_RFC9700_PKCE_METHOD``.
        """
        error = pkce_method_error(request.code_challenge, request.code_challenge_method)
        if error is not None:
            error.state = request.state
            raise error
        return super().save_authorization_code(client_id, code, request, *args, **kwargs)

    def save_bearer_token(self, token, request, *args, **kwargs):
        """Drop ``offline_access`` and the refresh token where the policy says so (SPEC P1, P5)."""
        granted = str(token.get("scope", "")).split()
        if OFFLINE_ACCESS_SCOPE in granted and not self._offline_access_granted(request):
            granted = policy.without_offline_access(granted)
            token["scope"] = " ".join(granted)
            if request.grant_type is not None:
                request.scopes = granted
            # else: the access token of a hybrid response (``code token``), saved at the
            # authorization endpoint before the code. The browser-borne token loses
            # offline_access, but the code saved next from ``request.scopes`` keeps it:
            # OIDC Core 11 grants offline access through the code, at the token endpoint.
        if not policy.may_issue_refresh_token(granted):
            if "refresh_token" in token and request.grant_type == "refresh_token":
                # SPEC P6: the client narrowed the scope and dropped offline_access.
                # Its refresh token is used up like any rotated one and the family ends.
                request.offline_access_dropped = True
            token.pop("refresh_token", None)
        try:
            saved = self._save_bearer_token_once_more_after_a_deadlock(token, request, *args, **kwargs)
        except _ReusedWhileRefreshing as reuse:
            # DOT's transaction has rolled back: end the family now (RFC 9700 4.14.2).
            _end_reused_family(reuse.token_family)
            raise
        if request.grant_type == "refresh_token" and "refresh_token" in token:
            signals.send_after_commit(
                signals.offline_token_refreshed, OfflineTokenFamily, family=request.offline_access_family
            )
        return saved

    def _save_bearer_token_once_more_after_a_deadlock(self, token, request, *args, **kwargs):
        """DOT's save in its transaction; on MySQL/MariaDB, once more if InnoDB chose it as a deadlock victim.

        InnoDB locks index entries as well as rows, so two requests on one token
        family can deadlock inside DOT's rotation: a grace-period retry locks the
        access token rotated from its refresh token through the source_refresh_token
        index, then the row, while the rotation of the successor deletes that access
        token, row first (tests/test_concurrency_live.py met it as a 500). PostgreSQL
        locks rows only. MySQL's manual asks applications to re-issue a transaction
        that a deadlock rolled back: the whole transaction was rolled back, so the
        save is run again from the token and the presented refresh token as they were,
        and sees what the other request committed (a retry then gets the grace-period
        answer). Only when DOT's transaction is the outermost one.
        """
        connection = connections[router.db_for_write(get_access_token_model())]
        if connection.vendor != "mysql" or connection.in_atomic_block:
            return super().save_bearer_token(token, request, *args, **kwargs)
        token_before = dict(token)
        presented = getattr(request, "refresh_token_instance", None)
        try:
            return super().save_bearer_token(token, request, *args, **kwargs)
        except OperationalError as error:
            if not error.args or error.args[0] != MYSQL_LOCK_DEADLOCK:
                raise
        log.info("Token save chosen as a deadlock victim by InnoDB; saving once more.")
        token.clear()
        token.update(token_before)
        request.refresh_token_instance = presented
        return super().save_bearer_token(token, request, *args, **kwargs)

    def _offline_access_granted(self, request) -> bool:
        if request.grant_type == "refresh_token":
            # The token's family and consent passed validate_refresh_token (SPEC P6).
            return True
        if request.grant_type == "authorization_code":
            # The code's scopes passed the authorization step (SPEC P2); the consent
            # must still be in force now (it may have expired since).
            return getattr(request, "offline_access_consent_id", None) is not None
        if request.grant_type == DEVICE_CODE_GRANT:
            # The approval screen recorded the consent (SPEC P7); validate_device_code
            # looked up the one that covers this user and client.
            return getattr(request, "offline_access_consent_id", None) is not None
        if request.grant_type == "password" and request.user is not None:
            if not client_may_have_offline_access(request.client, request):
                return False
            request.offline_access_consent_id = (
                Consent.objects.active()
                .filter(user=request.user, application=request.client, kind=Consent.Kind.ENDURING)
                .values_list("pk", flat=True)
                .first()
            )
            return policy.direct_grant_keeps_offline_access(
                grant_type=request.grant_type,
                has_enduring_consent=request.offline_access_consent_id is not None,
            )
        # Client credentials act for no user; grant types this app does not know get
        # no offline access rather than a guess.
        return False

    def _create_access_token(self, expires, request, token, source_refresh_token=None):
        if source_refresh_token is not None and source_refresh_token.revoked is not None:
            # DOT re-read the refresh token under a row lock before rotating it; it was
            # revoked after validate_refresh_token saw it (a revocation racing this
            # refresh). Refuse, which rolls back the rotation.
            raise _RevokedWhileRefreshing(description="The refresh token was revoked.", request=request)
        if source_refresh_token is None and request.grant_type == "refresh_token":
            # DOT's branch for an access token alone: a refresh that dropped offline_access,
            # or one whose scopes DOT read as empty because a revocation committing since
            # validate_refresh_token deleted the access token they are read from (a retry
            # within the grace period reads them from the token it was rotated into).
            # Only the narrowing of a family still in force may have its access token.
            presented = getattr(request, "refresh_token_instance", None)
            ended = OfflineTokenFamily.objects.filter(
                token_family=getattr(presented, "token_family", None), ended_at__isnull=False
            )
            if presented is not None and presented.token_family is not None and ended.exists():
                raise _RevokedWhileRefreshing(description="The refresh token was revoked.", request=request)
        if getattr(request, "offline_access_dropped", False):
            presented = request.refresh_token_instance
            family = OfflineTokenFamily.objects.filter(token_family=presented.token_family)
            services.revoke_token_families(family)
            # Link the new access token to the used-up refresh token so that revoking
            # the consent later still finds it.
            source_refresh_token = presented
        access_token = self._new_access_token(expires, request, token, source_refresh_token)
        # The token view sends DOT's app_authorized signal with it (no lookup by value).
        token_storage.issued_access_token.set(access_token)
        proof = dpop.proof_of(request)
        if proof is not None:
            # RFC 9449 5 / 6: a token issued with a proof is bound to its key and says so.
            services.bind_access_token(access_token, proof.jkt)
            token["token_type"] = "DPoP"
        return access_token

    def _create_refresh_token(self, request, refresh_token_code, access_token, previous_refresh_token):
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        proof = dpop.proof_of(request)
        binds = proof is not None and policy.binds_refresh_token(client_is_public=_is_public(request.client))
        family = getattr(request, "offline_access_family", None)
        if previous_refresh_token is not None and binds and family is not None and not family.dpop_jkt:
            # RFC 9449 5: a public client's refresh token issued with a proof MUST be bound;
            # a family from before the client used DPoP becomes bound from here on.
            OfflineTokenFamily.objects.filter(pk=family.pk, dpop_jkt="").update(dpop_jkt=proof.jkt)
        if previous_refresh_token is None:
            # A new device or installation: tie its family to the consent behind it.
            services.link_token_family(
                # RFC 9449 5: a public client's refresh tokens are bound to its DPoP key.
                dpop_jkt=proof.jkt if binds else "",
                token_family=refresh_token.token_family,
                user=request.user,
                application=request.client,
                consent_id=request.offline_access_consent_id,
                # Remembered (a keyed hash) so that a replay of the code revokes this family.
                code_digest=getattr(request, "offline_access_code_hash", "")
                if request.grant_type == "authorization_code"
                else "",
                # Every ID token of a refresh repeats it (OIDC Core 12.2).
                auth_time=self._family_auth_time(request),
            )
        return refresh_token

    # Authentication time (OIDC Core 1.0, 2 auth_time; 12.2) ------------------------
    #
    # DOT claims the user's last_login, which a login on another device moves. Here
    # the authorization endpoint passes the browser session's authentication time
    # (offline_access.authentication) with the code, validate_code and
    # validate_device_code read it back with the code, the token family keeps it,
    # and validate_refresh_token hands it to every ID token of a refresh.

    def get_id_token_dictionary(self, token, token_handler, request):
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        auth_time = getattr(request, "offline_access_auth_time", None)
        if auth_time is not None:
            claims["auth_time"] = authentication.as_claim(auth_time)
        return claims, expiration_time

    @staticmethod
    def _family_auth_time(request):
        auth_time = getattr(request, "offline_access_auth_time", None)
        if auth_time is None and request.grant_type == "password":
            return timezone.now()  # the user authenticated with this very request
        return auth_time

    @staticmethod
    def _refresh_auth_time(family, user):
        """The auth_time of a family's ID tokens; fixed even for families from before it was kept.

        Those got DOT's ``last_login`` at their code exchange. While the user has not
        logged in since, ``last_login`` (earlier than the family) still is that value;
        after a later login the family's start stands in, which no login moves.
        """
        if family.auth_time is not None:
            return family.auth_time
        last_login = getattr(user, "last_login", None)
        return family.created_at if last_login is None else min(last_login, family.created_at)

    def _create_authorization_code(self, request, code, expires=None):
        """Store the code as its keyed hash (the redirect carries the plaintext, RFC 6749 4.1.2),
        and when the approving session authenticated."""
        grant = super()._create_authorization_code(
            request, {**code, "code": token_storage.stored_value(code["code"])}, expires
        )
        auth_time = getattr(request, "offline_access_auth_time", None)
        # RFC 9449 10: the authorization request's dpop_jkt, checked at the exchange.
        dpop_jkt = getattr(request, "offline_access_dpop_jkt", None) or ""
        if auth_time is not None or dpop_jkt:
            services.record_grant_authentication(
                stored_code=grant.code, auth_time=auth_time, expires_at=grant.expires, dpop_jkt=dpop_jkt
            )
        return grant

    # Tokens at rest (issue 9; offline_access.token_storage) -----------------------
    #
    # DOT stores the plaintext and finds a token by the SHA-256 of what is presented.
    # Here the stored value is a keyed hash, and every lookup goes through
    # token_storage's candidates (one per hash key, plus a not yet converted
    # plaintext row) in ONE indexed IN query. tests/test_token_storage.py pins the
    # DOT methods whose lookups are replaced, so a DOT upgrade that changes them fails.

    def _set_token_value(self, token_instance, raw_token: str) -> None:
        """Store an access or refresh token as its keyed hash; the client gets ``raw_token``.

        DOT's ``TokenChecksumField`` then derives ``token_checksum`` from the stored
        column, on this save and every later one (``revoke()``), consistently.
        """
        token_instance.token = token_storage.stored_value(raw_token)
        token_instance._raw_token = None

    def get_authorization_code_scopes(self, client_id, code, redirect_uri, request):
        """The code's scopes (oauthlib's OpenID dispatcher asks before ``validate_code``).

        Loads the whole grant, as :meth:`validate_code` needs it, and keeps it on the
        request for that: DOT reads the same row once here and once there.
        """
        grant = self._validated_grant(code, request)  # asked again after validate_code
        if grant is None:
            # Only what the presented value hashes to: a stored hash presented as a
            # code (copied from the database) matches nothing (token_storage).
            grant = _grants_with_facts().filter(code__in=token_storage.stored_candidates(code)).first()
            request.offline_access_presented_grant = (code, grant)
        return grant.scope.split() if grant is not None and grant.scope else []

    def _load_access_token(self, token):
        """The access token presented as a bearer token (RFC 6750 2): :func:`find_access_token`."""
        return find_access_token(token)

    def validate_bearer_token(self, token, scopes, request):
        """DOT's check, plus RFC 9449 7: a DPoP-bound token only with a proof of its key.

        A bound token sent as ``Bearer`` is refused (RFC 9449 7.2), as is an unbound
        token sent with the ``DPoP`` scheme, or a proof of another key. The proof (and
        its ``ath``) was checked by :func:`offline_access.dpop.prepare_resource_request`;
        a resource view that does not call it never gets a bound token accepted.
        """
        if not super().validate_bearer_token(token, scopes, request):
            return False
        bound = getattr(request.access_token, "offline_access_dpop_jkt", None) or ""
        proof = dpop.proof_of(request)
        if bound == (proof.jkt if proof else ""):
            return True
        if bound and proof is None:
            description = "This access token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof."
        elif proof is not None and not bound:
            description = "This access token is not DPoP-bound: send it as Authorization: Bearer."
        else:
            description = "The DPoP proof is signed with another key than the one this token is bound to."
        request.oauth2_error = {"error": "invalid_token", "error_description": description}
        request.access_token = request.user = request.client = None
        return False

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        """RFC 7009 2.1, with the token found by its stored hash; a token of an offline family ends it.

        Only the authenticated client's own tokens: another client's token is left
        alone and the endpoint still answers 200 (RFC 7009 2.2). The hinted type is
        looked up first, the other type when the hint found nothing.

        A refresh token stands for its whole token family (one device): revoking it
        ends the family, so the grace-period predecessor of a rotation and every
        access token issued from the family stop working too, and the consent gets a
        ``devices_revoked`` event; the consent itself stays (the user still allows
        the client; it must sign in again). Revoking an access token issued from an
        offline family does the same (RFC 7009 2.1: the server MAY revoke the
        refresh token too, and DOT does): a client revoking its access token is
        signing out, and ending only the paired refresh token would leave the rest
        of the family alive. Tokens of no offline family (issued before the app was
        installed) are revoked as DOT does.
        """
        application_pk = getattr(request.client, "pk", None)
        if application_pk is None:
            return
        access_token_model, refresh_token_model = get_access_token_model(), get_refresh_token_model()
        models = [access_token_model, refresh_token_model]
        if token_type_hint == "refresh_token":
            models.reverse()
        lookup = {
            "token_checksum__in": token_storage.checksum_candidates(token),
            "application_id": application_pk,
        }
        found = list(models[0].objects.filter(**lookup))
        if not found:
            found = list(models[1].objects.filter(**lookup))
        for row in found:
            families = _offline_families_of(row)
            if families:
                services.revoke_token_families(
                    OfflineTokenFamily.objects.filter(pk__in=families),
                    reason=services.CLIENT_REVOCATION_REASON,
                    via=ConsentEvent.Via.REVOCATION_ENDPOINT,
                )
            elif isinstance(row, access_token_model):
                revoke_access_token(row)
            else:
                row.revoke()

    def _validate_stored_refresh_token(self, refresh_token, client, request) -> bool:
        """DOT's ``validate_refresh_token`` (RFC 6749 6), with the token found by its stored hash.

        Same rules: a live row wins over revoked ones; a revoked token passes only
        within the grace period and only if it was superseded by a rotation (not
        revoked on purpose); otherwise reuse protection may end its family. A live
        token needs its access token and must be within REFRESH_TOKEN_EXPIRE_SECONDS.
        """
        refresh_token_model, access_token_model = get_refresh_token_model(), get_access_token_model()
        rt = (
            refresh_token_model.objects.filter(
                token_checksum__in=token_storage.checksum_candidates(refresh_token)
            )
            # DOT loads the user and the application in two more queries (request.user,
            # rt.application == client); the user comes with the token here, and the
            # client is compared by id.
            .select_related("access_token", "user")
            .order_by(F("revoked").desc(nulls_first=True))
            .first()
        )
        if rt is None:
            return False
        now = timezone.now()
        if rt.revoked is not None:
            grace = timedelta(seconds=oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS)
            superseded = access_token_model.objects.filter(source_refresh_token=rt).exists()
            if rt.revoked <= now - grace or not superseded:
                _end_reused_family(rt.token_family)
                return False
        else:
            if rt.access_token is None:
                return False
            expire_delta = refresh_token_expire_timedelta()
            if expire_delta and rt.access_token.expires + expire_delta <= now:
                return False
        request.user = rt.user
        # The plaintext as presented: it is what a rotation-less refresh hands back,
        # and the key to the sealed successor pair of a grace-period retry.
        request.refresh_token = refresh_token
        request.refresh_token_instance = rt
        if client is None or rt.application_id != client.pk:
            return False
        rt.application = client  # the same row: nothing reads it again
        return True

    def _save_bearer_token(self, token, request, *args, **kwargs):
        """DOT's save, plus the successor pair sealed for a grace-period retry (RFC 6749 6).

        DOT answers a retry of a just-rotated refresh token with the pair it issued,
        read from the database, where only hashes are left now. So a rotation seals
        the new pair under the predecessor's plaintext (token_storage.seal_pair) in
        the same transaction, and a retry opens it with the token it presents.
        """
        predecessor = getattr(request, "refresh_token_instance", None)
        issued_access_token = token.get("access_token")
        super()._save_bearer_token(token, request, *args, **kwargs)
        if predecessor is None or request.grant_type != "refresh_token" or "refresh_token" not in token:
            return
        if not self.rotate_refresh_token(request) and predecessor.access_token_id is not None:
            # Without rotation DOT renewed the refresh token's access token in place (a new
            # value, so a new checksum), never reaching _create_access_token: bind it here.
            proof = dpop.proof_of(request)
            if proof is not None:
                renewed = get_access_token_model().objects.get(pk=predecessor.access_token_id)
                services.bind_access_token(renewed, proof.jkt)
                token["token_type"] = "DPoP"
            return
        if token["access_token"] != issued_access_token and token_storage.is_hashed(token["access_token"]):
            # DOT found the pair this token was rotated into and put its stored values
            # in the answer: a retry within the grace period. (A pair stored before
            # the upgrade, in plaintext, is DOT's answer as it stands.)
            sealed = SealedSuccessorPair.objects.filter(predecessor_id=predecessor.pk).first()
            pair = sealed and token_storage.open_pair(request.refresh_token, predecessor.pk, sealed.sealed)
            if not pair and not oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS:
                # This request checked the token while another was rotating it, then
                # waited for that rotation's lock: without a grace period, a reuse like
                # any replay. The family ends once this transaction has rolled back
                # (save_bearer_token).
                raise _ReusedWhileRefreshing(
                    description="The refresh token was already used.",
                    request=request,
                    token_family=predecessor.token_family,
                )
            if not pair:
                # Within a grace period, but the sealed pair is gone: refused, and since a
                # retry is allowed here, the family lives on.
                raise _RevokedWhileRefreshing(
                    description="The refresh token was already used.", request=request
                )
            proof = dpop.proof_of(request)
            if pair.get("dpop_jkt", "") != (proof.jkt if proof else ""):
                # RFC 9449 5: the retry gets the pair issued to the first request, whose
                # access token is bound to that request's key (or to none): only the same
                # key may have it again.
                raise _RevokedWhileRefreshing(
                    description="The refresh token was already used with another DPoP key.", request=request
                )
            token["access_token"], token["refresh_token"] = pair["access_token"], pair["refresh_token"]
            token["token_type"] = "DPoP" if proof else token.get("token_type", "Bearer")
        elif (
            self.rotate_refresh_token(request)
            and oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS
            and token["refresh_token"] != request.refresh_token
        ):
            proof = dpop.proof_of(request)
            pair = {"access_token": token["access_token"], "refresh_token": token["refresh_token"]}
            if proof is not None:
                pair["dpop_jkt"] = proof.jkt
            SealedSuccessorPair.objects.create(
                predecessor_id=predecessor.pk,
                sealed=token_storage.seal_pair(request.refresh_token, predecessor.pk, pair),
            )

    # Exchanging a code ------------------------------------------------------------

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        """DOT's code validation, with the consent looked up in the same query.

        Does what DOT's ``validate_code`` does (an unexpired code of this client sets
        the request's scopes, user, nonce and claims), on the row
        :meth:`get_authorization_code_scopes` loaded with the user, the covering
        consent, the auth_time and the DPoP facts (:func:`_grants_with_facts`). DOT
        reads the code five more times (scopes, this, redirect URI, PKCE challenge
        and method, nonce) and the user once; here the row is read once and the
        later checks use it (:meth:`_validated_grant`).
        """
        presented, grant = getattr(request, "offline_access_presented_grant", None) or (None, None)
        if presented != code or grant is None or grant.application_id != client.pk:
            # Not the row oauthlib's dispatcher had us load (or another client's): DOT's lookup.
            grant = (
                _grants_with_facts()
                .filter(code__in=token_storage.stored_candidates(code), application=client)
                .first()
            )
        request.offline_access_presented_grant = None
        if grant is None:
            # Unknown, or used already: DOT deletes a code at its exchange. RFC 6749
            # 4.1.2: the tokens issued for a code used twice SHOULD be revoked.
            services.revoke_replayed_code(code, application=client)
            return False
        if grant.is_expired():
            return False
        # RFC 9449 10: a code whose request named dpop_jkt is exchanged only with that key.
        if not dpop_allows(
            request,
            bound_jkt=grant.offline_access_dpop_jkt,
            client_requires_dpop=grant.offline_access_require_dpop,
        ):
            return False
        # A code from before the client lost its ID-token signing: OAuth 2.0 tokens only.
        request.scopes = scopes_for_client(grant.scope.split(" "), client)
        request.user = grant.user
        if grant.nonce:
            request.nonce = grant.nonce
        if grant.claims:
            request.claims = json.loads(grant.claims)
        request.offline_access_consent_id = grant.offline_access_consent_id
        # A code from before auth times were kept: last_login now, as DOT would claim.
        request.offline_access_auth_time = authentication.claimed_auth_time(
            grant.offline_access_auth_time, grant.user
        )
        # From here on oauthlib and DOT find the code by its stored value (PKCE
        # challenge, redirect URI, nonce, resource, its deletion at the exchange):
        # all of them look it up by equality, so they get the value this lookup found.
        request.code = grant.code
        # The row DOT's redirect URI, PKCE and nonce checks would each read again.
        request.offline_access_grant = grant
        request.offline_access_code_hash = (
            grant.code.removeprefix(token_storage.PREFIX)
            if token_storage.is_hashed(grant.code)
            else services.code_hash(code)
        )
        return True

    def _validated_grant(self, code, request, client=None):
        """The grant :meth:`validate_code` accepted for ``code`` (and ``client``), or None."""
        grant = getattr(request, "offline_access_grant", None)
        if grant is None or grant.code != code:
            return None
        if client is not None and grant.application_id != client.pk:
            return None
        return grant

    def confirm_redirect_uri(self, client_id, code, redirect_uri, client, request=None, *args, **kwargs):
        """DOT's check (RFC 6749 4.1.3), on the row validate_code loaded instead of a new query."""
        grant = self._validated_grant(code, request, client)
        if grant is None:
            return super().confirm_redirect_uri(
                client_id, code, redirect_uri, client, request, *args, **kwargs
            )
        return grant.redirect_uri_allowed(redirect_uri)

    def get_code_challenge(self, code, request):
        """RFC 7636 4.6: the code's challenge, from the row validate_code loaded."""
        grant = self._validated_grant(code, request, request.client)
        if grant is None:
            return super().get_code_challenge(code, request)
        return grant.code_challenge or None

    def get_code_challenge_method(self, code, request):
        """RFC 7636 4.6: the code's challenge method, from the row validate_code loaded."""
        grant = self._validated_grant(code, request, request.client)
        if grant is None:
            return super().get_code_challenge_method(code, request)
        return grant.code_challenge_method or None

    def get_authorization_code_nonce(self, client_id, code, redirect_uri, request):
        """OIDC Core 3.1.3.6: the nonce of the authentication request, from the row validate_code loaded."""
        grant = self._validated_grant(code, request)
        if grant is None:
            return super().get_authorization_code_nonce(client_id, code, redirect_uri, request)
        return grant.nonce or None

    # ID tokens -----------------------------------------------------------------------

    def finalize_id_token(self, id_token, token, token_handler, request):
        """DOT's signed ID token; the row it saved is remembered for the access token's link."""
        signed = super().finalize_id_token(id_token, token, token_handler, request)
        request.offline_access_id_token = (signed, getattr(request, "id_token", None))
        return signed

    def _new_access_token(self, expires, request, token, source_refresh_token=None):
        """DOT's ``_create_access_token``, linking the ID token this request saved without reading it back.

        DOT finds that ID token again from the signed JWT: it loads the client named
        by its ``aud`` to get the key, verifies the signature and loads the row by
        ``jti`` (two queries). The row is at hand (:meth:`finalize_id_token`) when the
        JWT in the response is the one this request signed. Anything else goes
        through DOT's ``_load_id_token``. tests/test_token_storage.py pins DOT's method.
        """
        id_token = token.get("id_token", None)
        if id_token:
            signed, saved = getattr(request, "offline_access_id_token", None) or (None, None)
            id_token = saved if saved is not None and signed == id_token else self._load_id_token(id_token)
        access_token = get_access_token_model()(
            user=request.user,
            scope=token["scope"],
            expires=expires,
            id_token=id_token,
            application=request.client,
            source_refresh_token=source_refresh_token,
            resource=getattr(request, "resource", []),  # RFC 8707
        )
        self._set_token_value(access_token, token["access_token"])
        access_token.save()
        return access_token

    # Device authorization grant (RFC 8628) ------------------------------------------

    def validate_device_code(self, client_id, code, request, *args, **kwargs):
        """RFC 8628 section 3.5 for a polling device; DOT 3.4.1 lacks this (oauthlib 4 needs it).

        Pending polls faster than the interval get ``slow_down`` and a 5 s longer
        interval; an approved code is redeemed exactly once (its status becomes
        ``redeemed`` in the same statement that checks it), so a second poll gets
        ``invalid_grant`` and no tokens.
        """
        device_grant_model = get_device_grant_model()
        grant = (
            device_grant_model.objects.filter(device_code=code, client_id=client_id)
            .annotate(
                offline_access_auth_time=_grant_auth_time("device_code"),
                offline_access_require_dpop=Subquery(
                    ClientPolicy.objects.filter(application__client_id=OuterRef("client_id")).values(
                        "require_dpop"
                    )[:1]
                ),
            )
            .first()
        )
        if grant is None:
            return None
        # Before any state changes: a poll without a required proof redeems nothing.
        dpop_allows(request, bound_jkt="", client_requires_dpop=grant.offline_access_require_dpop)
        now = timezone.now()
        answer = policy.device_poll(
            status=grant.status,
            expired=now >= grant.expires,
            seconds_since_last_poll=(now - grant.last_checked).total_seconds(),
            interval=grant.interval,
        )
        pending = device_grant_model.objects.filter(pk=grant.pk, status=grant.AUTHORIZATION_PENDING)
        if answer == policy.DevicePoll.EXPIRED and grant.status != grant.EXPIRED:
            device_grant_model.objects.filter(pk=grant.pk).update(status=grant.EXPIRED)
        elif answer == policy.DevicePoll.SLOW_DOWN:
            pending.update(interval=grant.interval + 5, last_checked=now)
        elif answer == policy.DevicePoll.PENDING:
            pending.update(last_checked=now)
        elif answer == policy.DevicePoll.AUTHORIZED:
            # Bound to the user read above: the tokens go to the account that approved.
            claimed = device_grant_model.objects.filter(
                pk=grant.pk, status=grant.AUTHORIZED, user_id=grant.user_id
            ).update(status=DEVICE_CODE_REDEEMED, last_checked=now)
            if not claimed:
                return None  # a concurrent poll redeemed it first
            request.user = grant.user
            # Approved before the client lost its ID-token signing: OAuth 2.0 tokens only.
            request.scopes = scopes_for_client(grant.scope.split(), request.client)
            request.offline_access_auth_time = authentication.claimed_auth_time(
                grant.offline_access_auth_time, grant.user
            )
            row = services.covering_consent(grant.user, request.client).first()
            request.offline_access_consent_id = row["pk"] if row else None
        return answer

    # Refreshing -------------------------------------------------------------------

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        """SPEC P6: refuse a refresh unless consent, user and lifetimes all still hold."""
        if not self._validate_stored_refresh_token(refresh_token, client, request):
            return False
        presented = request.refresh_token_instance
        requested = str(request.scope or "").split()
        if presented.revoked is not None and requested and OFFLINE_ACCESS_SCOPE not in requested:
            # A grace-period retry may only repeat the earlier answer, not start a
            # narrowed one: that would mint a second access token from a used token.
            return False
        family = (
            OfflineTokenFamily.objects.select_related("consent", "application__offline_access_policy")
            .filter(token_family=presented.token_family)
            .first()
        )
        if family is not None:
            rules = client_policy(family.application)
            # RFC 9449 5: a bound family refreshes only with a proof of its key; the
            # grace-period retry of a rotated token too (same family).
            if not dpop_allows(
                request,
                bound_jkt=family.dpop_jkt,
                client_requires_dpop=rules is not None and rules.require_dpop,
            ):
                return False
        now = timezone.now()
        refusal = self._refresh_refusal(presented, family, request.user, now)
        if refusal is None:
            request.offline_access_family = family
            request.offline_access_auth_time = self._refresh_auth_time(family, request.user)
            return True
        log.info("Refresh refused (%s) for client %s, user %s.", refusal, client.client_id, request.user.pk)
        if refusal == policy.RefreshRefusal.NO_CONSENT and family and family.consent is not None:
            if family.consent.state(now) == Consent.Status.EXPIRED:
                services.expire_consent(family.consent)
        elif refusal in (policy.RefreshRefusal.IDLE_TIMEOUT, policy.RefreshRefusal.ABSOLUTE_LIFETIME):
            services.end_token_family(family)
        return False

    def _refresh_refusal(self, presented, family, user, now) -> str | None:
        if family is None:
            return policy.RefreshRefusal.NO_CONSENT
        return policy.refresh_refusal(refresh_facts(presented, family, user, now))


def _offline_families_of(token) -> list[int]:
    """Primary keys of the offline token families an access or refresh token belongs to (0 or 1)."""
    refresh_tokens = get_refresh_token_model().objects
    if isinstance(token, get_refresh_token_model()):
        family_keys = [token.token_family]
    else:
        # The refresh token issued with it, or the one it was refreshed from.
        paired = Q(access_token_id=token.pk)
        if token.source_refresh_token_id is not None:
            paired |= Q(pk=token.source_refresh_token_id)
        family_keys = refresh_tokens.filter(paired).values("token_family")
    return list(OfflineTokenFamily.objects.filter(token_family__in=family_keys).values_list("pk", flat=True))


def refresh_facts(presented, family: OfflineTokenFamily, user, now) -> policy.RefreshFacts:
    """What SPEC P6 judges a presented refresh token by (the token endpoint and introspection).

    ``family`` with ``consent`` and ``application__offline_access_policy`` loaded,
    ``presented`` with its ``access_token``.
    """
    consent = family.consent
    last_refreshed = presented.created
    if presented.access_token is not None:
        # Without rotation DOT keeps the refresh token and updates its access token.
        last_refreshed = max(last_refreshed, presented.access_token.updated)
    rules = client_policy(family.application)
    idle_timeout, absolute_lifetime = lifetimes(rules)
    return policy.RefreshFacts(
        user_is_active=user.is_active,
        client_may_have_offline_access=rules is None or rules.allow_offline_access,
        consent_active=consent is not None and consent.state(now) == Consent.Status.ACTIVE,
        family_ended=family.ended_at is not None,
        family_created_at=family.created_at,
        family_last_used_at=last_refreshed,
        idle_timeout=idle_timeout,
        absolute_lifetime=absolute_lifetime,
        now=now,
    )
