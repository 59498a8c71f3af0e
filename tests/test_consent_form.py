"""The consent form: used once, never after a revocation, and all-or-nothing with its code.

The Allow/Deny form carries the authorization request signed (SPEC P3). A
signature alone would let the same form be posted again, so each rendering is
also single use (a nonce claimed in the database), and a form rendered before
the user (or anyone) revoked that user's consent for that client is refused.
The consent it records, its event and its signal commit together with the
authorization code, or not at all.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from oauth2_provider.models import get_grant_model, get_refresh_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator

from offline_access import services, signals
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from .oauth import authorize_url, consent_form_data, exchange_code, redirect_params, submit_consent

Grant = get_grant_model()
RefreshToken = get_refresh_token_model()


def assert_refused_page(response, words: str) -> None:
    """A 400 error page: no redirect, so no code and no error sent to the client."""
    assert response.status_code == 400, (response.status_code, response.get("Location"))
    assert "Location" not in response
    assert b"code=" not in response.content
    assert words.encode() in response.content


def receiving(signal):
    calls: list[dict] = []

    def receiver(sender, **kwargs):
        calls.append(kwargs)

    signal.connect(receiver, weak=False)
    return calls, lambda: signal.disconnect(receiver)


# Single use --------------------------------------------------------------------------------------


def test_allow_posted_twice_gets_one_code_one_consent_one_refresh_family(browser, api, user, application):
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)

    first = submit_consent(browser, url, screen, "allow")
    code = redirect_params(first)["code"]
    replay = submit_consent(browser, url, screen, "allow")

    assert_refused_page(replay, "already been used")
    assert Grant.objects.count() == 1
    assert ConsentEvent.objects.count() == 1
    assert Consent.objects.get().events.get().action == ConsentEvent.Action.GRANTED
    assert "refresh_token" in exchange_code(api, application, code).json()
    assert OfflineTokenFamily.objects.count() == 1
    assert RefreshToken.objects.count() == 1


def test_deny_then_allow_with_the_same_form_is_refused(browser, user, application):
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)

    assert redirect_params(submit_consent(browser, url, screen, "deny"))["error"] == "access_denied"
    replay = submit_consent(browser, url, screen, "allow")

    assert_refused_page(replay, "already been used")
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()


def test_each_rendering_is_its_own_form(browser, application):
    url = authorize_url(application, prompt="consent")
    first_screen, second_screen = browser.get(url), browser.get(url)
    assert consent_form_data(first_screen) != consent_form_data(second_screen)

    assert "code" in redirect_params(submit_consent(browser, url, first_screen))
    assert "code" in redirect_params(submit_consent(browser, url, second_screen))


def test_used_forms_are_forgotten_once_they_could_no_longer_be_posted(browser, application, monkeypatch):
    from offline_access.models import ConsentFormUse

    url = authorize_url(application, prompt="consent")
    submit_consent(browser, url, browser.get(url))
    assert ConsentFormUse.objects.count() == 1

    later = timezone.now() + timedelta(minutes=11)  # past CONSENT_FORM_MAX_AGE
    monkeypatch.setattr(timezone, "now", lambda: later)
    submit_consent(browser, url, browser.get(url))

    assert ConsentFormUse.objects.count() == 1  # the old row went, the new one stays
    assert ConsentFormUse.objects.get().expires_at > later


def test_a_form_without_a_nonce_is_refused(browser, application, user):
    """A payload signed by an older version (no nonce) cannot be replayed indefinitely either."""
    from offline_access.forms import sign_consent_request

    url = authorize_url(application, prompt="consent")
    signed = sign_consent_request(
        {
            "user": user.pk,
            "scopes": ["openid"],
            "offline_via": None,
            "credentials": {
                "client_id": application.client_id,
                "redirect_uri": "https://client.example/callback",
                "response_type": "code",
            },
        }
    )
    response = browser.post(url, {"request": signed, "decision": "allow"})
    assert response.status_code == 400
    assert not Grant.objects.exists()


# Revocation between rendering and posting --------------------------------------------------------


def test_form_rendered_before_revocation_on_connected_apps_is_refused(browser, api, user, application):
    url = authorize_url(application, prompt="consent")
    code = redirect_params(submit_consent(browser, url, browser.get(url)))["code"]
    assert "refresh_token" in exchange_code(api, application, code).json()
    consent = Consent.objects.get()
    stale_screen = browser.get(url)

    revoked = browser.post(f"/o/connected-apps/{consent.pk}/revoke/")
    assert revoked.status_code == 302
    response = submit_consent(browser, url, stale_screen, "allow")

    assert_refused_page(response, "access was revoked")
    assert not Consent.objects.active().exists()
    assert Consent.objects.get().status == Consent.Status.REVOKED
    assert not Grant.objects.exists()


def test_form_rendered_before_an_administrator_revoked_is_refused(browser, user, application, admin_user):
    url = authorize_url(application, prompt="consent")
    submit_consent(browser, url, browser.get(url))
    stale_screen = browser.get(url)
    services.revoke_consents(
        Consent.objects.filter(user=user), actor=admin_user, reason="lost laptop", via=ConsentEvent.Via.ADMIN
    )

    assert_refused_page(submit_consent(browser, url, stale_screen, "allow"), "access was revoked")
    assert not Consent.objects.active().exists()


def test_form_rendered_after_the_revocation_is_accepted(browser, user, application):
    url = authorize_url(application, prompt="consent")
    submit_consent(browser, url, browser.get(url))
    services.revoke_consents(Consent.objects.filter(user=user), actor=user, via=ConsentEvent.Via.USER)

    fresh_screen = browser.get(url)
    assert "code" in redirect_params(submit_consent(browser, url, fresh_screen, "allow"))
    assert Consent.objects.active().count() == 1


def test_revocation_for_another_client_or_user_does_not_refuse_the_form(
    browser, user, other_user, application, admin_user
):
    from . import factories

    other_client = factories.ApplicationFactory(name="Other", client_id="other")
    for who, client in ((user, other_client), (other_user, application)):
        factories.ConsentFactory(user=who, application=client)
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)
    services.revoke_consents(
        Consent.objects.all(), actor=admin_user, reason="cleanup", via=ConsentEvent.Via.ADMIN
    )

    assert "code" in redirect_params(submit_consent(browser, url, screen, "allow"))


# Consent and code together ---------------------------------------------------------------------


class CodeStorageFails(Exception):
    pass


def test_consent_is_not_recorded_when_the_code_cannot_be_saved(
    browser, user, application, monkeypatch, django_capture_on_commit_callbacks
):
    def broken_save(self, client_id, code, request, *args, **kwargs):
        raise CodeStorageFails("database went away")

    monkeypatch.setattr(OAuth2Validator, "save_authorization_code", broken_save)
    granted, disconnect = receiving(signals.consent_granted)
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)
    try:
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(CodeStorageFails):
            submit_consent(browser, url, screen, "allow")
    finally:
        disconnect()

    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()
    assert granted == []


def test_consent_is_not_recorded_when_the_request_fails_late(
    browser, user, application, django_capture_on_commit_callbacks
):
    """The client's redirect URI was changed between rendering and Allow: oauthlib refuses at POST."""
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)
    application.redirect_uris = "https://client.example/elsewhere"
    application.save()
    granted, disconnect = receiving(signals.consent_granted)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = submit_consent(browser, url, screen, "allow")
    finally:
        disconnect()

    assert response.status_code == 400
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()
    assert granted == []


@pytest.fixture
def admin_user(db):
    from . import factories

    return factories.UserFactory(username="admin", is_staff=True, is_superuser=True)
