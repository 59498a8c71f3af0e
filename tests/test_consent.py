"""Consent records, their history and revocation (SPEC C1-C5)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_grant_model, get_refresh_token_model

from offline_access import services
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import (
    authorize_url,
    client_auth,
    exchange_code,
    get_code,
    offline_tokens,
    redirect_params,
    refresh,
    stored,
    stored_checksum,
    submit_consent,
)
from .test_query_counts import LIVE_REFRESH_TOKENS_READ_QUERIES

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Grant = get_grant_model()

Via = ConsentEvent.Via
Action = ConsentEvent.Action

#: Queries to revoke consents and all their tokens, however many token families
#: (devices) stand behind them: savepoint, lock the consents, update them, insert
#: their events, delete unexchanged codes, wait for rotations in flight (lock the
#: live refresh tokens, with their access tokens' keys), revoke them, delete their
#: access tokens, check none is left, expire the access tokens refreshed from
#: the families' tokens, end the families, release the savepoint.
REVOKE_QUERIES = 12 + LIVE_REFRESH_TOKENS_READ_QUERIES


# Helpers -----------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def interactive_consent(user, application) -> Consent:
    return Consent.objects.get(user=user, application=application, kind=Consent.Kind.INTERACTIVE)


def userinfo(api: Client, access_token: str):
    return api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")


def introspect(api: Client, application, token: str) -> dict:
    # The confidential client authenticates with its own credentials (DOT's
    # ClientProtectedScopedResourceView accepts them instead of an introspection token).
    response = api.post("/o/introspect/", {"token": token, **client_auth(application)})
    assert response.status_code == 200, response.content
    return response.json()


def assert_refresh_refused(api: Client, application, refresh_token: str) -> None:
    response = refresh(api, application, refresh_token)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"


def assert_refresh_works(api: Client, application, refresh_token: str) -> dict:
    response = refresh(api, application, refresh_token)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body
    return body


def assert_access_token_rejected(api: Client, application, access_token: str) -> None:
    response = userinfo(api, access_token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert introspect(api, application, access_token) == {"active": False}
    # Revoking deletes the access token of a live refresh token, as DOT's revoke() does,
    # and expires the others; either way DOT's own model says it is not valid.
    token = AccessToken.objects.filter(token_checksum=checksum(access_token)).first()
    assert token is None or not token.is_valid()


def assert_access_token_accepted(api: Client, application, access_token: str) -> None:
    assert userinfo(api, access_token).status_code == 200
    assert introspect(api, application, access_token)["active"] is True


def checksum(token: str) -> str:
    """DOT's lookup checksum of an issued token (of its keyed hash, issue 9)."""
    return stored_checksum(token)


def add_token_families(consent: Consent, count: int) -> list[tuple[str, str]]:
    """Create ``count`` more offline token families under ``consent``, straight in the database.

    Each family is what a code exchange leaves behind: an access token, a refresh
    token bound to it, and the family row tied to the consent. Returns the
    (refresh token, access token) values.
    """
    if count <= 0:
        return []
    now = timezone.now()
    prefix = uuid.uuid4().hex
    access_values = [f"bulk-access-{prefix}-{i}" for i in range(count)]
    refresh_values = [f"bulk-refresh-{prefix}-{i}" for i in range(count)]
    families = [uuid.uuid4() for _ in range(count)]
    # DOT looks tokens up by checksum. bulk_create does run TokenChecksumField.pre_save
    # (SQLInsertCompiler.pre_save_val), but the value is set here as well so these
    # rows do not depend on that detail.
    access_tokens = AccessToken.objects.bulk_create(
        [
            AccessToken(
                user=consent.user,
                application=consent.application,
                token=stored(value),
                token_checksum=checksum(value),
                expires=now + timedelta(minutes=10),
                scope=consent.scope,
            )
            for value in access_values
        ]
    )
    RefreshToken.objects.bulk_create(
        [
            RefreshToken(
                user=consent.user,
                application=consent.application,
                token=stored(value),
                token_checksum=checksum(value),
                access_token=access_token,
                token_family=family,
            )
            for value, access_token, family in zip(refresh_values, access_tokens, families, strict=True)
        ]
    )
    OfflineTokenFamily.objects.bulk_create(
        [
            OfflineTokenFamily(
                token_family=family, user=consent.user, application=consent.application, consent=consent
            )
            for family in families
        ]
    )
    return list(zip(refresh_values, access_values, strict=True))


