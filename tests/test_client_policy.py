"""Per-client offline-access rules (ClientPolicy): who may get offline access, and for how long."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access.models import ClientPolicy, OfflineTokenFamily

from .oauth import authorize_url, exchange_code, get_code, refresh, stored

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def offline_pair(browser, api, application) -> dict:
    body = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    assert "refresh_token" in body, body
    return body


def age(raw_refresh_token: str, by: timedelta) -> None:
    past = timezone.now() - by
    row = RefreshToken.objects.get(token=stored(raw_refresh_token))
    RefreshToken.objects.filter(pk=row.pk).update(created=past, updated=past)
    AccessToken.objects.filter(pk=row.access_token_id).update(created=past, updated=past)


def test_client_barred_from_offline_access_gets_no_refresh_token(browser, api, application):
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    response = browser.get(authorize_url(application, prompt="consent"))
    assert response.status_code == 200
    assert response.context["offline_access"] is False
    code = get_code(browser, application, prompt="consent")
    body = exchange_code(api, application, code).json()
    assert "refresh_token" not in body
    assert "offline_access" not in body["scope"].split()


def test_client_barred_after_issuance_can_no_longer_refresh(browser, api, application):
    body = offline_pair(browser, api, application)
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    response = refresh(api, application, body["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_client_barred_between_authorization_and_code_exchange_gets_no_refresh_token(
    browser, api, application
):
    code = get_code(browser, application, prompt="consent")
    ClientPolicy.objects.create(application=application, allow_offline_access=False)
    body = exchange_code(api, application, code).json()
    assert "refresh_token" not in body


def test_client_allowed_explicitly_behaves_as_default(browser, api, application):
    ClientPolicy.objects.create(application=application, allow_offline_access=True)
    body = offline_pair(browser, api, application)
    assert refresh(api, application, body["refresh_token"]).status_code == 200


def test_client_idle_timeout_overrides_the_global_one(browser, api, application):
    ClientPolicy.objects.create(application=application, refresh_token_idle_timeout=timedelta(hours=1))
    body = offline_pair(browser, api, application)
    age(body["refresh_token"], timedelta(hours=2))  # well within the global 30 days
    assert refresh(api, application, body["refresh_token"]).json()["error"] == "invalid_grant"


def test_client_idle_timeout_can_be_longer_than_the_global_one(browser, api, application):
    ClientPolicy.objects.create(application=application, refresh_token_idle_timeout=timedelta(days=90))
    body = offline_pair(browser, api, application)
    age(body["refresh_token"], timedelta(days=60))  # past the global 30 days
    assert refresh(api, application, body["refresh_token"]).status_code == 200


def test_client_absolute_lifetime_overrides_the_global_one(browser, api, application):
    ClientPolicy.objects.create(application=application, refresh_token_absolute_lifetime=timedelta(days=7))
    body = offline_pair(browser, api, application)
    OfflineTokenFamily.objects.update(created_at=timezone.now() - timedelta(days=8))
    assert refresh(api, application, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert OfflineTokenFamily.objects.get().ended_at is not None


def test_another_clients_policy_does_not_apply(browser, api, application, native_application):
    ClientPolicy.objects.create(application=native_application, allow_offline_access=False)
    body = offline_pair(browser, api, application)
    assert refresh(api, application, body["refresh_token"]).status_code == 200
