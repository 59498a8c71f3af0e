"""Races settled by the database (SPEC: "Where it runs"); they need real row locks.

SQLite has no row locks and serialises writers, so these tests run in the
PostgreSQL env only (tox -e py311-dj52-postgres; CI runs it).
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access import services
from offline_access.models import Consent, ConsentEvent
from offline_access.validators import OfflineAccessValidator

from .oauth import exchange_code, get_code, refresh

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="row-lock races need PostgreSQL (the postgres env runs them)",
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
