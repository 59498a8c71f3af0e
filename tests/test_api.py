"""The REST API (issue 4, "REST API"; the ``drf`` extra), mounted at /api/offline-access/.

For the signed-in user (session with CSRF, or a bearer token carrying
``OFFLINE_ACCESS["API_SCOPE"]``): list their consents in force and their live
token families, revoke one of either. For staff holding the admin's model
permissions: list and filter every consent, grant or renew an enduring consent,
revoke one consent or everything of a user and/or client. Every action goes
through offline_access.services, so it writes the same events (SPEC C4, via
"api") and the token endpoint refuses the revoked tokens at once (SPEC C5).
Errors come in DRF's usual shape; lists are paginated; the example site serves
an OpenAPI 3 schema at /api/schema/.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from oauth2_provider.models import get_access_token_model, get_refresh_token_model
from rest_framework.test import APIClient

from offline_access.conf import settings as offline_access_settings
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import exchange_code, get_code, offline_tokens, refresh, stored
from .test_connected_apps import family_of, userinfo

#: GET /api/offline-access/me/consents/ with a session: session, user, count, page.
MY_CONSENTS_QUERIES = 4
#: GET /api/offline-access/me/devices/ with a session: session, user, count, page.
MY_DEVICES_QUERIES = 4
#: GET /api/offline-access/consents/ by a staff member holding view_consent through
#: user_permissions: session, user, user permissions, group permissions, count, page.
STAFF_CONSENTS_QUERIES = 6

BASE = "/api/offline-access/"
MY_CONSENTS = BASE + "me/consents/"
MY_DEVICES = BASE + "me/devices/"
CONSENTS = BASE + "consents/"
ENDURING = BASE + "consents/enduring/"
REVOKE_EVERYTHING = BASE + "revoke/"
SCHEMA = "/api/schema/"

VIEW_CONSENT = "offline_access.view_consent"
REVOKE_CONSENT = "offline_access.revoke_consent"
REVOKE_TOKEN_FAMILY = "offline_access.revoke_token_family"
GRANT_ENDURING_CONSENT = "offline_access.grant_enduring_consent"
STAFF_PERMISSIONS = (VIEW_CONSENT, REVOKE_CONSENT, REVOKE_TOKEN_FAMILY, GRANT_ENDURING_CONSENT)

API_SCOPE = "connected_apps"
SCOPE_DESCRIPTIONS = settings.OAUTH2_PROVIDER["SCOPES"]

NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
NO_PERMISSION = {"detail": "You do not have permission to perform this action."}
BEARER_NEEDS_SCOPE = {"detail": "A bearer token needs the 'connected_apps' scope."}
STAFF_NEEDS_SESSION = {
    "detail": (
        "The staff endpoints need a signed-in staff session (the browser, or Django admin); "
        "bearer tokens are not accepted here, whatever their scope. "
        "To automate, use the management commands."
    )
}

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def my_consent_revoke(pk: int) -> str:
    return f"{BASE}me/consents/{pk}/revoke/"


def my_device_revoke(pk: int) -> str:
    return f"{BASE}me/devices/{pk}/revoke/"


def consent_revoke(pk: int) -> str:
    return f"{BASE}consents/{pk}/revoke/"


# Helpers ----------------------------------------------------------------------------------------


def session_client(user, *, enforce_csrf_checks: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=enforce_csrf_checks)
    client.force_login(user)
    return client


def permission(name: str) -> Permission:
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def staff_member(username: str, *permissions: str, is_staff: bool = True):
    member = factories.UserFactory(username=username, is_staff=is_staff)
    member.user_permissions.add(*(permission(name) for name in permissions))
    return member


def bearer_token(
    user, application, scope: str = API_SCOPE, expires_in: timedelta = timedelta(hours=1)
) -> str:
    """An access token row as DOT stores it, for the API's bearer authentication."""
    token = secrets.token_urlsafe(24)
    AccessToken.objects.create(
        user=user,
        application=application,
        token=token,
        scope=scope,
        expires=timezone.now() + expires_in,
    )
    return token


def bearer_client(token: str, *, enforce_csrf_checks: bool = False) -> APIClient:
    client = APIClient(enforce_csrf_checks=enforce_csrf_checks)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def add_device(consent: Consent) -> OfflineTokenFamily:
    """A token family under ``consent`` with one live refresh/access token pair (rows only)."""
    family = uuid.uuid4()
    access = AccessToken.objects.create(
        user=consent.user,
        application=consent.application,
        token=secrets.token_urlsafe(24),
        scope=consent.scope,
        expires=timezone.now() + timedelta(minutes=10),
    )
    RefreshToken.objects.create(
        user=consent.user,
        application=consent.application,
        token=secrets.token_urlsafe(24),
        access_token=access,
        token_family=family,
    )
    return OfflineTokenFamily.objects.create(
        token_family=family, user=consent.user, application=consent.application, consent=consent
    )


def results(response) -> list[dict]:
    assert response.status_code == 200, (response.status_code, response.content[:500])
    return response.json()["results"]


def when(value: str | None):
    return None if value is None else parse_datetime(value)


def active_consent(user, application) -> Consent:
    return Consent.objects.active().get(user=user, application=application)


def assert_refused(api, application, tokens: dict) -> None:
    response = refresh(api, application, tokens["refresh_token"])
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"
    assert userinfo(api, tokens).status_code == 401


def csrf_token(client: APIClient) -> str:
    """The CSRF cookie a page with a form sets, as a browser-side script would read it."""
    assert client.get("/accounts/login/").status_code == 200
    return client.cookies[settings.CSRF_COOKIE_NAME].value


@pytest.fixture
def rest() -> APIClient:
    """No session, no token."""
    return APIClient()


@pytest.fixture
def me(user) -> APIClient:
    """``user`` signed in with a session (CSRF not enforced, as in most tests)."""
    return session_client(user)


@pytest.fixture
def staff(db):
    """A staff member holding every permission the staff endpoints use (not a superuser)."""
    return staff_member("operator", *STAFF_PERMISSIONS)


@pytest.fixture
def staff_api(staff) -> APIClient:
    return session_client(staff)


# Authentication ---------------------------------------------------------------------------------


def every_endpoint(consent_id: int, family_id: int) -> list[tuple[str, str]]:
    return [
        ("get", MY_CONSENTS),
        ("get", MY_DEVICES),
        ("post", my_consent_revoke(consent_id)),
        ("post", my_device_revoke(family_id)),
        ("get", CONSENTS),
        ("post", ENDURING),
        ("post", consent_revoke(consent_id)),
        ("post", REVOKE_EVERYTHING),
    ]


