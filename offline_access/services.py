"""Grant, renew, revoke and expire consents: one transaction each.

Admin actions, management commands, views and the API are thin callers of these
functions, so every path writes the same events (SPEC C4) and revokes tokens the
same way (SPEC C5): set-based statements, a fixed number of queries however many
tokens a consent stands behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, router, transaction
from django.db.models import DO_NOTHING, Count, Exists, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.db.models.signals import post_delete, pre_delete
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
    get_grant_model,
    get_refresh_token_model,
)

from . import OFFLINE_ACCESS_SCOPE, signals, token_storage
from .conf import settings
from .models import (
    Consent,
    ConsentEvent,
    ConsentFormUse,
    DPoPBoundAccessToken,
    GrantAuthentication,
    OfflineTokenFamily,
    OfflineTokenFamilyQuerySet,
)

Via = ConsentEvent.Via

#: The reason recorded on the consent's history when a replayed code revokes its tokens.
CODE_REPLAY_REASON = "The authorization code was replayed at the token endpoint."

#: The reason recorded when a client revokes one of its tokens (RFC 7009), ending its family.
CLIENT_REVOCATION_REASON = "The client revoked the token at the revocation endpoint (RFC 7009)."

#: The reason recorded on every consent that barring its client ends (SPEC C4).
CLIENT_BARRED_REASON = "client barred by administrator"


@dataclass(frozen=True)
class RevocationResult:
    """What one revocation changed; commands and admin report these counts."""

    consents: int
    refresh_tokens: int
    access_tokens: int

    def __bool__(self) -> bool:
        return bool(self.consents or self.refresh_tokens or self.access_tokens)


def _event(consent: Consent, action: str, *, via: str, actor=None, reason: str = "", at=None) -> ConsentEvent:
    return ConsentEvent(
        consent=consent,
        action=action,
        via=via,
        actor=actor,
        reason=reason,
        scope=consent.scope,
        at=at or timezone.now(),
    )


def record_interactive_consent(
    *, user, application, scopes: Iterable[str], via: str = Via.CONSENT_SCREEN
) -> Consent:
    """SPEC C2: record the user's approval on the consent screen, or renew the active one."""
    scope = " ".join(dict.fromkeys(scopes))
    now = timezone.now()
    with transaction.atomic():
        _serialize_approvals(user)
        consent, created = _lock_or_create(
            user, application, Consent.Kind.INTERACTIVE, now=now, scope=scope, granted_by=user
        )
        if not created:
            consent.scope, consent.granted_at, consent.granted_by = scope, now, user
            consent.save(update_fields=["scope", "granted_at", "granted_by"])
        _record_given(consent, created, actor=user, via=via, now=now)
        return consent


class ConsentFormRefused(Exception):
    """A consent form that must not be acted on; the message is for the user."""


def use_consent_form(nonce: str) -> None:
    """Mark one rendering of the consent screen as posted; refuse it if it was already.

    The unique nonce settles two POSTs of the same form even when they race on
    different workers: the second INSERT fails (on PostgreSQL it waits for the
    first transaction, then fails). Rows of forms whose signature has expired
    are deleted on the way (one indexed DELETE), so the table stays small.
    Call inside the transaction that acts on the form: if that rolls back, the
    form may be posted again, and nothing was issued for it.
    """
    now = timezone.now()
    ConsentFormUse.objects.filter(expires_at__lte=now).delete()
    try:
        with transaction.atomic():
            # The form's signature was made before now, so it expires before this row.
            ConsentFormUse.objects.create(nonce=nonce, expires_at=now + settings.CONSENT_FORM_MAX_AGE)
    except IntegrityError:
        raise ConsentFormRefused(
            _("This consent screen has already been used. Go back to the application and start again.")
        ) from None


def refuse_if_revoked_since(*, user, application, rendered_at: datetime) -> None:
    """Refuse a consent form shown before a revocation of this user's consent for this client.

    Without this, Allow on a page left open in another tab would undo the
    revocation the user (or an administrator) made meanwhile.
    """
    revoked_since = Consent.objects.filter(
        user=user, application=application, status=Consent.Status.REVOKED, ended_at__gte=rendered_at
    ).exists()
    if revoked_since:
        raise ConsentFormRefused(
            _(
                "This application's access was revoked after this page was shown. "
                "Start again from the application."
            )
        )


