"""A refresh of the client racing its batched revocation leaves no live token (issue 12).

The batches of ``services.revoke_client_offline_access`` are separate transactions, so
refreshes of the client go on between them: one of a consent not yet reached succeeds,
and the batch of that consent must then revoke what it minted; one in flight when its
consent's batch starts must be waited for and its new pair revoked. Real row locks:
PostgreSQL and MySQL/MariaDB, like tests/test_concurrency.py.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from benchmarks.revoke_client import seed_client
from offline_access import services
from offline_access.models import Consent, ConsentEvent
from offline_access.validators import OfflineAccessValidator

from .oauth import exchange_code, get_code, refresh
from .test_concurrency import finish, in_thread

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor not in ("postgresql", "mysql"),
        reason="row-lock races need a server database (the postgres and mariadb envs run them)",
    ),
]

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def client_with_a_real_family_in_the_middle(browser, application) -> dict:
    """Three users' consents, then the browser user's (issued through /o/token/), then three more."""
    seed_client(application, 6, tag="before", per_user=2)
    issued = exchange_code(Client(), application, get_code(browser, application, prompt="consent")).json()
    seed_client(application, 6, tag="after", per_user=2)
    return issued


def assert_nothing_live(application) -> None:
    now = timezone.now()
    assert not RefreshToken.objects.filter(application=application, revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(application=application, expires__gt=now).exists()
    assert not Consent.objects.filter(application=application, status=Consent.Status.ACTIVE).exists()


def test_a_refresh_in_flight_when_its_consents_batch_starts_does_not_survive(
    browser, application, monkeypatch
):
    issued = client_with_a_real_family_in_the_middle(browser, application)
    rotation_holds_lock = threading.Event()
    original = OfflineAccessValidator._create_access_token

    def slow_rotation(self, expires, request, token, source_refresh_token=None):
        if source_refresh_token is not None:
            rotation_holds_lock.set()
            threading.Event().wait(0.5)  # the batches reach this consent and wait on our locks
        return original(self, expires, request, token, source_refresh_token)

    monkeypatch.setattr(OfflineAccessValidator, "_create_access_token", slow_rotation)

    refreshing = in_thread(lambda: refresh(Client(), application, issued["refresh_token"]))
    assert rotation_holds_lock.wait(timeout=10)
    revoking = in_thread(
        lambda: services.revoke_client_offline_access(application, via=ConsentEvent.Via.COMMAND, batch_size=2)
    )
    answer = finish(*refreshing)
    result = finish(*revoking)

    assert answer.status_code == 200, answer.content  # it finished first; its new pair is revoked
    assert result.consents == 7
    assert result.batches == 4
    assert_nothing_live(application)
    refused = refresh(Client(), application, answer.json()["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_refreshes_between_batches_succeed_until_their_consent_is_reached(browser, application):
    issued = client_with_a_real_family_in_the_middle(browser, application)
    answers = []

    def refresh_between_batches(_batch):
        # Each batch has committed: the next refresh runs with no lock of the run held.
        if answers and answers[-1].status_code != 200:
            return
        token = answers[-1].json()["refresh_token"] if answers else issued["refresh_token"]
        answers.append(refresh(Client(), application, token))

    result = services.revoke_client_offline_access(
        application, via=ConsentEvent.Via.COMMAND, batch_size=2, on_batch=refresh_between_batches
    )

    # Batch 1 ended the first two consents: the browser user's (the fourth) still refreshes.
    # Batch 2 ended it, and the pair minted after batch 1 with it: refused from then on.
    assert [answer.status_code for answer in answers] == [200, 400]
    assert answers[1].json()["error"] == "invalid_grant"
    assert result.batches == 4
    assert_nothing_live(application)
