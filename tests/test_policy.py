"""The issuance rules (SPEC P1-P6, P8) and the ``prompt`` cases, through the real endpoints.

Every test drives /o/authorize/, the consent screen and /o/token/ of the example
site with Django's test client; only the few ``policy`` unit tests call functions
directly, for response types the example site cannot serve end to end.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.scopes import SettingsScopes

from offline_access import policy, services
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import factories
from .oauth import (
    authorize_url,
    client_auth,
    consent_form_data,
    exchange_code,
    get_code,
    redirect_params,
    refresh,
    stored,
    stored_checksum,
    submit_consent,
)

# The example site serves these legacy grants on purpose: the rules must hold for them too.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 implicit grant:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The OAuth 2.0 resource owner password:DeprecationWarning"),
]

AccessToken = get_access_token_model()
Grant = get_grant_model()
RefreshToken = get_refresh_token_model()

OFFLINE = "offline_access"
OFFLINE_NOTICE = "Access while you are away"
RESTRICTED_CLIENT_ID = "no-offline-client"


# Helpers -----------------------------------------------------------------------


def checksum(raw_token: str) -> str:
    return stored_checksum(raw_token)


def refresh_token_row(raw_token: str):
    return RefreshToken.objects.select_related("access_token").get(token_checksum=checksum(raw_token))


def family_of(raw_token: str) -> OfflineTokenFamily:
    return OfflineTokenFamily.objects.get(token_family=refresh_token_row(raw_token).token_family)


def token_scopes(body: dict) -> set[str]:
    return set(body["scope"].split())


def offline_tokens(browser: Client, api: Client, application) -> dict:
    """Run prompt=consent + Allow + code exchange; return the token response with a refresh token."""
    code = get_code(browser, application, prompt="consent")
    response = exchange_code(api, application, code)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body
    assert OFFLINE in token_scopes(body)
    return body


def assert_no_refresh_token(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert "access_token" in body
    assert "refresh_token" not in body
    assert OFFLINE not in token_scopes(body)
    return body


def assert_invalid_grant(response) -> None:
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"


def assert_invalid_request_page(response) -> None:
    assert response.status_code == 400, response.content[:500]
    assert b"invalid_request" in response.content


def password_grant(api: Client, application, scope="openid offline_access", **extra):
    data = {
        "grant_type": "password",
        "username": "alice",
        "password": factories.PASSWORD,
        "scope": scope,
        **client_auth(application),
        **extra,
    }
    return api.post("/o/token/", data)


def client_credentials_grant(api: Client, application, scope: str):
    return api.post(
        "/o/token/", {"grant_type": "client_credentials", "scope": scope, **client_auth(application)}
    )


def fragment_params(response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.content[:500])
    fragment = urlparse(response["Location"]).fragment
    return {key: values[0] for key, values in parse_qs(fragment).items()}


class RestrictedScopes(SettingsScopes):
    """A scopes backend under which one client may not have ``offline_access``."""

    def get_available_scopes(self, application=None, request=None, *args, **kwargs):
        scopes = super().get_available_scopes(application, request, *args, **kwargs)
        if application is not None and application.client_id == RESTRICTED_CLIENT_ID:
            return [scope for scope in scopes if scope != OFFLINE]
        return scopes


@pytest.fixture
def restricted_scopes(settings):
    # Assigning OAUTH2_PROVIDER sends setting_changed, on which DOT reloads its cached settings.
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "SCOPES_BACKEND_CLASS": f"{__name__}.RestrictedScopes",
    }


@pytest.fixture
def restricted_application(db, restricted_scopes):
    return factories.ApplicationFactory(name="Restricted", client_id=RESTRICTED_CLIENT_ID)


@pytest.fixture
def skip_application(db):
    return factories.ApplicationFactory(name="Trusted", client_id="trusted", skip_authorization=True)


@pytest.fixture
def password_application(db):
    return factories.ApplicationFactory(
        name="Legacy CLI", client_id="legacy-cli", authorization_grant_type="password"
    )


# P1: a refresh token only with offline_access ------------------------------------


def test_P1_code_flow_without_offline_access_has_no_refresh_token(browser, api, application):
    code = get_code(browser, application, scope="openid", prompt="consent")
    body = assert_no_refresh_token(exchange_code(api, application, code))
    assert token_scopes(body) == {"openid"}
    assert not RefreshToken.objects.exists()


def test_P1_offline_access_requested_but_dropped_gives_no_refresh_token(browser, api, application):
    code = get_code(browser, application, scope="openid offline_access")
    body = assert_no_refresh_token(exchange_code(api, application, code))
    assert token_scopes(body) == {"openid"}
    assert not RefreshToken.objects.exists()
    assert not OfflineTokenFamily.objects.exists()


def test_P1_offline_access_granted_gives_refresh_token(browser, api, application, user):
    body = offline_tokens(browser, api, application)
    assert refresh_token_row(body["refresh_token"]).user == user
    family = family_of(body["refresh_token"])
    assert family.consent.kind == Consent.Kind.INTERACTIVE


# P2: when offline_access survives the authorization step --------------------------


def test_P2_dropped_silently_without_prompt_consent_or_enduring_consent(browser, api, application):
    url = authorize_url(application, scope="openid offline_access")
    screen = browser.get(url)
    assert screen.status_code == 200
    assert screen.context["offline_access"] is False
    assert [name for name, _ in screen.context["scopes"]] == ["openid"]
    assert OFFLINE_NOTICE.encode() not in screen.content

    params = redirect_params(submit_consent(browser, url, screen))
    assert "error" not in params
    assert params["state"] == "state-123"
    assert Grant.objects.get(code=stored(params["code"])).scope == "openid"
    assert not Consent.objects.exists()
    body = assert_no_refresh_token(exchange_code(api, application, params["code"]))
    assert token_scopes(body) == {"openid"}


def test_P2_kept_with_prompt_consent_and_allow(browser, api, application, user):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    assert screen.context["offline_access"] is True
    assert [name for name, _ in screen.context["scopes"]] == ["openid", OFFLINE]
    assert OFFLINE_NOTICE.encode() in screen.content

    params = redirect_params(submit_consent(browser, url, screen))
    assert set(Grant.objects.get(code=stored(params["code"])).scope.split()) == {"openid", OFFLINE}
    # The consent is on record before the code is exchanged (OIDC Core 11).
    consent = Consent.objects.get(user=user, application=application)
    assert consent.kind == Consent.Kind.INTERACTIVE
    assert consent.status == Consent.Status.ACTIVE
    assert set(consent.scopes) == {"openid", OFFLINE}
    assert list(consent.events.values_list("action", flat=True)) == [ConsentEvent.Action.GRANTED]

    response = exchange_code(api, application, params["code"])
    assert response.status_code == 200
    assert "refresh_token" in response.json()
    assert token_scopes(response.json()) == {"openid", OFFLINE}


def test_P2_kept_with_active_enduring_consent_without_prompt_consent(
    browser, api, application, enduring_consent
):
    url = authorize_url(application, scope="openid offline_access")
    screen = browser.get(url)
    assert screen.context["offline_access"] is True
    params = redirect_params(submit_consent(browser, url, screen))
    body = exchange_code(api, application, params["code"]).json()
    assert "refresh_token" in body
    assert OFFLINE in token_scopes(body)
    family = family_of(body["refresh_token"])
    assert family.consent == enduring_consent
    # Approving a screen shown without prompt=consent records no interactive consent.
    assert not Consent.objects.filter(kind=Consent.Kind.INTERACTIVE).exists()


def test_P2_dropped_with_expired_enduring_consent(browser, api, application, user):
    factories.EnduringConsentFactory(
        user=user, application=application, expires_at=timezone.now() - timedelta(minutes=1)
    )
    code = get_code(browser, application, scope="openid offline_access")
    assert Grant.objects.get(code=stored(code)).scope == "openid"
    assert_no_refresh_token(exchange_code(api, application, code))


def test_P2_dropped_with_revoked_enduring_consent(browser, api, application, enduring_consent):
    services.revoke_consents(
        Consent.objects.filter(pk=enduring_consent.pk), reason="Contract ended", via=ConsentEvent.Via.ADMIN
    )
    code = get_code(browser, application, scope="openid offline_access")
    assert Grant.objects.get(code=stored(code)).scope == "openid"
    assert_no_refresh_token(exchange_code(api, application, code))


def test_P2_enduring_consent_of_another_client_does_not_count(browser, api, application, user):
    factories.EnduringConsentFactory(user=user, application=factories.ApplicationFactory())
    code = get_code(browser, application, scope="openid offline_access")
    assert_no_refresh_token(exchange_code(api, application, code))


def test_P2_code_issued_before_consent_revoked_cannot_be_exchanged(browser, api, application, user):
    code = get_code(browser, application, prompt="consent")
    services.revoke_consents(Consent.objects.filter(user=user), actor=user, via=ConsentEvent.Via.USER)
    assert_invalid_grant(exchange_code(api, application, code))
    assert not RefreshToken.objects.exists()


def test_P2_enduring_consent_expired_before_code_exchange_gives_no_refresh_token(
    browser, api, application, enduring_consent
):
    # The code was issued under the enduring consent, which expires before the client
    # exchanges it: no consent is in force when the refresh token would be returned.
    code = get_code(browser, application, scope="openid offline_access")
    assert OFFLINE in Grant.objects.get(code=stored(code)).scope.split()
    Consent.objects.filter(pk=enduring_consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = exchange_code(api, application, code)
    if response.status_code == 200:
        assert "refresh_token" not in response.json()
    else:
        assert response.json()["error"] == "invalid_grant"
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()


def test_P2_deny_redirects_access_denied_and_records_nothing(browser, application):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    params = redirect_params(submit_consent(browser, url, screen, decision="deny"))
    assert params["error"] == "access_denied"
    assert params["state"] == "state-123"
    assert "code" not in params
    assert not Consent.objects.exists()
    assert not ConsentEvent.objects.exists()
    assert not Grant.objects.exists()


def test_P2_dropped_when_client_may_not_have_offline_access(browser, api, restricted_application, user):
    url = authorize_url(restricted_application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    assert screen.status_code == 200
    assert screen.context["offline_access"] is False
    assert OFFLINE_NOTICE.encode() not in screen.content
    params = redirect_params(submit_consent(browser, url, screen))
    assert "error" not in params  # silently dropped, not invalid_scope
    assert Grant.objects.get(code=stored(params["code"])).scope == "openid"
    assert not Consent.objects.exists()
    body = assert_no_refresh_token(exchange_code(api, restricted_application, params["code"]))
    assert token_scopes(body) == {"openid"}


def test_P2_dropped_for_restricted_client_even_with_enduring_consent(
    browser, api, restricted_application, user
):
    factories.EnduringConsentFactory(user=user, application=restricted_application)
    code = get_code(browser, restricted_application, scope="openid offline_access")
    assert_no_refresh_token(exchange_code(api, restricted_application, code))


def test_P2_restricted_backend_still_lets_other_clients_have_offline_access(
    browser, api, application, restricted_application
):
    offline_tokens(browser, api, application)


def test_P2_dropped_for_implicit_response_type(browser, implicit_application):
    url = authorize_url(
        implicit_application,
        scope="openid offline_access",
        response_type="id_token token",
        prompt="consent",
        code_challenge=None,
        code_challenge_method=None,
    )
    screen = browser.get(url)
    assert screen.status_code == 200, screen.content[:500]
    assert screen.context["offline_access"] is False
    assert OFFLINE_NOTICE.encode() not in screen.content
    params = fragment_params(submit_consent(browser, url, screen))
    assert "access_token" in params
    assert "refresh_token" not in params
    assert OFFLINE not in params["scope"].split()
    assert AccessToken.objects.get().scope == "openid"
    assert not RefreshToken.objects.exists()
    assert not Consent.objects.exists()


def test_P2_kept_for_hybrid_response_type_returning_a_code(browser, api, hybrid_application, user):
    url = authorize_url(
        hybrid_application, scope="openid offline_access", response_type="code id_token", prompt="consent"
    )
    screen = browser.get(url)
    assert screen.status_code == 200, screen.content[:500]
    assert screen.context["offline_access"] is True
    params = fragment_params(submit_consent(browser, url, screen))
    assert "id_token" in params
    assert set(Grant.objects.get(code=stored(params["code"])).scope.split()) == {"openid", OFFLINE}
    assert Consent.objects.filter(user=user, application=hybrid_application).exists()


@pytest.mark.parametrize("response_type", ["code token", "code id_token token", "code id_token"])
def test_P2_hybrid_code_gets_the_refresh_token_the_screen_promised(
    browser, api, hybrid_application, user, response_type
):
    """OIDC Core 11: the code of a hybrid response carries offline_access; the front channel does not.

    The access token returned in the fragment never holds offline_access nor a
    refresh token (it travels through the browser); the code exchanged at the
    token endpoint gets the refresh token the consent screen announced.
    """
    url = authorize_url(
        hybrid_application, scope="openid offline_access", response_type=response_type, prompt="consent"
    )
    screen = browser.get(url)
    assert screen.context["offline_access"] is True
    assert OFFLINE_NOTICE.encode() in screen.content
    params = fragment_params(submit_consent(browser, url, screen))
    assert Consent.objects.filter(user=user, application=hybrid_application).exists()

    assert "refresh_token" not in params
    if "token" in response_type.split():
        assert OFFLINE not in params["scope"].split()
        front_channel = AccessToken.objects.get()
        assert OFFLINE not in front_channel.scope.split()
        assert not RefreshToken.objects.exists()
    body = exchange_code(api, hybrid_application, params["code"]).json()
    assert "refresh_token" in body, body
    assert OFFLINE in token_scopes(body)
    assert family_of(body["refresh_token"]).consent == Consent.objects.get(user=user)


@pytest.mark.parametrize(
    ("response_type", "kept"),
    [
        ("code", True),
        ("code id_token", True),
        ("code token", True),
        ("code id_token token", True),
        ("token", False),
        ("id_token", False),
        ("id_token token", False),
        ("", False),
    ],
)
def test_P2_authorization_scopes_requires_a_code_returning_response_type(response_type, kept):
    scopes, via = policy.authorization_scopes(
        ["openid", OFFLINE],
        response_type=response_type,
        prompt=frozenset({"consent"}),
        client_may_have_offline_access=True,
        has_enduring_consent=True,
    )
    assert (OFFLINE in scopes) is kept
    assert "openid" in scopes
    assert via == (policy.OfflineVia.SCREEN if kept else None)


@pytest.mark.parametrize(
    ("prompt", "client_may", "enduring", "expected_via"),
    [
        (frozenset(), True, False, None),
        (frozenset({"consent"}), True, False, policy.OfflineVia.SCREEN),
        (frozenset(), True, True, policy.OfflineVia.ENDURING),
        (frozenset({"none"}), True, True, policy.OfflineVia.ENDURING),
        (frozenset({"none"}), True, False, None),
        (frozenset({"consent"}), False, True, None),
        (frozenset(), False, True, None),
    ],
)
def test_P2_authorization_scopes_rules(prompt, client_may, enduring, expected_via):
    scopes, via = policy.authorization_scopes(
        ["openid", OFFLINE],
        response_type="code",
        prompt=prompt,
        client_may_have_offline_access=client_may,
        has_enduring_consent=enduring,
    )
    assert via == expected_via
    assert scopes == (("openid", OFFLINE) if expected_via else ("openid",))


# prompt=consent and the screen ---------------------------------------------------


def test_prompt_consent_shows_screen_despite_skip_authorization(browser, skip_application):
    # Without prompt=consent the trusted client is approved without a page...
    direct = browser.get(authorize_url(skip_application, scope="openid offline_access"))
    assert "code" in redirect_params(direct)
    # ...but prompt=consent always shows the screen.
    screen = browser.get(authorize_url(skip_application, scope="openid offline_access", prompt="consent"))
    assert screen.status_code == 200
    assert screen.context["offline_access"] is True
    assert OFFLINE_NOTICE.encode() in screen.content


def test_prompt_consent_shows_screen_despite_approval_prompt_auto_and_live_token(browser, application, user):
    AccessToken.objects.create(
        user=user,
        application=application,
        token="live-access-token",
        scope="openid offline_access",
        expires=timezone.now() + timedelta(hours=1),
    )
    direct = browser.get(authorize_url(application, scope="openid", approval_prompt="auto"))
    assert "code" in redirect_params(direct)
    screen = browser.get(
        authorize_url(application, scope="openid offline_access", approval_prompt="auto", prompt="consent")
    )
    assert screen.status_code == 200
    assert screen.context["offline_access"] is True


def test_prompt_consent_screen_lists_scope_descriptions_and_buttons(browser, application):
    screen = browser.get(authorize_url(application, scope="openid offline_access", prompt="consent"))
    assert screen.context["application"] == application
    assert screen.context["scopes"] == [
        ("openid", "Sign you in with your account"),
        (OFFLINE, "Keep access while you are away (offline access)"),
    ]
    content = screen.content.decode()
    assert 'value="allow"' in content and ">Allow</button>" in content
    assert 'value="deny"' in content and ">Deny</button>" in content
    # The form carries one hidden field; nothing else the browser could edit.
    assert set(screen.context["form"].fields) == {"request", "decision"}


# P3: nothing the browser posts widens the grant -----------------------------------


def test_P3_tampered_post_fields_cannot_add_offline_access(browser, api, application, user):
    other = factories.ApplicationFactory(name="Other", client_id="other-client")
    url = authorize_url(application, scope="openid offline_access")
    screen = browser.get(url)
    assert screen.context["offline_access"] is False
    response = submit_consent(
        browser,
        url,
        screen,
        scope="openid offline_access",
        prompt="consent",
        client_id=other.client_id,
        redirect_uri=other.redirect_uris,
        offline_via="screen",
        allow="true",
    )
    params = redirect_params(response)
    assert response["Location"].startswith(application.redirect_uris)
    grant = Grant.objects.get(code=stored(params["code"]))
    assert grant.application == application
    assert grant.scope == "openid"
    assert not Consent.objects.exists()
    body = assert_no_refresh_token(exchange_code(api, application, params["code"]))
    assert token_scopes(body) == {"openid"}


def test_P3_tampered_query_string_on_post_is_ignored(browser, api, application):
    url = authorize_url(application, scope="openid offline_access")
    screen = browser.get(url)
    tampered_url = authorize_url(application, scope="openid offline_access", prompt="consent")
    params = redirect_params(submit_consent(browser, tampered_url, screen))
    assert Grant.objects.get(code=stored(params["code"])).scope == "openid"
    assert not Consent.objects.exists()
    assert_no_refresh_token(exchange_code(api, application, params["code"]))


def test_P3_modified_request_field_is_rejected(browser, application):
    url = authorize_url(application, scope="openid offline_access")
    screen = browser.get(url)
    signed = consent_form_data(screen)["request"]
    tampered = signed[:-3] + ("AAA" if signed[-3:] != "AAA" else "BBB")
    response = browser.post(url, {"request": tampered, "decision": "allow"})
    assert_invalid_request_page(response)
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()


def test_P3_forged_request_field_is_rejected(browser, application, user):
    url = authorize_url(application, scope="openid offline_access")
    browser.get(url)
    payload = {
        "user": user.pk,
        "scopes": ["openid", OFFLINE],
        "offline_via": policy.OfflineVia.SCREEN,
        "credentials": {
            "client_id": application.client_id,
            "redirect_uri": application.redirect_uris,
            "response_type": "code",
            "state": "state-123",
            "code_challenge": "x" * 43,
            "code_challenge_method": "S256",
        },
    }
    for forged in (
        signing.dumps(payload, key="not-the-server-key", salt="offline_access.consent", compress=True),
        signing.dumps(payload, salt="some.other.salt", compress=True),
        "not even a signature",
        "",
    ):
        response = browser.post(url, {"request": forged, "decision": "allow"})
        assert_invalid_request_page(response)
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()


def test_P3_missing_or_invalid_decision_is_rejected(browser, application):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    signed = consent_form_data(screen)["request"]
    assert_invalid_request_page(browser.post(url, {"request": signed}))
    assert_invalid_request_page(browser.post(url, {"request": signed, "decision": "yes"}))
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()


def test_P3_request_shown_to_one_user_cannot_be_posted_by_another(browser, application, other_user):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    mallory = Client()
    mallory.force_login(other_user)
    response = submit_consent(mallory, url, screen)
    assert_invalid_request_page(response)
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()


def test_P3_anonymous_post_of_a_signed_request_gets_no_code(browser, application):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    response = submit_consent(Client(), url, screen)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()


def _shift_signing_clock(monkeypatch, seconds: float) -> None:
    real_time = time.time
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: real_time() + seconds))


def test_P3_expired_consent_form_is_rejected(browser, application, monkeypatch):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    _shift_signing_clock(monkeypatch, 11 * 60)  # CONSENT_FORM_MAX_AGE defaults to 10 minutes
    response = submit_consent(browser, url, screen)
    assert_invalid_request_page(response)
    assert b"expired" in response.content
    assert not Grant.objects.exists()
    assert not Consent.objects.exists()


def test_P3_consent_form_within_max_age_is_accepted(browser, application, monkeypatch):
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    _shift_signing_clock(monkeypatch, 9 * 60)
    assert "code" in redirect_params(submit_consent(browser, url, screen))


def test_P3_consent_form_max_age_setting_is_honoured(browser, application, monkeypatch, settings):
    settings.OFFLINE_ACCESS = {"CONSENT_FORM_MAX_AGE": 60}
    url = authorize_url(application, scope="openid offline_access", prompt="consent")
    screen = browser.get(url)
    _shift_signing_clock(monkeypatch, 120)
    assert_invalid_request_page(submit_consent(browser, url, screen))
    assert not Grant.objects.exists()


# P4: prompt=none ----------------------------------------------------------------


def test_P4_prompt_none_anonymous_gets_login_required(api, application):
    response = api.get(authorize_url(application, prompt="none"))
    assert response["Location"].startswith(application.redirect_uris)
    params = redirect_params(response)
    assert params["error"] == "login_required"
    assert params["state"] == "state-123"
    assert not Grant.objects.exists()


def test_P4_prompt_none_logged_in_needing_consent_gets_consent_required(browser, application):
    response = browser.get(authorize_url(application, scope="openid", prompt="none"))
    assert response["Location"].startswith(application.redirect_uris)
    params = redirect_params(response)
    assert params["error"] == "consent_required"
    assert params["state"] == "state-123"
    assert not Grant.objects.exists()


def test_P4_prompt_none_with_offline_access_and_only_enduring_consent_never_shows_a_page(
    browser, application, enduring_consent
):
    response = browser.get(authorize_url(application, scope="openid offline_access", prompt="none"))
    assert response.status_code == 302
    assert response["Location"].startswith(application.redirect_uris)


def test_P4_prompt_none_skip_authorization_app_gets_a_code(browser, api, skip_application):
    params = redirect_params(browser.get(authorize_url(skip_application, scope="openid", prompt="none")))
    assert "error" not in params
    assert params["state"] == "state-123"
    body = assert_no_refresh_token(exchange_code(api, skip_application, params["code"]))
    assert "id_token" in body


def test_P4_prompt_none_with_enduring_consent_gets_refresh_token(browser, api, skip_application, user):
    consent = factories.EnduringConsentFactory(user=user, application=skip_application)
    params = redirect_params(
        browser.get(authorize_url(skip_application, scope="openid offline_access", prompt="none"))
    )
    assert set(Grant.objects.get(code=stored(params["code"])).scope.split()) == {"openid", OFFLINE}
    body = exchange_code(api, skip_application, params["code"]).json()
    assert "refresh_token" in body
    family = family_of(body["refresh_token"])
    assert family.consent == consent


def test_P4_prompt_none_without_enduring_consent_gets_code_but_no_refresh_token(
    browser, api, skip_application
):
    params = redirect_params(
        browser.get(authorize_url(skip_application, scope="openid offline_access", prompt="none"))
    )
    assert "error" not in params
    assert Grant.objects.get(code=stored(params["code"])).scope == "openid"
    body = assert_no_refresh_token(exchange_code(api, skip_application, params["code"]))
    assert token_scopes(body) == {"openid"}


def test_P4_prompt_none_with_approval_prompt_auto_and_live_token_gets_a_code(browser, application, user):
    AccessToken.objects.create(
        user=user,
        application=application,
        token="live-access-token",
        scope="openid",
        expires=timezone.now() + timedelta(hours=1),
    )
    params = redirect_params(
        browser.get(authorize_url(application, scope="openid", prompt="none", approval_prompt="auto"))
    )
    assert "code" in params


def _assert_invalid_request_response(response, application) -> None:
    """invalid_request as an error redirect to the client (RFC 6749 4.1.2.1), with its state."""
    assert response["Location"].startswith(application.redirect_uris + "?")
    params = redirect_params(response)
    assert params["error"] == "invalid_request"
    assert params["state"] == "state-123"
    assert not Grant.objects.exists()


def test_P4_prompt_none_combined_with_consent_is_invalid_request(browser, application):
    response = browser.get(authorize_url(application, prompt="none consent"))
    _assert_invalid_request_response(response, application)


def test_P4_prompt_none_combined_with_consent_is_invalid_request_when_anonymous(api, application):
    response = api.get(authorize_url(application, prompt="none consent"))
    _assert_invalid_request_response(response, application)


# prompt=login -------------------------------------------------------------------


def _login_redirect_next(response) -> dict[str, str]:
    assert response.status_code == 302, response.content[:500]
    location = urlparse(response["Location"])
    assert location.path == "/accounts/login/"
    next_url = urlparse(parse_qs(location.query)["next"][0])
    assert next_url.path == "/o/authorize/"
    return {key: values[0] for key, values in parse_qs(next_url.query).items()}


@pytest.mark.parametrize("logged_in", [True, False])
def test_prompt_login_keeps_consent_in_next(browser, api, application, logged_in):
    client = browser if logged_in else api
    next_params = _login_redirect_next(client.get(authorize_url(application, prompt="login consent")))
    assert next_params["prompt"] == "consent"
    assert next_params["scope"] == "openid offline_access"
    assert next_params["client_id"] == application.client_id
    assert next_params["state"] == "state-123"


def test_prompt_login_alone_is_removed_from_next(browser, application):
    next_params = _login_redirect_next(browser.get(authorize_url(application, prompt="login")))
    assert "prompt" not in next_params


def test_prompt_login_then_consent_round_trip_grants_offline_access(api, application, user):
    response = api.get(authorize_url(application, prompt="login consent"))
    next_url = parse_qs(urlparse(response["Location"]).query)["next"][0]
    login = api.post(
        "/accounts/login/", {"username": "alice", "password": factories.PASSWORD, "next": next_url}
    )
    assert login.status_code == 302
    assert login["Location"] == next_url
    screen = api.get(next_url)
    assert screen.status_code == 200
    assert screen.context["offline_access"] is True
    params = redirect_params(submit_consent(api, next_url, screen))
    assert "refresh_token" in exchange_code(Client(), application, params["code"]).json()


# Malformed prompt ---------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["select_account", "consent bogus", "CONSENT", "create"])
def test_prompt_unknown_value_is_invalid_request(browser, application, prompt):
    response = browser.get(authorize_url(application, prompt=prompt))
    _assert_invalid_request_response(response, application)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], frozenset()),
        (["consent"], frozenset({"consent"})),
        (["login consent"], frozenset({"login", "consent"})),
        (["none"], frozenset({"none"})),
    ],
)
def test_prompt_parse_accepts_supported_values(values, expected):
    assert policy.parse_prompt(values) == expected


@pytest.mark.parametrize(
    "values", [["none consent"], ["none login"], ["consent", "consent"], ["select_account"], ["Consent"]]
)
def test_prompt_parse_rejects_malformed_values(values):
    with pytest.raises(policy.PromptError):
        policy.parse_prompt(values)


def test_prompt_repeated_parameter_is_invalid_request(browser, application):
    response = browser.get(authorize_url(application) + "&prompt=consent&prompt=login")
    _assert_invalid_request_response(response, application)


# P5: grants without a consent screen ---------------------------------------------


def test_P5_password_grant_without_enduring_consent_gets_no_refresh_token(api, user, password_application):
    body = assert_no_refresh_token(password_grant(api, password_application))
    assert token_scopes(body) == {"openid"}
    assert not RefreshToken.objects.exists()
    assert AccessToken.objects.get().scope == "openid"


def test_P5_password_grant_with_enduring_consent_gets_refresh_token(api, user, password_application):
    consent = factories.EnduringConsentFactory(user=user, application=password_application)
    response = password_grant(api, password_application)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "refresh_token" in body
    assert OFFLINE in token_scopes(body)
    family = family_of(body["refresh_token"])
    assert family.consent == consent
    assert refresh(api, password_application, body["refresh_token"]).status_code == 200


def test_P5_password_grant_with_expired_enduring_consent_gets_no_refresh_token(
    api, user, password_application
):
    factories.EnduringConsentFactory(
        user=user, application=password_application, expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert_no_refresh_token(password_grant(api, password_application))


def test_P5_password_grant_with_interactive_consent_only_gets_no_refresh_token(
    api, user, password_application
):
    factories.ConsentFactory(user=user, application=password_application)
    assert_no_refresh_token(password_grant(api, password_application))


def test_P5_password_grant_without_offline_access_requested_gets_no_refresh_token(
    api, user, password_application
):
    factories.EnduringConsentFactory(user=user, application=password_application)
    assert_no_refresh_token(password_grant(api, password_application, scope="openid"))


def test_P5_client_credentials_never_gets_refresh_token(api, db):
    application = factories.ApplicationFactory(
        client_id="backend-job", authorization_grant_type="client-credentials"
    )
    response = client_credentials_grant(api, application, scope="read offline_access")
    body = assert_no_refresh_token(response)
    assert token_scopes(body) == {"read"}
    assert AccessToken.objects.get().scope == "read"
    assert not RefreshToken.objects.exists()


def test_P5_client_credentials_ignores_an_enduring_consent_of_the_client_owner(api, user):
    application = factories.ApplicationFactory(
        client_id="owned-job", authorization_grant_type="client-credentials", user=user
    )
    factories.EnduringConsentFactory(user=user, application=application)
    response = client_credentials_grant(api, application, scope="read offline_access")
    assert token_scopes(assert_no_refresh_token(response)) == {"read"}
    assert not RefreshToken.objects.exists()


@pytest.mark.parametrize(
    ("grant_type", "enduring", "kept"),
    [
        ("password", True, True),
        ("password", False, False),
        ("client_credentials", True, False),
        ("client_credentials", False, False),
    ],
)
def test_P5_direct_grant_keeps_offline_access_rules(grant_type, enduring, kept):
    assert (
        policy.direct_grant_keeps_offline_access(grant_type=grant_type, has_enduring_consent=enduring) is kept
    )


# P6: refreshing -----------------------------------------------------------------


def test_P6_refresh_refused_after_consent_revoked(browser, api, application, user):
    body = offline_tokens(browser, api, application)
    result = services.revoke_consents(
        Consent.objects.filter(user=user, application=application), actor=user, via=ConsentEvent.Via.USER
    )
    assert result.consents == 1
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def test_P6_refresh_refused_when_consent_status_is_revoked_even_if_tokens_were_not(browser, api, application):
    # The validator checks the consent itself, not only DOT's revoked flag.
    body = offline_tokens(browser, api, application)
    Consent.objects.update(status=Consent.Status.REVOKED, ended_at=timezone.now())
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def test_P6_refresh_refused_after_consent_expired(browser, api, application, user):
    body = offline_tokens(browser, api, application)
    consent = Consent.objects.get(user=user, application=application)
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))
    consent.refresh_from_db()
    assert consent.status == Consent.Status.EXPIRED
    assert consent.ended_at is not None
    assert consent.events.filter(action=ConsentEvent.Action.EXPIRED, via=ConsentEvent.Via.SYSTEM).count() == 1
    assert refresh_token_row(body["refresh_token"]).revoked is not None
    # A second attempt does not write a second event.
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))
    assert consent.events.filter(action=ConsentEvent.Action.EXPIRED).count() == 1


def test_P6_refresh_refused_after_enduring_consent_expired(api, user, password_application):
    consent = factories.EnduringConsentFactory(user=user, application=password_application)
    body = password_grant(api, password_application).json()
    Consent.objects.filter(pk=consent.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_invalid_grant(refresh(api, password_application, body["refresh_token"]))
    consent.refresh_from_db()
    assert consent.status == Consent.Status.EXPIRED
    assert consent.events.filter(action=ConsentEvent.Action.EXPIRED).count() == 1


def test_P6_refresh_refused_for_inactive_user(browser, api, application, user):
    body = offline_tokens(browser, api, application)
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def _age_refresh_token(raw_token: str, age: timedelta) -> None:
    row = refresh_token_row(raw_token)
    past = timezone.now() - age
    RefreshToken.objects.filter(pk=row.pk).update(created=past, updated=past)
    AccessToken.objects.filter(pk=row.access_token_id).update(created=past, updated=past)


def test_P6_refresh_refused_after_idle_timeout(browser, api, application):
    body = offline_tokens(browser, api, application)
    _age_refresh_token(body["refresh_token"], timedelta(days=30, minutes=1))
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))
    family = OfflineTokenFamily.objects.get()
    assert family.ended_at is not None
    # The consent stays: only this device's tokens ran out.
    assert Consent.objects.get().status == Consent.Status.ACTIVE


def test_P6_refresh_allowed_within_idle_timeout(browser, api, application):
    body = offline_tokens(browser, api, application)
    _age_refresh_token(body["refresh_token"], timedelta(days=29))
    assert refresh(api, application, body["refresh_token"]).status_code == 200


def test_P6_idle_timeout_setting_is_honoured(browser, api, application, settings):
    settings.OFFLINE_ACCESS = {"REFRESH_TOKEN_IDLE_TIMEOUT": timedelta(hours=1)}
    body = offline_tokens(browser, api, application)
    _age_refresh_token(body["refresh_token"], timedelta(hours=2))
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def test_P6_idle_timeout_counts_from_the_latest_rotation(browser, api, application):
    body = offline_tokens(browser, api, application)
    OfflineTokenFamily.objects.update(created_at=timezone.now() - timedelta(days=100))
    _age_refresh_token(body["refresh_token"], timedelta(days=20))
    rotated = refresh(api, application, body["refresh_token"]).json()
    # The family is 100 days old, but its newest token is fresh.
    assert refresh(api, application, rotated["refresh_token"]).status_code == 200


def test_P6_refresh_refused_after_absolute_lifetime(browser, api, application):
    body = offline_tokens(browser, api, application)
    OfflineTokenFamily.objects.update(created_at=timezone.now() - timedelta(days=365, minutes=1))
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))
    assert OfflineTokenFamily.objects.get().ended_at is not None
    assert refresh_token_row(body["refresh_token"]).revoked is not None


def test_P6_refresh_allowed_within_absolute_lifetime(browser, api, application):
    body = offline_tokens(browser, api, application)
    OfflineTokenFamily.objects.update(created_at=timezone.now() - timedelta(days=364))
    assert refresh(api, application, body["refresh_token"]).status_code == 200


def test_P6_absolute_lifetime_setting_is_honoured(browser, api, application, settings):
    settings.OFFLINE_ACCESS = {"REFRESH_TOKEN_ABSOLUTE_LIFETIME": 3600}
    body = offline_tokens(browser, api, application)
    OfflineTokenFamily.objects.update(created_at=timezone.now() - timedelta(hours=2))
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def test_P6_idle_timeout_without_rotation_counts_from_the_last_refresh(browser, api, application, settings):
    # Without rotation DOT keeps the refresh token and updates its access token on each refresh.
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "ROTATE_REFRESH_TOKEN": False}
    body = offline_tokens(browser, api, application)
    row = refresh_token_row(body["refresh_token"])
    RefreshToken.objects.filter(pk=row.pk).update(created=timezone.now() - timedelta(days=40))
    AccessToken.objects.filter(pk=row.access_token_id).update(updated=timezone.now() - timedelta(days=1))
    response = refresh(api, application, body["refresh_token"])
    assert response.status_code == 200, response.content
    assert response.json()["refresh_token"] == body["refresh_token"]
    _age_refresh_token(body["refresh_token"], timedelta(days=31))
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def test_P6_refresh_refused_when_family_has_no_consent(browser, api, application):
    body = offline_tokens(browser, api, application)
    OfflineTokenFamily.objects.update(consent=None)
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))


def test_P6_refresh_dropping_offline_access_gets_access_token_only(browser, api, application):
    body = offline_tokens(browser, api, application)
    response = refresh(api, application, body["refresh_token"], scope="openid")
    narrowed = assert_no_refresh_token(response)
    assert token_scopes(narrowed) == {"openid"}
    assert narrowed["access_token"] != body["access_token"]
    assert AccessToken.objects.filter(token_checksum=checksum(narrowed["access_token"])).exists()
    # The presented refresh token is used up and its family ended, even within the grace period.
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))
    assert_invalid_grant(refresh(api, application, body["refresh_token"], scope="openid"))
    assert OfflineTokenFamily.objects.get().ended_at is not None
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    # Offline access ended for this device, not the consent.
    assert Consent.objects.get().status == Consent.Status.ACTIVE


def test_P6_refresh_keeping_offline_access_rotates(browser, api, application):
    body = offline_tokens(browser, api, application)
    response = refresh(api, application, body["refresh_token"], scope="openid offline_access")
    assert response.status_code == 200, response.content
    rotated = response.json()
    assert rotated["refresh_token"] != body["refresh_token"]
    assert rotated["access_token"] != body["access_token"]
    assert token_scopes(rotated) == {"openid", OFFLINE}
    assert refresh_token_row(body["refresh_token"]).revoked is not None
    assert (
        refresh_token_row(rotated["refresh_token"]).token_family
        == refresh_token_row(body["refresh_token"]).token_family
    )
    assert OfflineTokenFamily.objects.count() == 1


def test_P6_refresh_without_scope_keeps_offline_access(browser, api, application):
    body = offline_tokens(browser, api, application)
    rotated = refresh(api, application, body["refresh_token"]).json()
    assert "refresh_token" in rotated
    assert token_scopes(rotated) == {"openid", OFFLINE}


def test_P6_old_refresh_token_within_grace_period_returns_the_same_pair(browser, api, application):
    body = offline_tokens(browser, api, application)
    first = refresh(api, application, body["refresh_token"]).json()
    retry = refresh(api, application, body["refresh_token"])
    assert retry.status_code == 200, retry.content
    assert retry.json()["access_token"] == first["access_token"]
    assert retry.json()["refresh_token"] == first["refresh_token"]
    assert RefreshToken.objects.filter(revoked__isnull=True).count() == 1


def test_P6_grace_period_retry_cannot_narrow_the_scope(browser, api, application):
    # A retry may only repeat the earlier answer, not mint a second, narrowed access token.
    body = offline_tokens(browser, api, application)
    first = refresh(api, application, body["refresh_token"]).json()
    assert_invalid_grant(refresh(api, application, body["refresh_token"], scope="openid"))
    assert refresh(api, application, first["refresh_token"]).status_code == 200


def test_P6_replay_outside_grace_period_revokes_the_family(browser, api, application):
    body = offline_tokens(browser, api, application)
    rotated = refresh(api, application, body["refresh_token"]).json()
    RefreshToken.objects.filter(token_checksum=checksum(body["refresh_token"])).update(
        revoked=timezone.now() - timedelta(seconds=31)
    )
    assert_invalid_grant(refresh(api, application, body["refresh_token"]))
    # Reuse protection: the thief's replay also kills the legitimate newest token.
    assert_invalid_grant(refresh(api, application, rotated["refresh_token"]))
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()


def test_P6_refresh_by_another_client_is_refused(browser, api, application):
    body = offline_tokens(browser, api, application)
    other = factories.ApplicationFactory(client_id="other-client")
    assert_invalid_grant(refresh(api, other, body["refresh_token"]))
    assert refresh(api, application, body["refresh_token"]).status_code == 200


def test_P6_site_logout_does_not_end_offline_access(browser, api, application):
    body = offline_tokens(browser, api, application)
    response = browser.post("/accounts/logout/")
    assert response.status_code in (200, 302)
    # The browser session is really gone...
    after = browser.get(authorize_url(application, prompt="consent"))
    assert after.status_code == 302
    assert urlparse(after["Location"]).path == "/accounts/login/"
    # ...but the refresh token keeps working.
    response = refresh(api, application, body["refresh_token"])
    assert response.status_code == 200, response.content
    assert "refresh_token" in response.json()


# P8: discovery ------------------------------------------------------------------


def test_P8_discovery_names_revocation_introspection_and_device_endpoints(api, db):
    data = api.get("/o/.well-known/openid-configuration").json()
    assert data["revocation_endpoint"] == "http://testserver/o/revoke_token/"
    assert data["introspection_endpoint"] == "http://testserver/o/introspect/"
    assert data["device_authorization_endpoint"] == "http://testserver/o/device-authorization/"
    assert "none" in data["token_endpoint_auth_methods_supported"]  # public native and CLI clients


def test_P8_discovery_lists_offline_access_and_prompt_values(api, db):
    response = api.get("/o/.well-known/openid-configuration")
    assert response.status_code == 200
    data = response.json()
    assert OFFLINE in data["scopes_supported"]
    assert data["prompt_values_supported"] == ["consent", "login", "none"]
    assert data["authorization_endpoint"].endswith("/o/authorize/")


# max_age and prompt=login (OIDC Core 3.1.2.1, 3.1.2.3) ---------------------------------

_NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([""], None), (["0"], 0), (["1"], 1), (["10000"], 10000), (["9" * 40], int("9" * 40))],
)
def test_parse_max_age_accepts_non_negative_integers(values, expected):
    assert policy.parse_max_age(values) == expected


@pytest.mark.parametrize(
    "values",
    [["-1"], ["abc"], ["1.5"], ["+5"], [" 5"], ["5 "], ["0x10"], ["1e3"], ["٣"], ["1", "2"], ["9" * 4001]],
)
def test_parse_max_age_refuses_malformed_values(values):
    with pytest.raises(policy.MaxAgeError):
        policy.parse_max_age(values)


def _ago(seconds):
    return None if seconds is None else _NOW - timedelta(seconds=seconds)


def _authentication(*, prompt=(), max_age=None, auth_age=None, requested_ago=None):
    return policy.authentication_action(
        prompt=frozenset(prompt),
        max_age=max_age,
        auth_time=_ago(auth_age),
        reauthentication_requested_at=_ago(requested_ago),
        now=_NOW,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, policy.Authentication.PROCEED),
        ({"auth_age": 10**6}, policy.Authentication.PROCEED),  # no max_age: any age will do
        ({"max_age": 60, "auth_age": 60}, policy.Authentication.PROCEED),
        ({"max_age": 60, "auth_age": 61}, policy.Authentication.LOGIN),
        ({"max_age": 0, "auth_age": 1}, policy.Authentication.LOGIN),
        ({"max_age": 10000, "auth_age": None}, policy.Authentication.LOGIN),  # unknown: too old
        ({"max_age": 60, "auth_age": 61, "prompt": ["none"]}, policy.Authentication.LOGIN_REQUIRED),
        ({"max_age": 60, "auth_age": 5, "prompt": ["none"]}, policy.Authentication.PROCEED),
        ({"prompt": ["login"], "auth_age": 0}, policy.Authentication.LOGIN),
        ({"prompt": ["login", "consent"], "auth_age": 0}, policy.Authentication.LOGIN),
        # Back from the login page: passes on a login since it was sent, whatever max_age says.
        ({"max_age": 0, "auth_age": 3, "requested_ago": 4}, policy.Authentication.PROCEED),
        ({"requested_ago": 4, "auth_age": 4}, policy.Authentication.PROCEED),
        # Back without logging in: refused, not sent round again.
        ({"requested_ago": 4, "auth_age": 5}, policy.Authentication.LOGIN_REQUIRED),
        ({"max_age": 60, "requested_ago": 4, "auth_age": 30}, policy.Authentication.LOGIN_REQUIRED),
        ({"requested_ago": 4, "auth_age": None}, policy.Authentication.LOGIN_REQUIRED),
    ],
)
def test_authentication_action(kwargs, expected):
    assert _authentication(**kwargs) == expected


@pytest.mark.parametrize(
    ("response_type", "response_mode", "in_fragment"),
    [
        ("code", None, False),
        ("code", "fragment", True),
        ("code", "query", False),
        ("code", "form_post", False),  # refused (invalid_request) in the default place
        ("code id_token", None, True),
        ("code token", None, True),
        ("id_token token", None, True),
        ("token", None, True),
        ("id_token", None, True),
        # Refused (invalid_request), in the only place a token-returning response is read.
        ("token", "query", True),
        ("code id_token", "query", True),
        ("code token", "form_post", True),
        ("bogus", None, False),
        ("", None, False),
        (None, None, False),
    ],
)
def test_authorization_response_place_follows_the_response_type_and_mode(
    response_type, response_mode, in_fragment
):
    assert policy.answers_in_fragment(response_type, response_mode) is in_fragment


@pytest.mark.parametrize(
    ("response_type", "values", "refused"),
    [
        ("code", [], False),
        ("code", [""], False),  # RFC 6749 3.1: empty is absent
        ("code", ["query"], False),
        ("code", ["fragment"], False),
        ("token", ["fragment"], False),
        ("code id_token token", ["fragment"], False),
        ("token", [""], False),
        # Multiple Response Type Encoding Practices 2.1: never tokens in the query.
        ("token", ["query"], True),
        ("id_token", ["query"], True),
        ("id_token token", ["query"], True),
        ("code token", ["query"], True),
        ("code id_token", ["query"], True),
        ("code id_token token", ["query"], True),
        ("token code", ["query"], True),  # order does not matter (RFC 6749 3.1.1)
        # Not supported, whatever the response type.
        ("code", ["form_post"], True),
        ("code", ["jwt"], True),
        ("code", ["Query"], True),  # case-sensitive
        ("token", ["form_post"], True),
        # RFC 6749 3.1: not twice, even the same value.
        ("code", ["query", "query"], True),
        ("code", ["query", "fragment"], True),
    ],
)
def test_response_mode_error(response_type, values, refused):
    error = policy.response_mode_error(response_type, values)
    assert (error is not None) is refused
    if error is not None:
        assert "response_mode" in error


@pytest.mark.parametrize(
    ("request_values", "request_uri_values", "error"),
    [
        ([], [], None),
        ([""], [""], None),  # RFC 6749 3.1: empty is absent
        (["eyJhbGciOiJub25lIn0.e30."], [], "request_not_supported"),
        ([], ["https://client.example/r.jwt"], "request_uri_not_supported"),
        ([], ["urn:ietf:params:oauth:request_uri:abc"], "request_uri_not_supported"),
        (["", "x"], [], "request_not_supported"),
        (["x"], ["y"], "invalid_request"),  # OIDC Core 6: not both
    ],
)
def test_request_objects_are_not_supported(request_values, request_uri_values, error):
    if error is None:
        assert policy.check_request_object(request_values, request_uri_values) is None
        return
    with pytest.raises(policy.RequestObjectError) as raised:
        policy.check_request_object(request_values, request_uri_values)
    assert raised.value.error == error


@pytest.mark.parametrize(
    ("oidc_enabled", "signs", "expected"),
    [
        (True, True, ["openid", "offline_access", "read"]),
        (True, False, ["offline_access", "read"]),
        (False, False, ["openid", "offline_access", "read"]),  # without OIDC, openid is just a scope
        (False, True, ["openid", "offline_access", "read"]),
    ],
)
def test_openid_only_for_clients_the_server_signs_id_tokens_for(oidc_enabled, signs, expected):
    scopes = ["openid", "offline_access", "read"]
    assert (
        policy.scopes_for_client(scopes, oidc_enabled=oidc_enabled, client_signs_id_tokens=signs) == expected
    )