@pytest.fixture
def admin_user(db):
    return factories.UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def other_application(db):
    return factories.ApplicationFactory(name="Backup Tool", client_id="backup-tool")


# C1: what a consent record says ----------------------------------------------------


def test_C1_allow_on_consent_screen_records_one_consent(browser, user, application):
    before = timezone.now()
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    assert not Consent.objects.exists()  # showing the screen records nothing
    response = submit_consent(browser, url, screen, "allow")
    after = timezone.now()

    assert "code" in redirect_params(response)
    consent = Consent.objects.get()
    assert consent.user == user
    assert consent.application == application
    assert consent.kind == Consent.Kind.INTERACTIVE
    assert consent.scopes == ["openid", "offline_access"]
    assert consent.status == Consent.Status.ACTIVE
    assert before <= consent.granted_at <= after
    assert consent.created_at == consent.granted_at
    assert consent.granted_by == user
    assert consent.expires_at is None
    assert consent.ended_at is None
    assert consent.ended_by is None
    assert consent.end_reason == ""
    assert consent.state() == Consent.Status.ACTIVE

    event = consent.events.get()
    assert event.action == Action.GRANTED
    assert event.via == Via.CONSENT_SCREEN
    assert event.actor == user
    assert event.at == consent.granted_at


def test_C1_deny_records_no_consent(browser, application):
    url = authorize_url(application, prompt="consent")
    response = submit_consent(browser, url, browser.get(url), "deny")
    assert redirect_params(response)["error"] == "access_denied"
    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()


def test_C1_revoked_consent_says_when_by_whom_and_why(browser, api, user, application, admin_user):
    offline_tokens(browser, api, application)
    consent = interactive_consent(user, application)
    before = timezone.now()
    services.revoke_consents(
        Consent.objects.filter(pk=consent.pk), actor=admin_user, reason="Laptop stolen", via=Via.ADMIN
    )
    after = timezone.now()

    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED
    assert consent.state() == Consent.Status.REVOKED
    assert before <= consent.ended_at <= after
    assert consent.ended_by == admin_user
    assert consent.end_reason == "Laptop stolen"
    # What was given stays on record.
    assert consent.granted_by == user
    assert consent.scopes == ["openid", "offline_access"]


