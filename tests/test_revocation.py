"""Token revocation (RFC 7009) at /o/revoke_token/: a token of an offline family ends the family.

A refresh token stands for one device (its token family). Revoking it, or an
access token issued from it, ends the whole family: the current refresh token,
the predecessor a rotation left usable for the grace period, and every access
token issued from the family stop working at once, at the token endpoint,
userinfo and introspection alike. The consent stays active (the user still
allows the client; it has to sign in again) and gets a ``devices_revoked``
event naming the revocation endpoint. Another client's token is left alone and
the answer is still 200 (RFC 7009 2.2).
"""

from __future__ import annotations

import pytest
from django.test import Client
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access import services
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .factories import CLIENT_SECRET
from .oauth import basic_authorization, client_auth, exchange_code, get_code, offline_tokens, refresh, stored

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

URL = "/o/revoke_token/"


def rotate(api: Client, application, tokens: dict) -> dict:
    response = refresh(api, application, tokens["refresh_token"])
    assert response.status_code == 200, response.content
    return response.json()


def revoke(api: Client, application, token: str, hint: str | None = None):
    data = {"token": token, **client_auth(application)}
    if hint:
        data["token_type_hint"] = hint
    response = api.post(URL, data)
    assert response.status_code == 200, response.content  # RFC 7009 2.2: always 200
    return response


def introspect(api: Client, application, token: str) -> dict:
    """As the owning (confidential) client."""
    response = api.post(
        "/o/introspect/",
        {"token": token},
        HTTP_AUTHORIZATION=basic_authorization(application.client_id, CLIENT_SECRET),
    )
    assert response.status_code == 200, response.content
    return response.json()


def assert_refresh_refused(api: Client, application, refresh_token: str) -> None:
    response = refresh(api, application, refresh_token)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"


def assert_access_token_refused(api: Client, application, access_token: str) -> None:
    response = api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert introspect(api, application, access_token) == {"active": False}


def assert_access_token_works(api: Client, application, access_token: str) -> None:
    assert api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}").status_code == 200
    assert introspect(api, application, access_token)["active"] is True


def family_of(refresh_token: str) -> OfflineTokenFamily:
    token = RefreshToken.objects.get(token=stored(refresh_token))
    return OfflineTokenFamily.objects.get(token_family=token.token_family)


def revocation_events(consent: Consent):
    return consent.events.filter(
        action=ConsentEvent.Action.DEVICES_REVOKED, via=ConsentEvent.Via.REVOCATION_ENDPOINT
    )


@pytest.fixture
def other_application(db):
    return factories.ApplicationFactory(name="Backup Tool", client_id="backup-tool")


@pytest.fixture
def rotated(browser, api, application):
    """A device that refreshed once: its first pair, and the pair it was rotated into.

    Still within the grace period, so the first refresh token still works for a retry.
    """
    first = offline_tokens(browser, api, application)
    second = rotate(api, application, first)
    return first, second


@pytest.mark.parametrize("hint", ["refresh_token", None, "access_token"])
def test_revoking_a_refresh_token_ends_its_whole_family(api, application, user, rotated, hint):
    first, second = rotated
    # The predecessor works within the grace period before the revocation (it replays the pair).
    assert refresh(api, application, first["refresh_token"]).status_code == 200

    revoke(api, application, second["refresh_token"], hint)

    assert_refresh_refused(api, application, second["refresh_token"])
    assert_refresh_refused(api, application, first["refresh_token"])  # the grace-period predecessor
    for tokens in (first, second):
        assert_access_token_refused(api, application, tokens["access_token"])
        assert introspect(api, application, tokens["refresh_token"]) == {"active": False}
    assert family_of(second["refresh_token"]).ended_at is not None
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not any(token.is_valid() for token in AccessToken.objects.all())

    consent = Consent.objects.get(user=user, application=application)
    assert consent.state() == Consent.Status.ACTIVE
    event = revocation_events(consent).get()
    assert event.actor is None
    assert event.reason == services.CLIENT_REVOCATION_REASON