def grant_enduring_consent(
    *,
    user,
    application,
    reason: str,
    expires_at: datetime | None = None,
    actor=None,
    via: str = Via.ADMIN,
) -> tuple[Consent, bool]:
    """SPEC C3: record (or renew) an administrator's enduring consent for a user and client.

    Returns the consent and whether it was newly created.
    """
    if not reason or not reason.strip():
        raise ValueError("An enduring consent needs a reason: the agreement it stands for.")
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise ValueError("The expiry of an enduring consent must be in the future.")
    with transaction.atomic():
        _serialize_approvals(user)
        lapsed = _lock_active(user, application, Consent.Kind.ENDURING)
        if lapsed is not None and lapsed.expires_at is not None and lapsed.expires_at <= now:
            # Its expiry passed without being processed: close it, then start afresh.
            _end_consents([lapsed], status=Consent.Status.EXPIRED, via=Via.SYSTEM, now=now)
        fields = {"reason": reason, "expires_at": expires_at, "granted_by": actor}
        consent, created = _lock_or_create(
            user, application, Consent.Kind.ENDURING, now=now, scope=OFFLINE_ACCESS_SCOPE, **fields
        )
        if not created:
            for name, value in {**fields, "granted_at": now}.items():
                setattr(consent, name, value)
            consent.save(update_fields=[*fields, "granted_at"])
        _record_given(consent, created, actor=actor, via=via, now=now, reason=reason)
        return consent, created


def revoke_consents(
    consents: QuerySet[Consent], *, actor=None, reason: str = "", via: str
) -> RevocationResult:
    """SPEC C5: revoke the consents in force among ``consents`` and every token issued under them.

    A selected consent whose expiry has passed without being processed is marked
    expired instead (with its own event); its tokens are revoked all the same.
    """
    with transaction.atomic():
        return _revoke_locked(consents, actor=actor, reason=reason, via=via)


def revoke_offline_access(
    *, user, application=None, actor=None, reason: str = "", via: str
) -> RevocationResult:
    """Revoke all of a user's offline access, or one client's: consents and tokens.

    Token families with no consent behind them (for example, issued before the
    consent was revoked elsewhere) are revoked too.
    """
    consents = Consent.objects.filter(user=user)
    families = OfflineTokenFamily.objects.filter(user=user)
    if application is not None:
        consents = consents.filter(application=application)
        families = families.filter(application=application)
    return revoke_everything(consents=consents, families=families, actor=actor, reason=reason, via=via)


def revoke_everything(
    *,
    consents: QuerySet[Consent],
    families: OfflineTokenFamilyQuerySet,
    actor=None,
    reason: str = "",
    via: str,
) -> RevocationResult:
    """Revoke the active consents among ``consents`` and every token of ``families``."""
    with transaction.atomic():
        result = _revoke_locked(consents, actor=actor, reason=reason, via=via)
        extra = _revoke_families(families, now=timezone.now(), actor=actor, reason=reason, via=via)
        return RevocationResult(
            consents=result.consents,
            refresh_tokens=result.refresh_tokens + extra.refresh_tokens,
            access_tokens=result.access_tokens + extra.access_tokens,
        )


#: Consents revoked per transaction by :func:`revoke_client_offline_access`: at ten devices
#: each, 500 token families. A batch's time is mostly its writes (a refresh token UPDATE
#: per family; the access tokens' DELETE and the families' in-place UPDATE cost far less),
#: so its locks last in proportion to its families: 500 families took 38 ms (median) and
#: at most 215 ms on PostgreSQL on 2 busy cores (python -m benchmarks --only revoke);
#: 1,000 families took more than twice as long per batch (130 ms, at most 535 ms).
CLIENT_REVOCATION_BATCH_SIZE = 50
#: Token families per transaction of the same: a group of consents stops before it would
#: pass it (a consent with more is a batch of its own), and families without an active
#: consent go this many at a time.
CLIENT_REVOCATION_FAMILY_BATCH_SIZE = 500


@dataclass(frozen=True)
class BatchedRevocationResult(RevocationResult):
    """A :class:`RevocationResult` of a run in several transactions, with how many it took."""

    batches: int = 0