def test_C1_consent_past_its_expiry_reads_expired(user, application):
    consent = factories.ConsentFactory(
        user=user, application=application, expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert consent.status == Consent.Status.ACTIVE
    assert consent.state() == Consent.Status.EXPIRED
    assert not Consent.objects.active().filter(pk=consent.pk).exists()


# C2: one active interactive consent per user and client ------------------------------


def test_C2_second_allow_renews_the_same_consent(browser, user, application):
    get_code(browser, application, prompt="consent")
    consent = interactive_consent(user, application)
    earlier = timezone.now() - timedelta(days=3)
    Consent.objects.filter(pk=consent.pk).update(granted_at=earlier, created_at=earlier)

    get_code(browser, application, scope="openid email offline_access", prompt="consent")

    renewed = Consent.objects.get(user=user, application=application)
    assert renewed.pk == consent.pk
    assert renewed.status == Consent.Status.ACTIVE
    assert renewed.granted_at > earlier + timedelta(days=1)
    assert renewed.created_at == earlier  # first given: unchanged
    assert renewed.granted_by == user
    assert renewed.scopes == ["openid", "email", "offline_access"]
    events = list(renewed.events.all())
    assert [event.action for event in events] == [Action.GRANTED, Action.RENEWED]
    assert events[1].actor == user
    assert events[1].via == Via.CONSENT_SCREEN
    assert events[1].at == renewed.granted_at
    assert events[1].scope == "openid email offline_access"


def test_C2_database_rejects_a_second_active_interactive_consent(user, application):
    factories.ConsentFactory(user=user, application=application)
    with pytest.raises(IntegrityError), transaction.atomic():
        factories.ConsentFactory(user=user, application=application)
    assert Consent.objects.count() == 1


def test_C2_queryset_update_keeps_the_constraint(user, application):
    """update(status=...) keeps the constraint's column in step, as save() does."""
    first = factories.ConsentFactory(user=user, application=application)
    Consent.objects.filter(pk=first.pk).update(status=Consent.Status.REVOKED)
    factories.ConsentFactory(user=user, application=application)  # the ended row frees its place
    with pytest.raises(IntegrityError), transaction.atomic():
        Consent.objects.filter(pk=first.pk).update(status=Consent.Status.ACTIVE)  # a second active row
    assert Consent.objects.filter(status=Consent.Status.ACTIVE).count() == 1


def test_C2_bulk_created_history_and_one_active_row(user, application):
    rows = [
        Consent(user=user, application=application, status=status, client_id="c", client_name="C")
        for status in (Consent.Status.REVOKED, Consent.Status.REVOKED, Consent.Status.EXPIRED)
    ]
    Consent.objects.bulk_create(rows)
    active = {"user": user, "application": application, "client_id": "c", "client_name": "C"}
    Consent.objects.bulk_create([Consent(**active)])
    with pytest.raises(IntegrityError), transaction.atomic():
        Consent.objects.bulk_create([Consent(**active)])
    assert Consent.objects.count() == 4


def test_C2_constraint_allows_history_and_other_kinds(user, other_user, application, other_application):
    factories.ConsentFactory(user=user, application=application, status=Consent.Status.REVOKED)
    factories.ConsentFactory(user=user, application=application, status=Consent.Status.EXPIRED)
    factories.ConsentFactory(user=user, application=application)
    factories.EnduringConsentFactory(user=user, application=application)
    factories.ConsentFactory(user=user, application=other_application)
    factories.ConsentFactory(user=other_user, application=application)
    assert Consent.objects.filter(status=Consent.Status.ACTIVE).count() == 4


def test_C2_allow_after_revocation_records_a_new_consent(browser, user, application):
    get_code(browser, application, prompt="consent")
    first = interactive_consent(user, application)
    services.revoke_consents(Consent.objects.filter(pk=first.pk), actor=user, via=Via.USER)

    get_code(browser, application, prompt="consent")

    first.refresh_from_db()
    assert first.status == Consent.Status.REVOKED
    second = Consent.objects.get(status=Consent.Status.ACTIVE)
    assert second.pk != first.pk
    assert [event.action for event in second.events.all()] == [Action.GRANTED]
    assert [event.action for event in first.events.all()] == [Action.GRANTED, Action.REVOKED]


# C3: enduring consent ---------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   "])
def test_C3_enduring_consent_needs_a_reason(user, application, admin_user, reason):
    with pytest.raises(ValueError, match="reason"):
        services.grant_enduring_consent(user=user, application=application, reason=reason, actor=admin_user)
    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()


def test_C3_enduring_consent_without_expiry(user, application, admin_user):
    consent, created = services.grant_enduring_consent(
        user=user, application=application, reason="Signed service contract #42", actor=admin_user
    )
    assert created is True
    consent.refresh_from_db()
    assert consent.kind == Consent.Kind.ENDURING
    assert consent.status == Consent.Status.ACTIVE
    assert consent.scopes == ["offline_access"]
    assert consent.reason == "Signed service contract #42"
    assert consent.granted_by == admin_user
    assert consent.expires_at is None
    assert Consent.objects.active().filter(pk=consent.pk).exists()


def test_C3_enduring_consent_with_future_expiry(user, application, admin_user):
    expires_at = timezone.now() + timedelta(days=90)
    consent, created = services.grant_enduring_consent(
        user=user, application=application, reason="Trial", expires_at=expires_at, actor=admin_user
    )
    assert created is True
    consent.refresh_from_db()
    assert consent.expires_at == expires_at


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(seconds=-1), timedelta(days=-10)])
def test_C3_enduring_consent_expiry_must_be_in_the_future(user, application, admin_user, offset):
    with pytest.raises(ValueError, match="future"):
        services.grant_enduring_consent(
            user=user,
            application=application,
            reason="Trial",
            expires_at=timezone.now() + offset,
            actor=admin_user,
        )
    assert not Consent.objects.exists()


