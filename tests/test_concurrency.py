"""Races settled by the database (SPEC: "Where it runs"); they need real row locks.

SQLite has no row locks and serialises writers, so these tests run on a server
database: the PostgreSQL and MariaDB envs (tox -e py311-dj52-postgres,py311-dj52-mariadb;
CI runs both). InnoDB locks differ from PostgreSQL's (an UPDATE locks every row its index
scan reaches), which is what some of these interleavings probe.
"""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_device_grant_model, get_refresh_token_model

from offline_access import services
from offline_access.models import Consent, ConsentEvent
from offline_access.validators import OfflineAccessValidator

from .oauth import exchange_code, get_code, refresh, stored, stored_checksum

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor not in ("postgresql", "mysql"),
        reason="row-lock races need a server database (the postgres and mariadb envs run them)",
    ),
]

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def in_thread(target, *args):
    """Run ``target`` in a thread with its own database connection; re-raise its error."""
    outcome = {}

    def run():
        try:
            outcome["value"] = target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def finish(thread, outcome):
    thread.join(timeout=30)
    assert not thread.is_alive(), "thread did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def test_C2_concurrent_approvals_leave_one_active_consent(user, application):
    barrier = threading.Barrier(4)

    def approve():
        barrier.wait(timeout=10)
        return services.record_interactive_consent(
            user=user, application=application, scopes=["openid", "offline_access"]
        )

    runs = [in_thread(approve) for _ in range(4)]
    consents = {finish(*run).pk for run in runs}

    assert len(consents) == 1
    assert Consent.objects.filter(status=Consent.Status.ACTIVE).count() == 1
    actions = sorted(ConsentEvent.objects.values_list("action", flat=True))
    assert actions == ["granted", "renewed", "renewed", "renewed"]


def test_C3_concurrent_enduring_grants_leave_one_active_consent(user, application):
    barrier = threading.Barrier(3)

    def grant():
        barrier.wait(timeout=10)
        return services.grant_enduring_consent(user=user, application=application, reason="contract")

    runs = [in_thread(grant) for _ in range(3)]
    results = [finish(*run) for run in runs]

    assert len({consent.pk for consent, _created in results}) == 1
    assert sorted(created for _consent, created in results) == [False, False, True]
    assert Consent.objects.filter(kind=Consent.Kind.ENDURING, status=Consent.Status.ACTIVE).count() == 1


def test_C5_revocation_racing_a_refresh_leaves_no_live_token(browser, application, monkeypatch):
    """A refresh rotating the pair while the consent is revoked: nothing it mints survives.

    The refresh is held inside DOT's transaction, after it locked the old refresh
    token, while the revocation starts; the revocation must wait for it and then
    revoke the new pair too (or the refresh must fail).
    """
    api = Client()
    issued = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    rotation_holds_lock = threading.Event()
    original = OfflineAccessValidator._create_access_token

    def slow_rotation(self, expires, request, token, source_refresh_token=None):
        if source_refresh_token is not None:
            rotation_holds_lock.set()
            threading.Event().wait(0.5)  # let the revocation start and block on our locks
        return original(self, expires, request, token, source_refresh_token)

    monkeypatch.setattr(OfflineAccessValidator, "_create_access_token", slow_rotation)

    refreshing = in_thread(lambda: refresh(Client(), application, issued["refresh_token"]))
    assert rotation_holds_lock.wait(timeout=10)
    revoking = in_thread(
        lambda: services.revoke_consents(Consent.objects.all(), via=ConsentEvent.Via.COMMAND)
    )
    finish(*refreshing)
    result = finish(*revoking)

    assert result.consents == 1
    now = timezone.now()
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(expires__gt=now).exists()


def test_P6_refresh_after_a_committed_revocation_mints_nothing(browser, application, monkeypatch):
    """The revocation commits between the refresh's validation and its rotation."""
    api = Client()
    issued = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    original = OfflineAccessValidator.validate_refresh_token

    def revoke_right_after_validation(self, *args, **kwargs):
        valid = original(self, *args, **kwargs)
        finish(*in_thread(lambda: services.revoke_consents(Consent.objects.all(), via="command")))
        return valid

    monkeypatch.setattr(OfflineAccessValidator, "validate_refresh_token", revoke_right_after_validation)

    response = refresh(api, application, issued["refresh_token"])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(expires__gt=timezone.now()).exists()


# Device approval race (issue 8) ------------------------------------------------------

DEVICE_RACE_TRIALS = 30


@pytest.fixture
def unlimited_code_entry(settings):
    """The victim's refused entries would otherwise use up the test client's address's attempts."""
    from django.core.cache import cache

    settings.OFFLINE_ACCESS = {**getattr(settings, "OFFLINE_ACCESS", {}), "DEVICE_CODE_ATTEMPTS": 10_000}
    cache.clear()
    yield
    cache.clear()