def revoke_client_offline_access(
    application,
    *,
    actor=None,
    reason: str = "",
    via: str,
    batch_size: int = CLIENT_REVOCATION_BATCH_SIZE,
    family_batch_size: int = CLIENT_REVOCATION_FAMILY_BATCH_SIZE,
    on_batch=None,
) -> BatchedRevocationResult:
    """Revoke everything of one client (SPEC C5 for each consent), in batches: for clients at scale.

    What :func:`revoke_everything` does for one client, but never in one transaction
    holding every row lock of the client: each batch is its own transaction and
    costs a fixed number of queries, and the rows are walked by primary key, so
    memory and lock time stay bounded however many users and devices the client has.

    1. The client's active consents, ``batch_size`` at a time in primary-key order (fewer
       when their token families would pass ``family_batch_size``):
       each batch locks its consents, revokes them (the lapsed ones are marked
       expired) with their events, deletes their unexchanged codes and revokes
       every token of their families. A consent and its tokens are always in one
       transaction (SPEC C5); only a group of consents is, never part of one.
       Consents given after the run started (a user approving again meanwhile)
       are new agreements and stay.
    2. Then the client's families that are not ended and have no active consent
       behind them (none at all, or one revoked or expired earlier without them),
       ``family_batch_size`` at a time.

    Consents first: once a consent is revoked no new family can be linked to it
    (the code exchange reads the covering consent, and the revocation deletes the
    consent's unexchanged codes under lock), so the second pass only meets families
    that nothing covers. Within a batch the locks are taken in the order DOT's
    rotation takes them (refresh tokens, then access tokens, see
    :func:`_revoke_families`), so a refresh racing a batch waits for it and is then
    refused, or finishes first and has its new pair revoked by the batch.

    Call it outside a transaction: inside one, the batches are savepoints of the
    caller's transaction and every lock lasts until it commits. ``on_batch(result)``,
    if given, is called after each batch commits with that batch's counts. Signals
    go after each batch's commit, as the single-transaction revocations send them.
    Idempotent: a second run finds nothing left and records nothing.
    """
    if batch_size < 1 or family_batch_size < 1:
        raise ValueError("Batch sizes must be at least 1.")
    using = router.db_for_write(Consent)
    consents = Consent.objects.filter(application=application, status=Consent.Status.ACTIVE)
    # Consents given after this point are not this run's to revoke.
    newest = Consent.objects.filter(application=application).aggregate(newest=Max("pk"))["newest"] or 0
    consents = consents.filter(pk__lte=newest)
    # How many not-ended families each consent stands behind: a group stops before it
    # would pass family_batch_size (a consent with more is a batch of its own, SPEC C5).
    _open_families = Coalesce(
        Subquery(
            OfflineTokenFamily.objects.filter(consent=OuterRef("pk"), ended_at__isnull=True)
            .order_by()
            .values("consent")
            .annotate(n=Count("pk"))
            .values("n")
        ),
        0,
    )
    totals = [0, 0, 0, 0]  # consents, refresh tokens, access tokens, batches

    def tally(result: RevocationResult) -> None:
        totals[0] += result.consents
        totals[1] += result.refresh_tokens
        totals[2] += result.access_tokens
        totals[3] += 1
        if on_batch is not None:
            on_batch(result)

    after = 0
    while True:
        # The group's keys first, then its locks (in the transaction, which re-reads each
        # consent's state): a locking SELECT with LIMIT returns fewer rows when some were
        # revoked meanwhile, which could end the walk early.
        candidates = consents.filter(pk__gt=after).order_by("pk").annotate(families=_open_families)
        group = _fill(candidates.values_list("pk", "families")[:batch_size], family_batch_size)
        if not group:
            break
        after = group[-1]
        with transaction.atomic(using=using):
            result = _revoke_locked(
                Consent.objects.filter(pk__in=group).order_by("pk"), actor=actor, reason=reason, via=via
            )
        tally(result)

    uncovered = (
        OfflineTokenFamily.objects.filter(application=application, ended_at__isnull=True)
        .filter(Q(consent__isnull=True) | ~Q(consent__status=Consent.Status.ACTIVE))
        .order_by("pk")
    )
    after = 0
    while True:
        group = list(uncovered.filter(pk__gt=after).values_list("pk", flat=True)[:family_batch_size])
        if not group:
            break
        after = group[-1]
        with transaction.atomic(using=using):
            result = _revoke_families(
                OfflineTokenFamily.objects.filter(pk__in=group),
                now=timezone.now(),
                actor=actor,
                reason=reason,
                via=via,
            )
        tally(result)
    return BatchedRevocationResult(
        consents=totals[0], refresh_tokens=totals[1], access_tokens=totals[2], batches=totals[3]
    )


def _fill(candidates, budget: int) -> list:
    """The keys of the leading ``(key, weight)`` pairs whose weights fit ``budget`` (at least one)."""
    group: list = []
    used = 0
    for key, weight in candidates:
        if group and used + weight > budget:
            break
        group.append(key)
        used += weight
    return group


def revoke_clients_offline_access(
    applications, *, actor=None, reason: str = "", via: str, **batching
) -> BatchedRevocationResult:
    """:func:`revoke_client_offline_access` for each of ``applications`` (instances, keys or a subquery)."""
    totals = [0, 0, 0, 0]
    for application in get_application_model().objects.filter(pk__in=applications).order_by("pk"):
        result = revoke_client_offline_access(application, actor=actor, reason=reason, via=via, **batching)
        for index, count in enumerate(
            (result.consents, result.refresh_tokens, result.access_tokens, result.batches)
        ):
            totals[index] += count
    return BatchedRevocationResult(*totals)


def bar_clients(applications, *, actor=None, via: str = Via.COMMAND) -> RevocationResult:
    """SPEC C5 for clients barred from offline access (``ClientPolicy.allow_offline_access`` off).

    Revokes the consents in force of ``applications`` (application instances, primary
    keys or a subquery of them), each with a ``revoked`` event naming the cause, and
    every refresh and access token of their offline token families, those without a
    consent too. Lifting the bar later revives nothing: each user consents again
    (an administrator re-grants enduring consents). Runs whenever a policy is saved
    barred, so it must stay idempotent: a client already barred has nothing left to
    revoke and gets no new events.

    Called outside a transaction (``ClientPolicy.save()`` in autocommit mode does, once
    the bar has committed), each client is revoked in batches
    (:func:`revoke_client_offline_access`), so barring a client with 100,000 devices
    holds no lock for long. Inside a transaction it is one set of statements in it.
    """
    if not transaction.get_connection(router.db_for_write(Consent)).in_atomic_block:
        return revoke_clients_offline_access(applications, actor=actor, reason=CLIENT_BARRED_REASON, via=via)
    return revoke_everything(
        consents=Consent.objects.filter(application__in=applications),
        families=OfflineTokenFamily.objects.filter(application__in=applications),
        actor=actor,
        reason=CLIENT_BARRED_REASON,
        via=via,
    )