def test_anonymous_requests_get_drfs_not_authenticated_error_everywhere(rest, user, application):
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)
    body = {"user": user.username, "application": application.client_id, "reason": "x"}

    for method, url in every_endpoint(consent.pk, family.pk):
        response = getattr(rest, method)(url, body, format="json") if method == "post" else rest.get(url)
        if url.startswith(BASE + "me/"):
            # RFC 6750: 401 with a Bearer challenge, in DRF's error shape.
            assert response.status_code == 401, (method, url, response.status_code)
            assert response["WWW-Authenticate"].startswith("Bearer"), (method, url)
        else:
            # The staff endpoints take no bearer token, so they send no Bearer challenge:
            # 403 (see test_anonymous_requests_to_staff_endpoints_get_403_without_a_bearer_challenge).
            assert response.status_code == 403, (method, url, response.status_code)
            assert not response.has_header("WWW-Authenticate"), (method, url)
        assert response.json() == NOT_AUTHENTICATED, (method, url)

    consent.refresh_from_db()
    family.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert family.ended_at is None
    assert not ConsentEvent.objects.filter(via=ConsentEvent.Via.API).exists()


def test_session_login_works_for_my_endpoints(me, user, application):
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)

    assert [item["id"] for item in results(me.get(MY_CONSENTS))] == [consent.pk]
    assert [item["id"] for item in results(me.get(MY_DEVICES))] == [family.pk]


@pytest.mark.parametrize("endpoint", ["my-consent", "staff-revoke-everything"])
def test_session_post_without_csrf_token_is_forbidden(user, application, endpoint):
    consent = factories.ConsentFactory(user=user, application=application)
    if endpoint == "my-consent":
        client = session_client(user, enforce_csrf_checks=True)
        url, body = my_consent_revoke(consent.pk), {"reason": "no token"}
    else:
        client = session_client(staff_member("operator", *STAFF_PERMISSIONS), enforce_csrf_checks=True)
        url, body = REVOKE_EVERYTHING, {"user": user.username, "reason": "no token"}

    response = client.post(url, body, format="json")

    assert response.status_code == 403
    assert response.json()["detail"].startswith("CSRF Failed")
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE

    # The same request with the token from the CSRF cookie goes through.
    response = client.post(url, body, format="json", HTTP_X_CSRFTOKEN=csrf_token(client))

    assert response.status_code == 200, response.content
    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED


def test_bearer_token_with_the_api_scope_acts_for_its_user(user, other_user, application, native_application):
    mine = factories.ConsentFactory(user=user, application=application)
    device = add_device(mine)
    factories.ConsentFactory(user=other_user, application=application)
    assert offline_access_settings.API_SCOPE == API_SCOPE
    # Bearer requests carry no session cookie: CSRF does not apply to them.
    client = bearer_client(bearer_token(user, native_application), enforce_csrf_checks=True)

    assert [item["id"] for item in results(client.get(MY_CONSENTS))] == [mine.pk]
    assert [item["id"] for item in results(client.get(MY_DEVICES))] == [device.pk]
    response = client.post(my_consent_revoke(mine.pk), {"reason": "from my phone"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 1, "refresh_tokens": 1, "access_tokens": 1}
    event = ConsentEvent.objects.get(consent=mine, action=ConsentEvent.Action.REVOKED)
    assert (event.via, event.actor, event.reason) == (ConsentEvent.Via.API, user, "from my phone")


def test_bearer_token_from_the_code_flow_can_revoke_its_own_consent_and_then_stops_working(
    browser, api, user, application
):
    tokens = exchange_code(
        api,
        application,
        get_code(browser, application, scope=f"openid offline_access {API_SCOPE}", prompt="consent"),
    ).json()
    assert API_SCOPE in tokens["scope"].split()
    client = bearer_client(tokens["access_token"])
    [item] = results(client.get(MY_CONSENTS))

    response = client.post(my_consent_revoke(item["id"]))

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 1, "refresh_tokens": 1, "access_tokens": 1}
    assert_refused(api, application, tokens)
    # The access token was expired with its consent: the API no longer accepts it either.
    response = client.get(MY_CONSENTS)
    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED


@pytest.mark.parametrize("scope", ["openid offline_access", "openid read", "connected_apps_extra"])
def test_bearer_token_without_the_api_scope_is_forbidden(user, application, scope):
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)
    client = bearer_client(bearer_token(user, application, scope=scope))

    for method, url in [
        ("get", MY_CONSENTS),
        ("get", MY_DEVICES),
        ("post", my_consent_revoke(consent.pk)),
        ("post", my_device_revoke(family.pk)),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 403, (url, response.status_code)
        assert response.json() == BEARER_NEEDS_SCOPE, url

    consent.refresh_from_db()
    family.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert family.ended_at is None


@pytest.mark.parametrize("token_kind", ["expired", "unknown"])
def test_expired_or_unknown_bearer_token_is_not_authenticated(user, application, token_kind):
    consent = factories.ConsentFactory(user=user, application=application)
    if token_kind == "expired":
        token = bearer_token(user, application, expires_in=-timedelta(seconds=1))
    else:
        token = "no-such-token"
    client = bearer_client(token)

    for method, url in [("get", MY_CONSENTS), ("get", MY_DEVICES), ("post", my_consent_revoke(consent.pk))]:
        response = getattr(client, method)(url)
        assert response.status_code == 401, (url, response.status_code)
        assert response.json() == NOT_AUTHENTICATED, url

    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE


@pytest.mark.parametrize("scope", ["openid read", API_SCOPE])
def test_staff_bearer_token_is_refused_on_the_staff_endpoints_whatever_its_scope(application, user, scope):
    """Until issue 8 a staff member's token with the API scope listed every consent (200)."""
    factories.ConsentFactory(user=user, application=application)
    operator = staff_member("operator", *STAFF_PERMISSIONS)

    response = bearer_client(bearer_token(operator, application, scope=scope)).get(CONSENTS)

    assert response.status_code == 403
    assert response.json() == STAFF_NEEDS_SESSION
    # The same member's session may.
    assert session_client(operator).get(CONSENTS).json()["count"] == 1


# The user's consents and devices ---------------------------------------------------------------


def test_my_consents_lists_only_my_consents_in_force(
    browser, api, me, user, other_user, application, native_application
):
    offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, application)
    rotated = refresh(api, application, second["refresh_token"]).json()
    last_used = RefreshToken.objects.get(token=stored(rotated["refresh_token"])).created
    interactive = active_consent(user, application)
    enduring = factories.EnduringConsentFactory(
        user=user, application=native_application, expires_at=timezone.now() + timedelta(days=3)
    )
    # Not in force, or not mine:
    factories.ConsentFactory(user=user, status=Consent.Status.REVOKED)
    factories.ConsentFactory(user=user, status=Consent.Status.EXPIRED)
    factories.EnduringConsentFactory(user=user, expires_at=timezone.now() - timedelta(minutes=1))
    factories.ConsentFactory(user=other_user, application=application)

    response = me.get(MY_CONSENTS)
    items = results(response)

    assert response.json()["count"] == 2
    assert [item["id"] for item in items] == [enduring.pk, interactive.pk]  # newest first
    first, second_item = items
    assert second_item["application"] == {"client_id": "calendar-sync", "name": "Calendar Sync"}
    assert second_item["kind"] == "interactive"
    assert second_item["scopes"] == [
        {"name": "openid", "description": SCOPE_DESCRIPTIONS["openid"]},
        {"name": "offline_access", "description": SCOPE_DESCRIPTIONS["offline_access"]},
    ]
    assert second_item["state"] == "active"
    assert second_item["live_tokens"] == 2
    assert when(second_item["last_used"]) == last_used
    assert when(second_item["granted_at"]) == interactive.granted_at
    assert second_item["expires_at"] is None
    assert second_item["ended_at"] is None
    assert "user" not in second_item and "reason" not in second_item  # staff-only fields

    assert first["application"] == {"client_id": "phone-app", "name": "Phone App"}
    assert first["kind"] == "enduring"
    assert first["scopes"] == [
        {"name": "offline_access", "description": SCOPE_DESCRIPTIONS["offline_access"]}
    ]
    assert first["live_tokens"] == 0
    assert first["last_used"] is None
    assert when(first["expires_at"]) == enduring.expires_at


