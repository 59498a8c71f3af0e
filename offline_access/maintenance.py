"""Periodic maintenance: the jobs a site runs from cron or Celery beat (issue 13).

Four steps, each a service function that ``manage.py offline_access_maintenance``
calls, and that a site may call itself:

``consents``  :func:`expire_due_consents`: consents past their expiry become
              ``expired`` with an event and their tokens revoked (SPEC C4, C5).
``families``  :func:`end_lapsed_token_families`: token families past their idle
              timeout or absolute lifetime (SPEC P6) end now instead of at their
              next refresh; their tokens are revoked, their consent stays.
``tokens``    :func:`delete_expired_tokens`: DOT rows nobody can use any more
              (see :data:`RETENTION` for what is kept and why). Consents, their
              events and token families are never deleted.
``dpop``      :func:`delete_expired_dpop_bindings`: DPoP bindings of expired
              access tokens.

Every step works in batches: each batch is one short transaction over at most
``batch_size`` rows, found by primary key after the last batch (keyset), so
memory and lock time stay bounded whatever the table sizes. Each row is claimed
before it is changed (``SELECT ... FOR UPDATE SKIP LOCKED`` where the database
has it), so two runs at once (two machines, an overlapping cron) split the work
instead of doing it twice: a row one run holds is skipped by the other, and a
row it finished no longer matches. Running again finds nothing: every step is
idempotent. With ``dry_run`` the steps only count what they would do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from django.db import OperationalError, connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_device_grant_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings

from . import dpop, services
from .models import ClientPolicy, Consent, DPoPBoundAccessToken, GrantAuthentication, OfflineTokenFamily
from .validators import MYSQL_LOCK_DEADLOCK

#: Rows per batch (per transaction) unless told otherwise.
DEFAULT_BATCH_SIZE = 1000

#: The step names, in the order :func:`run` performs them: consents first (their
#: tokens are revoked), then families, so that the token deletion that follows sees
#: what the first two revoked as revoked.
STEPS = ("consents", "families", "tokens", "dpop")

#: What :func:`delete_expired_tokens` deletes, and what it keeps (docs/howto/maintenance.md).
RETENTION = """\
Refresh tokens: only revoked ones, and only when all of these hold:
  - revoked before DOT's REFRESH_TOKEN_GRACE_PERIOD_SECONDS ago (a retry within the
    grace period still gets its answer);
  - a newer refresh token of the same family exists (the newest token of every family
    stays: it says when the family was last used, which the consent's history shows);
  - with REFRESH_TOKEN_REUSE_PROTECTION: its family has no live refresh token left (a
    replayed predecessor of a live family revokes that family, so it is kept while the
    family lives), or it was revoked before REFRESH_TOKEN_EXPIRE_SECONDS ago when that
    is set (DOT's own rule).
  A refresh token that is not revoked is never deleted: the families step revokes the
  ones past their idle timeout or absolute lifetime, and a later run deletes them.
Access tokens: expired, and no refresh token points at them (DOT's rule).
ID tokens: expired, and no access token points at them (DOT's rule).
Authorization codes, device codes and the codes' authentication times: expired.
"""

Progress = Callable[["StepReport"], None]
T = TypeVar("T")


@dataclass
class StepReport:
    """What one step did (or, in a dry run, would do)."""

    step: str
    dry_run: bool = False
    #: Rows per kind: ``{"consents": 3, "refresh_tokens": 5, ...}``.
    counts: dict[str, int] = field(default_factory=dict)
    #: Batches (transactions) run; a dry run counts in one query per kind.
    batches: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, number: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + number

    def __str__(self) -> str:
        verb = "would" if self.dry_run else "did"
        parts = ", ".join(f"{kind.replace('_', ' ')} {number}" for kind, number in self.counts.items())
        return f"{self.step} ({verb}): {parts or 'nothing'}; {self.batches} batch(es), {self.seconds:.1f} s"


def run(
    steps: Iterable[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[StepReport]:
    """Run the named steps (all of :data:`STEPS` by default) in their order; one report each.

    For Celery beat or any scheduler: ``offline_access.maintenance.run()``.
    """
    chosen = STEPS if steps is None else tuple(steps)
    unknown = sorted(set(chosen) - set(STEPS))
    if unknown:
        raise ValueError(f"Unknown maintenance step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}.")
    functions = {
        "consents": expire_due_consents,
        "families": end_lapsed_token_families,
        "tokens": delete_expired_tokens,
        "dpop": delete_expired_dpop_bindings,
    }
    return [
        functions[step](batch_size=batch_size, dry_run=dry_run, progress=progress)
        for step in STEPS
        if step in chosen
    ]


# Consents ------------------------------------------------------------------------


def expire_due_consents(
    *, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False, progress: Progress | None = None
) -> StepReport:
    """SPEC C4/C5: mark every consent past its expiry ``expired`` and revoke its tokens.

    The semantics of :func:`offline_access.services.expire_consent`, batched: each
    batch locks up to ``batch_size`` due consents, marks them expired with an
    ``expired`` event each, revokes every token of their families and deletes their
    unexchanged authorization codes, in one transaction (so each consent and its
    tokens change together); ``consent_expired`` is sent for each after the commit.
    Consents that become due while the run goes on are left for the next run.
    """
    report = StepReport(
        "consents", dry_run=dry_run, counts=_zero(dry_run, "consents", "refresh_tokens", "access_tokens")
    )
    started = time.monotonic()
    cutoff = timezone.now()
    due = Consent.objects.filter(status=Consent.Status.ACTIVE, expires_at__lte=cutoff).order_by("pk")
    if dry_run:
        report.add("consents", due.count())
        report.batches = 1
    else:
        _check_batch_size(batch_size)
        last_pk = 0

        def batch():
            locked = list(_claim(due.filter(pk__gt=last_pk))[:batch_size])
            if not locked:
                return None
            result = services._end_consents(
                locked, status=Consent.Status.EXPIRED, via=services.Via.SYSTEM, now=timezone.now()
            )
            return locked[-1].pk, result

        while (done := _run_batch(batch)) is not None:
            last_pk, result = done
            report.add("consents", result.consents)
            report.add("refresh_tokens", result.refresh_tokens)
            report.add("access_tokens", result.access_tokens)
            _batch_done(report, started, progress)
    report.seconds = time.monotonic() - started
    return report


# Token families ------------------------------------------------------------------


def end_lapsed_token_families(
    *, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False, progress: Progress | None = None
) -> StepReport:
    """SPEC P6: end the families past their idle timeout or absolute lifetime, revoking their tokens.

    The token endpoint refuses such a family at its next refresh anyway
    (:mod:`offline_access.validators`); this ends them now, so that their tokens
    stop working for introspection and resource servers too, and so that
    :func:`delete_expired_tokens` may then delete them. The lifetimes are the
    token endpoint's: ``OFFLINE_ACCESS["REFRESH_TOKEN_IDLE_TIMEOUT"]`` and
    ``["REFRESH_TOKEN_ABSOLUTE_LIFETIME"]``, or the client's own
    :class:`~offline_access.models.ClientPolicy`. A family's last use is its newest
    refresh token, or the newest update of their access tokens (refresh without
    rotation), whichever is later: never earlier than the token endpoint reckons.
    The consent stays in force and records no event (the user agreed; the device
    merely lapsed), as at the token endpoint.
    """
    report = StepReport(
        "families", dry_run=dry_run, counts=_zero(dry_run, "families", "refresh_tokens", "access_tokens")
    )
    started = time.monotonic()
    now = timezone.now()
    for lapsed in _lapsed_family_groups(now):
        if dry_run:
            report.add("families", lapsed.count())
            report.batches += 1
            continue
        _check_batch_size(batch_size)
        _end_families_in_batches(lapsed, batch_size, report, started, progress)
    report.seconds = time.monotonic() - started
    return report


def _lapsed_family_groups(now: datetime) -> list[QuerySet[OfflineTokenFamily]]:
    """Families past their lifetimes, one queryset per distinct pair of lifetimes.

    Clients with their own lifetimes are few (each is an administrator's
    ClientPolicy), so grouping them keeps every condition a plain comparison that
    the database can check with an index, instead of a per-row computed deadline.
    """
    from .validators import lifetimes  # the token endpoint's own reading of the policy

    overriding = ClientPolicy.objects.filter(
        Q(refresh_token_idle_timeout__isnull=False) | Q(refresh_token_absolute_lifetime__isnull=False)
    ).only("application_id", "refresh_token_idle_timeout", "refresh_token_absolute_lifetime")
    groups: dict[tuple[timedelta | None, timedelta | None], list[int]] = {}
    for policy in overriding:
        groups.setdefault(lifetimes(policy), []).append(policy.application_id)
    overridden = [pk for pks in groups.values() for pk in pks]
    families = OfflineTokenFamily.objects.filter(ended_at__isnull=True)
    selections = [(lifetimes(None), families.exclude(application_id__in=overridden))]
    selections += [(pair, families.filter(application_id__in=pks)) for pair, pks in groups.items()]
    return [
        selected.filter(condition)
        for (idle, absolute), selected in selections
        if (condition := _lapsed(now, idle=idle, absolute=absolute)) is not None
    ]


def _lapsed(now: datetime, *, idle: timedelta | None, absolute: timedelta | None) -> Q | None:
    """The condition of a family past its lifetimes (None: these lifetimes never end one)."""
    condition = None
    if absolute is not None:
        condition = Q(created_at__lte=now - absolute)
    if idle is not None:
        # Used after the cutoff: a refresh token of the family issued since, or (without
        # rotation) an access token of one of its refresh tokens refreshed since.
        cutoff = now - idle
        used_since = get_refresh_token_model().objects.filter(token_family=OuterRef("token_family"))
        used_since = used_since.filter(Q(created__gt=cutoff) | Q(access_token__updated__gt=cutoff))
        idle_condition = ~Exists(used_since) & Q(created_at__lte=cutoff)
        condition = idle_condition if condition is None else condition | idle_condition
    return condition


def _end_families_in_batches(
    lapsed: QuerySet[OfflineTokenFamily], batch_size: int, report: StepReport, started: float, progress
) -> None:
    """End the ``lapsed`` families batch by batch, in the lock order of the token endpoint.

    A refresh in flight locks its refresh token, then its access tokens, then (when
    it ends the family itself) the family row; the revocation services take the same
    order. So each batch first claims the live refresh tokens of its candidates, and
    then only those families all of whose live refresh tokens it holds: it never
    waits on a family row while holding a token, and never waits on a token another
    run (or a refresh) holds, so nothing can deadlock, and a family busy elsewhere is
    left for the next run.
    """
    refresh_model = get_refresh_token_model()
    ordered = lapsed.order_by("pk")
    last_pk = 0

    def batch():
        candidates = list(ordered.filter(pk__gt=last_pk).values_list("pk", "token_family")[:batch_size])
        if not candidates:
            return None
        held = list(
            _claim(
                refresh_model.objects.filter(
                    token_family__in=[family for _pk, family in candidates], revoked__isnull=True
                ).order_by("pk")
            ).values_list("pk", flat=True)
        )
        others_live = refresh_model.objects.filter(
            token_family=OuterRef("token_family"), revoked__isnull=True
        ).exclude(pk__in=held)
        # Checked again under the lock: a refresh committed since the candidates
        # were read makes the family used, and so no longer lapsed.
        claimed = list(
            _claim(
                ordered.filter(pk__in=[pk for pk, _family in candidates]).filter(~Exists(others_live))
            ).values_list("pk", flat=True)
        )
        result = None
        if claimed:
            result = services._revoke_families(
                OfflineTokenFamily.objects.filter(pk__in=claimed), now=timezone.now()
            )
        return candidates[-1][0], claimed, result

    while (done := _run_batch(batch)) is not None:
        last_pk, claimed, result = done
        if result is not None:
            report.add("refresh_tokens", result.refresh_tokens)
            report.add("access_tokens", result.access_tokens)
        report.add("families", len(claimed))
        _batch_done(report, started, progress)


# DOT tokens ----------------------------------------------------------------------


def delete_expired_tokens(
    *, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False, progress: Progress | None = None
) -> StepReport:
    """Delete DOT's tokens and codes that can no longer be used, by :data:`RETENTION`.

    The reference is DOT's ``cleartokens``, with two differences: it never deletes
    the newest refresh token of a family (the family's last use, shown in its
    consent's history) nor, under ``REFRESH_TOKEN_REUSE_PROTECTION``, a rotated
    token of a family that still has a live one; and it works in keyset batches,
    each claimed with ``SKIP LOCKED``, instead of recounting the table per batch.
    Consents, consent events and token families are never deleted; none of them
    has a foreign key to a DOT token (families name theirs by ``token_family``).
    Deleting a refresh token also deletes its sealed grace-period pair (long
    useless by then) and clears ``source_refresh_token`` of access tokens made
    from it (DOT's own ``SET_NULL``).
    """
    report = StepReport("tokens", dry_run=dry_run)
    started = time.monotonic()
    for kind, deletable in _deletable(timezone.now()):
        if dry_run:
            report.add(kind, deletable.count())
            report.batches += 1
            continue
        _check_batch_size(batch_size)
        report.add(kind, 0)
        ordered = deletable.order_by("pk")
        last_pk = None
        while (done := _run_batch(_delete_batch, ordered, last_pk, batch_size)) is not None:
            last_pk, deleted = done
            report.add(kind, deleted)
            _batch_done(report, started, progress)
    report.seconds = time.monotonic() - started
    return report


def _delete_batch(ordered: QuerySet, last_pk, batch_size: int) -> tuple[object, int] | None:
    """Claim and delete the next ``batch_size`` rows after ``last_pk``; return the last key and the count."""
    rows = ordered if last_pk is None else ordered.filter(pk__gt=last_pk)
    pks = list(_claim(rows).values_list("pk", flat=True)[:batch_size])
    if not pks:
        return None
    # Only the keys are loaded: Django's delete() needs instances for the
    # relations it updates (DOT's SET_NULL links), not their tokens and scopes.
    _total, per_model = ordered.model.objects.filter(pk__in=pks).only("pk").delete()
    return pks[-1], per_model.get(ordered.model._meta.label, 0)


def _deletable(now: datetime) -> list[tuple[str, QuerySet]]:
    """What :func:`delete_expired_tokens` deletes, per kind, in the order it deletes them.

    Refresh tokens first: deleting them frees the access tokens they pointed at,
    which the access-token pass then finds; access tokens before ID tokens, likewise.
    """
    refresh_model, access_model = get_refresh_token_model(), get_access_token_model()
    grace = timedelta(seconds=oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS or 0)
    same_family = refresh_model.objects.filter(token_family=OuterRef("token_family"))
    refresh_tokens = refresh_model.objects.filter(revoked__lte=now - grace).filter(
        Exists(same_family.filter(pk__gt=OuterRef("pk"))) | Q(token_family__isnull=True)
    )
    if oauth2_settings.REFRESH_TOKEN_REUSE_PROTECTION:
        kept_for_reuse_detection: Exists | Q = Exists(same_family.filter(revoked__isnull=True))
        from oauth2_provider.models import refresh_token_expire_timedelta

        expire = refresh_token_expire_timedelta()
        if expire is not None:
            kept_for_reuse_detection &= Q(revoked__gt=now - expire)
        refresh_tokens = refresh_tokens.exclude(kept_for_reuse_detection)
    access_tokens = access_model.objects.filter(expires__lt=now).filter(
        ~Exists(refresh_model.objects.filter(access_token=OuterRef("pk")))
    )
    id_tokens = (
        get_id_token_model()
        .objects.filter(expires__lt=now)
        .filter(~Exists(access_model.objects.filter(id_token=OuterRef("pk"))))
    )
    return [
        ("refresh_tokens", refresh_tokens),
        ("access_tokens", access_tokens),
        ("id_tokens", id_tokens),
        ("authorization_codes", get_grant_model().objects.filter(expires__lt=now)),
        ("device_codes", get_device_grant_model().objects.filter(expires__lt=now)),
        ("code_authentication_times", GrantAuthentication.objects.filter(expires_at__lte=now)),
    ]


# DPoP ------------------------------------------------------------------------------


def delete_expired_dpop_bindings(
    *, batch_size: int = DEFAULT_BATCH_SIZE, dry_run: bool = False, progress: Progress | None = None
) -> StepReport:
    """Delete the DPoP bindings of expired access tokens (:func:`.dpop.delete_expired_bindings`)."""
    report = StepReport("dpop", dry_run=dry_run)
    started = time.monotonic()
    if dry_run:
        expired = DPoPBoundAccessToken.objects.filter(expires_at__lte=timezone.now())
        report.add("dpop_bindings", expired.count())
        report.batches = 1
    else:
        _check_batch_size(batch_size)
        report.add("dpop_bindings", dpop.delete_expired_bindings(batch_size=batch_size))
        # The DELETEs it ran (the function reports the rows, not its batches).
        report.batches = -(-report.total // batch_size)
    report.seconds = time.monotonic() - started
    return report


# Internals -------------------------------------------------------------------------


#: Times a batch chosen as InnoDB's deadlock victim is run again before the error stands.
DEADLOCK_RETRIES = 3


def _run_batch(batch: Callable[..., T], *args) -> T:
    """Run ``batch`` in a transaction of its own; on MySQL/MariaDB, again if InnoDB made it a deadlock victim.

    Two runs claim disjoint rows (SKIP LOCKED), but InnoDB's DELETE and locking reads
    wait for every row their scan passes, claimed by the other run or not (on a small
    table the optimizer scans them all), and two such waits deadlock. InnoDB then rolls
    one transaction back whole, and MySQL's manual says to run it again: a batch is
    claim-then-act, so re-running it finds what is still left to do. PostgreSQL and
    SQLite never get here; nor does a batch inside a caller's transaction, which is
    rolled back with it.
    """
    attempt = 0
    while True:
        try:
            with transaction.atomic():
                return batch(*args)
        except OperationalError as error:
            attempt += 1
            deadlock = (
                connection.vendor == "mysql" and bool(error.args) and error.args[0] == MYSQL_LOCK_DEADLOCK
            )
            if not deadlock or attempt > DEADLOCK_RETRIES or connection.in_atomic_block:
                raise


def _claim(queryset: QuerySet) -> QuerySet:
    """Lock the rows ``queryset`` selects, skipping rows another transaction holds.

    Without SKIP LOCKED (older MySQL) the lock waits instead: runs then take turns
    rather than split the work, and still never process a row twice. SQLite has no
    row locks and runs one writer at a time.
    """
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True)
    return queryset.select_for_update()


def _zero(dry_run: bool, kind: str, *changed_with_it: str) -> dict[str, int]:
    """The counts a step starts from: what it processes, and (unless a dry run) what that changes."""
    return dict.fromkeys((kind,) if dry_run else (kind, *changed_with_it), 0)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")


def _batch_done(report: StepReport, started: float, progress: Progress | None) -> None:
    report.batches += 1
    report.seconds = time.monotonic() - started
    if progress is not None:
        progress(report)