def _device_client(db_factories):
    return db_factories.PublicApplicationFactory(
        client_id="race-cli",
        authorization_grant_type="urn:ietf:params:oauth:grant-type:device_code",
        redirect_uris="",
    )


def _device_grant_claimed_by(cli, attacker_user):
    """A pending device grant whose code the attacker already typed (the race starts after)."""
    suffix = secrets.token_hex(4).upper()
    return get_device_grant_model().objects.create(
        client_id=cli.client_id,
        device_code=secrets.token_urlsafe(24),
        user_code=f"RACE{suffix}",
        scope="openid offline_access",
        expires=timezone.now() + timedelta(minutes=10),
        user=attacker_user,
    )


def _poll(cli, device_code: str):
    get_device_grant_model().objects.filter(device_code__in=[device_code, stored(device_code)]).update(
        last_checked=timezone.now() - timedelta(seconds=60)
    )
    return Client().post(
        "/o/token/",
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device_code,
            "client_id": cli.client_id,
        },
    )


def _race_trials(user, other_user, victim_claims):
    """The attacker (``other_user``) clicks Allow on the approval page of its own code
    while the victim (``user``) types that code; tokens must go only to the account that
    clicked Allow. ``victim_claims(victim_browser, device_code, user_code)`` is the
    victim's side of the race."""
    from . import factories

    cli = _device_client(factories)
    # The victim already uses this client offline: the worst case hands over a refresh token.
    services.record_interactive_consent(user=user, application=cli, scopes=["openid", "offline_access"])
    attacker, victim = Client(), Client()
    attacker.force_login(other_user)
    victim.force_login(user)
    approved, leaked = 0, 0
    for _ in range(DEVICE_RACE_TRIALS):
        grant = _device_grant_claimed_by(cli, other_user)
        device_code, user_code = grant.device_code, grant.user_code
        confirm_url = f"/o/device-confirm/{cli.client_id}/{user_code}"
        barrier = threading.Barrier(2)

        def click_allow(confirm_url=confirm_url, barrier=barrier):
            barrier.wait(timeout=10)
            return attacker.post(confirm_url, {"decision": "allow"}).status_code

        def type_code(device_code=device_code, user_code=user_code, barrier=barrier):
            barrier.wait(timeout=10)
            return victim_claims(victim, device_code, user_code)

        allowing, typing = in_thread(click_allow), in_thread(type_code)
        allow_status = finish(*allowing)
        finish(*typing)
        assert allow_status in (302, 404, 409), allow_status  # never a 500
        grant.refresh_from_db()
        if grant.status == grant.AUTHORIZATION_PENDING:
            continue  # nothing was decided: no poll can get tokens (checked for all at the end)
        response = _poll(cli, device_code)
        if response.status_code == 200:
            approved += 1
            assert allow_status == 302
            if AccessToken.objects.get(token=stored(response.json()["access_token"])).user != other_user:
                leaked += 1
    assert leaked == 0, f"the victim's tokens reached the attacker's device in {leaked} trials"
    assert not AccessToken.objects.filter(user=user).exists()
    assert not RefreshToken.objects.filter(user=user).exists()
    assert AccessToken.objects.filter(user=other_user).count() == approved
    return approved


def test_device_approval_race_through_the_code_entry_page(user, other_user, unlimited_code_entry):
    """The victim types the attacker's code on the real code-entry page during the Allow."""

    def victim_types_code(victim, device_code, user_code):
        return victim.post("/o/device/", {"user_code": user_code}).status_code

    approved = _race_trials(user, other_user, victim_types_code)
    # The code-entry page leaves a grant another account is approving alone.
    assert approved == DEVICE_RACE_TRIALS


def test_device_approval_race_against_any_reassignment_while_pending(user, other_user, unlimited_code_entry):
    """Whatever switches a pending grant to another account, the Allow binds to the approver.

    The victim's side here is the bare reassignment a code-entry page does that lets
    whoever has the code take it over while it is pending (as RFC 8628 would allow).
    """

    def reassign_while_pending(victim, device_code, user_code):
        model = get_device_grant_model()
        return model.objects.filter(
            device_code__in=[device_code, stored(device_code)], status=model.AUTHORIZATION_PENDING
        ).update(user=user)

    _race_trials(user, other_user, reassign_while_pending)


