"""A replayed authorization code revokes the tokens it produced (RFC 6749 sections 4.1.2, 10.5).

The second presentation of a code gets ``invalid_grant`` (DOT deleted the code
at the first exchange). The app also remembers, as a keyed hash, which token
family a code produced, so the replay revokes that family's refresh and access
tokens and records why on the consent's history.
"""

from __future__ import annotations

import pytest
from oauth2_provider.models import get_access_token_model, get_grant_model

from offline_access import services
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import client_auth, exchange_code, get_code, refresh

AccessToken = get_access_token_model()
Grant = get_grant_model()


def introspect(api, application, token: str) -> dict:
    response = api.post("/o/introspect/", {"token": token, **client_auth(application)})
    assert response.status_code == 200, response.content
    return response.json()


def userinfo(api, access_token: str):
    return api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")


def test_replayed_code_revokes_the_refresh_and_access_tokens_it_produced(browser, api, user, application):
    code = get_code(browser, application, prompt="consent")
    first = exchange_code(api, application, code).json()
    assert introspect(api, application, first["access_token"])["active"] is True

    replay = exchange_code(api, application, code)

    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    after = refresh(api, application, first["refresh_token"])
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    assert introspect(api, application, first["access_token"])["active"] is False
    assert userinfo(api, first["access_token"]).status_code == 401
    consent = Consent.objects.get()
    assert consent.status == Consent.Status.ACTIVE  # the user's consent stands; the leaked code's tokens go
    event = consent.events.order_by("pk").last()
    assert event.action == ConsentEvent.Action.CODE_REPLAYED
    assert event.via == ConsentEvent.Via.SYSTEM
    assert event.actor is None
    assert "replayed" in event.reason
    assert OfflineTokenFamily.objects.get().ended_at is not None


def test_replay_after_a_rotation_revokes_the_whole_family(browser, api, user, application):
    code = get_code(browser, application, prompt="consent")
    first = exchange_code(api, application, code).json()
    rotated = refresh(api, application, first["refresh_token"]).json()

    exchange_code(api, application, code)

    assert refresh(api, application, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    assert introspect(api, application, rotated["access_token"])["active"] is False


def test_replay_leaves_other_families_of_the_same_consent_alone(browser, api, user, application):
    leaked = get_code(browser, application, prompt="consent")
    exchange_code(api, application, leaked)
    laptop = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()

    exchange_code(api, application, leaked)

    assert "refresh_token" in refresh(api, application, laptop["refresh_token"]).json()


def test_replay_by_another_client_revokes_nothing(browser, api, user, application):
    """Another client cannot end this client's tokens by presenting its code (it gets invalid_grant)."""
    other = factories.ApplicationFactory(client_id="other-client")
    code = get_code(browser, application, prompt="consent")
    first = exchange_code(api, application, code).json()

    response = exchange_code(api, other, code)

    assert response.json()["error"] == "invalid_grant"
    assert "refresh_token" in refresh(api, application, first["refresh_token"]).json()


def test_unknown_code_revokes_nothing(browser, api, user, application):
    first = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    assert exchange_code(api, application, "never-issued").json()["error"] == "invalid_grant"
    assert introspect(api, application, first["access_token"])["active"] is True


def test_the_code_is_not_stored_in_clear(browser, api, user, application):
    code = get_code(browser, application, prompt="consent")
    exchange_code(api, application, code)
    family = OfflineTokenFamily.objects.get()
    assert family.code_hash
    assert code not in family.code_hash
    assert family.code_hash == services.code_hash(code)


@pytest.mark.parametrize("rounds", [1, 3])
def test_replay_is_idempotent(browser, api, user, application, rounds):
    code = get_code(browser, application, prompt="consent")
    exchange_code(api, application, code)
    for _ in range(rounds):
        assert exchange_code(api, application, code).json()["error"] == "invalid_grant"
    replayed = ConsentEvent.objects.filter(action="code_replayed")
    assert replayed.count() == 1
