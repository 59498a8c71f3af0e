"""Token introspection (RFC 7662) at /o/introspect/: who may ask, and what a token reads as.

RFC 7662 2.1 / 4: the endpoint MUST require authorization, or anyone could probe
tokens and read whose they are. DOT answers any client that names itself, a
public client with its client_id only included, with another client's token
details. Here only a confidential client authenticated with its secret, or a
resource server presenting a bearer token with DOT's ``introspection`` scope,
gets an answer; everyone else gets RFC 6749 5.2's ``401 invalid_client`` as
JSON, with a ``WWW-Authenticate`` challenge (RFC 7662 2.3).

A refresh token introspects as active only for the client that owns it, and
only while the token endpoint would accept it (SPEC P6); access tokens stay
readable by any authorized caller, as DOT allows, so resource servers work.
"""

from __future__ import annotations

import calendar
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from offline_access import services
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .factories import CLIENT_SECRET
from .oauth import basic_authorization, offline_tokens, refresh, stored

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

URL = "/o/introspect/"
#: DOT's IntrospectTokenView.required_scopes.
INTROSPECTION_SCOPE = "introspection"
RS_TOKEN = "resource-server-introspection-token"


# Helpers ------------------------------------------------------------------------


def bearer_token(application, *, scope: str, value: str = RS_TOKEN, expires_in: int = 300) -> str:
    """An access token of ``application`` (a resource server) stored as the app stores tokens."""
    AccessToken.objects.create(
        token=stored(value),
        application=application,
        user=None,
        scope=scope,
        expires=timezone.now() + timedelta(seconds=expires_in),
    )
    return value


def ask(api: Client, method: str, token: str, *, data=None, **headers):
    """Introspect ``token`` with a POST (form body), or knock with a GET.

    A GET cannot carry the token: the endpoint refuses tokens in the URL, where
    access logs keep them (offline_access.hardening; see
    test_token_in_the_url_is_refused_whoever_asks). A GET still shows how the
    caller is judged: refused callers get 401, authorized ones DOT's 400 for the
    missing token.
    """
    if method == "get":
        return api.get(URL, data or {}, **headers)
    return api.post(URL, {"token": token, **(data or {})}, **headers)


def introspect_as_owner(api: Client, application, token: str, **fields) -> dict:
    response = api.post(
        URL,
        {"token": token, **fields},
        HTTP_AUTHORIZATION=basic_authorization(application.client_id, CLIENT_SECRET),
    )
    assert response.status_code == 200, response.content
    return response.json()


def assert_refused(response) -> None:
    """RFC 6749 5.2 / RFC 7662 2.3: JSON 401 invalid_client with a challenge, and nothing else."""
    assert response.status_code == 401, (response.status_code, response.content[:300])
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "invalid_client"
    assert set(body) <= {"error", "error_description"}
    assert response["WWW-Authenticate"]
    assert response["Cache-Control"] == "no-store"


@pytest.fixture
def resource_server(db):
    return factories.ApplicationFactory(
        name="Photos API", client_id="photos-api", authorization_grant_type="client-credentials"
    )


@pytest.fixture
def other_application(db):
    """A second confidential client (it may act as a resource server)."""
    return factories.ApplicationFactory(name="Backup Tool", client_id="backup-tool")


@pytest.fixture
def victim_tokens(browser, api, application):
    """A live offline token pair of the confidential client ``calendar-sync``."""
    return offline_tokens(browser, api, application)


# The attack: callers that must get nothing ---------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_public_client_with_client_id_only_cannot_read_another_clients_token(
    api, victim_tokens, native_application, method
):
    """The leak inherited from DOT: client_id alone used to read another client's live token."""
    response = ask(
        api, method, victim_tokens["access_token"], data={"client_id": native_application.client_id}
    )
    assert_refused(response)
    assert b"calendar-sync" not in response.content
    assert b"alice" not in response.content


def test_public_client_with_empty_basic_secret_is_refused(api, victim_tokens, native_application):
    response = ask(
        api, "post", victim_tokens["access_token"], HTTP_AUTHORIZATION=basic_authorization("phone-app", "")
    )
    assert_refused(response)
    assert 'Basic realm="oauth"' in response["WWW-Authenticate"]


def test_public_client_naming_the_device_grant_is_refused(api, victim_tokens, cli):
    """DOT authenticates a public client without a secret when the body names the device grant."""
    response = ask(
        api,
        "post",
        victim_tokens["access_token"],
        data={"client_id": cli.client_id, "grant_type": "urn:ietf:params:oauth:grant-type:device_code"},
    )
    assert_refused(response)