def test_P3_same_consent_form_posted_concurrently_gets_one_code(user, application):
    """A consent form is single use even when its copies race on different workers."""
    from oauth2_provider.models import get_grant_model

    from .oauth import authorize_url, consent_form_data

    url = authorize_url(application, prompt="consent")
    browser = Client()
    browser.force_login(user)
    data = {**consent_form_data(browser.get(url)), "decision": "allow"}
    barrier = threading.Barrier(6)

    def post():
        client = Client()
        client.force_login(user)
        barrier.wait(timeout=10)
        return client.post(url, data).status_code

    runs = [in_thread(post) for _ in range(6)]
    statuses = sorted(finish(*run) for run in runs)

    assert statuses == [302, 400, 400, 400, 400, 400]
    assert get_grant_model().objects.count() == 1
    assert Consent.objects.count() == 1
    assert ConsentEvent.objects.count() == 1


def test_C5_revocation_and_a_rotation_of_a_token_minted_meanwhile_do_not_deadlock(
    browser, application, monkeypatch
):
    """The interleaving behind the deadlocks tests/test_concurrency_live.py found (issue 9).

    A rotation R0 is in flight when the revocation starts, so the revocation's first
    look at the family cannot see R0's successor. A second rotation R1 of that
    successor then holds its refresh token while the revocation works on the
    family. The revocation used to expire the access tokens first: it held R1's
    access token and waited for R1's refresh token while R1 waited to delete that
    access token (PostgreSQL: deadlock detected, one side fails with a 500).
    """
    from offline_access import signals

    api = Client()
    issued = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    r0_holds_lock, r0_go, r1_holds_lock = threading.Event(), threading.Event(), threading.Event()
    original_create = OfflineAccessValidator._create_access_token

    def rotation_held(self, expires, request, token, source_refresh_token=None):
        if source_refresh_token is not None and not r0_go.is_set():
            r0_holds_lock.set()
            assert r0_go.wait(timeout=10)
        return original_create(self, expires, request, token, source_refresh_token)

    monkeypatch.setattr(OfflineAccessValidator, "_create_access_token", rotation_held)
    has_listeners = signals.offline_tokens_revoked.has_listeners

    def revocation_waits_for_r1(sender=None):
        # Called by the revocation between its first look at the family and its writes.
        assert r1_holds_lock.wait(timeout=10)
        return has_listeners(sender)

    monkeypatch.setattr(signals.offline_tokens_revoked, "has_listeners", revocation_waits_for_r1)

    r0 = in_thread(lambda: refresh(Client(), application, issued["refresh_token"]))
    assert r0_holds_lock.wait(timeout=10)
    revoking = in_thread(
        lambda: services.revoke_consents(Consent.objects.all(), via=ConsentEvent.Via.COMMAND)
    )
    threading.Event().wait(0.3)  # the revocation starts while R0 holds its lock
    r0_go.set()
    successor = finish(*r0)
    assert successor.status_code == 200, successor.content

    original_revoke = RefreshToken.revoke

    def r1_holds_the_successor(self):
        # DOT locked the presented refresh token; its access token is deleted next.
        r1_holds_lock.set()
        threading.Event().wait(0.5)  # the revocation reaches the family's tokens meanwhile
        return original_revoke(self)

    monkeypatch.setattr(RefreshToken, "revoke", r1_holds_the_successor)
    r1 = in_thread(lambda: refresh(Client(), application, successor.json()["refresh_token"]))
    r1_answer = finish(*r1)
    result = finish(*revoking)

    assert r1_answer.status_code in (200, 400), r1_answer.content
    assert result.consents == 1
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(expires__gt=timezone.now()).exists()


def test_reuse_racing_the_rotation_ends_the_family_without_a_grace_period(
    browser, application, monkeypatch, dot_settings
):
    """RFC 9700 4.14.2 with grace period 0: a second request with the same refresh token,
    checked while the first was still rotating it, waits for the first's row lock and then
    presents a used-up token. Refusing it is not enough: as for any replay, the family ends,
    the first request's new pair with it (the server cannot tell which party is the thief).
    """
    dot_settings(REFRESH_TOKEN_GRACE_PERIOD_SECONDS=0)
    api = Client()
    issued = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    first_holds_lock, second_checked = threading.Event(), threading.Event()
    original_create = OfflineAccessValidator._create_access_token
    original_validate = OfflineAccessValidator.validate_refresh_token

    def rotation_waiting_for_the_second(self, expires, request, token, source_refresh_token=None):
        if source_refresh_token is not None and not first_holds_lock.is_set():
            first_holds_lock.set()
            assert second_checked.wait(timeout=10)
            threading.Event().wait(0.5)  # the second now waits for this rotation's row lock
        return original_create(self, expires, request, token, source_refresh_token)

    def validate_and_tell(self, *args, **kwargs):
        valid = original_validate(self, *args, **kwargs)
        if first_holds_lock.is_set():
            second_checked.set()
        return valid

    monkeypatch.setattr(OfflineAccessValidator, "_create_access_token", rotation_waiting_for_the_second)
    monkeypatch.setattr(OfflineAccessValidator, "validate_refresh_token", validate_and_tell)

    first = in_thread(lambda: refresh(Client(), application, issued["refresh_token"]))
    assert first_holds_lock.wait(timeout=10)
    second = in_thread(lambda: refresh(Client(), application, issued["refresh_token"]))
    first_response, second_response = finish(*first), finish(*second)

    assert first_response.status_code == 200, first_response.content
    assert second_response.status_code == 400, second_response.content
    assert second_response.json()["error"] == "invalid_grant"
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists(), "the family outlived a reuse"
    assert not AccessToken.objects.filter(expires__gt=timezone.now()).exists()