def test_my_devices_lists_only_my_live_token_families(
    browser, api, me, user, other_user, application, native_application
):
    kept = offline_tokens(browser, api, application)
    rotated = refresh(api, application, kept["refresh_token"]).json()
    phone = offline_tokens(browser, api, native_application)
    revoked = offline_tokens(browser, api, application)
    me.post(my_device_revoke(family_of(revoked).pk))
    # Another user's device of the same client.
    add_device(factories.ConsentFactory(user=other_user, application=application))

    items = results(me.get(MY_DEVICES))

    assert [item["id"] for item in items] == [family_of(phone).pk, family_of(kept).pk]  # newest first
    phone_item, kept_item = items
    kept_family = family_of(kept)
    assert kept_item == {
        "id": kept_family.pk,
        "application": {"client_id": "calendar-sync", "name": "Calendar Sync"},
        "consent": active_consent(user, application).pk,
        "first_issued": kept_item["first_issued"],
        "last_refreshed": kept_item["last_refreshed"],
    }
    assert when(kept_item["first_issued"]) == kept_family.created_at
    assert (
        when(kept_item["last_refreshed"])
        == RefreshToken.objects.get(token=stored(rotated["refresh_token"])).created
    )
    assert phone_item["application"] == {"client_id": "phone-app", "name": "Phone App"}
    assert phone_item["consent"] == active_consent(user, native_application).pk


# The user's revocations -------------------------------------------------------------------------