def test_public_client_with_a_stored_secret_is_refused(api, victim_tokens):
    """A public client cannot keep a secret (RFC 6749 2.1): knowing one proves nothing."""
    factories.PublicApplicationFactory(client_id="leaky-app", client_secret="leaked-secret")
    for auth in (
        {"HTTP_AUTHORIZATION": basic_authorization("leaky-app", "leaked-secret")},
        {"data": {"client_id": "leaky-app", "client_secret": "leaked-secret"}},
    ):
        assert_refused(ask(api, "post", victim_tokens["access_token"], **auth))


def test_confidential_client_stored_without_a_secret_is_refused(api, victim_tokens):
    """DOT compares an empty secret with an empty stored one and calls that authenticated."""
    factories.ApplicationFactory(client_id="secretless", client_secret="", hash_client_secret=False)
    for auth in (
        {"HTTP_AUTHORIZATION": basic_authorization("secretless", "")},
        {"data": {"client_id": "secretless"}},
        {"data": {"client_id": "secretless", "client_secret": ""}},
    ):
        assert_refused(ask(api, "post", victim_tokens["access_token"], **auth))


@pytest.mark.parametrize("method", ["get", "post"])
def test_no_credentials_get_json_401_not_html_403(api, victim_tokens, method):
    response = ask(api, method, victim_tokens["access_token"])
    assert_refused(response)


def test_wrong_secret_is_refused(api, victim_tokens, other_application):
    for auth in (
        {"HTTP_AUTHORIZATION": basic_authorization(other_application.client_id, "not-the-secret")},
        {"data": {"client_id": other_application.client_id, "client_secret": "not-the-secret"}},
    ):
        assert_refused(ask(api, "post", victim_tokens["access_token"], **auth))
    assert_refused(ask(api, "get", "", HTTP_AUTHORIZATION=basic_authorization("calendar-sync", "wrong")))


def test_unknown_client_is_refused(api, victim_tokens):
    assert_refused(
        ask(api, "post", victim_tokens["access_token"], HTTP_AUTHORIZATION=basic_authorization("nobody", "x"))
    )


def test_two_authentication_methods_at_once_are_refused(
    api, victim_tokens, other_application, native_application
):
    """RFC 6749 2.3: one method per request. DOT falls back from failed Basic to the body."""
    response = ask(
        api,
        "post",
        victim_tokens["access_token"],
        data={"client_id": native_application.client_id},
        HTTP_AUTHORIZATION=basic_authorization(other_application.client_id, "wrong"),
    )
    assert_refused(response)