def test_C3_granting_again_renews_the_active_enduring_consent(user, application, admin_user):
    first, _ = services.grant_enduring_consent(
        user=user, application=application, reason="Contract 2024", actor=None, via=Via.COMMAND
    )
    earlier = timezone.now() - timedelta(days=30)
    Consent.objects.filter(pk=first.pk).update(granted_at=earlier, created_at=earlier)
    new_expiry = timezone.now() + timedelta(days=365)
    renewed, created = services.grant_enduring_consent(
        user=user, application=application, reason="Contract 2025", expires_at=new_expiry, actor=admin_user
    )
    assert created is False
    assert renewed.pk == first.pk
    renewed.refresh_from_db()
    assert renewed.reason == "Contract 2025"
    assert renewed.expires_at == new_expiry
    assert renewed.granted_by == admin_user
    assert renewed.granted_at > earlier + timedelta(days=1)
    assert renewed.created_at == earlier
    assert Consent.objects.count() == 1
    events = list(renewed.events.all())
    assert [(event.action, event.via, event.actor, event.reason) for event in events] == [
        (Action.GRANTED, Via.COMMAND, None, "Contract 2024"),
        (Action.RENEWED, Via.ADMIN, admin_user, "Contract 2025"),
    ]


def test_C3_expired_unprocessed_enduring_consent_is_expired_and_replaced(user, application, admin_user):
    stale = factories.EnduringConsentFactory(
        user=user, application=application, expires_at=timezone.now() - timedelta(days=1)
    )
    consent, created = services.grant_enduring_consent(
        user=user, application=application, reason="Renewed contract", actor=admin_user
    )
    assert created is True
    assert consent.pk != stale.pk
    stale.refresh_from_db()
    assert stale.status == Consent.Status.EXPIRED
    assert stale.ended_at is not None
    assert stale.ended_by is None
    expired_event = stale.events.get()
    assert (expired_event.action, expired_event.via, expired_event.actor) == (
        Action.EXPIRED,
        Via.SYSTEM,
        None,
    )
    assert consent.status == Consent.Status.ACTIVE
    assert consent.expires_at is None
    assert [event.action for event in consent.events.all()] == [Action.GRANTED]


def test_C3_enduring_and_interactive_consents_coexist(browser, user, application, admin_user):
    get_code(browser, application, prompt="consent")
    enduring, created = services.grant_enduring_consent(
        user=user, application=application, reason="Contract", actor=admin_user
    )
    assert created is True
    assert Consent.objects.active().filter(user=user, application=application).count() == 2
    assert interactive_consent(user, application).status == Consent.Status.ACTIVE


# C4: every change appends an event -------------------------------------------------------


def test_C4_events_record_actor_via_time_and_reason(browser, api, user, application, admin_user):
    offline_tokens(browser, api, application)  # granted
    get_code(browser, application, prompt="consent")  # renewed
    consent = interactive_consent(user, application)
    services.revoke_consents(
        Consent.objects.filter(pk=consent.pk), actor=admin_user, reason="Reported lost phone", via=Via.ADMIN
    )
    consent.refresh_from_db()

    granted, renewed, revoked = consent.events.all()
    assert (granted.action, granted.via, granted.actor, granted.reason) == (
        Action.GRANTED,
        Via.CONSENT_SCREEN,
        user,
        "",
    )
    assert (renewed.action, renewed.via, renewed.actor) == (Action.RENEWED, Via.CONSENT_SCREEN, user)
    assert renewed.at == consent.granted_at
    assert granted.at < renewed.at
    assert (revoked.action, revoked.via, revoked.actor, revoked.reason) == (
        Action.REVOKED,
        Via.ADMIN,
        admin_user,
        "Reported lost phone",
    )
    assert revoked.at == consent.ended_at
    assert renewed.at <= revoked.at
    assert revoked.scope == "openid offline_access"


