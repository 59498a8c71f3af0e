"""The maintenance job (issue 13): what each step touches and keeps, dry runs, batches, counts.

Rows are written directly with the timestamps a long-running site would have
(a family last used 40 days ago, a token revoked an hour ago); the token
endpoint then confirms what still works. Two runs at once are in
tests/test_maintenance_concurrency.py (PostgreSQL).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from offline_access import dpop, maintenance, services, signals
from offline_access.models import (
    ClientPolicy,
    Consent,
    ConsentEvent,
    DPoPBoundAccessToken,
    GrantAuthentication,
    OfflineTokenFamily,
)

from . import factories
from .oauth import offline_tokens, refresh
from .test_query_counts import LIVE_REFRESH_TOKENS_READ_QUERIES

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()
IDToken = get_id_token_model()

#: Queries of one batch of the consents step (lock the batch, end the consents,
#: their events, their codes, and the six statements revoking their tokens),
#: however many consents and tokens the batch holds; plus one to find the end.
CONSENT_BATCH_QUERIES = 10 + LIVE_REFRESH_TOKENS_READ_QUERIES
CONSENT_STEP_END_QUERIES = 1
#: One batch of the families step: candidates, lock their refresh tokens, claim the
#: families, then revoke (lock the live refresh tokens with their access tokens' keys,
#: revoke them, delete those access tokens, the check for stragglers, expire the access
#: tokens refreshed from the families' tokens, the families' ended_at).
FAMILY_BATCH_QUERIES = 9 + LIVE_REFRESH_TOKENS_READ_QUERIES
#: One batch deleting refresh tokens: claim, load the batch (Django's delete collects
#: it), clear source_refresh_token of access tokens, delete sealed pairs, delete.
REFRESH_DELETE_BATCH_QUERIES = 5


def ago(**delta):
    return timezone.now() - timedelta(**delta)


def make_family(consent, *, used=None, created=None, live=True, revoked=None, predecessors=0):
    """A token family under ``consent`` whose newest refresh token was issued at ``used``.

    ``predecessors`` rotated (revoked) refresh tokens precede it, revoked at ``revoked``
    (default: when the newest was issued). The newest has an access token issued with it.
    """
    used = used or timezone.now()
    family = OfflineTokenFamily.objects.create(
        token_family=uuid.uuid4(),
        consent=consent,
        user=consent.user,
        application=consent.application,
        created_at=created or used,
    )
    for _ in range(predecessors):
        token(RefreshToken, consent, token_family=family.token_family, revoked=revoked or used, at=used)
    access = token(AccessToken, consent, expires=used + timedelta(minutes=10), at=used)
    newest = token(
        RefreshToken,
        consent,
        token_family=family.token_family,
        access_token=access,
        revoked=None if live else (revoked or used),
        at=used,
    )
    return family, newest, access


def token(model, consent, *, at, **fields):
    row = model.objects.create(
        user=consent.user, application=consent.application, token=secrets.token_urlsafe(20), **fields
    )
    model.objects.filter(pk=row.pk).update(created=at, updated=at)  # auto_now fields
    row.refresh_from_db()
    return row


def counts(report):
    return {kind: number for kind, number in report.counts.items() if number}


@pytest.fixture
def consent(user, application):
    return factories.ConsentFactory(user=user, application=application)


def snapshot():
    """Everything the job may change, to prove a dry run changes nothing."""
    return (
        list(Consent.objects.order_by("pk").values_list("pk", "status", "ended_at")),
        ConsentEvent.objects.count(),
        list(OfflineTokenFamily.objects.order_by("pk").values_list("pk", "ended_at")),
        list(RefreshToken.objects.order_by("pk").values_list("pk", "revoked")),
        list(AccessToken.objects.order_by("pk").values_list("pk", "expires")),
        Grant.objects.count(),
        DPoPBoundAccessToken.objects.count(),
    )


# Consents ------------------------------------------------------------------------------


def test_consents_step_expires_due_consents_with_event_signal_and_tokens(
    user, application, django_capture_on_commit_callbacks
):
    due = factories.ConsentFactory(user=user, application=application, expires_at=ago(minutes=1))
    in_force = factories.EnduringConsentFactory(user=user, application=application, expires_at=ago(days=-1))
    _family, due_refresh, due_access = make_family(due)
    _family, kept_refresh, _access = make_family(in_force)
    received = []

    def receiver(sender, consent, **kwargs):
        received.append((consent.pk, consent.status))

    signals.consent_expired.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            report = maintenance.expire_due_consents()
    finally:
        signals.consent_expired.disconnect(receiver)

    assert counts(report) == {"consents": 1, "refresh_tokens": 1, "access_tokens": 1}
    due.refresh_from_db()
    assert (due.status, due.ended_by, due.end_reason) == (Consent.Status.EXPIRED, None, "")
    event = due.events.get()
    assert (event.action, event.via, event.at) == ("expired", "system", due.ended_at)
    assert received == [(due.pk, Consent.Status.EXPIRED)]  # sent once the batch committed
    due_refresh.refresh_from_db()
    assert due_refresh.revoked == due.ended_at
    # Deleted, as DOT's RefreshToken.revoke() deletes the access token of a refresh token.
    assert due_refresh.access_token_id is None
    assert not AccessToken.objects.filter(pk=due_access.pk).exists()
    in_force.refresh_from_db()
    kept_refresh.refresh_from_db()
    assert in_force.status == Consent.Status.ACTIVE and not in_force.events.exists()
    assert kept_refresh.revoked is None
    # Idempotent: a second run finds nothing and writes nothing.
    assert counts(maintenance.expire_due_consents()) == {}
    assert ConsentEvent.objects.count() == 1


def test_services_expire_due_consents_keeps_its_result_type(user, application):
    factories.ConsentFactory(user=user, application=application, expires_at=ago(minutes=1))

    assert services.expire_due_consents(batch_size=1) == services.RevocationResult(1, 0, 0)


def test_consents_in_batches_of_two_give_the_same_result_as_one_batch(application):
    consents = [
        factories.ConsentFactory(application=application, expires_at=ago(minutes=number + 1))
        for number in range(5)
    ]
    for consent in consents:
        make_family(consent)

    report = maintenance.expire_due_consents(batch_size=2)

    assert report.batches == 3
    assert counts(report) == {"consents": 5, "refresh_tokens": 5, "access_tokens": 5}
    assert set(Consent.objects.values_list("status", flat=True)) == {Consent.Status.EXPIRED}
    assert ConsentEvent.objects.filter(action="expired").count() == 5
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()


def test_consents_step_costs_a_fixed_number_of_queries_per_batch(application):
    for number in range(4):
        consent = factories.ConsentFactory(application=application, expires_at=ago(minutes=1))
        make_family(consent, predecessors=number)

    with CaptureQueriesContext(connection) as two_batches:
        maintenance.expire_due_consents(batch_size=2)

    # Savepoints (the test's transaction) are not work: count the statements.
    statements = [query for query in two_batches if "SAVEPOINT" not in query["sql"]]
    assert len(statements) == 2 * CONSENT_BATCH_QUERIES + CONSENT_STEP_END_QUERIES


# Families --------------------------------------------------------------------------------


def test_families_step_ends_idle_and_old_families_and_keeps_the_consent(consent):
    idle, idle_refresh, idle_access = make_family(consent, used=ago(days=31))
    too_old, _refresh, _access = make_family(consent, created=ago(days=366), used=ago(minutes=1))
    live, live_refresh, _access = make_family(consent, created=ago(days=60), used=ago(days=29))

    report = maintenance.end_lapsed_token_families()

    assert counts(report) == {"families": 2, "refresh_tokens": 2, "access_tokens": 1}
    idle.refresh_from_db()
    too_old.refresh_from_db()
    live.refresh_from_db()
    assert idle.ended_at is not None and too_old.ended_at is not None
    assert live.ended_at is None
    idle_refresh.refresh_from_db()
    live_refresh.refresh_from_db()
    assert idle_refresh.revoked == idle.ended_at
    assert live_refresh.revoked is None
    # The consent stays in force, with no event: the device lapsed, the user did not withdraw.
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert not consent.events.exists()
    assert counts(maintenance.end_lapsed_token_families()) == {}


def test_families_step_counts_a_refresh_without_rotation_as_use(consent):
    family, _refresh, access = make_family(consent, used=ago(days=40))
    # Without rotation DOT keeps the refresh token and updates its access token.
    AccessToken.objects.filter(pk=access.pk).update(updated=ago(days=1))

    assert counts(maintenance.end_lapsed_token_families()) == {}
    family.refresh_from_db()
    assert family.ended_at is None


def test_families_step_follows_each_clients_own_lifetimes(user, consent):
    strict_client = factories.ApplicationFactory()
    ClientPolicy.objects.create(application=strict_client, refresh_token_idle_timeout=timedelta(days=1))
    strict = factories.ConsentFactory(user=user, application=strict_client)
    strict_family, _r, _a = make_family(strict, used=ago(days=2))
    default_family, _r, _a = make_family(consent, used=ago(days=2))

    assert counts(maintenance.end_lapsed_token_families())["families"] == 1
    strict_family.refresh_from_db()
    default_family.refresh_from_db()
    assert strict_family.ended_at is not None
    assert default_family.ended_at is None


def test_families_step_with_lifetimes_disabled_ends_nothing(settings, consent):
    settings.OFFLINE_ACCESS = {"REFRESH_TOKEN_IDLE_TIMEOUT": None, "REFRESH_TOKEN_ABSOLUTE_LIFETIME": None}
    make_family(consent, created=ago(days=900), used=ago(days=800))

    assert counts(maintenance.end_lapsed_token_families()) == {}


def test_a_family_the_job_ended_no_longer_refreshes_and_a_live_one_does(browser, api, user, application):
    lapsed = offline_tokens(browser, api, application)
    live = offline_tokens(browser, api, application)
    lapsed_family = OfflineTokenFamily.objects.order_by("pk").first()
    RefreshToken.objects.filter(token_family=lapsed_family.token_family).update(created=ago(days=31))
    AccessToken.objects.filter(refresh_token__token_family=lapsed_family.token_family).update(
        updated=ago(days=31)
    )
    OfflineTokenFamily.objects.filter(pk=lapsed_family.pk).update(created_at=ago(days=31))

    report = maintenance.run()

    assert report[1].counts["families"] == 1
    assert refresh(api, application, lapsed["refresh_token"]).json()["error"] == "invalid_grant"
    assert "refresh_token" in refresh(api, application, live["refresh_token"]).json()


def test_families_in_batches_of_two_give_the_same_result(consent):
    families = [make_family(consent, used=ago(days=31))[0] for _ in range(5)]

    report = maintenance.end_lapsed_token_families(batch_size=2)

    assert report.batches == 3
    assert counts(report) == {"families": 5, "refresh_tokens": 5}
    assert (
        OfflineTokenFamily.objects.filter(pk__in=[f.pk for f in families], ended_at__isnull=True).count() == 0
    )


def test_families_step_costs_a_fixed_number_of_queries_per_batch(consent):
    for number in range(4):
        make_family(consent, used=ago(days=31), predecessors=number)

    with CaptureQueriesContext(connection) as two_batches:
        maintenance.end_lapsed_token_families(batch_size=2)

    statements = [query for query in two_batches if "SAVEPOINT" not in query["sql"]]
    # One query reads the client policies; the last candidates query finds nothing.
    assert len(statements) == 1 + 2 * FAMILY_BATCH_QUERIES + 1


# Tokens --------------------------------------------------------------------------------


def test_tokens_step_keeps_what_can_still_be_used_or_detect_reuse(consent, dot_settings):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=True, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=30)
    # A live family with a rotated predecessor: reuse detection needs the predecessor.
    live, live_newest, live_access = make_family(consent, used=ago(hours=1), predecessors=2)
    # An ended family: its rotated tokens go, its newest (its last use) stays.
    ended, ended_newest, ended_access = make_family(consent, used=ago(hours=1), live=False, predecessors=2)
    OfflineTokenFamily.objects.filter(pk=ended.pk).update(ended_at=ago(hours=1))
    # Just rotated, within the grace period: a retry still gets its answer.
    grace, _newest, _access = make_family(consent, used=ago(seconds=5), live=False, predecessors=1)
    # An access token made from a refresh token, expired, pointed at by nothing.
    expired_access = token(AccessToken, consent, expires=ago(minutes=5), at=ago(minutes=15))
    live_access_alone = token(AccessToken, consent, expires=ago(minutes=-5), at=ago(minutes=5))
    expired_grant = Grant.objects.create(
        user=consent.user,
        application=consent.application,
        code="c1",
        expires=ago(minutes=1),
        redirect_uri="https://client.example/callback",
        code_challenge="x" * 43,
        code_challenge_method="S256",
    )
    GrantAuthentication.objects.create(code="c1", auth_time=ago(minutes=5), expires_at=ago(minutes=1))
    live_grant = Grant.objects.create(
        user=consent.user,
        application=consent.application,
        code="c2",
        expires=ago(minutes=-1),
        redirect_uri="https://client.example/callback",
        code_challenge="x" * 43,
        code_challenge_method="S256",
    )
    events, consents = ConsentEvent.objects.count(), Consent.objects.count()

    report = maintenance.delete_expired_tokens()

    assert counts(report) == {
        "refresh_tokens": 2,
        "access_tokens": 1,
        "authorization_codes": 1,
        "code_authentication_times": 1,
    }
    assert RefreshToken.objects.filter(token_family=live.token_family).count() == 3
    assert list(RefreshToken.objects.filter(token_family=ended.token_family)) == [ended_newest]
    assert RefreshToken.objects.filter(token_family=grace.token_family).count() == 2
    assert not AccessToken.objects.filter(pk=expired_access.pk).exists()
    # Access tokens a kept refresh token points at stay (DOT's rule), and live ones.
    assert (
        AccessToken.objects.filter(pk__in=[live_access.pk, ended_access.pk, live_access_alone.pk]).count()
        == 3
    )
    assert list(Grant.objects.all()) == [live_grant]
    assert expired_grant.pk not in set(Grant.objects.values_list("pk", flat=True))
    # The consent history and the families are never deleted.
    assert (ConsentEvent.objects.count(), Consent.objects.count()) == (events, consents)
    assert OfflineTokenFamily.objects.count() == 3
    assert counts(maintenance.delete_expired_tokens()) == {}


def test_tokens_step_without_reuse_protection_deletes_rotated_tokens_of_live_families(consent, dot_settings):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=False, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=30)
    live, newest, _access = make_family(consent, used=ago(hours=1), predecessors=3)

    assert counts(maintenance.delete_expired_tokens()) == {"refresh_tokens": 3}
    assert list(RefreshToken.objects.filter(token_family=live.token_family)) == [newest]


def test_tokens_step_under_reuse_protection_follows_dots_expiry_when_set(consent, dot_settings):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=True, REFRESH_TOKEN_EXPIRE_SECONDS=3600)
    live, newest, _access = make_family(consent, used=ago(hours=2), predecessors=1)
    RefreshToken.objects.filter(token_family=live.token_family, revoked__isnull=False).update(
        revoked=ago(hours=2)
    )

    assert counts(maintenance.delete_expired_tokens()) == {"refresh_tokens": 1}
    assert list(RefreshToken.objects.filter(token_family=live.token_family)) == [newest]


def test_a_real_rotation_chain_survives_the_job_and_a_replay_still_revokes_the_family(
    browser, api, application, dot_settings
):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=True, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=0)
    first = offline_tokens(browser, api, application)
    second = refresh(api, application, first["refresh_token"]).json()
    third = refresh(api, application, second["refresh_token"]).json()
    assert "refresh_token" in third

    maintenance.run()

    # The rotated tokens were kept: replaying one is still detected and ends the family.
    assert refresh(api, application, first["refresh_token"]).json()["error"] == "invalid_grant"
    assert refresh(api, application, third["refresh_token"]).json()["error"] == "invalid_grant"


def test_id_tokens_go_once_their_access_token_is_gone(consent):
    expired_id = IDToken.objects.create(
        user=consent.user, application=consent.application, expires=ago(minutes=1), jti=uuid.uuid4()
    )
    kept_id = IDToken.objects.create(
        user=consent.user, application=consent.application, expires=ago(minutes=1), jti=uuid.uuid4()
    )
    token(AccessToken, consent, expires=ago(minutes=-5), at=ago(minutes=1), id_token=kept_id)
    token(AccessToken, consent, expires=ago(minutes=5), at=ago(minutes=15), id_token=expired_id)

    report = maintenance.delete_expired_tokens()

    assert counts(report) == {"access_tokens": 1, "id_tokens": 1}
    assert list(IDToken.objects.all()) == [kept_id]


def test_tokens_in_batches_of_two_give_the_same_result(consent, dot_settings):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=False)
    make_family(consent, used=ago(hours=1), predecessors=5)

    report = maintenance.delete_expired_tokens(batch_size=2)

    assert report.counts["refresh_tokens"] == 5
    assert report.batches == 3
    assert RefreshToken.objects.count() == 1


def test_deleting_refresh_tokens_costs_a_fixed_number_of_queries_per_batch(consent, dot_settings):
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=False)
    make_family(consent, used=ago(hours=1), predecessors=4)
    deletable = dict(maintenance._deletable(timezone.now()))["refresh_tokens"]
    assert deletable.count() == 4

    with CaptureQueriesContext(connection) as captured:
        maintenance.delete_expired_tokens(batch_size=2)

    # Quoted as the database quotes names: "name" on PostgreSQL and SQLite, `name` on MySQL.
    refresh_table = connection.ops.quote_name(RefreshToken._meta.db_table)
    statements = [query["sql"] for query in captured if "SAVEPOINT" not in query["sql"]]
    # The refresh-token pass ends with the claim that finds nothing; every other kind
    # here has nothing to delete and costs that one query.
    kinds = len(maintenance._deletable(timezone.now()))
    assert len(statements) == 2 * REFRESH_DELETE_BATCH_QUERIES + 1 + (kinds - 1)
    assert sum(f"DELETE FROM {refresh_table}" in sql for sql in statements) == 2


# DPoP ------------------------------------------------------------------------------------


def test_dpop_bindings_of_expired_tokens_are_deleted_in_batches():
    for number in range(5):
        DPoPBoundAccessToken.objects.create(
            token_checksum=f"old{number}", jkt="k" * 43, expires_at=ago(seconds=1)
        )
    live = DPoPBoundAccessToken.objects.create(
        token_checksum="live", jkt="k" * 43, expires_at=ago(minutes=-5)
    )

    with CaptureQueriesContext(connection) as captured:
        assert dpop.delete_expired_bindings(batch_size=2) == 5

    # Three batches (2, 2, 1) of a SELECT and a DELETE; the short last batch ends the run.
    assert len([query for query in captured if "SAVEPOINT" not in query["sql"]]) == 6
    assert list(DPoPBoundAccessToken.objects.all()) == [live]
    assert dpop.delete_expired_bindings(batch_size=2) == 0


def test_dpop_step_reports_the_bindings():
    DPoPBoundAccessToken.objects.create(token_checksum="old", jkt="k" * 43, expires_at=ago(seconds=1))

    assert counts(maintenance.delete_expired_dpop_bindings(dry_run=True)) == {"dpop_bindings": 1}
    assert counts(maintenance.delete_expired_dpop_bindings()) == {"dpop_bindings": 1}
    assert counts(maintenance.delete_expired_dpop_bindings()) == {}


# The whole job and the command -------------------------------------------------------------


@pytest.fixture
def backlog(user, application, dot_settings):
    """One of everything each step processes, and live rows it must leave alone."""
    dot_settings(REFRESH_TOKEN_REUSE_PROTECTION=False, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=0)
    due = factories.EnduringConsentFactory(user=user, application=application, expires_at=ago(minutes=1))
    consent = factories.ConsentFactory(user=user, application=application)
    make_family(due)
    make_family(consent, used=ago(days=31))
    make_family(consent, used=ago(hours=1), predecessors=2)
    DPoPBoundAccessToken.objects.create(token_checksum="old", jkt="k" * 43, expires_at=ago(seconds=1))


def test_dry_run_counts_and_changes_nothing(backlog):
    before = snapshot()

    reports = maintenance.run(dry_run=True)

    assert snapshot() == before
    assert {report.step: counts(report) for report in reports} == {
        "consents": {"consents": 1},
        "families": {"families": 1},
        "tokens": {"refresh_tokens": 2},
        "dpop": {"dpop_bindings": 1},
    }


def test_the_command_runs_every_step_prints_counts_and_is_idempotent(backlog):
    out, err = StringIO(), StringIO()
    call_command("offline_access_maintenance", "--batch-size", "1", "-v", "2", stdout=out, stderr=err)

    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["consents", "families", "tokens", "dpop"]
    assert lines[0].startswith("consents (did): consents 1, refresh tokens 1, access tokens 1; 1 batch(es)")
    assert lines[1].startswith("families (did): families 1, refresh tokens 1, access tokens 0; 1 batch(es)")
    # The due consent's token and the idle family's, now revoked, and the two rotated ones;
    # and the idle family's expired access token, which its refresh token, revoked by the
    # families step, no longer points at.
    assert lines[2].startswith("tokens (did): refresh tokens 2, access tokens 1,")
    assert lines[3].startswith("dpop (did): dpop bindings 1;")
    assert err.getvalue().count("... ") >= 4  # verbosity 2: a progress line per batch

    again = StringIO()
    call_command("offline_access_maintenance", stdout=again, stderr=StringIO())
    assert again.getvalue().startswith(
        "consents (did): consents 0, refresh tokens 0, access tokens 0; 0 batch(es)"
    )
    assert "families (did): families 0, refresh tokens 0, access tokens 0; 0 batch(es)" in again.getvalue()
    assert (
        "tokens (did): refresh tokens 0, access tokens 0, id tokens 0, authorization codes 0,"
        in again.getvalue()
    )


def test_the_command_runs_only_the_steps_asked_for(backlog):
    out = StringIO()
    call_command(
        "offline_access_maintenance", "--only", "dpop", "--only", "consents", "--dry-run", stdout=out
    )

    assert out.getvalue().splitlines() == [
        "consents (would): consents 1; 1 batch(es), " + out.getvalue().splitlines()[0].rsplit(", ", 1)[1],
        "dpop (would): dpop bindings 1; 1 batch(es), " + out.getvalue().splitlines()[1].rsplit(", ", 1)[1],
    ]
    assert Consent.objects.filter(status=Consent.Status.ACTIVE).count() == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1."),
        (["--progress-every", "0"], "--progress-every must be at least 1."),
    ],
)
def test_the_command_refuses_bad_options(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("offline_access_maintenance", *args, stdout=StringIO())


def test_the_command_refuses_an_unknown_step(db):
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("offline_access_maintenance", "--only", "sessions", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_memory_stays_flat_as_the_backlog_grows():
    """Issue 12: the job's peak Python memory depends on its batch size, not on the backlog.

    The benchmark's backlog (expired access tokens, rotated refresh tokens, due consents,
    lapsed families), once at 1,000 rows and once at four times that: a job that gathered
    keys, instances or reports across batches would peak about four times higher. A first
    run, not measured, pays for what Python and Django set up once (imports, compiled queries).
    """
    import tracemalloc

    from benchmarks import maintenance as workload

    if connection.vendor == "mysql":
        pytest.skip("the benchmark's backlog is seeded with PostgreSQL and SQLite SQL only")

    application = workload._application()
    workload._seed_users(4_000 // workload.UNIT)
    peaks, batches = {}, {}
    for size in (400, 1_000, 4_000):
        workload.seed(application, size)
        tracemalloc.start()
        try:
            reports = maintenance.run(batch_size=50)
            peaks[size] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        batches[size] = sum(report.batches for report in reports)
    assert batches[4_000] > 3 * batches[1_000] > 30  # the work grew fourfold, in batches of 50
    assert peaks[4_000] < peaks[1_000] * 1.5, peaks


@pytest.mark.django_db(transaction=True)
def test_a_batch_chosen_as_innodbs_deadlock_victim_runs_again_on_mysql(monkeypatch):
    """Two runs at once on MariaDB deadlocked in their DELETEs (tests/test_maintenance_concurrency.py).

    InnoDB rolls the victim's transaction back whole; the batch is run again, up to
    DEADLOCK_RETRIES times, and any other error, or a deadlock elsewhere, stands.
    """
    from django.db import OperationalError

    calls = []

    def deadlocked_once(value):
        calls.append(value)
        if len(calls) == 1:
            raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        return value

    from types import SimpleNamespace

    # The vendor as _run_batch reads it (the batches' transactions use the real connection).
    monkeypatch.setattr(maintenance, "connection", SimpleNamespace(vendor="mysql", in_atomic_block=False))
    assert maintenance._run_batch(deadlocked_once, "done") == "done"
    assert calls == ["done", "done"]

    def always_deadlocked():
        calls.append("again")
        raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")

    calls.clear()
    with pytest.raises(OperationalError):
        maintenance._run_batch(always_deadlocked)
    assert len(calls) == 1 + maintenance.DEADLOCK_RETRIES

    def lock_wait_timeout():
        calls.append("timeout")
        raise OperationalError(1205, "Lock wait timeout exceeded; try restarting transaction")

    calls.clear()
    with pytest.raises(OperationalError):
        maintenance._run_batch(lock_wait_timeout)
    assert calls == ["timeout"]

    postgresql = SimpleNamespace(vendor="postgresql", in_atomic_block=False)
    monkeypatch.setattr(maintenance, "connection", postgresql)
    calls.clear()
    with pytest.raises(OperationalError):
        maintenance._run_batch(deadlocked_once, "done")
    assert calls == ["done"]