def expire_consent(consent: Consent) -> RevocationResult:
    """Process a consent whose expiry has passed: mark it expired and revoke its tokens."""
    now = timezone.now()
    with transaction.atomic():
        locked = list(
            Consent.objects.filter(
                pk=consent.pk, status=Consent.Status.ACTIVE, expires_at__lte=now
            ).select_for_update()
        )
        return _end_consents(locked, status=Consent.Status.EXPIRED, via=Via.SYSTEM, now=now)


def expire_due_consents(*, batch_size: int = 1000) -> RevocationResult:
    """Process every consent whose expiry has passed (for a periodic job).

    Batched, each batch its own transaction: :func:`offline_access.maintenance.expire_due_consents`.
    """
    from . import maintenance  # imported here: maintenance imports this module

    counts = maintenance.expire_due_consents(batch_size=batch_size).counts
    return RevocationResult(
        consents=counts.get("consents", 0),
        refresh_tokens=counts.get("refresh_tokens", 0),
        access_tokens=counts.get("access_tokens", 0),
    )


def end_token_family(family: OfflineTokenFamily) -> RevocationResult:
    """Revoke one family's tokens (idle timeout, absolute lifetime); its consent stays."""
    return revoke_token_families(OfflineTokenFamily.objects.filter(pk=family.pk))


def revoke_token_families(
    families: OfflineTokenFamilyQuerySet,
    *,
    actor=None,
    reason: str = "",
    via: str | None = None,
    action: str = ConsentEvent.Action.DEVICES_REVOKED,
) -> RevocationResult:
    """Revoke the tokens of some token families (devices); their consents stay.

    With ``via``, each consent behind a family that had live tokens gets an
    ``action`` event (``devices_revoked`` unless told) naming the actor (admin and
    user revocations, code replay); the
    automatic endings (idle timeout, absolute lifetime, a narrowed refresh) pass none.
    """
    now = timezone.now()
    with transaction.atomic():
        affected: list[Consent] = []
        if via is not None:
            affected = list(
                Consent.objects.filter(pk__in=families.live().values("consent_id")).select_for_update()
            )
        result = _revoke_families(families, now=now, actor=actor, reason=reason, via=via)
        if via is not None:
            ConsentEvent.objects.bulk_create(
                [
                    _event(
                        consent,
                        action,
                        via=via,
                        actor=actor,
                        reason=reason,
                        at=now,
                    )
                    for consent in affected
                ]
            )
        return result


def covering_consent(user, application) -> QuerySet[Consent]:
    """The active consent a new refresh-token family is issued under (pk only, at most one).

    An interactive consent is preferred when both kinds are active: it is the one
    the user gave most directly. ``user`` and ``application`` may be ``OuterRef`` expressions.
    """
    return (
        Consent.objects.active()
        .filter(user=user, application=application)
        # A client an administrator barred from offline access is covered by nothing.
        .exclude(application__offline_access_policy__allow_offline_access=False)
        .order_by("-kind", "-granted_at")  # "interactive" sorts after "enduring"
        .values("pk")[:1]
    )


def code_hash(code: str) -> str:
    """A keyed hash of an authorization code: enough to recognise it again, useless to redeem it.

    The same keyed hash the code is stored under (:mod:`offline_access.token_storage`,
    without its prefix), so a copy of the database alone cannot test guesses against it.
    """
    return token_storage.digest(code, token_storage.hash_keys()[0])


def link_token_family(
    *,
    token_family,
    user,
    application,
    consent_id,
    code: str | None = None,
    code_digest: str = "",
    auth_time: datetime | None = None,
    dpop_jkt: str = "",
) -> OfflineTokenFamily:
    """Record a new refresh-token family (device) under the consent that covers it.

    ``code`` is the authorization code exchanged for it, remembered as a keyed
    hash so that a replay of the code can revoke the family (:func:`revoke_replayed_code`);
    or pass that hash as ``code_digest``. ``auth_time`` is the authentication
    time of the first ID token, repeated in every ID token of a refresh (OIDC Core 12.2).
    ``dpop_jkt`` binds the family's refresh tokens to a DPoP key (RFC 9449 5).
    """
    family = OfflineTokenFamily.objects.create(
        token_family=token_family,
        user=user,
        application=application,
        consent_id=consent_id,
        code_hash=code_digest or (code_hash(code) if code else ""),
        auth_time=auth_time,
        dpop_jkt=dpop_jkt,
    )
    signals.send_after_commit(
        signals.offline_token_issued, OfflineTokenFamily, family=family, consent_id=consent_id
    )
    return family