def test_C5_user_revokes_own_consent_through_the_api(browser, api, me, user, application):
    first = offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, application)
    consent = active_consent(user, application)

    response = me.post(my_consent_revoke(consent.pk), {"reason": "Lost my phone"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 1, "refresh_tokens": 2, "access_tokens": 2}
    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED
    assert (consent.ended_by, consent.end_reason) == (user, "Lost my phone")
    event = consent.events.get(action=ConsentEvent.Action.REVOKED)
    assert (event.via, event.actor, event.reason) == (ConsentEvent.Via.API, user, "Lost my phone")
    assert_refused(api, application, first)
    assert_refused(api, application, second)
    assert results(me.get(MY_CONSENTS)) == []
    assert results(me.get(MY_DEVICES)) == []


def test_user_revokes_own_consent_without_a_reason(browser, api, me, user, application):
    tokens = offline_tokens(browser, api, application)
    consent = active_consent(user, application)

    response = me.post(my_consent_revoke(consent.pk))

    assert response.status_code == 200
    assert response.json() == {"consents": 1, "refresh_tokens": 1, "access_tokens": 1}
    event = consent.events.get(action=ConsentEvent.Action.REVOKED)
    assert (event.via, event.actor, event.reason) == (ConsentEvent.Via.API, user, "")
    assert_refused(api, application, tokens)


def test_revoking_an_ended_consent_again_changes_nothing(browser, api, me, user, application):
    offline_tokens(browser, api, application)
    consent = active_consent(user, application)
    me.post(my_consent_revoke(consent.pk))
    events = consent.events.count()

    response = me.post(my_consent_revoke(consent.pk), {"reason": "again"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"consents": 0, "refresh_tokens": 0, "access_tokens": 0}
    assert consent.events.count() == events


def test_user_revokes_one_device_and_keeps_the_consent(browser, api, me, user, application):
    lost = offline_tokens(browser, api, application)
    kept = offline_tokens(browser, api, application)
    consent = active_consent(user, application)
    lost_family = family_of(lost)

    response = me.post(my_device_revoke(lost_family.pk), {"reason": "Stolen laptop"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 0, "refresh_tokens": 1, "access_tokens": 1}
    event = consent.events.get(action=ConsentEvent.Action.DEVICES_REVOKED)
    assert (event.via, event.actor, event.reason) == (ConsentEvent.Via.API, user, "Stolen laptop")
    lost_family.refresh_from_db()
    assert lost_family.ended_at is not None
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert_refused(api, application, lost)
    assert refresh(api, application, kept["refresh_token"]).status_code == 200
    assert [item["id"] for item in results(me.get(MY_DEVICES))] == [family_of(kept).pk]


@pytest.mark.parametrize("auth", ["session", "bearer"])
def test_another_users_consent_and_device_are_not_found(browser, api, user, other_user, application, auth):
    tokens = offline_tokens(browser, api, application)
    consent = active_consent(user, application)
    family = family_of(tokens)
    if auth == "session":
        intruder = session_client(other_user)
    else:
        intruder = bearer_client(bearer_token(other_user, application))

    for url in (my_consent_revoke(consent.pk), my_device_revoke(family.pk)):
        response = intruder.post(url, {"reason": "mine now"}, format="json")
        assert response.status_code == 404, url
        assert set(response.json()) == {"detail"}, url

    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert consent.events.filter(via=ConsentEvent.Via.API).count() == 0
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200


def test_unknown_ids_are_not_found(me):
    for url in (my_consent_revoke(999999), my_device_revoke(999999)):
        response = me.post(url)
        assert response.status_code == 404, url
        assert set(response.json()) == {"detail"}, url


def test_revoke_endpoints_refuse_get(me, user, application):
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)
    for url in (my_consent_revoke(consent.pk), my_device_revoke(family.pk)):
        response = me.get(url)
        assert response.status_code == 405, url
        assert response.json() == {"detail": 'Method "GET" not allowed.'}


def test_user_reason_is_limited_like_the_admins(me, user, application):
    consent = factories.ConsentFactory(user=user, application=application)

    response = me.post(my_consent_revoke(consent.pk), {"reason": "x" * 2001}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["reason"]
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE


# Staff: permissions -----------------------------------------------------------------------------

STAFF_ENDPOINTS = {
    "list": ("get", VIEW_CONSENT),
    "enduring": ("post", GRANT_ENDURING_CONSENT),
    "revoke-consent": ("post", REVOKE_CONSENT),
    "revoke-everything": ("post", REVOKE_CONSENT),
}


def staff_request(client: APIClient, endpoint: str, consent: Consent):
    method, _needed = STAFF_ENDPOINTS[endpoint]
    body = {"user": consent.user.username, "application": consent.application.client_id, "reason": "Contract"}
    url = {
        "list": CONSENTS,
        "enduring": ENDURING,
        "revoke-consent": consent_revoke(consent.pk),
        "revoke-everything": REVOKE_EVERYTHING,
    }[endpoint]
    if method == "get":
        return client.get(url)
    return client.post(url, body, format="json")


@pytest.mark.parametrize("endpoint", list(STAFF_ENDPOINTS))
def test_staff_endpoints_refuse_a_non_staff_user_even_with_the_permissions(user, application, endpoint):
    consent = factories.ConsentFactory(user=user, application=application)
    add_device(consent)
    outsider = staff_member("outsider", *STAFF_PERMISSIONS, is_staff=False)

    for client in (session_client(outsider), session_client(user)):
        response = staff_request(client, endpoint, consent)
        assert response.status_code == 403
        assert response.json() == NO_PERMISSION

    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert Consent.objects.count() == 1
    assert not ConsentEvent.objects.exists()


@pytest.mark.parametrize("endpoint", list(STAFF_ENDPOINTS))
def test_staff_endpoints_refuse_staff_without_the_specific_permission(user, application, endpoint):
    consent = factories.ConsentFactory(user=user, application=application)
    add_device(consent)
    _method, needed = STAFF_ENDPOINTS[endpoint]
    operator = staff_member("operator", *(name for name in STAFF_PERMISSIONS if name != needed))

    response = staff_request(session_client(operator), endpoint, consent)

    assert response.status_code == 403
    assert response.json() == NO_PERMISSION
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert Consent.objects.count() == 1
    assert not ConsentEvent.objects.exists()


@pytest.mark.parametrize("endpoint", list(STAFF_ENDPOINTS))
def test_staff_endpoints_work_with_only_the_specific_permission(user, application, endpoint):
    consent = factories.ConsentFactory(user=user, application=application)
    _method, needed = STAFF_ENDPOINTS[endpoint]
    operator = staff_member("operator", needed)

    response = staff_request(session_client(operator), endpoint, consent)

    assert response.status_code in (200, 201), response.content


# Staff: listing ---------------------------------------------------------------------------------


def test_staff_lists_every_consent_with_user_reason_and_state(staff_api, user, other_user, application):
    interactive = factories.ConsentFactory(user=user, application=application)
    add_device(interactive)
    add_device(interactive)
    enduring = factories.EnduringConsentFactory(
        user=other_user, application=application, reason="Contract 42"
    )
    revoked = factories.ConsentFactory(
        user=other_user, status=Consent.Status.REVOKED, end_reason="Left the company"
    )
    lapsed = factories.EnduringConsentFactory(user=user, expires_at=timezone.now() - timedelta(minutes=1))

    items = {item["id"]: item for item in results(staff_api.get(CONSENTS))}

    assert set(items) == {interactive.pk, enduring.pk, revoked.pk, lapsed.pk}
    assert items[interactive.pk]["user"] == {"id": user.pk, "username": "alice"}
    assert items[interactive.pk]["application"] == {"client_id": "calendar-sync", "name": "Calendar Sync"}
    assert items[interactive.pk]["live_tokens"] == 2
    assert items[interactive.pk]["state"] == "active"
    assert items[enduring.pk]["reason"] == "Contract 42"
    assert items[enduring.pk]["kind"] == "enduring"
    assert items[revoked.pk]["state"] == "revoked"
    assert items[revoked.pk]["end_reason"] == "Left the company"
    assert items[lapsed.pk]["state"] == "expired"  # past its expiry, not yet processed


def test_staff_list_filters_by_user_application_kind_and_state(staff_api, user, other_user, application):
    other_app = factories.ApplicationFactory(client_id="mail-client")
    alice_calendar = factories.ConsentFactory(user=user, application=application)
    alice_mail_enduring = factories.EnduringConsentFactory(user=user, application=other_app)
    alice_mail_revoked = factories.ConsentFactory(
        user=user, application=other_app, status=Consent.Status.REVOKED
    )
    mallory_calendar = factories.EnduringConsentFactory(user=other_user, application=application)
    mallory_lapsed = factories.ConsentFactory(
        user=other_user, application=other_app, expires_at=timezone.now() - timedelta(seconds=1)
    )
    mallory_expired = factories.ConsentFactory(
        user=other_user, application=application, status=Consent.Status.EXPIRED
    )

    def ids(**params):
        return {item["id"] for item in results(staff_api.get(CONSENTS, params))}

    assert ids(user="alice") == {alice_calendar.pk, alice_mail_enduring.pk, alice_mail_revoked.pk}
    assert ids(application="calendar-sync") == {alice_calendar.pk, mallory_calendar.pk, mallory_expired.pk}
    assert ids(kind="enduring") == {alice_mail_enduring.pk, mallory_calendar.pk}
    assert ids(state="active") == {alice_calendar.pk, alice_mail_enduring.pk, mallory_calendar.pk}
    assert ids(state="revoked") == {alice_mail_revoked.pk}
    assert ids(state="expired") == {mallory_lapsed.pk, mallory_expired.pk}
    assert ids(user="alice", application="mail-client", state="active") == {alice_mail_enduring.pk}
    assert ids(user="nobody") == set()
    assert ids(application="no-such-client") == set()


def test_staff_list_rejects_an_unknown_state_in_drfs_error_shape(staff_api, user, application):
    factories.ConsentFactory(user=user, application=application)

    response = staff_api.get(CONSENTS, {"state": "deleted"})

    assert response.status_code == 400
    assert response.json() == {"state": ["Choose one of: active, revoked, expired."]}


# Staff: enduring consents -----------------------------------------------------------------------


def test_C3_staff_grants_an_enduring_consent_then_renews_it(
    staff_api, staff, browser, api, user, application
):
    expires_at = timezone.now() + timedelta(days=30)
    body = {
        "user": "alice",
        "application": "calendar-sync",
        "reason": "Signed contract 2024-17",
        "expires_at": expires_at.isoformat(),
    }

    response = staff_api.post(ENDURING, body, format="json")

    assert response.status_code == 201, response.content
    consent = Consent.objects.get()
    data = response.json()
    assert data["id"] == consent.pk
    assert data["user"] == {"id": user.pk, "username": "alice"}
    assert data["application"] == {"client_id": "calendar-sync", "name": "Calendar Sync"}
    assert data["kind"] == "enduring"
    assert data["state"] == "active"
    assert data["reason"] == "Signed contract 2024-17"
    assert data["scopes"] == [{"name": "offline_access", "description": SCOPE_DESCRIPTIONS["offline_access"]}]
    assert data["live_tokens"] == 0
    assert when(data["expires_at"]) == expires_at
    assert (consent.kind, consent.granted_by, consent.expires_at) == (
        Consent.Kind.ENDURING,
        staff,
        expires_at,
    )
    event = consent.events.get()
    assert (event.action, event.via, event.actor, event.reason) == (
        ConsentEvent.Action.GRANTED,
        ConsentEvent.Via.API,
        staff,
        "Signed contract 2024-17",
    )

    # In force at once: offline_access without prompt=consent (SPEC P3 via C3).
    tokens = exchange_code(api, application, get_code(browser, application)).json()
    assert "refresh_token" in tokens

    # Renewing: the same consent, 200, a "renewed" event; no expiry now.
    response = staff_api.post(
        ENDURING, {**body, "reason": "Contract extended", "expires_at": None}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["id"] == consent.pk
    assert response.json()["expires_at"] is None
    assert response.json()["live_tokens"] == 1
    consent.refresh_from_db()
    assert (consent.reason, consent.expires_at) == ("Contract extended", None)
    assert Consent.objects.count() == 1
    renewed = consent.events.get(action=ConsentEvent.Action.RENEWED)
    assert (renewed.via, renewed.actor, renewed.reason) == (ConsentEvent.Via.API, staff, "Contract extended")


def test_grant_enduring_consent_without_expiry(staff_api, user, application):
    response = staff_api.post(
        ENDURING, {"user": "alice", "application": "calendar-sync", "reason": "Contract"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["expires_at"] is None
    assert Consent.objects.get().expires_at is None


@pytest.mark.parametrize(
    "change, errors",
    [
        ({"reason": None}, {"reason": ["This field is required."]}),
        ({"reason": ""}, {"reason": ["This field may not be blank."]}),
        ({"reason": "   "}, {"reason": ["This field may not be blank."]}),
        ({"user": None}, {"user": ["This field is required."]}),
        ({"user": "nobody"}, {"user": ["Object with username=nobody does not exist."]}),
        ({"application": None}, {"application": ["This field is required."]}),
        (
            {"application": "no-such-client"},
            {"application": ["Object with client_id=no-such-client does not exist."]},
        ),
        ({"expires_at": "PAST"}, {"expires_at": ["The expiry must be in the future."]}),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"user": ["alice"]}, {"user": ["Not a valid string."]}),
        ({"application": 7}, {"application": ["Not a valid string."]}),
        ({"user": "alice\x00"}, {"user": ["Null characters are not allowed."]}),
    ],
)
def test_grant_enduring_consent_rejects_bad_input(staff_api, user, application, change, errors):
    body = {"user": "alice", "application": "calendar-sync", "reason": "Contract"}
    for key, value in change.items():
        if value is None:
            del body[key]
        elif value == "PAST":
            body[key] = (timezone.now() - timedelta(minutes=1)).isoformat()
        else:
            body[key] = value

    response = staff_api.post(ENDURING, body, format="json")

    assert response.status_code == 400
    if isinstance(errors, dict):
        assert response.json() == errors
    else:
        assert list(response.json()) == [errors]
    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()


# Staff: revocations -----------------------------------------------------------------------------


def test_C5_staff_revokes_one_consent(staff_api, staff, browser, api, user, application, native_application):
    first = offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, application)
    untouched = offline_tokens(browser, api, native_application)
    consent = active_consent(user, application)

    response = staff_api.post(consent_revoke(consent.pk), {"reason": "Account compromised"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 1, "refresh_tokens": 2, "access_tokens": 2}
    consent.refresh_from_db()
    assert (consent.status, consent.ended_by, consent.end_reason) == (
        Consent.Status.REVOKED,
        staff,
        "Account compromised",
    )
    event = consent.events.get(action=ConsentEvent.Action.REVOKED)
    assert (event.via, event.actor, event.reason) == (ConsentEvent.Via.API, staff, "Account compromised")
    assert_refused(api, application, first)
    assert_refused(api, application, second)
    assert refresh(api, native_application, untouched["refresh_token"]).status_code == 200


def test_staff_revoking_an_unknown_consent_is_not_found(staff_api):
    response = staff_api.post(consent_revoke(999999), {"reason": "x"}, format="json")

    assert response.status_code == 404
    assert set(response.json()) == {"detail"}


def test_C5_staff_revokes_everything_of_a_user(
    staff_api, staff, browser, api, user, other_user, application, native_application
):
    calendar = offline_tokens(browser, api, application)
    phone = offline_tokens(browser, api, native_application)
    enduring = factories.EnduringConsentFactory(user=user, application=application)
    mallory = factories.ConsentFactory(user=other_user, application=application)

    response = staff_api.post(
        REVOKE_EVERYTHING, {"user": "alice", "reason": "Left the company"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 3, "refresh_tokens": 2, "access_tokens": 2}
    assert not Consent.objects.active().filter(user=user).exists()
    events = ConsentEvent.objects.filter(action=ConsentEvent.Action.REVOKED)
    assert {event.consent.user for event in events} == {user}
    assert {(event.via, event.actor, event.reason) for event in events} == {
        (ConsentEvent.Via.API, staff, "Left the company")
    }
    assert enduring.pk in {event.consent_id for event in events}
    assert_refused(api, application, calendar)
    assert_refused(api, native_application, phone)
    mallory.refresh_from_db()
    assert mallory.status == Consent.Status.ACTIVE


def test_C5_staff_revokes_everything_held_by_an_application(
    staff_api, staff, api, browser, user, other_user, application, native_application
):
    alice_calendar = offline_tokens(browser, api, application)
    alice_phone = offline_tokens(browser, api, native_application)
    mallory_browser = factories.ConsentFactory(user=other_user, application=application)
    mallory_device = add_device(mallory_browser)

    response = staff_api.post(REVOKE_EVERYTHING, {"application": "calendar-sync"}, format="json")

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 2, "refresh_tokens": 2, "access_tokens": 2}
    assert_refused(api, application, alice_calendar)
    assert refresh(api, native_application, alice_phone["refresh_token"]).status_code == 200
    mallory_browser.refresh_from_db()
    mallory_device.refresh_from_db()
    assert mallory_browser.status == Consent.Status.REVOKED
    assert mallory_device.ended_at is not None
    assert set(
        ConsentEvent.objects.filter(action=ConsentEvent.Action.REVOKED).values_list("via", "actor", "reason")
    ) == {(ConsentEvent.Via.API, staff.pk, "")}


def test_C5_staff_revokes_one_users_access_to_one_application(
    staff_api, api, browser, user, other_user, application, native_application
):
    alice_calendar = offline_tokens(browser, api, application)
    alice_phone = offline_tokens(browser, api, native_application)
    mallory_calendar = factories.ConsentFactory(user=other_user, application=application)

    response = staff_api.post(
        REVOKE_EVERYTHING,
        {"user": "alice", "application": "calendar-sync", "reason": "Asked by phone"},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 1, "refresh_tokens": 1, "access_tokens": 1}
    assert_refused(api, application, alice_calendar)
    assert refresh(api, native_application, alice_phone["refresh_token"]).status_code == 200
    mallory_calendar.refresh_from_db()
    assert mallory_calendar.status == Consent.Status.ACTIVE


def test_revoke_everything_also_revokes_families_without_a_consent_in_force(
    staff_api, api, browser, user, application
):
    tokens = offline_tokens(browser, api, application)
    # The consent was ended without going through services (a bulk update): its tokens are
    # still unrevoked, and revoking everything of the user revokes them too.
    Consent.objects.filter(user=user).update(status=Consent.Status.REVOKED)

    response = staff_api.post(REVOKE_EVERYTHING, {"user": "alice"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"consents": 0, "refresh_tokens": 1, "access_tokens": 1}
    assert_refused(api, application, tokens)


@pytest.mark.parametrize(
    "body, errors",
    [
        ({}, {"non_field_errors": ["Name a user, an application, or both."]}),
        ({"reason": "everything"}, {"non_field_errors": ["Name a user, an application, or both."]}),
        ({"user": "", "application": ""}, None),
        ({"user": "nobody"}, {"user": ["Object with username=nobody does not exist."]}),
        (
            {"application": "no-such-client"},
            {"application": ["Object with client_id=no-such-client does not exist."]},
        ),
    ],
)
def test_revoke_everything_needs_a_known_user_or_application(staff_api, user, application, body, errors):
    consent = factories.ConsentFactory(user=user, application=application)
    add_device(consent)

    response = staff_api.post(REVOKE_EVERYTHING, body, format="json")

    assert response.status_code == 400
    if errors is not None:
        assert response.json() == errors
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert not ConsentEvent.objects.exists()


# Pagination -------------------------------------------------------------------------------------


def many_consents(count: int) -> list[Consent]:
    """``count`` consents of distinct users to a few clients, created in bulk."""
    User = factories.UserFactory._meta.model
    users = User.objects.bulk_create([User(username=f"bulk{n:04d}") for n in range(count)])
    apps = factories.ApplicationFactory.create_batch(3)
    return Consent.objects.bulk_create(
        [
            Consent(
                user=bulk_user,
                application=apps[n % 3],
                kind=Consent.Kind.INTERACTIVE,
                scope="openid offline_access",
            )
            for n, bulk_user in enumerate(users)
        ]
    )


def test_staff_list_pages_of_50_with_next_link_page_size_and_a_maximum_of_200(staff_api, db):
    created = many_consents(205)
    all_ids = {consent.pk for consent in created}

    first = staff_api.get(CONSENTS).json()
    assert first["count"] == 205
    assert len(first["results"]) == 50
    assert first["previous"] is None
    next_url = urlparse(first["next"])
    assert next_url.path == CONSENTS
    assert parse_qs(next_url.query) == {"page": ["2"]}

    # Walking the next links visits every consent exactly once.
    seen = [item["id"] for item in first["results"]]
    page = first
    while page["next"]:
        page = staff_api.get(page["next"]).json()
        seen.extend(item["id"] for item in page["results"])
    assert len(seen) == 205
    assert set(seen) == all_ids
    assert len(page["results"]) == 5  # the fifth page

    small = staff_api.get(CONSENTS, {"page_size": 20, "page": 2}).json()
    assert len(small["results"]) == 20
    assert small["results"][0]["id"] == seen[20]
    assert parse_qs(urlparse(small["next"]).query) == {"page": ["3"], "page_size": ["20"]}

    capped = staff_api.get(CONSENTS, {"page_size": 1000}).json()
    assert len(capped["results"]) == 200
    assert parse_qs(urlparse(capped["next"]).query) == {"page": ["2"], "page_size": ["1000"]}

    response = staff_api.get(CONSENTS, {"page": 99})
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}


def test_my_consents_pages_of_50_with_next_link(me, user):
    apps = factories.ApplicationFactory.create_batch(60)
    Consent.objects.bulk_create(
        [
            Consent(user=user, application=app, kind=Consent.Kind.INTERACTIVE, scope="openid offline_access")
            for app in apps
        ]
    )
    factories.ConsentFactory(application=apps[0])  # someone else's: not counted

    first = me.get(MY_CONSENTS).json()
    assert first["count"] == 60
    assert len(first["results"]) == 50
    second = me.get(first["next"]).json()
    assert len(second["results"]) == 10
    assert second["next"] is None
    assert urlparse(second["previous"]).path == MY_CONSENTS
    assert {item["id"] for item in first["results"] + second["results"]} == set(
        Consent.objects.filter(user=user).values_list("pk", flat=True)
    )
    assert len(me.get(MY_CONSENTS, {"page_size": 60}).json()["results"]) == 60


# Query counts -----------------------------------------------------------------------------------


def query_count(client: APIClient, url: str, params: dict) -> tuple[int, list[dict]]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    return len(queries), results(response)


@pytest.mark.parametrize("rows", [5, 60])
def test_my_consents_query_count_is_pinned_and_constant(me, user, rows):
    for app in factories.ApplicationFactory.create_batch(rows):
        add_device(factories.ConsentFactory(user=user, application=app))

    count, items = query_count(me, MY_CONSENTS, {"page_size": 100})

    assert len(items) == rows
    assert {item["live_tokens"] for item in items} == {1}
    assert count == MY_CONSENTS_QUERIES


@pytest.mark.parametrize("rows", [5, 60])
def test_my_devices_query_count_is_pinned_and_constant(me, user, application, rows):
    consent = factories.ConsentFactory(user=user, application=application)
    for _ in range(rows):
        add_device(consent)

    count, items = query_count(me, MY_DEVICES, {"page_size": 100})

    assert len(items) == rows
    assert count == MY_DEVICES_QUERIES


@pytest.mark.parametrize("rows", [5, 60])
def test_staff_consents_query_count_is_pinned_and_constant(staff_api, db, rows):
    for consent in many_consents(rows):
        add_device(consent)

    count, items = query_count(staff_api, CONSENTS, {"page_size": 100})

    assert len(items) == rows
    assert {item["live_tokens"] for item in items} == {1}
    assert count == STAFF_CONSENTS_QUERIES


# OpenAPI schema ---------------------------------------------------------------------------------

API_PATHS = {
    "/api/offline-access/me/consents/": {"get"},
    "/api/offline-access/me/consents/{id}/revoke/": {"post"},
    "/api/offline-access/me/devices/": {"get"},
    "/api/offline-access/me/devices/{id}/revoke/": {"post"},
    "/api/offline-access/consents/": {"get"},
    "/api/offline-access/consents/enduring/": {"post"},
    "/api/offline-access/consents/{id}/revoke/": {"post"},
    "/api/offline-access/revoke/": {"post"},
}


def resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = document["components"]["schemas"][name]
    return schema


def test_openapi_schema_documents_every_endpoint(rest, db):
    response = rest.get(SCHEMA)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "django-offline-access API"
    paths = {path: set(operations) for path, operations in document["paths"].items() if path.startswith(BASE)}
    assert paths == API_PATHS

    operation_ids = [
        operation["operationId"] for item in document["paths"].values() for operation in item.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))

    for path, methods in API_PATHS.items():
        for method in methods:
            operation = document["paths"][path][method]
            if method == "post":
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert resolve(document, body)["properties"], path
            else:
                names = {parameter["name"] for parameter in operation["parameters"]}
                assert {"page", "page_size"} <= names, path

    enduring = document["paths"]["/api/offline-access/consents/enduring/"]["post"]
    body = resolve(document, enduring["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"user", "application", "reason", "expires_at"}
    assert set(body["required"]) == {"user", "application", "reason"}
    assert "201" in enduring["responses"]

    everything = document["paths"]["/api/offline-access/revoke/"]["post"]
    body = resolve(document, everything["requestBody"]["content"]["application/json"]["schema"])
    assert set(body["properties"]) == {"user", "application", "reason"}
    revoked = resolve(document, everything["responses"]["200"]["content"]["application/json"]["schema"])
    assert set(revoked["properties"]) == {"consents", "refresh_tokens", "access_tokens"}

    for path in (
        "/api/offline-access/me/consents/{id}/revoke/",
        "/api/offline-access/me/devices/{id}/revoke/",
        "/api/offline-access/consents/{id}/revoke/",
    ):
        operation = document["paths"][path]["post"]
        body = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
        assert set(body["properties"]) == {"reason"}, path
        assert "200" in operation["responses"], path
        assert [parameter["name"] for parameter in operation["parameters"] if parameter["in"] == "path"] == [
            "id"
        ]


def test_inactive_users_bearer_token_is_refused(user, application):
    token = bearer_token(user, application)
    # A queryset update sends no signal, so the token stays live: the API's own check must refuse it
    # (a save() expires the user's tokens at once: tests/test_account_events.py).
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    response = bearer_client(token).get(MY_CONSENTS)
    assert response.status_code == 403
    assert response.json() == {"detail": "This API acts for a signed-in, active user."}


def test_client_credentials_token_has_no_user_to_act_for(application):
    AccessToken.objects.create(
        user=None,
        application=application,
        token="client-only-token",
        scope="connected_apps",
        expires=timezone.now() + timedelta(hours=1),
    )
    response = bearer_client("client-only-token").get(MY_CONSENTS)
    assert response.status_code == 403
    assert response.json() == {"detail": "This API acts for a signed-in, active user."}


def test_staff_list_answers_head_and_options_and_405_for_wrong_methods(db):
    viewer = session_client(staff_member("viewer", VIEW_CONSENT))
    assert viewer.head(CONSENTS).status_code == 200
    assert viewer.options(CONSENTS).status_code == 200
    revoker = session_client(staff_member("revoker", REVOKE_CONSENT))
    assert revoker.get(REVOKE_EVERYTHING).status_code == 405


def test_staff_list_rejects_an_unknown_kind(db):
    response = session_client(staff_member("viewer", VIEW_CONSENT)).get(CONSENTS, {"kind": "bogus"})
    assert response.status_code == 400
    assert response.json() == {"kind": ["Choose one of: interactive, enduring."]}


# Staff endpoints: a signed-in staff session, never a bearer token (issue 8) ----------------------

#: Every HTTP method a client could try on a staff endpoint.
STAFF_METHODS = ("get", "head", "options", "post", "put", "patch", "delete")
EVERY_SCOPE = " ".join(SCOPE_DESCRIPTIONS)


def staff_urls(consent_id: int) -> list[str]:
    return [CONSENTS, ENDURING, consent_revoke(consent_id), REVOKE_EVERYTHING]


def database_state() -> dict[str, list]:
    """What a staff endpoint could change: consents, events, token families and tokens."""
    return {
        "consents": list(
            Consent.objects.order_by("pk").values_list(
                "pk", "user_id", "application_id", "kind", "status", "expires_at", "reason", "ended_at"
            )
        ),
        "events": list(ConsentEvent.objects.order_by("pk").values_list("pk", "action")),
        "families": list(OfflineTokenFamily.objects.order_by("pk").values_list("pk", "ended_at")),
        "refresh_tokens": list(RefreshToken.objects.order_by("pk").values_list("pk", "revoked")),
        "access_tokens": list(AccessToken.objects.order_by("pk").values_list("pk", "expires")),
    }


def call(client: APIClient, method: str, url: str, body: dict):
    if method in ("get", "head"):
        return getattr(client, method)(url)
    return getattr(client, method)(url, body, format="json")


@pytest.mark.parametrize("scope", [API_SCOPE, EVERY_SCOPE], ids=["api-scope", "every-scope"])
def test_a_superusers_bearer_token_never_reaches_the_staff_api(
    other_user, application, native_application, scope
):
    """The attack of issue 8: a third-party client holds an administrator's token.

    With only the scope a user hands out on the consent screen (or with every scope
    there is), it tried to grant itself an enduring consent for another user (201)
    and to revoke every user's access to a client (200). Now every staff endpoint
    refuses it for every method, and nothing in the database changes.
    """
    root = factories.UserFactory(username="root", is_staff=True, is_superuser=True)
    victim = factories.ConsentFactory(user=other_user, application=application)
    add_device(victim)
    add_device(factories.ConsentFactory(user=root, application=native_application))
    # The token the third-party "Phone App" got when the administrator approved it.
    client = bearer_client(bearer_token(root, native_application, scope=scope))
    attacks = {
        "user": other_user.username,
        "application": native_application.client_id,
        "reason": "I say so",
    }
    before = database_state()

    for url in staff_urls(victim.pk):
        for method in STAFF_METHODS:
            body = {"application": application.client_id} if url == REVOKE_EVERYTHING else attacks
            response = call(client, method, url, body)
            assert response.status_code == 403, (method, url, response.status_code, response.content)
            if method != "head":
                assert response.json() == STAFF_NEEDS_SESSION, (method, url)
            # No Bearer challenge: no bearer token, of any scope, is accepted here.
            assert not response.has_header("WWW-Authenticate"), (method, url)

    assert database_state() == before
    assert not Consent.objects.filter(kind=Consent.Kind.ENDURING).exists()

    # The same token still acts for the administrator on their own endpoints.
    [mine] = results(client.get(MY_CONSENTS))
    assert mine["application"]["client_id"] == native_application.client_id
    assert len(results(client.get(MY_DEVICES))) == 1
    response = client.post(my_consent_revoke(mine["id"]), {"reason": "done"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"consents": 1, "refresh_tokens": 1, "access_tokens": 1}


def test_a_staff_session_that_also_sends_a_bearer_token_is_refused(other_user, application):
    """A bearer token is refused explicitly even when a staff session comes with it."""
    victim = factories.ConsentFactory(user=other_user, application=application)
    operator = staff_member("operator", *STAFF_PERMISSIONS)
    client = session_client(operator)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bearer_token(operator, application)}")
    before = database_state()

    for url in staff_urls(victim.pk):
        response = call(client, "post" if url != CONSENTS else "get", url, {"user": other_user.username})
        assert response.status_code == 403, (url, response.status_code)
        assert response.json() == STAFF_NEEDS_SESSION, url

    assert database_state() == before
    # Without the token, the same session may.
    client.credentials()
    assert client.get(CONSENTS).status_code == 200


@pytest.mark.parametrize("method", STAFF_METHODS)
def test_anonymous_requests_to_staff_endpoints_get_403_without_a_bearer_challenge(
    rest, other_user, application, method
):
    """A 401 must carry a challenge (RFC 9110 15.5.2); a Bearer one would invite a token
    that these endpoints never accept, so an anonymous request gets DRF's 403."""
    victim = factories.ConsentFactory(user=other_user, application=application)
    before = database_state()

    for url in staff_urls(victim.pk):
        response = call(rest, method, url, {"user": other_user.username, "reason": "x"})
        assert response.status_code == 403, (method, url, response.status_code)
        assert not response.has_header("WWW-Authenticate"), (method, url)
        if method != "head":
            assert response.json() == NOT_AUTHENTICATED, (method, url)

    assert database_state() == before


# Bearer tokens only in the Authorization header (RFC 6750 2.1; issue 8) ----------------------------

TOKEN_OUTSIDE_HEADER = {
    "detail": (
        "Send the access token in the Authorization header (Authorization: Bearer <token>), "
        "never as an access_token parameter in the URL or a form body."
    )
}


def assert_token_transport_refused(response, where: str) -> None:
    """RFC 6750 3.1: ``invalid_request`` (400), named in the Bearer challenge."""
    assert response.status_code == 400, (where, response.status_code, response.content[:300])
    assert response.json() == TOKEN_OUTSIDE_HEADER, where
    assert 'error="invalid_request"' in response["WWW-Authenticate"], where


def test_valid_access_token_in_the_query_string_is_refused_on_every_endpoint(user, application):
    """RFC 6750 2.3 / RFC 9700 4.3.2: a token in the URL lands in access logs and history."""
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)
    token = bearer_token(user, application)
    before = database_state()

    for method, url in every_endpoint(consent.pk, family.pk):
        response = getattr(APIClient(), method)(f"{url}?access_token={token}")
        assert_token_transport_refused(response, f"{method} {url}")

    assert database_state() == before
    # The same token in the header works.
    assert len(results(bearer_client(token).get(MY_CONSENTS))) == 1


@pytest.mark.parametrize("method", ["get", "post"])
def test_valid_access_token_in_a_form_body_is_refused(user, application, method):
    consent = factories.ConsentFactory(user=user, application=application)
    token = bearer_token(user, application)
    url = MY_CONSENTS if method == "get" else my_consent_revoke(consent.pk)

    # DRF parses a form body for any method, GET included, and DOT hands it to oauthlib.
    response = APIClient().generic(
        method.upper(), url, f"access_token={token}", content_type="application/x-www-form-urlencoded"
    )

    assert_token_transport_refused(response, method)
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE


@pytest.mark.parametrize("auth", ["header", "session"])
def test_access_token_parameter_is_refused_even_next_to_valid_credentials(user, application, auth):
    """Two ways of sending a token is invalid_request (RFC 6750 3.1), and the URL would be logged."""
    token = bearer_token(user, application)
    client = bearer_client(token) if auth == "header" else session_client(user)

    assert_token_transport_refused(client.get(f"{MY_CONSENTS}?access_token={token}"), auth)
    assert_token_transport_refused(client.get(f"{MY_CONSENTS}?access_token="), auth)
    assert results(client.get(MY_CONSENTS)) == []


# Cache-Control (issue 8) --------------------------------------------------------------------------


def cache_directives(response) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in response.get("Cache-Control", "").split(",")}


def test_every_api_response_says_no_store(user, application):
    """The answers carry account data or answer credentials: no cache may keep them (RFC 9111 5.2.2.5)."""
    consent = factories.ConsentFactory(user=user, application=application)
    family = add_device(consent)
    operator = session_client(staff_member("operator", *STAFF_PERMISSIONS))
    body = {"user": user.username, "application": application.client_id, "reason": "x"}
    clients = {
        "anonymous": APIClient(),
        "session": session_client(user),
        "bearer": bearer_client(bearer_token(user, application)),
        "wrong-scope": bearer_client(bearer_token(user, application, scope="openid")),
        "unknown-token": bearer_client("no-such-token"),
        "staff": operator,
    }
    seen = set()

    for name, client in clients.items():
        for method, url in every_endpoint(consent.pk, family.pk):
            for query in ("", "?access_token=x", "?state=bogus"):
                response = call(client, method, url + query, body)
                seen.add(response.status_code)
                assert "no-store" in cache_directives(response), (
                    name,
                    method,
                    url + query,
                    response.status_code,
                )
            response = client.put(url, body, format="json")
            seen.add(response.status_code)
            assert "no-store" in cache_directives(response), (name, "put", url, response.status_code)
        response = client.post(my_consent_revoke(999999))
        seen.add(response.status_code)
        assert "no-store" in cache_directives(response), (name, "404")

    # Success, renewal, bad input, unauthenticated, forbidden, not found, wrong method.
    assert {200, 400, 401, 403, 404, 405} <= seen
