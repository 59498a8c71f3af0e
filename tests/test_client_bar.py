"""Barring a client from offline access is final for the tokens it held (issue 8, SPEC C5).

``ClientPolicy.allow_offline_access = False`` used to block refreshes only: lifting the
bar revived every old refresh token, and the access tokens lived on meanwhile. Barring
now revokes every offline token of the client and its active consents, with an event
naming the cause, however the policy is written: the policy admin, the inline on DOT's
application page, ``save()`` or ``create()`` in code, a queryset ``update()``,
``bulk_create()`` or ``bulk_update()``. Lifting the bar later revives nothing: each user
consents again.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access.models import ClientPolicy, Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import authorize_url, exchange_code, get_code, stored
from .test_admin import (
    assert_access_token_alive,
    assert_access_token_dead,
    assert_refresh_refused,
    assert_refresh_works,
    form_data,
    logged_in,
    messages_of,
    offline_tokens,
)
from .test_query_counts import LIVE_REFRESH_TOKENS_READ_QUERIES

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
Via = ConsentEvent.Via
Action = ConsentEvent.Action
#: The reason recorded on every consent a bar ends.
CLIENT_BARRED_REASON = "client barred by administrator"

#: ``ClientPolicy.save()`` barring a client, whatever the number of its users and tokens: the
#: policy's UPDATE, a savepoint, lock the client's active consents, end them, insert their
#: events, delete their unexchanged codes; then for the consents' families: lock the live
#: refresh tokens with their access tokens' keys, revoke them, delete those access tokens,
#: check none is left, expire the access tokens refreshed from the families' tokens, end
#: the families; and again for every family of the client (those without a consent too),
#: where the lock finds none left: lock, check, expire, end; release the savepoint.
BAR_QUERIES = 17 + LIVE_REFRESH_TOKENS_READ_QUERIES


def assert_barred_for_good(application, tokens: list[dict]) -> None:
    """Every old token is dead now, and stays dead once the bar is lifted."""
    for pair in tokens:
        assert_refresh_refused(application, pair["refresh_token"])
        assert_access_token_dead(pair["access_token"])
    ClientPolicy.objects.filter(application=application).update(allow_offline_access=True)
    for pair in tokens:
        assert_refresh_refused(application, pair["refresh_token"])
        assert_access_token_dead(pair["access_token"])


def assert_consent_ended_by_bar(user, application, actor, via) -> None:
    consent = Consent.objects.get(user=user, application=application)
    assert consent.status == Consent.Status.REVOKED
    assert (consent.ended_by, consent.end_reason) == (actor, CLIENT_BARRED_REASON)
    event = consent.events.get(action=Action.REVOKED)
    assert (event.actor, event.via, event.reason) == (actor, via, CLIENT_BARRED_REASON)


def test_lifting_a_bar_revives_no_refresh_token(user, application):
    """The reported attack: bar, lift, and the old refresh token worked again."""
    tokens = offline_tokens(user, application)
    policy = ClientPolicy.objects.create(application=application, allow_offline_access=False)
    assert_refresh_refused(application, tokens["refresh_token"])
    policy.allow_offline_access = True
    policy.save()
    assert_refresh_refused(application, tokens["refresh_token"])
    assert_access_token_dead(tokens["access_token"])


# The admin -------------------------------------------------------------------------------------


def test_barring_a_client_on_the_policy_add_page_revokes_its_offline_access(
    user, application, admin_client, admin_user
):
    tokens = [offline_tokens(user, application), offline_tokens(user, application)]
    url = reverse("admin:offline_access_clientpolicy_add")
    data = form_data(admin_client.get(url), "refresh_token_idle_timeout")
    data["application"] = [str(application.pk)]
    del data["allow_offline_access"]  # untick "may get offline access"

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert ClientPolicy.objects.get().allow_offline_access is False
    assert (
        "Barring the client revoked 1 consent(s), 2 refresh token(s) and 2 access token(s)."
        in messages_of(response)
    )
    assert_consent_ended_by_bar(user, application, admin_user, Via.ADMIN)
    assert_barred_for_good(application, tokens)


def test_barring_a_client_on_the_policy_change_page_then_lifting_it_revives_nothing(
    user, other_user, application, native_application, admin_client, admin_user
):
    policy = ClientPolicy.objects.create(application=application)
    tokens = offline_tokens(user, application)
    bystander = offline_tokens(user, native_application)
    url = reverse("admin:offline_access_clientpolicy_change", args=[policy.pk])
    data = form_data(admin_client.get(url), "refresh_token_idle_timeout")
    del data["allow_offline_access"]
    assert admin_client.post(url, data).status_code == 302

    assert_refresh_refused(application, tokens["refresh_token"])
    assert_access_token_dead(tokens["access_token"])
    assert_consent_ended_by_bar(user, application, admin_user, Via.ADMIN)

    # Lifting the bar through the same page: the old tokens stay dead.
    data["allow_offline_access"] = ["on"]
    assert admin_client.post(url, data).status_code == 302
    assert ClientPolicy.objects.get().allow_offline_access is True
    assert_refresh_refused(application, tokens["refresh_token"])
    assert_access_token_dead(tokens["access_token"])
    # Another client of the same user is not touched.
    assert_access_token_alive(bystander["access_token"])
    assert_refresh_works(native_application, bystander["refresh_token"])


def test_barring_a_client_on_the_application_page_inline_revokes_its_offline_access(
    user, application, admin_client, admin_user
):
    tokens = offline_tokens(user, application)
    url = reverse("admin:oauth2_provider_application_change", args=[application.pk])
    page = admin_client.get(url)
    (inline,) = [
        inline for inline in page.context["inline_admin_formsets"] if inline.formset.model is ClientPolicy
    ]
    prefix = inline.formset.prefix
    data = form_data(page, f"{prefix}-TOTAL_FORMS")
    del data[f"{prefix}-0-allow_offline_access"]
    data["_save"] = ["Save"]

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    assert ClientPolicy.objects.get().allow_offline_access is False
    assert_consent_ended_by_bar(user, application, admin_user, Via.ADMIN)
    assert_barred_for_good(application, [tokens])


# Code and shell ----------------------------------------------------------------------------------


def test_barring_a_client_with_save_in_code_revokes_its_offline_access(user, application):
    policy = ClientPolicy.objects.create(application=application)
    tokens = offline_tokens(user, application)
    policy.allow_offline_access = False
    policy.save()
    assert_consent_ended_by_bar(user, application, None, Via.COMMAND)
    # Lift it with save() as well.
    policy.allow_offline_access = True
    policy.save()
    assert_refresh_refused(application, tokens["refresh_token"])
    assert_access_token_dead(tokens["access_token"])


def test_creating_a_barring_policy_revokes_the_clients_offline_access(user, application):
    tokens = offline_tokens(user, application)
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    assert_consent_ended_by_bar(user, application, None, Via.COMMAND)
    assert_barred_for_good(application, [tokens])


def test_barring_with_a_queryset_update_revokes_too(user, application, native_application):
    ClientPolicy.objects.create(application=application)
    ClientPolicy.objects.create(application=native_application)
    tokens = offline_tokens(user, application)
    bystander = offline_tokens(user, native_application)
    # Filtered on the very field it changes: the revocation must not re-read that filter.
    updated = ClientPolicy.objects.filter(application=application, allow_offline_access=True).update(
        allow_offline_access=False
    )
    assert updated == 1
    assert_consent_ended_by_bar(user, application, None, Via.COMMAND)
    assert_barred_for_good(application, [tokens])
    assert_refresh_works(native_application, bystander["refresh_token"])


def test_barring_with_bulk_create_and_bulk_update_revokes_too(user, application, native_application):
    tokens = offline_tokens(user, application)
    other = offline_tokens(user, native_application)
    ClientPolicy.objects.bulk_create([ClientPolicy(application=application, allow_offline_access=False)])
    assert_consent_ended_by_bar(user, application, None, Via.COMMAND)
    assert_barred_for_good(application, [tokens])

    policy = ClientPolicy.objects.create(application=native_application)
    policy.allow_offline_access = False
    ClientPolicy.objects.bulk_update([policy], ["allow_offline_access"])
    assert_consent_ended_by_bar(user, native_application, None, Via.COMMAND)
    assert_barred_for_good(native_application, [other])


# What a bar ends, and what it leaves ------------------------------------------------------------------


def test_a_bar_ends_enduring_consents_so_lifting_it_needs_a_new_consent(user, application):
    factories.EnduringConsentFactory(user=user, application=application)
    tokens = exchange_code(Client(), application, get_code(logged_in(user), application)).json()
    assert "refresh_token" in tokens  # the enduring consent let offline_access through
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    assert not Consent.objects.active().filter(application=application).exists()
    ClientPolicy.objects.update(allow_offline_access=True)

    # Without prompt=consent nothing covers offline access any more.
    body = exchange_code(Client(), application, get_code(logged_in(user), application)).json()
    assert "refresh_token" not in body
    assert "offline_access" not in body["scope"].split()
    assert_refresh_refused(application, tokens["refresh_token"])
    # A new consent on the consent screen starts afresh.
    assert "refresh_token" in offline_tokens(user, application)


def test_a_bar_revokes_tokens_of_families_without_a_consent(user, application):
    tokens = offline_tokens(user, application)
    OfflineTokenFamily.objects.update(consent=None)
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    assert RefreshToken.objects.get(token=stored(tokens["refresh_token"])).revoked is not None
    assert_access_token_dead(tokens["access_token"])


def test_a_bar_deletes_unexchanged_codes(user, application):
    code = get_code(logged_in(user), application, prompt="consent")
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    ClientPolicy.objects.update(allow_offline_access=True)
    response = exchange_code(Client(), application, code)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_saving_a_barred_policy_again_records_nothing_new(user, application):
    offline_tokens(user, application)
    policy = ClientPolicy.objects.create(application=application, allow_offline_access=False)
    events = ConsentEvent.objects.count()
    policy.refresh_token_idle_timeout = timedelta(days=3)
    policy.save()
    assert ConsentEvent.objects.count() == events


def test_saving_other_fields_of_a_stale_barred_copy_revokes_nothing(user, application):
    tokens = offline_tokens(user, application)
    policy = ClientPolicy.objects.create(application=application)
    policy.allow_offline_access = False  # never written: update_fields leaves it out
    policy.refresh_token_idle_timeout = timedelta(days=3)
    policy.save(update_fields=["refresh_token_idle_timeout"])
    assert ClientPolicy.objects.get().allow_offline_access is True
    assert_refresh_works(application, tokens["refresh_token"])


def test_saving_an_allowing_policy_revokes_nothing(user, application, django_assert_num_queries):
    tokens = offline_tokens(user, application)
    policy = ClientPolicy(application=application, refresh_token_idle_timeout=timedelta(days=3))
    with django_assert_num_queries(1):
        policy.save()
    assert_access_token_alive(tokens["access_token"])
    assert_refresh_works(application, tokens["refresh_token"])


def test_the_consent_screen_offers_no_offline_access_while_barred(browser, application):
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    response = browser.get(authorize_url(application, prompt="consent"))
    assert response.status_code == 200
    assert response.context["offline_access"] is False


@pytest.mark.parametrize("users", [2, 5])
def test_barring_costs_a_fixed_number_of_queries(users, application, django_assert_num_queries):
    policy = ClientPolicy.objects.create(application=application)
    tokens = [
        offline_tokens(factories.UserFactory(username=f"user-{i}"), application)
        for i in range(users)
        for _device in range(2)
    ]
    policy.allow_offline_access = False
    with django_assert_num_queries(BAR_QUERIES):
        policy.save()
    assert not RefreshToken.objects.filter(application=application, revoked__isnull=True).exists()
    assert ConsentEvent.objects.filter(action=Action.REVOKED).count() == users
    assert_access_token_dead(tokens[-1]["access_token"])