def bind_access_token(access_token, jkt: str) -> None:
    """Bind an access token to a DPoP key (RFC 9449 6), by its ``token_checksum``: one INSERT.

    Runs inside the token endpoint's transaction: a failed issue leaves no binding.
    Bindings of expired tokens are deleted by the maintenance job
    (:func:`offline_access.dpop.delete_expired_bindings`), not here: they
    authorize nothing meanwhile (a binding is read only with a live token).
    """
    DPoPBoundAccessToken.objects.create(
        token_checksum=access_token.token_checksum, jkt=jkt, expires_at=access_token.expires
    )


def record_grant_authentication(
    *, stored_code: str, auth_time: datetime | None, expires_at: datetime, dpop_jkt: str = ""
) -> None:
    """Remember when the session approving a code authenticated (OIDC Core 1.0, 2 ``auth_time``).

    ``stored_code`` is the code as DOT stores it (its keyed hash). Rows of codes
    that have expired are deleted on the way (one indexed DELETE), so the table
    holds only codes that can still be exchanged.
    """
    GrantAuthentication.objects.filter(expires_at__lte=timezone.now()).delete()
    GrantAuthentication.objects.create(
        code=stored_code, auth_time=auth_time, expires_at=expires_at, dpop_jkt=dpop_jkt
    )


def claim_device_grant(grant, *, user) -> bool:
    """RFC 8628 3.3: tie a pending device grant to the account that typed its user code.

    One conditional UPDATE: the grant must still be pending and unexpired, and
    not already claimed by another account. Once an account has the approval page
    open, nobody else can switch the grant to theirs; the approval itself is
    bound to the account as well (:func:`decide_device_grant`). Returns whether
    the grant is now this user's.
    """
    model = get_device_grant_model()
    return bool(
        model.objects.filter(pk=grant.pk, status=model.AUTHORIZATION_PENDING, expires__gt=timezone.now())
        .filter(Q(user__isnull=True) | Q(user=user))
        .update(user=user)
    )


def decide_device_grant(
    grant,
    *,
    user,
    application,
    allow: bool,
    scopes: Iterable[str],
    record_consent: bool,
    auth_time: datetime | None = None,
) -> bool:
    """RFC 8628 3.3, SPEC P7: record the user's Allow or Deny on a device grant.

    The decision is one conditional UPDATE bound to the grant, its user code and
    client, the deciding user and the pending state: if another account took the
    code over, or it expired or was decided meanwhile, nothing changes and this
    returns False. The consent (when the screen granted ``offline_access``) is
    recorded in the same transaction, after the UPDATE: a failed approval leaves
    no consent, and a failed consent leaves no approval. On PostgreSQL the
    UPDATE's row lock makes a concurrent code entry wait for this commit.
    """
    model = get_device_grant_model()
    scopes = list(dict.fromkeys(scopes))
    with transaction.atomic():
        if connection.vendor == "mysql":
            # InnoDB locks through the index its plan reads: this UPDATE could go through
            # the user_id index, then the row, while a reassignment of the grant held the
            # row and waited to change that index entry ("Deadlock found", a 500 at the
            # approval page; tests/test_concurrency.py's device races met it). The row by
            # its key first: one more query, MySQL/MariaDB only.
            list(model.objects.select_for_update().filter(pk=grant.pk).values_list("pk"))
        decided = model.objects.filter(
            pk=grant.pk,
            client_id=grant.client_id,
            user_code=grant.user_code,
            user=user,
            status=model.AUTHORIZATION_PENDING,
            expires__gt=timezone.now(),
        ).update(
            status=model.AUTHORIZED if allow else model.DENIED,
            scope=" ".join(scopes) if allow else grant.scope,
        )
        if not decided:
            return False
        if allow and record_consent:
            record_interactive_consent(user=user, application=application, scopes=scopes)
        if allow and auth_time is not None:
            # The device's ID tokens say when the approving session authenticated.
            record_grant_authentication(
                stored_code=grant.device_code, auth_time=auth_time, expires_at=grant.expires
            )
        return True


def revoke_replayed_code(code: str, *, application) -> RevocationResult:
    """RFC 6749 4.1.2 and 10.5: a code used twice revokes the tokens issued for it.

    DOT has deleted the code at its first exchange; the token family it started
    is found by the code's keyed hash. Only the client the code was issued to
    can trigger this: another client presenting a leaked code gets
    ``invalid_grant`` and ends nobody's tokens. The consent stays (the user did
    agree); its history gets a ``code_replayed`` event. A second replay finds
    nothing live and records nothing.
    """
    families = OfflineTokenFamily.objects.filter(
        code_hash__in=token_storage.digest_candidates(code), application=application
    )
    return revoke_token_families(
        families, reason=CODE_REPLAY_REASON, via=Via.SYSTEM, action=ConsentEvent.Action.CODE_REPLAYED
    )