@pytest.mark.parametrize("method", ["get", "post"])
def test_bearer_token_without_the_introspection_scope_is_refused(api, victim_tokens, method):
    """An ordinary access token (here the victim's own) does not make its holder a resource server."""
    response = ask(
        api,
        method,
        victim_tokens["access_token"],
        HTTP_AUTHORIZATION=f"Bearer {victim_tokens['access_token']}",
    )
    assert_refused(response)
    assert response["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_expired_introspection_token_is_refused(api, victim_tokens, resource_server, method):
    token = bearer_token(resource_server, scope=INTROSPECTION_SCOPE, expires_in=-1)
    response = ask(api, method, victim_tokens["access_token"], HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_refused(response)
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_unknown_bearer_token_is_refused(api, victim_tokens):
    response = ask(api, "post", victim_tokens["access_token"], HTTP_AUTHORIZATION="Bearer not-a-token")
    assert_refused(response)


def test_refused_caller_learns_nothing_about_an_unknown_token(api, native_application):
    """Same answer for a live and an unknown token: the endpoint cannot be used as an oracle."""
    response = ask(api, "post", "no-such-token", data={"client_id": native_application.client_id})
    assert_refused(response)


# Authorized callers --------------------------------------------------------------------------


def expected_access_token_answer(tokens: dict) -> dict:
    row = AccessToken.objects.get(token=stored(tokens["access_token"]))
    return {
        "active": True,
        "scope": "openid offline_access",
        "exp": calendar.timegm(row.expires.timetuple()),
        "client_id": "calendar-sync",
        "username": "alice",
    }


def test_confidential_client_with_client_secret_basic(api, victim_tokens, other_application):
    auth = basic_authorization(other_application.client_id, CLIENT_SECRET)
    response = ask(api, "post", victim_tokens["access_token"], HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200, response.content
    assert response.json() == expected_access_token_answer(victim_tokens)
    assert response["Cache-Control"] == "no-store"


def assert_authorized_but_no_token(response) -> None:
    """Past the caller check: DOT's 400 for the missing token parameter."""
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"


def test_get_with_client_secret_basic_passes_the_caller_check(api, other_application):
    assert_authorized_but_no_token(
        ask(
            api, "get", "", HTTP_AUTHORIZATION=basic_authorization(other_application.client_id, CLIENT_SECRET)
        )
    )


def test_get_with_introspection_bearer_token_passes_the_caller_check(api, resource_server):
    token = bearer_token(resource_server, scope=INTROSPECTION_SCOPE)
    assert_authorized_but_no_token(ask(api, "get", "", HTTP_AUTHORIZATION=f"Bearer {token}"))


def test_token_in_the_url_is_refused_whoever_asks(api, victim_tokens, other_application, native_application):
    """RFC 6749 2.3.1 / RFC 9700 4.3.2: never in the URL, so never answered from there."""
    for headers in (
        {"HTTP_AUTHORIZATION": basic_authorization(other_application.client_id, CLIENT_SECRET)},
        {},
    ):
        response = api.get(URL, {"token": victim_tokens["access_token"]}, **headers)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
    response = api.get(
        URL, {"token": victim_tokens["access_token"], "client_id": native_application.client_id}
    )
    assert response.status_code == 400
    assert b"alice" not in response.content


def test_confidential_client_with_client_secret_post(api, victim_tokens, other_application):
    data = {"client_id": other_application.client_id, "client_secret": CLIENT_SECRET}
    response = ask(api, "post", victim_tokens["access_token"], data=data)
    assert response.status_code == 200, response.content
    assert response.json() == expected_access_token_answer(victim_tokens)


def test_client_secret_in_the_url_is_refused(api, victim_tokens, other_application):
    """RFC 6749 2.3.1: never in the URI (the hardening layer answers 400 before authentication)."""
    data = {"client_id": other_application.client_id, "client_secret": CLIENT_SECRET}
    response = ask(api, "get", victim_tokens["access_token"], data=data)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_resource_server_with_introspection_scope(api, victim_tokens, resource_server):
    token = bearer_token(resource_server, scope=f"read {INTROSPECTION_SCOPE}")
    response = ask(api, "post", victim_tokens["access_token"], HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response.json() == expected_access_token_answer(victim_tokens)


def test_authorized_caller_gets_inactive_for_unknown_token(api, other_application):
    response = ask(
        api,
        "post",
        "no-such-token",
        HTTP_AUTHORIZATION=basic_authorization(other_application.client_id, CLIENT_SECRET),
    )
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_missing_token_parameter_is_invalid_request(api, other_application):
    response = api.post(
        URL, {}, HTTP_AUTHORIZATION=basic_authorization(other_application.client_id, CLIENT_SECRET)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# Refresh tokens ------------------------------------------------------------------------------


def test_live_refresh_token_is_active_for_its_own_client(api, victim_tokens, application, user):
    answer = introspect_as_owner(api, application, victim_tokens["refresh_token"])
    family = OfflineTokenFamily.objects.get()
    row = RefreshToken.objects.get(token=stored(victim_tokens["refresh_token"]))
    # OFFLINE_ACCESS defaults: idle timeout 30 days from the last refresh, absolute 365 days.
    idle_end = row.created + timedelta(days=30)
    absolute_end = family.created_at + timedelta(days=365)
    assert answer == {
        "active": True,
        "token_type": "refresh_token",
        "scope": "openid offline_access",
        "client_id": "calendar-sync",
        "username": "alice",
        "exp": calendar.timegm(min(idle_end, absolute_end).timetuple()),
    }


def test_refresh_token_exp_is_the_earliest_of_its_limits(api, victim_tokens, application, user):
    """The consent's own expiry, when sooner than the token's lifetimes, bounds the answer."""
    consent = Consent.objects.get(user=user, application=application)
    soon = timezone.now() + timedelta(hours=2)
    Consent.objects.filter(pk=consent.pk).update(expires_at=soon)
    answer = introspect_as_owner(api, application, victim_tokens["refresh_token"])
    assert answer["active"] is True
    assert answer["exp"] == calendar.timegm(soon.timetuple())


def test_refresh_token_without_lifetimes_has_no_exp(api, victim_tokens, application, settings):
    settings.OFFLINE_ACCESS = {"REFRESH_TOKEN_IDLE_TIMEOUT": None, "REFRESH_TOKEN_ABSOLUTE_LIFETIME": None}
    answer = introspect_as_owner(api, application, victim_tokens["refresh_token"])
    assert answer["active"] is True
    assert "exp" not in answer


def test_refresh_token_hint_is_optional(api, victim_tokens, application):
    """RFC 7662 2.1: the hint only speeds the search up; a wrong hint still finds the token."""
    for hint in ("refresh_token", "access_token", "bogus"):
        answer = introspect_as_owner(api, application, victim_tokens["refresh_token"], token_type_hint=hint)
        assert answer["active"] is True
        assert answer["token_type"] == "refresh_token"
    access = introspect_as_owner(
        api, application, victim_tokens["access_token"], token_type_hint="refresh_token"
    )
    assert access["active"] is True
    assert "token_type" not in access


def test_another_confidential_client_reads_a_refresh_token_as_inactive(api, victim_tokens, other_application):
    """Only the owner ever presents a refresh token to the AS: nobody else may read one."""
    auth = basic_authorization(other_application.client_id, CLIENT_SECRET)
    response = ask(api, "post", victim_tokens["refresh_token"], HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_resource_server_reads_a_refresh_token_as_inactive(api, victim_tokens, resource_server):
    token = bearer_token(resource_server, scope=INTROSPECTION_SCOPE)
    response = ask(api, "post", victim_tokens["refresh_token"], HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.json() == {"active": False}


def test_bearer_token_of_the_owner_does_not_read_its_refresh_token(api, victim_tokens, application):
    """An introspection-scoped bearer token of the owning client is still not its secret."""
    token = bearer_token(application, scope=INTROSPECTION_SCOPE)
    response = ask(api, "post", victim_tokens["refresh_token"], HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.json() == {"active": False}


def test_refresh_token_is_inactive_once_its_consent_is_revoked(api, victim_tokens, application, user):
    services.revoke_consents(
        Consent.objects.filter(user=user, application=application), actor=user, via=ConsentEvent.Via.USER
    )
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}
    assert introspect_as_owner(api, application, victim_tokens["access_token"]) == {"active": False}


def test_refresh_token_is_inactive_once_its_consent_has_lapsed(api, victim_tokens, application, user):
    """The consent's expiry passed but no job has processed it yet: already inactive."""
    Consent.objects.filter(user=user).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}


def test_refresh_token_is_inactive_once_its_family_ended(api, victim_tokens, application):
    services.end_token_family(OfflineTokenFamily.objects.get())
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}


def test_refresh_token_is_inactive_past_its_idle_timeout(api, victim_tokens, application):
    long_ago = timezone.now() - timedelta(days=31)
    RefreshToken.objects.update(created=long_ago)
    AccessToken.objects.update(updated=long_ago)  # DOT's refresh without rotation touches only this
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}


def test_refresh_token_is_inactive_for_an_inactive_user(api, victim_tokens, application, user):
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}


def test_rotated_refresh_token_is_inactive_even_within_the_grace_period(api, victim_tokens, application):
    """The grace period lets a lost response be retried; it does not make the old token live."""
    rotated = refresh(api, application, victim_tokens["refresh_token"])
    assert rotated.status_code == 200
    new = rotated.json()
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}
    assert introspect_as_owner(api, application, new["refresh_token"])["active"] is True
    assert introspect_as_owner(api, application, new["access_token"])["active"] is True


def test_revoked_refresh_token_is_inactive(api, victim_tokens, application):
    response = api.post(
        "/o/revoke_token/",
        {"token": victim_tokens["refresh_token"], "token_type_hint": "refresh_token"},
        HTTP_AUTHORIZATION=basic_authorization(application.client_id, CLIENT_SECRET),
    )
    assert response.status_code == 200
    assert introspect_as_owner(api, application, victim_tokens["refresh_token"]) == {"active": False}


def test_refresh_token_of_a_public_client_cannot_be_introspected_by_anyone(api, browser, native_application):
    """A public client cannot authenticate, so nobody can read its refresh token."""
    tokens = offline_tokens(browser, api, native_application)
    assert_refused(
        ask(api, "post", tokens["refresh_token"], data={"client_id": native_application.client_id})
    )


@pytest.mark.usefixtures("login_required_middleware")
def test_answers_hold_under_login_required_middleware(api, victim_tokens, other_application):
    """Django 5.1+'s LoginRequiredMiddleware must not turn the 401 into a login redirect.

    DOT marks its dispatch login-not-required; the view keeps DOT's dispatch, so the marker.
    """
    assert_refused(ask(api, "post", victim_tokens["access_token"]))
    auth = basic_authorization(other_application.client_id, CLIENT_SECRET)
    response = ask(api, "post", victim_tokens["access_token"], HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200
    assert response.json()["active"] is True
