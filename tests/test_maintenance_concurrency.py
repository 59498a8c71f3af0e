"""Two maintenance runs at once (two machines, an overlapping cron): no row twice, no deadlock.

Needs a server database's row locks (FOR UPDATE SKIP LOCKED: PostgreSQL, MariaDB 10.6+,
MySQL 8); SQLite runs one writer at a time.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access import maintenance
from offline_access.models import Consent, ConsentEvent, DPoPBoundAccessToken, OfflineTokenFamily

from . import factories
from .test_concurrency import finish, in_thread
from .test_maintenance import ago, make_family

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor not in ("postgresql", "mysql"),
        reason="row-lock races need a server database (the postgres and mariadb envs run them)",
    ),
]

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

DUE_CONSENTS = 30
IDLE_FAMILIES = 30
ROTATED_PER_FAMILY = 2


def two_runs_at_once(**options):
    barrier = threading.Barrier(2)

    def run():
        barrier.wait(timeout=10)
        return maintenance.run(**options)

    runs = [in_thread(run) for _ in range(2)]
    return [finish(*run) for run in runs]


def totals(runs):
    summed: dict[tuple[str, str], int] = {}
    for reports in runs:
        for report in reports:
            for kind, number in report.counts.items():
                summed[report.step, kind] = summed.get((report.step, kind), 0) + number
    return {key: number for key, number in summed.items() if number}


def test_two_runs_at_once_split_the_work_and_count_every_row_once(application, dot_settings):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=False, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=0)
    for _ in range(DUE_CONSENTS):
        make_family(
            factories.ConsentFactory(application=application, expires_at=ago(minutes=1)), used=ago(minutes=1)
        )
    live = factories.ConsentFactory(application=application)
    for _ in range(IDLE_FAMILIES):
        make_family(live, used=ago(days=31), predecessors=ROTATED_PER_FAMILY)
    kept, kept_newest, _access = make_family(live, used=ago(minutes=1))
    for number in range(20):
        DPoPBoundAccessToken.objects.create(
            token_checksum=f"old{number}", jkt="k" * 43, expires_at=ago(seconds=1)
        )

    runs = two_runs_at_once(batch_size=4)
    # A row busy in the other run is left for the next one (the module's docstrings say so):
    # on MySQL/MariaDB a locking read holds each row it scans for an instant, so now and
    # then a family is skipped by both. The next run takes what is left; no row is ever
    # counted twice.
    runs.append(maintenance.run(batch_size=4))

    assert totals(runs) == {
        ("consents", "consents"): DUE_CONSENTS,
        ("consents", "refresh_tokens"): DUE_CONSENTS,
        ("consents", "access_tokens"): DUE_CONSENTS,
        ("families", "families"): IDLE_FAMILIES,
        ("families", "refresh_tokens"): IDLE_FAMILIES,
        ("tokens", "refresh_tokens"): IDLE_FAMILIES * ROTATED_PER_FAMILY,
        # The idle families' expired access tokens: their refresh tokens, revoked by the
        # families step, no longer point at them.
        ("tokens", "access_tokens"): IDLE_FAMILIES,
        ("dpop", "dpop_bindings"): 20,
    }
    # One event per consent, never two; every lapsed family ended once, the live one not.
    assert ConsentEvent.objects.filter(action="expired").count() == DUE_CONSENTS
    assert Consent.objects.filter(status=Consent.Status.EXPIRED).count() == DUE_CONSENTS
    assert OfflineTokenFamily.objects.filter(ended_at__isnull=False).count() == DUE_CONSENTS + IDLE_FAMILIES
    kept.refresh_from_db()
    kept_newest.refresh_from_db()
    assert kept.ended_at is None and kept_newest.revoked is None
    # Both did some of the work (the batches are small and the runs start together).
    assert all(sum(report.total for report in reports) for reports in runs[:2])
    assert totals(two_runs_at_once(batch_size=4)) == {}


def test_a_run_skips_rows_another_transaction_holds_and_a_later_run_takes_them(application):
    due = factories.ConsentFactory(application=application, expires_at=ago(minutes=1))
    other = factories.ConsentFactory(application=application, expires_at=ago(minutes=1))
    held, release = threading.Event(), threading.Event()

    def hold_one():
        from django.db import transaction

        with transaction.atomic():
            list(Consent.objects.select_for_update().filter(pk=due.pk))
            held.set()
            release.wait(timeout=20)

    holder = in_thread(hold_one)
    assert held.wait(timeout=10)
    try:
        report = maintenance.expire_due_consents()
    finally:
        release.set()
        finish(*holder)

    assert report.counts["consents"] == 1  # the other one; the held one was not waited for
    assert Consent.objects.get(pk=other.pk).status == Consent.Status.EXPIRED
    assert Consent.objects.get(pk=due.pk).status == Consent.Status.ACTIVE
    assert maintenance.expire_due_consents().counts["consents"] == 1
    assert ConsentEvent.objects.filter(action="expired").count() == 2


def test_the_job_and_a_refresh_of_a_lapsed_family_do_not_deadlock(application):
    """The token endpoint ends a lapsed family itself (refresh token, access tokens, family);
    the job takes the same order, so running both on the same families finishes."""
    from offline_access import services

    live = factories.ConsentFactory(application=application)
    families = [make_family(live, used=ago(days=31))[0] for _ in range(40)]
    barrier = threading.Barrier(2)

    def lazy_endings():
        barrier.wait(timeout=10)
        for family in reversed(families):
            services.end_token_family(family)

    def job():
        barrier.wait(timeout=10)
        return maintenance.end_lapsed_token_families(batch_size=3)

    runs = [in_thread(lazy_endings), in_thread(job)]
    _none, report = [finish(*run) for run in runs]

    assert OfflineTokenFamily.objects.filter(ended_at__isnull=True).count() == 0
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert report.counts["families"] <= 40