def test_revoking_an_access_token_ends_its_family_too(api, application, user, rotated):
    """RFC 7009 2.1: the server MAY revoke the refresh token as well; here the whole family goes."""
    first, second = rotated
    revoke(api, application, second["access_token"], "access_token")

    assert_refresh_refused(api, application, second["refresh_token"])
    assert_refresh_refused(api, application, first["refresh_token"])
    assert_access_token_refused(api, application, second["access_token"])
    consent = Consent.objects.get(user=user, application=application)
    assert consent.state() == Consent.Status.ACTIVE
    assert revocation_events(consent).count() == 1


def test_revoking_an_access_token_refreshed_from_the_family_ends_it(
    api, application, user, rotated, dot_settings
):
    """Without rotation the refresh token keeps its row; an access token still leads to its family."""
    dot_settings(ROTATE_REFRESH_TOKEN=False)
    _first, second = rotated
    third = rotate(api, application, second)
    assert third["refresh_token"] == second["refresh_token"]
    revoke(api, application, third["access_token"])
    assert_refresh_refused(api, application, second["refresh_token"])
    assert_access_token_refused(api, application, third["access_token"])


def test_revocation_ends_only_that_device(browser, api, application, user, rotated):
    first, second = rotated
    laptop = offline_tokens(browser, api, application)

    revoke(api, application, second["refresh_token"])

    assert_refresh_refused(api, application, second["refresh_token"])
    assert family_of(laptop["refresh_token"]).ended_at is None
    assert_access_token_works(api, application, laptop["access_token"])
    assert rotate(api, application, laptop)["refresh_token"]


def test_revoking_again_changes_nothing_and_records_nothing(api, application, user, rotated):
    _first, second = rotated
    revoke(api, application, second["refresh_token"])
    revoke(api, application, second["refresh_token"])
    revoke(api, application, second["access_token"])
    consent = Consent.objects.get(user=user, application=application)
    assert revocation_events(consent).count() == 1


def test_another_clients_token_is_left_alone_with_200(api, application, other_application, user, rotated):
    """RFC 7009 2.2: 200 whatever the token; only the owner's tokens are revoked (2.1)."""
    _first, second = rotated
    for token, hint in ((second["refresh_token"], "refresh_token"), (second["access_token"], None)):
        response = revoke(api, other_application, token, hint)
        assert response.content == b""

    assert_access_token_works(api, application, second["access_token"])
    assert family_of(second["refresh_token"]).ended_at is None
    assert not revocation_events(Consent.objects.get(user=user, application=application)).exists()
    assert rotate(api, application, second)["refresh_token"]


def test_unauthenticated_revocation_is_refused_and_revokes_nothing(api, application, rotated):
    _first, second = rotated
    response = api.post(URL, {"token": second["refresh_token"], "client_id": application.client_id})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert family_of(second["refresh_token"]).ended_at is None


def test_public_client_revokes_its_own_refresh_token(browser, api, native_application, user):
    """RFC 7009 2.1: a public client identifies itself with its client_id."""
    tokens = offline_tokens(browser, api, native_application)
    revoke(api, native_application, tokens["refresh_token"])
    assert_refresh_refused(api, native_application, tokens["refresh_token"])
    response = api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert response.status_code == 401
    consent = Consent.objects.get(user=user, application=native_application)
    assert consent.state() == Consent.Status.ACTIVE
    assert revocation_events(consent).count() == 1


def test_access_token_of_no_family_is_revoked_alone(browser, api, application):
    """No offline_access granted, so no refresh token and no family: DOT's revocation."""
    code = get_code(browser, application, scope="openid")
    tokens = exchange_code(api, application, code).json()
    assert "refresh_token" not in tokens
    revoke(api, application, tokens["access_token"])
    response = api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert response.status_code == 401
    assert not ConsentEvent.objects.filter(via=ConsentEvent.Via.REVOCATION_ENDPOINT).exists()


def test_after_revocation_the_client_can_be_allowed_again(browser, api, application, user, rotated):
    """The consent stays: a new sign-in (with the consent screen) starts a new family under it."""
    _first, second = rotated
    revoke(api, application, second["refresh_token"])
    consent = Consent.objects.get(user=user, application=application)
    again = offline_tokens(browser, api, application)
    assert family_of(again["refresh_token"]).consent_id == consent.pk
    assert rotate(api, application, again)["refresh_token"]