# Account events (offline_access/account_events.py calls these) ---------------


def end_user_offline_access(user, *, cause: str, actor=None) -> RevocationResult:
    """End everything that lets a client act for ``user``: for deactivation and password changes.

    Revokes the user's consents, each with an ``account`` event whose reason is
    ``cause``, and their token families (``revoke_offline_access``); then expires
    every other live access token of the user, revokes any refresh token outside
    a family, and deletes unexchanged authorization codes and device codes. A
    deactivated user's or an old password's tokens must stop at userinfo and at
    resource servers too, not only at the token endpoint (RFC 6749 section 10.4).

    Sites that deactivate users with ``QuerySet.update()`` (which sends no signal)
    call this for each of them; refreshes are refused in any case (SPEC P6).
    """
    with transaction.atomic():
        result = revoke_offline_access(user=user, actor=actor, reason=cause, via=Via.ACCOUNT)
        now = timezone.now()  # after the revocation, whose tokens are then not counted twice
        live_access_tokens = get_access_token_model().objects.filter(user=user, expires__gt=now)
        access_tokens = live_access_tokens.update(expires=now)
        refresh_tokens = _revoke_live_refresh_tokens(
            get_refresh_token_model().objects.filter(user=user, revoked__isnull=True), now=now
        )
        get_grant_model().objects.filter(user=user).delete()
        get_device_grant_model().objects.filter(user=user).delete()
        return RevocationResult(
            consents=result.consents,
            refresh_tokens=result.refresh_tokens + refresh_tokens,
            access_tokens=result.access_tokens + access_tokens,
        )


def end_consents_of_deleted_client(application, *, reason: str) -> RevocationResult:
    """End the consents given to a client that is being deleted; their history stays (SPEC C1).

    Runs before the client's row goes, in the deleting transaction: each consent
    records the client's id and name as they are now (a rename after the consent
    was given shows in the audit), the active ones are revoked with a ``client``
    event, and the database then only clears their link to the client.
    """
    now = timezone.now()
    consents = Consent.objects.filter(application=application)
    with transaction.atomic():
        consents.update(client_id=application.client_id, client_name=application.name)
        locked = list(consents.filter(status=Consent.Status.ACTIVE).select_for_update())
        for consent in locked:
            # Receivers run after the commit, when the row is gone: they read the client from memory.
            consent.application = application
            consent.client_id, consent.client_name = application.client_id, application.name
        lapsed = [consent for consent in locked if consent.state(now) == Consent.Status.EXPIRED]
        in_force = [consent for consent in locked if consent not in lapsed]
        expired = _end_consents(lapsed, status=Consent.Status.EXPIRED, via=Via.SYSTEM, now=now)
        revoked = _end_consents(
            in_force, status=Consent.Status.REVOKED, reason=reason, via=Via.CLIENT, now=now
        )
        return RevocationResult(
            consents=revoked.consents,
            refresh_tokens=revoked.refresh_tokens + expired.refresh_tokens,
            access_tokens=revoked.access_tokens + expired.access_tokens,
        )


# Internals -----------------------------------------------------------------


def _serialize_approvals(user) -> None:
    """On MySQL/MariaDB, lock the user's row before any consent row of an approval.

    There the constraint's retry in :func:`_lock_or_create` deadlocks when three or
    more first approvals race (each loser keeps InnoDB's shared lock on the
    duplicate key and then asks for an exclusive one), so approvals of one user
    queue on the user's row instead: one more query, MySQL/MariaDB only. It comes
    before any consent lock: taken after one (a first approval that had found no
    consent), it deadlocked with a renewal, which held the consent and then
    needed a shared lock on the user's row for its event's foreign key.
    """
    if connection.vendor == "mysql":
        list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))


def _lock_or_create(user, application, kind, *, now, **fields) -> tuple[Consent, bool]:
    """The active consent of this kind, locked, or a new one; and whether it is new.

    The database constraint settles a race between two first approvals: the
    loser finds the winner's row and renews it (on MySQL/MariaDB the caller has
    serialized them first: :func:`_serialize_approvals`).
    """
    consent = _lock_active(user, application, kind)
    if consent is not None:
        return consent, False
    try:
        with transaction.atomic():
            consent = Consent.objects.create(
                user=user, application=application, kind=kind, created_at=now, granted_at=now, **fields
            )
            return consent, True
    except IntegrityError:
        consent = _lock_active(user, application, kind)
        if consent is None:
            raise
        return consent, False


def _record_given(consent, created: bool, *, actor, via: str, now, reason: str = "") -> None:
    """The event and the signal of a consent given (created) or renewed."""
    action = ConsentEvent.Action.GRANTED if created else ConsentEvent.Action.RENEWED
    _event(consent, action, via=via, actor=actor, reason=reason, at=now).save()
    signal = signals.consent_granted if created else signals.consent_renewed
    signals.send_after_commit(signal, Consent, consent=consent, actor=actor, via=via)


