"""Signals: sent once, after the commit, with the documented arguments; a failing receiver breaks nothing."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from offline_access import services, signals
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import exchange_code, get_code, refresh


@contextmanager
def receiving(signal):
    calls = []

    def receiver(sender, **kwargs):
        calls.append({"sender": sender, **kwargs})

    signal.connect(receiver, weak=False)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)


def offline_pair(browser, api, application):
    return exchange_code(api, application, get_code(browser, application, prompt="consent")).json()


def test_consent_granted_then_renewed_on_the_consent_screen(
    browser, user, application, django_capture_on_commit_callbacks
):
    with receiving(signals.consent_granted) as granted, receiving(signals.consent_renewed) as renewed:
        with django_capture_on_commit_callbacks(execute=True):
            get_code(browser, application, prompt="consent")
        with django_capture_on_commit_callbacks(execute=True):
            get_code(browser, application, prompt="consent")
    consent = Consent.objects.get()
    assert [(call["sender"], call["consent"].pk, call["actor"], call["via"]) for call in granted] == [
        (Consent, consent.pk, user, ConsentEvent.Via.CONSENT_SCREEN)
    ]
    assert [call["consent"].pk for call in renewed] == [consent.pk]


def test_signals_wait_for_the_commit(user, application, django_capture_on_commit_callbacks):
    with receiving(signals.consent_granted) as granted:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.grant_enduring_consent(user=user, application=application, reason="contract")
        assert granted == []  # not yet committed
        for callback in callbacks:
            callback()
    assert len(granted) == 1 and granted[0]["via"] == ConsentEvent.Via.ADMIN


def test_rolled_back_change_sends_nothing(user, application, django_capture_on_commit_callbacks):
    with receiving(signals.consent_granted) as granted:
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(RuntimeError), transaction.atomic():
                services.grant_enduring_consent(user=user, application=application, reason="contract")
                raise RuntimeError("rolled back")
    assert granted == []
    assert not Consent.objects.exists()


def test_offline_token_issued_and_refreshed(browser, api, application, django_capture_on_commit_callbacks):
    with (
        receiving(signals.offline_token_issued) as issued,
        receiving(signals.offline_token_refreshed) as refreshed,
    ):
        with django_capture_on_commit_callbacks(execute=True):
            body = offline_pair(browser, api, application)
        with django_capture_on_commit_callbacks(execute=True):
            assert refresh(api, application, body["refresh_token"]).status_code == 200
    family = OfflineTokenFamily.objects.get()
    assert [(call["family"].pk, call["consent_id"]) for call in issued] == [(family.pk, family.consent_id)]
    assert [call["family"].pk for call in refreshed] == [family.pk]


def test_no_issued_signal_without_offline_access(
    browser, api, application, django_capture_on_commit_callbacks
):
    with receiving(signals.offline_token_issued) as issued:
        with django_capture_on_commit_callbacks(execute=True):
            body = exchange_code(api, application, get_code(browser, application, scope="openid")).json()
    assert "refresh_token" not in body
    assert issued == []


def test_revocation_sends_consent_revoked_and_tokens_revoked(
    browser, api, user, application, admin_user, django_capture_on_commit_callbacks
):
    offline_pair(browser, api, application)
    family = OfflineTokenFamily.objects.get()
    with receiving(signals.consent_revoked) as revoked, receiving(signals.offline_tokens_revoked) as tokens:
        with django_capture_on_commit_callbacks(execute=True):
            services.revoke_consents(
                Consent.objects.all(), actor=admin_user, reason="lost phone", via="admin"
            )
    assert [(call["consent"].status, call["actor"], call["reason"], call["via"]) for call in revoked] == [
        (Consent.Status.REVOKED, admin_user, "lost phone", "admin")
    ]
    assert [([f.pk for f in call["families"]], call["actor"], call["via"]) for call in tokens] == [
        ([family.pk], admin_user, "admin")
    ]


def test_expiry_found_at_refresh_sends_consent_expired(api, user, django_capture_on_commit_callbacks):
    application = factories.ApplicationFactory(authorization_grant_type="password", client_id="pw")
    consent = factories.EnduringConsentFactory(user=user, application=application)
    body = api.post(
        "/o/token/",
        {
            "grant_type": "password",
            "username": user.username,
            "password": factories.PASSWORD,
            "scope": "openid offline_access",
            "client_id": application.client_id,
            "client_secret": factories.CLIENT_SECRET,
        },
    ).json()
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with receiving(signals.consent_expired) as expired:
        with django_capture_on_commit_callbacks(execute=True):
            assert refresh(api, application, body["refresh_token"]).status_code == 400
    assert [call["consent"].pk for call in expired] == [consent.pk]


def test_failing_receiver_does_not_break_the_change(
    browser, user, application, django_capture_on_commit_callbacks, caplog
):
    def broken(sender, **kwargs):
        raise ConnectionError("mail server down")

    signals.consent_granted.connect(broken, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            get_code(browser, application, prompt="consent")
    finally:
        signals.consent_granted.disconnect(broken)
    assert Consent.objects.filter(status=Consent.Status.ACTIVE).count() == 1
    assert "failed" in caplog.text


def test_example_site_mails_the_user_when_an_app_gains_offline_access(
    browser, user, application, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=True):
        get_code(browser, application, prompt="consent")
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [user.email]
    assert "Calendar Sync can now access your account while you are away" == mailoutbox[0].subject