def test_C4_enduring_grant_event(user, application, admin_user):
    consent, _ = services.grant_enduring_consent(
        user=user, application=application, reason="Service contract", actor=admin_user, via=Via.ADMIN
    )
    event = consent.events.get()
    assert (event.action, event.via, event.actor, event.reason) == (
        Action.GRANTED,
        Via.ADMIN,
        admin_user,
        "Service contract",
    )
    assert event.at == consent.granted_at
    assert event.scope == "offline_access"


def test_C4_expiry_found_at_refresh_appends_an_expired_event(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    consent = interactive_consent(user, application)
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert_refresh_refused(api, application, tokens["refresh_token"])

    consent.refresh_from_db()
    assert consent.status == Consent.Status.EXPIRED
    assert consent.ended_at is not None
    event = consent.events.last()
    assert (event.action, event.via, event.actor) == (Action.EXPIRED, Via.SYSTEM, None)
    assert event.at == consent.ended_at
    # Expiry is a revocation too (C5): the access token dies with the consent.
    assert_access_token_rejected(api, application, tokens["access_token"])


def test_C4_expire_due_consents_processes_only_passed_expiries(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    consent = interactive_consent(user, application)
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    future = factories.EnduringConsentFactory(
        user=user, application=application, expires_at=timezone.now() + timedelta(days=1)
    )

    result = services.expire_due_consents()

    assert result == services.RevocationResult(consents=1, refresh_tokens=1, access_tokens=1)
    consent.refresh_from_db()
    assert consent.status == Consent.Status.EXPIRED
    assert [event.action for event in consent.events.all()] == [Action.GRANTED, Action.EXPIRED]
    future.refresh_from_db()
    assert future.status == Consent.Status.ACTIVE
    assert not future.events.exists()
    assert_access_token_rejected(api, application, tokens["access_token"])
    assert_refresh_refused(api, application, tokens["refresh_token"])
    # Processing again finds nothing new and writes no event.
    assert not services.expire_due_consents()
    assert consent.events.count() == 2


def test_C4_revoking_an_already_revoked_consent_appends_nothing(browser, user, application, admin_user):
    get_code(browser, application, prompt="consent")
    consents = Consent.objects.filter(user=user)
    assert services.revoke_consents(consents, actor=admin_user, via=Via.ADMIN).consents == 1
    assert not services.revoke_consents(consents, actor=admin_user, via=Via.ADMIN)
    assert ConsentEvent.objects.filter(action=Action.REVOKED).count() == 1


# C5: revoking a consent revokes its tokens --------------------------------------------------


def test_C5_revoking_a_consent_revokes_its_refresh_and_access_tokens(browser, api, user, application):
    first = offline_tokens(browser, api, application)
    rotated = assert_refresh_works(api, application, first["refresh_token"])
    assert_access_token_accepted(api, application, rotated["access_token"])
    consent = interactive_consent(user, application)

    result = services.revoke_consents(
        Consent.objects.filter(pk=consent.pk), actor=user, reason="No longer used", via=Via.USER
    )

    assert result.consents == 1
    assert result.refresh_tokens == 1  # the rotated one was already used up
    assert result.access_tokens == 1  # DOT deleted the first access token on rotation
    # Checked before any refresh attempt: a refused refresh makes DOT's reuse
    # protection delete the family's access tokens, which would hide a bug here.
    assert_access_token_rejected(api, application, rotated["access_token"])
    assert_refresh_refused(api, application, rotated["refresh_token"])
    # The first refresh token, still inside DOT's 30 s grace period, is refused too.
    assert_refresh_refused(api, application, first["refresh_token"])
    family = OfflineTokenFamily.objects.get(consent=consent)
    assert family.ended_at is not None
    assert not RefreshToken.objects.filter(user=user, revoked__isnull=True).exists()


def test_C5_revocation_is_a_state_change(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    consent = interactive_consent(user, application)
    services.revoke_consents(Consent.objects.filter(pk=consent.pk), actor=user, via=Via.USER)

    consent.refresh_from_db()  # still there
    assert consent.status == Consent.Status.REVOKED
    assert consent.events.count() == 2
    assert OfflineTokenFamily.objects.filter(consent=consent).count() == 1
    # The refresh token stays, marked rather than deleted (it says when the family was last
    # used); its access token is deleted as DOT's own RefreshToken.revoke() deletes it, and
    # the refresh token no longer points at it.
    refresh_token = RefreshToken.objects.get(token_checksum=checksum(tokens["refresh_token"]))
    assert refresh_token.revoked is not None
    assert refresh_token.access_token_id is None
    assert not AccessToken.objects.filter(token_checksum=checksum(tokens["access_token"])).exists()


def test_C5_other_clients_and_users_are_untouched(
    browser, api, user, other_user, application, other_application
):
    mine = offline_tokens(browser, api, application)
    mine_elsewhere = offline_tokens(browser, api, other_application)
    theirs = offline_tokens(logged_in(other_user), api, application)
    consent = interactive_consent(user, application)

    services.revoke_consents(Consent.objects.filter(pk=consent.pk), actor=user, via=Via.USER)

    assert_access_token_rejected(api, application, mine["access_token"])
    assert_refresh_refused(api, application, mine["refresh_token"])
    assert_access_token_accepted(api, other_application, mine_elsewhere["access_token"])
    assert_access_token_accepted(api, application, theirs["access_token"])
    assert_refresh_works(api, other_application, mine_elsewhere["refresh_token"])
    assert_refresh_works(api, application, theirs["refresh_token"])
    assert interactive_consent(user, other_application).status == Consent.Status.ACTIVE
    assert interactive_consent(other_user, application).status == Consent.Status.ACTIVE


def test_C5_unexchanged_codes_die_with_the_consent(browser, api, user, application, other_application):
    offline_tokens(browser, api, application)
    pending_offline = get_code(browser, application, prompt="consent")
    pending_online = get_code(browser, application, scope="openid")
    other_client_code = get_code(browser, other_application, prompt="consent")
    consent = interactive_consent(user, application)

    services.revoke_consents(Consent.objects.filter(pk=consent.pk), actor=user, via=Via.USER)

    for code in (pending_offline, pending_online):
        response = exchange_code(api, application, code)
        assert response.status_code == 400, response.content
        assert response.json()["error"] == "invalid_grant"
    response = exchange_code(api, other_application, other_client_code)
    assert response.status_code == 200, response.content
    assert "refresh_token" in response.json()


def test_C5_revocation_reaches_access_token_of_a_narrowed_refresh(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    narrowed = refresh(api, application, tokens["refresh_token"], scope="openid")
    assert narrowed.status_code == 200, narrowed.content
    narrowed = narrowed.json()
    assert "refresh_token" not in narrowed
    assert_access_token_accepted(api, application, narrowed["access_token"])
    consent = interactive_consent(user, application)

    result = services.revoke_consents(Consent.objects.filter(pk=consent.pk), actor=user, via=Via.USER)

    assert result.access_tokens == 1
    assert_access_token_rejected(api, application, narrowed["access_token"])


def test_C5_bulk_created_families_are_real_offline_tokens(browser, api, user, application):
    """The helper behind the query-count test makes tokens DOT and the validator accept."""
    offline_tokens(browser, api, application)
    (first_refresh, _), (_, second_access), _ = add_token_families(interactive_consent(user, application), 3)
    assert_refresh_works(api, application, first_refresh)
    assert_access_token_accepted(api, application, second_access)


@pytest.mark.parametrize("families", [1, 200])
def test_C5_revocation_runs_a_fixed_number_of_queries(
    browser, api, user, application, admin_user, django_assert_num_queries, families
):
    tokens = offline_tokens(browser, api, application)
    consent = interactive_consent(user, application)
    bulk_tokens = add_token_families(consent, families - 1)
    assert OfflineTokenFamily.objects.filter(consent=consent).count() == families
    consents = Consent.objects.filter(pk=consent.pk)

    with django_assert_num_queries(REVOKE_QUERIES):
        result = services.revoke_consents(consents, actor=admin_user, reason="Offboarding", via=Via.ADMIN)

    assert result == services.RevocationResult(consents=1, refresh_tokens=families, access_tokens=families)
    now = timezone.now()
    assert not RefreshToken.objects.filter(application=application, revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(application=application, expires__gt=now).exists()
    assert not OfflineTokenFamily.objects.filter(consent=consent, ended_at__isnull=True).exists()
    assert_access_token_rejected(api, application, tokens["access_token"])
    assert_refresh_refused(api, application, tokens["refresh_token"])
    for refresh_value, access_value in bulk_tokens[-1:]:
        assert_access_token_rejected(api, application, access_value)
        assert_refresh_refused(api, application, refresh_value)


def test_C5_revoke_offline_access_for_every_client(
    browser, api, user, other_user, application, other_application, admin_user
):
    first = offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, other_application)
    theirs = offline_tokens(logged_in(other_user), api, application)

    result = services.revoke_offline_access(
        user=user, actor=admin_user, reason="Account compromised", via=Via.ADMIN
    )

    assert result == services.RevocationResult(consents=2, refresh_tokens=2, access_tokens=2)
    assert_access_token_rejected(api, application, first["access_token"])
    assert_access_token_rejected(api, other_application, second["access_token"])
    assert_refresh_refused(api, application, first["refresh_token"])
    assert_refresh_refused(api, other_application, second["refresh_token"])
    assert set(Consent.objects.filter(user=user).values_list("status", flat=True)) == {Consent.Status.REVOKED}
    for event in ConsentEvent.objects.filter(consent__user=user, action=Action.REVOKED):
        assert (event.actor, event.via, event.reason) == (admin_user, Via.ADMIN, "Account compromised")
    assert_refresh_works(api, application, theirs["refresh_token"])


def test_C5_revoke_offline_access_for_one_client(browser, api, user, application, other_application):
    first = offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, other_application)

    result = services.revoke_offline_access(user=user, application=application, actor=user, via=Via.USER)

    assert result == services.RevocationResult(consents=1, refresh_tokens=1, access_tokens=1)
    assert_access_token_rejected(api, application, first["access_token"])
    assert_refresh_refused(api, application, first["refresh_token"])
    assert interactive_consent(user, application).status == Consent.Status.REVOKED
    assert interactive_consent(user, other_application).status == Consent.Status.ACTIVE
    assert_access_token_accepted(api, other_application, second["access_token"])
    assert_refresh_works(api, other_application, second["refresh_token"])


def test_C5_revoke_offline_access_reaches_families_without_consent(browser, api, user, application):
    """Tokens whose consent was already ended elsewhere are revoked too."""
    tokens = offline_tokens(browser, api, application)
    OfflineTokenFamily.objects.filter(user=user).update(consent=None)

    result = services.revoke_offline_access(user=user, application=application, via=Via.COMMAND)

    assert result.refresh_tokens == 1
    assert result.access_tokens == 1
    assert_access_token_rejected(api, application, tokens["access_token"])


def test_C5_revoke_offline_access_with_nothing_to_revoke(user, application):
    result = services.revoke_offline_access(user=user, application=application, via=Via.COMMAND)
    assert result == services.RevocationResult(0, 0, 0)
    assert not result