def _lock_active(user, application, kind) -> Consent | None:
    return (
        Consent.objects.select_for_update()
        .filter(user=user, application=application, kind=kind, status=Consent.Status.ACTIVE)
        .first()
    )


def _revoke_locked(consents: QuerySet[Consent], *, actor, reason: str, via: str) -> RevocationResult:
    """Lock the active rows of ``consents``; revoke those in force, expire the lapsed ones."""
    now = timezone.now()
    locked = list(consents.filter(status=Consent.Status.ACTIVE).select_for_update())
    lapsed = [consent for consent in locked if consent.expires_at is not None and consent.expires_at <= now]
    in_force = [consent for consent in locked if consent not in lapsed]
    expired = _end_consents(lapsed, status=Consent.Status.EXPIRED, via=Via.SYSTEM, now=now)
    revoked = _end_consents(
        in_force, status=Consent.Status.REVOKED, actor=actor, reason=reason, via=via, now=now
    )
    return RevocationResult(
        consents=revoked.consents,
        refresh_tokens=revoked.refresh_tokens + expired.refresh_tokens,
        access_tokens=revoked.access_tokens + expired.access_tokens,
    )


def _end_consents(
    consents: list[Consent], *, status: str, via: str, actor=None, reason: str = "", now=None
) -> RevocationResult:
    """End locked consents and revoke their tokens. Must run inside a transaction."""
    if not consents:
        return RevocationResult(0, 0, 0)
    now = now or timezone.now()
    pks = [consent.pk for consent in consents]
    action = ConsentEvent.Action.REVOKED if status == Consent.Status.REVOKED else ConsentEvent.Action.EXPIRED
    Consent.objects.filter(pk__in=pks).update(status=status, ended_at=now, ended_by=actor, end_reason=reason)
    ConsentEvent.objects.bulk_create(
        [_event(consent, action, via=via, actor=actor, reason=reason, at=now) for consent in consents]
    )
    for consent in consents:
        consent.status, consent.ended_at, consent.ended_by, consent.end_reason = status, now, actor, reason
        if status == Consent.Status.REVOKED:
            signals.send_after_commit(
                signals.consent_revoked, Consent, consent=consent, actor=actor, reason=reason, via=via
            )
        else:
            signals.send_after_commit(signals.consent_expired, Consent, consent=consent)
    # Authorization codes not yet exchanged must not turn into tokens after the fact.
    ended = Consent.objects.filter(pk__in=pks)
    get_grant_model().objects.filter(
        Exists(ended.filter(user_id=OuterRef("user_id"), application_id=OuterRef("application_id")))
    ).delete()
    tokens = _revoke_families(
        OfflineTokenFamily.objects.filter(consent_id__in=pks), now=now, actor=actor, reason=reason, via=via
    )
    return RevocationResult(len(pks), tokens.refresh_tokens, tokens.access_tokens)


def _revoke_live_refresh_tokens(live: QuerySet, *, now) -> int:
    """Revoke the unrevoked refresh tokens of ``live``; only those rows are locked.

    On PostgreSQL the UPDATE locks the rows it changes. InnoDB (MySQL, MariaDB)
    locks every row its index scan reaches, revoked ones too, and waits for each:
    a grace-period retry holds a revoked refresh token (DOT locks the token it is
    presented) and then asks for the access token rotated from it, which the
    revocation may have expired already; the UPDATE waited for the retry, the
    retry for the revocation ("Deadlock found", a 500 at the token endpoint).
    So there the live rows are read first (a plain read takes no lock) and
    updated by primary key: one more query, on MySQL/MariaDB only.
    """
    if connection.vendor != "mysql":
        return live.update(revoked=now, updated=now)
    pks = list(live.values_list("pk", flat=True))
    if not pks:
        return 0
    return live.model._default_manager.filter(pk__in=pks, revoked__isnull=True).update(
        revoked=now, updated=now
    )


def _lock_live_refresh_tokens(live: QuerySet) -> list[tuple[Any, Any]]:
    """Lock the unrevoked refresh tokens of ``live``; return their keys and their access tokens'.

    On PostgreSQL ``SELECT ... FOR UPDATE`` locks the rows it returns. InnoDB (MySQL,
    MariaDB) locks every row its index scan reaches, revoked ones too (see
    :func:`_revoke_live_refresh_tokens`): there the live keys are read first without
    a lock, and then locked by primary key, which reaches only those rows. One more
    query, on MySQL/MariaDB only, and only where there is anything to lock.
    """
    if connection.vendor == "mysql":
        pks = list(live.values_list("pk", flat=True))
        if not pks:
            return []
        live = live.model._default_manager.filter(pk__in=pks, revoked__isnull=True).order_by("pk")
    return list(live.select_for_update().values_list("pk", "access_token_id"))


