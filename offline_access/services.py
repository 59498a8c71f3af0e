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

from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from . import OFFLINE_ACCESS_SCOPE, signals
from .models import Consent, ConsentEvent, OfflineTokenFamily, OfflineTokenFamilyQuerySet

Via = ConsentEvent.Via

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
        consent, created = _lock_or_create(
            user, application, Consent.Kind.INTERACTIVE, now=now, scope=scope, granted_by=user
        )
        if not created:
            consent.scope, consent.granted_at, consent.granted_by = scope, now, user
            consent.save(update_fields=["scope", "granted_at", "granted_by"])
        _record_given(consent, created, actor=user, via=via, now=now)
        return consent


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


def bar_clients(applications, *, actor=None, via: str = Via.COMMAND) -> RevocationResult:
    """SPEC C5 for clients barred from offline access (``ClientPolicy.allow_offline_access`` off).

    Revokes the consents in force of ``applications`` (application instances, primary
    keys or a subquery of them), each with a ``revoked`` event naming the cause, and
    every refresh and access token of their offline token families, those without a
    consent too. Lifting the bar later revives nothing: each user consents again
    (an administrator re-grants enduring consents). Runs whenever a policy is saved
    barred, so it must stay idempotent: a client already barred has nothing left to
    revoke and gets no new events.
    """
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


def expire_due_consents() -> RevocationResult:
    """Process every consent whose expiry has passed (for a periodic job)."""
    now = timezone.now()
    with transaction.atomic():
        locked = list(
            Consent.objects.filter(status=Consent.Status.ACTIVE, expires_at__lte=now).select_for_update()
        )
        return _end_consents(locked, status=Consent.Status.EXPIRED, via=Via.SYSTEM, now=now)


def end_token_family(family: OfflineTokenFamily) -> RevocationResult:
    """Revoke one family's tokens (idle timeout, absolute lifetime); its consent stays."""
    return revoke_token_families(OfflineTokenFamily.objects.filter(pk=family.pk))


def revoke_token_families(
    families: OfflineTokenFamilyQuerySet, *, actor=None, reason: str = "", via: str | None = None
) -> RevocationResult:
    """Revoke the tokens of some token families (devices); their consents stay.

    With ``via``, each consent behind a family that had live tokens gets a
    ``devices_revoked`` event naming the actor (admin and user revocations); the
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
                        ConsentEvent.Action.DEVICES_REVOKED,
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
    the user gave most directly. ``user`` and ``application`` may be ``OuterRef``s.
    """
    return (
        Consent.objects.active()
        .filter(user=user, application=application)
        # A client an administrator barred from offline access is covered by nothing.
        .exclude(application__offline_access_policy__allow_offline_access=False)
        .order_by("-kind", "-granted_at")  # "interactive" sorts after "enduring"
        .values("pk")[:1]
    )


def link_token_family(*, token_family, user, application, consent_id) -> OfflineTokenFamily:
    """Record a new refresh-token family (device) under the consent that covers it."""
    family = OfflineTokenFamily.objects.create(
        token_family=token_family, user=user, application=application, consent_id=consent_id
    )
    signals.send_after_commit(
        signals.offline_token_issued, OfflineTokenFamily, family=family, consent_id=consent_id
    )
    return family


# Internals -----------------------------------------------------------------


def _lock_or_create(user, application, kind, *, now, **fields) -> tuple[Consent, bool]:
    """The active consent of this kind, locked, or a new one; and whether it is new.

    The database constraint settles a race between two first approvals: the
    loser finds the winner's row and renews it.
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


def _revoke_families(
    families: OfflineTokenFamilyQuerySet, *, now, actor=None, reason: str = "", via: str | None = None
) -> RevocationResult:
    """Revoke every refresh and access token of ``families`` in five statements.

    Access tokens are expired rather than deleted: one UPDATE whatever their
    number, and DOT treats an expired token as invalid everywhere (resource
    servers, introspection, userinfo). Refresh tokens get DOT's own ``revoked``
    timestamp, so DOT's grace period and reuse detection see them as revoked.

    ``families`` is re-evaluated by every statement, so it must not select
    families by their live tokens (which these statements revoke): callers pass
    families chosen by consent, user, client or primary key.
    """
    refresh_model = get_refresh_token_model()
    access_model = get_access_token_model()
    family_refresh_tokens = refresh_model.objects.filter(token_family__in=families.values("token_family"))
    # Wait for rotations in flight: DOT holds the lock on the refresh token it
    # rotates until it commits the new pair. Each statement below then starts
    # after that commit and sees the new tokens (PostgreSQL's READ COMMITTED takes
    # a snapshot per statement); without the wait they would escape revocation.
    list(family_refresh_tokens.filter(revoked__isnull=True).select_for_update().values_list("pk", flat=True))
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
    live_access_tokens = access_model.objects.filter(expires__gt=now)
    # Two statements rather than one with OR: each then joins through an index.
    access_tokens = live_access_tokens.filter(pk__in=family_refresh_tokens.values("access_token_id")).update(
        expires=now
    )
    access_tokens += live_access_tokens.filter(
        source_refresh_token__in=family_refresh_tokens.values("pk")
    ).update(expires=now)
    refresh_tokens = family_refresh_tokens.filter(revoked__isnull=True).update(revoked=now, updated=now)
    families.filter(ended_at__isnull=True).update(ended_at=now)
    return RevocationResult(0, refresh_tokens, access_tokens)