def test_C5_password_change_and_a_grace_period_retry_do_not_deadlock(browser, user, application, monkeypatch):
    """A retry of a just-rotated refresh token while the password change ends everything.

    DOT's rotation locks the presented refresh token, then the access token minted
    from it; a grace-period retry does the same with a token already revoked. The
    password change expires that access token first (revoking the consent's family),
    then revokes the user's refresh tokens again. On MySQL/MariaDB an UPDATE locks
    every row its index scan reaches, revoked ones too: it waited for the retry's
    revoked token while the retry waited for the access token (MariaDB: "Deadlock
    found", a 500 at the token endpoint; tests/test_concurrency_live.py met it).
    """
    from offline_access import signals

    api = Client()
    issued = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    rotated = refresh(api, application, issued["refresh_token"])
    assert rotated.status_code == 200, rotated.content
    presented = RefreshToken.objects.get(token_checksum=stored_checksum(issued["refresh_token"]))
    assert presented.revoked is not None  # rotated: only a grace-period retry may present it
    retry_holds_lock, retry_go = threading.Event(), threading.Event()

    def grace_period_retry():
        # DOT's lock order (OAuth2Validator._save_bearer_token), held between the two.
        with transaction.atomic():
            RefreshToken.objects.select_for_update().get(pk=presented.pk)
            retry_holds_lock.set()
            assert retry_go.wait(timeout=10)
            threading.Event().wait(0.5)  # the password change reaches the refresh tokens meanwhile
            return AccessToken.objects.select_for_update().filter(source_refresh_token=presented).first()

    has_listeners = signals.offline_tokens_revoked.has_listeners
    revocation_passes = []

    def second_pass_after_the_retry_locked(sender=None):
        # Called at the start of each pass over token families; the first pass has
        # expired the family's access tokens when the second one begins.
        revocation_passes.append(sender)
        if len(revocation_passes) == 2:
            retrying = in_thread(grace_period_retry)
            revocation_passes.append(retrying)
            assert retry_holds_lock.wait(timeout=10)
            retry_go.set()
        return has_listeners(sender)

    monkeypatch.setattr(signals.offline_tokens_revoked, "has_listeners", second_pass_after_the_retry_locked)

    def change_password():
        account = type(user).objects.get(pk=user.pk)
        account.set_password("a brand new password")
        account.save()

    finish(*in_thread(change_password))
    assert len(revocation_passes) >= 3, "the password change made fewer than two passes"
    retried = finish(*revocation_passes[2])

    # The retry ran to its end once the change committed, and found no access token: the
    # change revoked it with its family (deleted, as DOT's revoke() does).
    assert retried is None
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(expires__gt=timezone.now()).exists()


@pytest.mark.skipif(connection.vendor != "mysql", reason="InnoDB's deadlock victims are re-run on MySQL only")
def test_a_token_save_chosen_as_a_deadlock_victim_is_run_once_more(browser, application, monkeypatch):
    """MySQL's manual: re-issue a transaction a deadlock rolled back (validators.py says where it happens)."""
    from django.db import OperationalError
    from oauth2_provider.oauth2_validators import OAuth2Validator

    issued = exchange_code(Client(), application, get_code(browser, application, prompt="consent")).json()
    original, attempts = OAuth2Validator.save_bearer_token, []

    def deadlocked_once(self, token, request, *args, **kwargs):
        attempts.append(dict(token))
        if len(attempts) == 1:
            with transaction.atomic():  # as InnoDB does: the victim's work is rolled back
                original(self, token, request, *args, **kwargs)
                raise OperationalError(1213, "Deadlock found when trying to get lock")
        return original(self, token, request, *args, **kwargs)

    monkeypatch.setattr(OAuth2Validator, "save_bearer_token", deadlocked_once)
    answer = refresh(Client(), application, issued["refresh_token"])

    assert answer.status_code == 200, answer.content
    assert len(attempts) == 2
    assert attempts[1] == attempts[0]  # the token as it was before the first attempt
    assert answer.json()["refresh_token"] != issued["refresh_token"]
    assert RefreshToken.objects.filter(revoked__isnull=True).count() == 1
    assert AccessToken.objects.count() == 1
