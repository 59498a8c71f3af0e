"""Revoking everything of one client in batches (issue 12): SPEC C5 at 100,000 devices.

``services.revoke_client_offline_access`` revokes a client's consents a group per
transaction (each consent with its tokens, SPEC C5), then the families no active
consent covers; each batch costs the same number of queries however many tokens
its consents stand behind.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Q
from django.db.models.signals import pre_delete
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from benchmarks.revoke_client import seed_client
from offline_access import services
from offline_access.models import ClientPolicy, Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import refresh
from .test_admin import (
    assert_access_token_alive,
    assert_access_token_dead,
    assert_refresh_refused,
    assert_refresh_works,
    offline_tokens,
)
from .test_consent import checksum, introspect
from .test_query_counts import LIVE_REFRESH_TOKENS_READ_QUERIES

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()
Via = ConsentEvent.Via

#: One batch of consents, whatever their number of families and tokens: the group's keys;
#: then in its transaction (BEGIN and COMMIT, or a savepoint inside one, are logged too):
#: lock its active consents, end them, insert their events, delete their unexchanged
#: codes; lock their families' live refresh tokens with their access tokens' keys, revoke
#: them, delete those access tokens, check none is left, expire the access tokens
#: refreshed from the families' tokens, end the families.
CONSENT_BATCH_QUERIES = 13 + LIVE_REFRESH_TOKENS_READ_QUERIES
#: One batch of families without an active consent: their keys, then in the transaction
#: the same five token statements and the families' UPDATE.
FAMILY_BATCH_QUERIES = 9 + LIVE_REFRESH_TOKENS_READ_QUERIES
#: Around the batches: the newest consent's key, and the empty group ending each walk.
RUN_QUERIES = 3


def live_refresh_tokens(application):
    return RefreshToken.objects.filter(application=application, revoked__isnull=True)


def live_access_tokens(application):
    return AccessToken.objects.filter(application=application, expires__gt=timezone.now())


@pytest.fixture
def seeded(db, application):
    """Six users of ``application`` with three devices each, all live, ten more of another client."""
    seed_client(application, 18, tag="big", per_user=3)
    other = factories.ApplicationFactory(client_id="other-client", name="Other")
    seed_client(other, 10, tag="other", per_user=5)
    return other


def uncovered_family(user, application, *, consent=None) -> OfflineTokenFamily:
    """A family with a live pair and no active consent behind it (none, or an ended one)."""
    family = OfflineTokenFamily.objects.create(
        token_family=uuid.uuid4(), user=user, application=application, consent=consent
    )
    access_token = AccessToken.objects.create(
        user=user,
        application=application,
        token=f"a-{family.token_family}",
        expires=timezone.now() + timezone.timedelta(hours=1),
        scope="openid offline_access",
    )
    RefreshToken.objects.create(
        user=user,
        application=application,
        token=f"r-{family.token_family}",
        access_token=access_token,
        token_family=family.token_family,
    )
    return family


def test_C5_every_token_and_consent_of_the_client_is_revoked_in_batches(seeded, user, application):
    other = seeded
    real = offline_tokens(user, application)  # issued through the consent screen and /o/token/
    orphan = uncovered_family(factories.UserFactory(username="orphan"), application)
    ended = factories.ConsentFactory(
        user=factories.UserFactory(username="ended"), application=application, status=Consent.Status.REVOKED
    )
    under_ended = uncovered_family(ended.user, application, consent=ended)
    admin = factories.UserFactory(username="root", is_staff=True)
    batches = []

    result = services.revoke_client_offline_access(
        application,
        actor=admin,
        reason="client compromised",
        via=Via.ADMIN,
        batch_size=2,
        on_batch=batches.append,
    )

    # 7 active consents (six seeded users and alice) in groups of 2, then one batch of the
    # two families no active consent covers.
    assert result.batches == len(batches) == 5
    assert [batch.consents for batch in batches] == [2, 2, 2, 1, 0]
    assert (result.consents, result.refresh_tokens, result.access_tokens) == (7, 21, 21)
    assert not live_refresh_tokens(application).exists()
    assert not live_access_tokens(application).exists()
    assert not OfflineTokenFamily.objects.filter(application=application, ended_at__isnull=True).exists()
    assert_refresh_refused(application, real["refresh_token"])
    assert_access_token_dead(real["access_token"])
    for consent in Consent.objects.filter(application=application).exclude(pk=ended.pk):
        assert (consent.status, consent.ended_by, consent.end_reason) == (
            Consent.Status.REVOKED,
            admin,
            "client compromised",
        )
        event = consent.events.get(action=ConsentEvent.Action.REVOKED)
        assert (event.actor, event.via, event.reason) == (admin, Via.ADMIN, "client compromised")
    assert not ended.events.exists()  # its history was closed before; only its family's tokens went
    assert {orphan.pk, under_ended.pk} <= set(
        OfflineTokenFamily.objects.filter(ended_at__isnull=False).values_list("pk", flat=True)
    )
    # The other client keeps everything.
    assert live_refresh_tokens(other).count() == live_access_tokens(other).count() == 10
    assert Consent.objects.filter(application=other, status=Consent.Status.ACTIVE).count() == 2


def test_a_second_run_finds_nothing_and_records_nothing(seeded, application):
    services.revoke_client_offline_access(application, via=Via.COMMAND, batch_size=4)
    events = ConsentEvent.objects.count()

    again = services.revoke_client_offline_access(application, via=Via.COMMAND, batch_size=4)

    assert not again
    assert again.batches == 0
    assert ConsentEvent.objects.count() == events


def test_a_lapsed_consent_in_a_batch_is_marked_expired(seeded, application):
    lapsed = Consent.objects.filter(application=application).order_by("pk").first()
    Consent.objects.filter(pk=lapsed.pk).update(expires_at=timezone.now() - timezone.timedelta(days=1))

    result = services.revoke_client_offline_access(application, via=Via.COMMAND, batch_size=4)

    lapsed.refresh_from_db()
    assert lapsed.status == Consent.Status.EXPIRED
    assert lapsed.events.get().action == ConsentEvent.Action.EXPIRED
    assert result.consents == 5  # revoked; the lapsed one is counted as expired, its tokens as revoked
    assert result.refresh_tokens == 18
    assert not live_refresh_tokens(application).exists()


def test_a_consent_given_while_the_run_goes_on_is_a_new_agreement_and_stays(seeded, application):
    first = Consent.objects.filter(application=application).order_by("pk").first()
    given_meanwhile = []

    def user_consents_again(batch):
        if not given_meanwhile:  # after the first batch revoked this user's consent
            given_meanwhile.append(
                services.record_interactive_consent(
                    user=first.user, application=application, scopes=["openid", "offline_access"]
                )
            )

    services.revoke_client_offline_access(
        application, via=Via.COMMAND, batch_size=2, on_batch=user_consents_again
    )

    (consent,) = given_meanwhile
    consent.refresh_from_db()
    assert consent.pk != first.pk
    assert consent.status == Consent.Status.ACTIVE
    assert not live_refresh_tokens(application).exists()


@pytest.mark.parametrize("devices_per_user", [1, 25])
def test_each_batch_costs_the_same_queries_whatever_its_number_of_tokens(db, application, devices_per_user):
    users = seed_client(application, 8 * devices_per_user, tag="q", per_user=devices_per_user)
    uncovered_family(factories.UserFactory(username="orphan"), application)
    per_batch = []
    with CaptureQueriesContext(connection) as captured:
        mark = [0]

        def counted(_result):
            per_batch.append(len(captured) - mark[0])
            mark[0] = len(captured)

        result = services.revoke_client_offline_access(
            application, via=Via.COMMAND, batch_size=3, on_batch=counted
        )
    assert users == 8
    assert result.refresh_tokens == 8 * devices_per_user + 1
    # 8 consents in groups of 3, then the family without a consent. Counted between batches:
    # the first includes the newest consent's key, the last the empty group ending the consents.
    assert per_batch == [1 + CONSENT_BATCH_QUERIES, CONSENT_BATCH_QUERIES, CONSENT_BATCH_QUERIES] + [
        1 + FAMILY_BATCH_QUERIES
    ]
    assert len(captured) == RUN_QUERIES + 3 * CONSENT_BATCH_QUERIES + FAMILY_BATCH_QUERIES


def test_a_group_of_consents_stops_at_the_family_budget_and_a_big_consent_is_its_own_batch(db, application):
    seed_client(application, 12, tag="small", per_user=3)  # 4 consents, 3 families each
    seed_client(application, 9, tag="big", per_user=9)  # 1 consent, 9 families
    seed_client(application, 3, tag="last", per_user=3)
    batches = []

    result = services.revoke_client_offline_access(
        application, via=Via.COMMAND, batch_size=10, family_batch_size=7, on_batch=batches.append
    )

    assert [(batch.consents, batch.refresh_tokens) for batch in batches] == [(2, 6), (2, 6), (1, 9), (1, 3)]
    assert result.refresh_tokens == 24
    assert not live_refresh_tokens(application).exists()


def test_invalid_batch_sizes_are_refused(application):
    with pytest.raises(ValueError):
        services.revoke_client_offline_access(application, via=Via.COMMAND, batch_size=0)


# The command --------------------------------------------------------------------------


def test_command_all_users_revokes_the_client_in_batches(seeded, application, capsys):
    call_command("revoke_offline_access", "--all-users", "--application", application.client_id, "--dry-run")
    assert "Would revoke 6 consent(s) and 18 token family(ies) (0 without an active consent)" in (
        capsys.readouterr().out
    )
    assert live_refresh_tokens(application).count() == 18

    call_command(
        "revoke_offline_access", "--all-users", "--application", application.client_id, "--batch-size", "4"
    )
    assert "Revoked 6 consent(s), 18 refresh token(s) and 18 access token(s) of every user" in (
        capsys.readouterr().out
    )
    assert not live_refresh_tokens(application).exists()
    assert live_refresh_tokens(seeded).count() == 10
    with pytest.raises(CommandError, match="Nothing to revoke"):
        call_command("revoke_offline_access", "--all-users", "--application", application.client_id)


def test_command_all_users_needs_the_client(db):
    with pytest.raises(CommandError, match="--all-users needs --application"):
        call_command("revoke_offline_access", "--all-users")
    with pytest.raises(CommandError):
        call_command("revoke_offline_access", "--all-users", "--user", "alice", "--application", "x")


# Barring a client -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_barring_a_client_outside_a_transaction_commits_the_bar_then_revokes_in_batches(
    user, application, monkeypatch
):
    seed_client(application, 12, tag="bar", per_user=3)
    tokens = offline_tokens(user, application)
    calls = []
    batched = services.revoke_client_offline_access

    def spy(app, **kwargs):
        # The bar is committed before the first batch: refreshes are refused from then on.
        calls.append(ClientPolicy.objects.get(application=app).allow_offline_access)
        return batched(app, batch_size=2, **{k: v for k, v in kwargs.items() if k != "batch_size"})

    monkeypatch.setattr(services, "revoke_client_offline_access", spy)
    policy = ClientPolicy(application=application, allow_offline_access=False)

    policy.save()

    assert calls == [False]
    assert (policy.bar_revocation.consents, policy.bar_revocation.refresh_tokens) == (5, 13)
    assert not live_refresh_tokens(application).exists()
    assert_refresh_refused(application, tokens["refresh_token"])
    event = Consent.objects.get(user=user).events.get(action=ConsentEvent.Action.REVOKED)
    assert (event.via, event.reason) == (Via.COMMAND, services.CLIENT_BARRED_REASON)


def test_barring_inside_a_transaction_stays_one_transaction(user, application, monkeypatch):
    tokens = offline_tokens(user, application)
    monkeypatch.setattr(services, "revoke_client_offline_access", None)  # never called in a transaction
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    assert_refresh_refused(application, tokens["refresh_token"])
    ClientPolicy.objects.filter(application=application).update(allow_offline_access=True)
    assert_refresh_refused(application, tokens["refresh_token"])
    assert_refresh_works(application, offline_tokens(user, application)["refresh_token"])


# What a batch leaves of the tokens (issue 12: deleted access tokens, unlinked refresh tokens) ----


def test_a_revoked_familys_tokens_are_dead_everywhere_and_its_refresh_tokens_stay_as_history(
    user, other_user, application
):
    other = factories.ApplicationFactory(client_id="other-client", name="Other")
    rotated = offline_tokens(user, application)
    current = assert_refresh_works(application, rotated["refresh_token"])  # a rotation: two in the family
    elsewhere = offline_tokens(user, other)  # the same user at another client, with an ID token
    theirs = offline_tokens(other_user, application)

    result = services.revoke_client_offline_access(application, via=Via.COMMAND, batch_size=1)

    assert (result.consents, result.refresh_tokens, result.access_tokens) == (2, 2, 2)
    api = Client()
    for pair in (current, theirs):
        # The refresh token is refused, its access token too: at userinfo and at introspection.
        assert_refresh_refused(application, pair["refresh_token"])
        assert_access_token_dead(pair["access_token"])
        assert introspect(api, application, pair["access_token"]) == {"active": False}
        assert introspect(api, application, pair["refresh_token"]).get("active") is not True
    # The rotated predecessor, replayed within DOT's grace period, is refused as well.
    assert_refresh_refused(application, rotated["refresh_token"])
    # The access tokens are gone as DOT's RefreshToken.revoke() deletes them; every refresh
    # token of the family stays, revoked and no longer pointing at one: the consent's history
    # still says when the device was last used.
    family_tokens = RefreshToken.objects.filter(application=application)
    assert family_tokens.count() == 3
    assert not family_tokens.filter(Q(revoked__isnull=True) | Q(access_token__isnull=False)).exists()
    assert not AccessToken.objects.filter(application=application).exists()
    consent = Consent.objects.with_usage().get(user=user, application=application)
    assert (consent.live_tokens, consent.last_used) == (
        0,
        RefreshToken.objects.filter(
            token_family=RefreshToken.objects.get(
                token_checksum=checksum(current["refresh_token"])
            ).token_family
        )
        .latest("created")
        .created,
    )
    # The other client keeps all of it: the access token, its ID token, refreshing.
    assert_access_token_alive(elsewhere["access_token"])
    assert IDToken.objects.filter(application=other).count() == 1
    assert AccessToken.objects.get(token_checksum=checksum(elsewhere["access_token"])).id_token_id is not None
    assert_refresh_works(other, elsewhere["refresh_token"])


def test_an_access_token_of_a_narrowed_refresh_dies_with_its_family(user, application):
    tokens = offline_tokens(user, application)
    narrowed = refresh(Client(), application, tokens["refresh_token"], scope="openid")
    assert narrowed.status_code == 200, narrowed.content
    assert "refresh_token" not in narrowed.json()  # an access token alone, paired with no refresh token
    assert_access_token_alive(narrowed.json()["access_token"])

    result = services.revoke_client_offline_access(application, via=Via.COMMAND)

    # No refresh token points at it (the one it was refreshed from is used up): the
    # statement over the tokens refreshed from the family's finds it.
    assert (result.refresh_tokens, result.access_tokens) == (0, 1)
    assert_access_token_dead(narrowed.json()["access_token"])


def test_access_tokens_with_delete_receivers_are_expired_instead_of_deleted(user, application):
    tokens = offline_tokens(user, application)
    deleted = []

    def receiver(sender, instance, **kwargs):
        deleted.append(instance.pk)

    pre_delete.connect(receiver, sender=AccessToken)
    try:
        result = services.revoke_client_offline_access(application, via=Via.COMMAND)
    finally:
        pre_delete.disconnect(receiver, sender=AccessToken)

    # A site that listens for deletions would miss these: the statement sends no signal.
    assert deleted == []
    assert result.access_tokens == 1
    access_token = AccessToken.objects.get(token_checksum=checksum(tokens["access_token"]))
    assert access_token.expires <= timezone.now()
    assert_access_token_dead(tokens["access_token"])
    assert_refresh_refused(application, tokens["refresh_token"])


def test_access_tokens_are_deleted_without_django_collecting_them(user, application):
    offline_tokens(user, application)
    with CaptureQueriesContext(connection) as captured:
        services.revoke_client_offline_access(application, via=Via.COMMAND)
    deletes = [query["sql"] for query in captured if query["sql"].startswith("DELETE")]
    access_table = connection.ops.quote_name(AccessToken._meta.db_table)
    # One DELETE of the access tokens, by key, and no SELECT of them before it (Django's
    # collector would load each row to emulate the refresh token's on_delete in Python).
    assert len([sql for sql in deletes if sql.startswith(f"DELETE FROM {access_table}")]) == 1
    assert not [query for query in captured if query["sql"].startswith(f'SELECT {access_table}."id"')]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="fillfactor and HOT updates are PostgreSQL's")
def test_ending_families_rewrites_their_rows_in_place_on_postgresql(application):
    """Migration 0013 leaves room on each page, so ended_at (in no index) is a HOT update.

    pg_stat_xact_user_tables counts this transaction's writes: nearly every family's
    UPDATE is a heap-only one, touching none of the table's ten indexes (on pages packed
    full, PostgreSQL's default, nearly none is).
    """
    table = OfflineTokenFamily._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [table])
        assert cursor.fetchone()[0] == ["fillfactor=50"]
    seed_client(application, 300, tag="hot")

    services.revoke_everything(
        consents=Consent.objects.filter(application=application),
        families=OfflineTokenFamily.objects.filter(application=application),
        via=Via.COMMAND,
    )

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s", [table]
        )
        updated, in_place = cursor.fetchone()
    assert updated >= 300
    assert in_place >= 0.9 * updated


def revoke_while_reading_scopes(monkeypatch, application) -> None:
    """The client's offline access revoked (and committed) just before DOT reads a refresh's scopes."""
    from offline_access.validators import OfflineAccessValidator

    original = OfflineAccessValidator.get_original_scopes

    def revoked_meanwhile(self, refresh_token, request, *args, **kwargs):
        services.revoke_client_offline_access(application, via=Via.COMMAND)
        return original(self, refresh_token, request, *args, **kwargs)

    monkeypatch.setattr(OfflineAccessValidator, "get_original_scopes", revoked_meanwhile)


def assert_refused_leaving_nothing_live(response, application) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"
    assert not AccessToken.objects.filter(application=application, expires__gt=timezone.now()).exists()
    assert not RefreshToken.objects.filter(application=application, revoked__isnull=True).exists()


def test_a_refresh_whose_scopes_are_read_after_the_revocation_gets_nothing(user, application, monkeypatch):
    """A revocation that commits between validating a live refresh token and reading its scopes.

    The scopes still come from the token as validation loaded it; DOT's rotation then
    locks the token, finds it revoked and the refresh is refused. (The grace-period
    retry below is the variant that got a token.)
    """
    tokens = offline_tokens(user, application)
    revoke_while_reading_scopes(monkeypatch, application)

    assert_refused_leaving_nothing_live(refresh(Client(), application, tokens["refresh_token"]), application)


def test_a_grace_period_retry_whose_scopes_are_read_after_the_revocation_gets_nothing(
    user, application, monkeypatch
):
    """The race tests/test_concurrency_live.py met on MariaDB (a 200 without refresh_token).

    A retry of a just-rotated refresh token within DOT's grace period reads its scopes
    from the access token it was rotated into. A revocation committing in between has
    deleted that access token, so DOT read the scopes as empty: without offline_access
    no refresh token, and DOT's branch for "an access token alone" minted a live access
    token for a revoked family.
    """
    tokens = offline_tokens(user, application)
    rotated = refresh(Client(), application, tokens["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    revoke_while_reading_scopes(monkeypatch, application)

    assert_refused_leaving_nothing_live(refresh(Client(), application, tokens["refresh_token"]), application)