def _revoke_families(
    families: OfflineTokenFamilyQuerySet, *, now, actor=None, reason: str = "", via: str | None = None
) -> RevocationResult:
    """Revoke every refresh and access token of ``families`` in six statements.

    Each live refresh token gets DOT's own ``revoked`` timestamp (so DOT's grace
    period and reuse detection see it as revoked) and loses its link to its access
    token, which is deleted, as DOT's ``RefreshToken.revoke()`` does: a deleted row
    costs the database one heap write, an expired one a new row version with an
    entry in each of the table's seven indexes (issue 12). Access tokens no live
    refresh token points at but refreshed from one of the families' (a refresh that
    narrowed its scopes gets an access token alone) are expired: one UPDATE whatever
    their number, and DOT treats an expired token as invalid everywhere (resource
    servers, introspection, userinfo).

    ``families`` is re-evaluated by every statement, so it must not select
    families by their live tokens (which these statements revoke): callers pass
    families chosen by consent, user, client or primary key.
    """
    refresh_model = get_refresh_token_model()
    access_model = get_access_token_model()
    family_refresh_tokens = refresh_model.objects.filter(token_family__in=families.values("token_family"))
    live_refresh_tokens = family_refresh_tokens.filter(revoked__isnull=True).order_by("pk")
    if signals.offline_tokens_revoked.has_listeners(OfflineTokenFamily):
        revoked_families = list(families.live())  # one more query, only with receivers
        signals.send_after_commit(
            signals.offline_tokens_revoked,
            OfflineTokenFamily,
            families=revoked_families,
            actor=actor,
            reason=reason,
            via=via,
        )
    # Refresh tokens first, and until none is left. DOT's rotation locks the refresh
    # token it presents, then that token's access tokens; taking the locks in the
    # same order means a rotation in flight can never wait on a lock held here while
    # this waits on it (PostgreSQL reported that deadlock when the access tokens were
    # expired first: a 500 at the connected-apps page, a password change rolled back).
    # The live tokens are locked and read with their access tokens' keys (the UPDATE
    # clears that link, so it must be read first, and under the lock, so that no
    # refresh changes it meanwhile). A lock that waited for a rotation skips the token
    # it rotated and cannot see the successor it committed (READ COMMITTED takes a
    # snapshot per statement), so a check in a new snapshot follows, and the whole runs
    # again until the check finds nothing unrevoked. From then on every refresh token
    # of these families that was live is locked by this transaction: a rotation still
    # to come waits for the commit and then finds its token revoked (the validator
    # refuses it), and the access-token statements see every token minted before.
    # Usually four statements: the lock, the UPDATE, the DELETE, and an EXISTS that is
    # False.
    refresh_tokens = access_tokens = 0
    while True:
        held = _lock_live_refresh_tokens(live_refresh_tokens)
        if held:
            refresh_tokens += refresh_model.objects.filter(pk__in=[pk for pk, _paired in held]).update(
                revoked=now, updated=now, access_token=None
            )
            paired = access_model.objects.filter(
                pk__in=[paired for _pk, paired in held if paired is not None], expires__gt=now
            )
            access_tokens += _delete_access_tokens(paired, now=now)
        # Not "until a lock finds nothing": a lock that waited for a rotation finds nothing
        # when that was the only live token, and is blind to its successor.
        if not live_refresh_tokens.exists():
            break
    # Two statements rather than one with OR: each then reads through an index.
    access_tokens += access_model.objects.filter(
        expires__gt=now, source_refresh_token__in=family_refresh_tokens.values("pk")
    ).update(expires=now)
    # The family rows change in a column no index covers, so on PostgreSQL each is
    # rewritten in place on its page (a HOT update; migration 0013 leaves the room).
    families.filter(ended_at__isnull=True).update(ended_at=now)
    return RevocationResult(0, refresh_tokens, access_tokens)


def _delete_access_tokens(access_tokens: QuerySet, *, now) -> int:
    """Delete ``access_tokens``, whose refresh tokens no longer point at them, in one statement.

    Django's ``delete()`` would first load every row to emulate ``on_delete`` of the
    relations to the model in Python, then delete them a hundred at a time. The only
    such relation of DOT's access token is the refresh token's ``access_token``
    (``SET_NULL``), which the caller has just cleared, so a plain DELETE does the
    same in one statement. A swapped model with other relations, or with delete
    signal receivers, gets its tokens expired instead: one UPDATE, as safe.
    """
    model = access_tokens.model
    if _access_tokens_deletable(model):
        return access_tokens._raw_delete(access_tokens.db)
    return access_tokens.update(expires=now)


def _access_tokens_deletable(model) -> bool:
    """Whether rows of the access token ``model`` may go without Django's ``on_delete`` handling."""
    if pre_delete.has_listeners(model) or post_delete.has_listeners(model):
        return False
    refresh_model = get_refresh_token_model()
    return all(
        (relation.related_model is refresh_model and relation.field.name == "access_token")
        or relation.on_delete is DO_NOTHING
        for relation in model._meta.related_objects
    )
