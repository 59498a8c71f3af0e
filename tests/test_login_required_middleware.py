"""Every endpoint keeps DOT's behaviour on a site with Django's LoginRequiredMiddleware (5.1+).

The middleware sends every anonymous request to the login page unless the view is
marked ``login_not_required``; it reads the marker as ``view_func.login_required``
on the callback the URL resolves to. DOT marks its protocol endpoints (the
authorization endpoint answers anonymous ``prompt=none`` / ``prompt=login`` and
refuses untrusted redirects itself); pages that need a person stay unmarked.
Issue 10: the app's authorization view overrode ``dispatch`` and lost the marker.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client, RequestFactory
from django.urls import URLResolver, get_resolver, resolve, reverse
from oauth2_provider import urls as dot_urls
from oauth2_provider.compat import login_not_required
from rest_framework.views import APIView

from offline_access import hardening
from offline_access import urls as app_urls
from offline_access.api import urls as api_urls

from . import factories
from .oauth import (
    authorize_url,
    client_auth,
    discovery_issuer,
    exchange_code,
    get_code,
    login_redirect_next,
    redirect_params,
    refresh,
    submit_consent,
)
from .test_api import bearer_token
from .test_device import form_post, start

pytestmark = pytest.mark.usefixtures("login_required_middleware")

#: DOT's endpoints that answer without a signed-in user (OAuth clients, resource
#: servers, discovery, and the authorization endpoint, which decides itself).
PROTOCOL_ENDPOINTS = {
    "authorize",
    "token",
    "revoke-token",
    "introspect",
    "device-authorization",
    "user-info",
    "jwks-info",
    "oidc-connect-discovery-info",
    "oauth-server-metadata",
    "oauth-server-metadata-issuer",
    "oauth-resource-metadata",
    "oauth-resource-metadata-path",
    "rp-initiated-logout",
}


def _login_required(callback) -> bool:
    # Read exactly as django.contrib.auth.middleware.LoginRequiredMiddleware.process_view does.
    return getattr(callback, "login_required", True)


# The marker, endpoint by endpoint ------------------------------------------------------


def test_every_endpoint_keeps_dots_login_required_marker():
    dot = {
        pattern.name: _login_required(pattern.callback)
        for pattern in dot_urls.metadata_urlpatterns + dot_urls.base_urlpatterns + dot_urls.oidc_urlpatterns
    }
    app = {pattern.name: _login_required(pattern.callback) for pattern in app_urls.urlpatterns}
    assert {name for name, required in dot.items() if not required} == PROTOCOL_ENDPOINTS
    assert {name: app[name] for name in dot} == dot
    # The app's own pages are for a signed-in user; "Not you?" answers a visitor whose
    # session ended meanwhile itself (to the login page, back to the same request).
    assert {name: required for name, required in app.items() if name not in dot} == {
        "connected-apps": True,
        "connected-apps-revoke": True,
        "connected-apps-revoke-device": True,
        "switch-account": False,
    }


def test_harden_keeps_the_marker_of_the_view_it_wraps():
    def exempt_view(request):
        raise AssertionError("not called")

    def page(request):
        raise AssertionError("not called")

    exempt = hardening.harden(
        login_not_required(exempt_view),
        hidden_fields=("code",),
        forbidden_in_url=("code",),
        client_authentication=True,
        bearer_resource=True,
        cache=False,
    )
    assert _login_required(exempt) is False
    assert _login_required(hardening.harden(page)) is True


# The authorization endpoint, anonymous ----------------------------------------------------


def test_anonymous_prompt_none_gets_login_required_at_the_client(application):
    response = Client().get(authorize_url(application, prompt="none"))

    params = redirect_params(response)
    assert response["Location"].startswith(application.redirect_uris + "?")
    assert params["error"] == "login_required"
    assert params["state"] == "state-123"
    assert params["iss"] == discovery_issuer()
    assert "code" not in params


@pytest.mark.parametrize(
    ("param", "value", "description"),
    [
        ("client_id", "no-such-client", "Invalid client_id parameter value."),
        ("redirect_uri", "https://attacker.example/cb", "Mismatching redirect URI."),
        ("redirect_uri", None, "Missing redirect URI."),
    ],
)
def test_prompt_none_with_an_untrusted_redirect_gets_the_error_page_not_a_redirect(
    application, param, value, description
):
    """DOT's open-redirect guard for anonymous prompt=none: validate before redirecting anywhere."""
    factories.ApplicationFactory(
        client_id="two-uris", redirect_uris="https://a.example/cb https://b.example/cb"
    )
    if param == "redirect_uri" and value is None:
        application = type(application).objects.get(client_id="two-uris")  # no default redirect URI
    response = Client().get(authorize_url(application, prompt="none", **{param: value}))
    assert response.status_code == 400, (response.status_code, response.get("Location"))
    assert not response.has_header("Location")
    assert response.context["error"].description == description


#: Anonymous requests whose answer must not depend on the middleware.
ANONYMOUS_REQUESTS = {
    "no prompt": {},
    "prompt=login": {"prompt": "login"},
    "prompt=login consent": {"prompt": "login consent"},
    "prompt=none": {"prompt": "none"},
    "prompt=none, unknown client": {"prompt": "none", "client_id": "no-such-client"},
    "prompt=none, unregistered redirect": {"prompt": "none", "redirect_uri": "https://attacker.example/cb"},
    "prompt=none, no PKCE": {"prompt": "none", "code_challenge": None, "code_challenge_method": None},
    "prompt=none login": {"prompt": "none login"},
    "prompt=bogus": {"prompt": "bogus"},
    "unknown client": {"client_id": "no-such-client"},
}


@pytest.mark.parametrize("request_name", sorted(ANONYMOUS_REQUESTS))
def test_anonymous_answers_are_the_same_with_and_without_the_middleware(settings, application, request_name):
    url = authorize_url(application, **ANONYMOUS_REQUESTS[request_name])
    with_middleware = Client().get(url)
    settings.MIDDLEWARE = [
        name for name in settings.MIDDLEWARE if not name.endswith("LoginRequiredMiddleware")
    ]
    without_middleware = Client().get(url)
    assert with_middleware.status_code == without_middleware.status_code
    assert with_middleware.get("Location") == without_middleware.get("Location")


def test_anonymous_prompt_login_logs_in_once(application, user):
    url = authorize_url(application, prompt="login consent")
    client = Client()
    next_url = login_redirect_next(client.get(url))
    assert parse_qs(urlparse(next_url).query)["prompt"] == ["consent"]

    login = client.post(
        "/accounts/login/", {"username": "alice", "password": factories.PASSWORD, "next": next_url}
    )
    assert login["Location"] == next_url
    screen = client.get(next_url)

    assert screen.status_code == 200, screen.get("Location")  # the consent screen, not the login page again
    params = redirect_params(submit_consent(client, next_url, screen))
    assert "refresh_token" in exchange_code(Client(), application, params["code"]).json()


def test_anonymous_request_without_prompt_is_sent_to_log_in_and_back(application):
    url = authorize_url(application)
    assert login_redirect_next(Client().get(url)) == url


def test_anonymous_consent_post_is_sent_to_log_in(application):
    response = Client().post(authorize_url(application), {"request": "x", "decision": "allow"})
    login_redirect_next(response)
    assert not application.grant_set.exists()


def test_anonymous_malformed_prompt_goes_back_to_the_client(application):
    params = redirect_params(Client().get(authorize_url(application, prompt="none login")))
    assert params["error"] == "invalid_request"
    assert params["state"] == "state-123"
    assert params["iss"] == discovery_issuer()


# The other protocol endpoints, from a client without a session ------------------------------


def test_token_userinfo_introspect_refresh_revoke_work_without_a_session(browser, application, user):
    code = get_code(browser, application, prompt="consent")
    client = Client()  # a back end: no session, so LoginRequiredMiddleware sees an anonymous user

    tokens = exchange_code(client, application, code).json()
    assert "refresh_token" in tokens, tokens
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {tokens['access_token']}"}

    userinfo = client.get("/o/userinfo/", **bearer)
    assert userinfo.status_code == 200
    assert userinfo.json()["sub"] == str(user.pk)

    introspection = client.post(
        "/o/introspect/", {"token": tokens["access_token"], **client_auth(application)}
    )
    assert introspection.status_code == 200
    assert introspection.json()["active"] is True

    refreshed = refresh(client, application, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.content
    revoked = client.post(
        "/o/revoke_token/", {"token": refreshed.json()["refresh_token"], **client_auth(application)}
    )
    assert revoked.status_code == 200
    assert refresh(client, application, refreshed.json()["refresh_token"]).status_code == 400


def test_token_endpoint_errors_are_json_not_a_login_redirect(application):
    response = Client().post("/o/token/", {"grant_type": "authorization_code", "code": "nope"})
    assert response.status_code in (400, 401)
    assert response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    "path",
    [
        "/o/.well-known/openid-configuration",
        "/o/.well-known/oauth-authorization-server",
        "/o/.well-known/jwks.json",
    ],
)
def test_discovery_documents_are_public(db, path):
    response = Client().get(path)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")


def test_userinfo_without_a_token_is_401_not_a_login_redirect(db):
    response = Client().get("/o/userinfo/")
    assert response.status_code == 401


def test_rp_initiated_logout_answers_anonymous_users_itself(settings, db):
    """OIDC RP-Initiated Logout: DOT's view answers (here: back to the site), as without the middleware."""
    with_middleware = Client().get("/o/logout/")
    assert "/accounts/login/" not in with_middleware.get("Location", "")
    settings.MIDDLEWARE = [
        name for name in settings.MIDDLEWARE if not name.endswith("LoginRequiredMiddleware")
    ]
    without_middleware = Client().get("/o/logout/")
    assert (with_middleware.status_code, with_middleware.get("Location")) == (
        without_middleware.status_code,
        without_middleware.get("Location"),
    )


def test_device_authorization_works_without_a_session(cli):
    started = start(Client(), cli)
    assert started["user_code"]
    assert started["device_code"]


def test_device_token_poll_is_json_not_a_login_redirect(cli):
    started = start(Client(), cli)
    response = form_post(
        Client(),
        "/o/token/",
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": started["device_code"],
            "client_id": cli.client_id,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] in ("authorization_pending", "slow_down")


# Pages for a person still need one ------------------------------------------------------------


def test_pages_for_a_person_send_anonymous_users_to_log_in(settings, cli, application, user):
    """With the middleware and without it: each page refuses anonymous users itself,
    so a site without the middleware is as safe (the middleware is not the only guard)."""
    started = start(Client(), cli)
    pages = [
        "/o/device/",
        f"/o/device-confirm/{cli.client_id}/{started['user_code']}",
        f"/o/device-grant-status/{cli.client_id}/{started['user_code']}",
        "/o/connected-apps/",
        "/o/connected-apps/1/revoke/",
        "/o/connected-apps/device/1/revoke/",
    ]
    for page in pages:
        assert resolve(page).url_name  # a real route, so the redirect below is the middleware's or the view's
        assert login_redirect_next(Client().get(page)) == page
        assert login_redirect_next(Client().post(page)) == page
    settings.MIDDLEWARE = [
        name for name in settings.MIDDLEWARE if not name.endswith("LoginRequiredMiddleware")
    ]
    for page in pages:
        assert login_redirect_next(Client().get(page)) == page
        assert login_redirect_next(Client().post(page)) == page


def test_rest_api_answers_anonymous_callers_itself_and_takes_bearer_tokens(user, application):
    anonymous = Client().get("/api/offline-access/me/consents/")
    assert anonymous.status_code in (401, 403)
    assert anonymous["Content-Type"].startswith("application/json")

    token = bearer_token(user, application)
    response = Client().get("/api/offline-access/me/consents/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content


# Every route of the example site, and the REST API whatever DRF marks ----------------------

#: The only routes of the app and the example site that the middleware lets anonymous
#: requests reach: each answers them itself (protocol endpoints and the REST API
#: authenticate their callers and answer 401/403/400; metadata and the home page are
#: public). Django's own routes (admin, django.contrib.auth) are Django's business.
PUBLIC_ROUTES = {
    *(f"oauth2_provider:{name}" for name in PROTOCOL_ENDPOINTS),
    "offline_access_well_known:oauth-server-metadata",
    "offline_access_well_known:oauth-server-metadata-host",
    *(f"offline_access_api:{pattern.name}" for pattern in api_urls.urlpatterns),
    "api-schema",
    "home",
    # "Not you? Switch account": signs out, and sends anyone to the login page itself.
    "oauth2_provider:switch-account",
}


def _routes(patterns, namespace=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from _routes(pattern.url_patterns, inner)
        else:
            yield f"{namespace}{pattern.name}", pattern.callback


def test_every_route_of_the_example_site_is_public_only_on_purpose():
    routes = dict(_routes(get_resolver().url_patterns))
    ours = {
        name: callback
        for name, callback in routes.items()
        if not name.startswith("admin:") and not callback.__module__.startswith("django.")
    }
    assert {name for name, callback in ours.items() if not _login_required(callback)} == PUBLIC_ROUTES
    assert {name for name, callback in ours.items() if _login_required(callback)} == {
        "oauth2_provider:device",
        "oauth2_provider:device-confirm",
        "oauth2_provider:device-grant-status",
        "oauth2_provider:connected-apps",
        "oauth2_provider:connected-apps-revoke",
        "oauth2_provider:connected-apps-revoke-device",
    }


def test_example_home_page_is_public(db):
    """The demo's landing page explains how to log in; it must not itself need a login."""
    response = Client().get("/")
    assert response.status_code == 200, response.get("Location")
    assert b'href="/accounts/login/"' in response.content


@pytest.fixture
def drf_before_3_16(monkeypatch):
    """APIView.as_view as DRF < 3.16 has it: no ``login_required = False`` on the view.

    The app supports djangorestframework>=3.14; DRF marks its views only from 3.16.
    """
    drf_as_view = APIView.as_view.__func__

    def as_view(cls, **initkwargs):
        view = drf_as_view(cls, **initkwargs)
        view.__dict__.pop("login_required", None)
        return view

    monkeypatch.setattr(APIView, "as_view", classmethod(as_view))


@pytest.mark.parametrize("pattern", api_urls.urlpatterns, ids=lambda pattern: pattern.name)
def test_rest_api_answers_a_bearer_client_itself_with_an_older_drf(drf_before_3_16, db, pattern):
    view = pattern.callback.view_class.as_view()
    request = RequestFactory().get(
        "/api/offline-access/x/", HTTP_AUTHORIZATION="Bearer not-a-token", HTTP_ACCEPT="application/json"
    )
    request.user = AnonymousUser()

    from django.contrib.auth.middleware import LoginRequiredMiddleware  # Django 5.1+; the module skips before

    assert LoginRequiredMiddleware(lambda request: None).process_view(request, view, (), {}) is None
    response = view(request, pk=1) if "pk" in str(pattern.pattern) else view(request)
    assert response.status_code in (401, 403)
    assert not response.has_header("Location")


def test_example_api_schema_is_public_with_an_older_drf(drf_before_3_16):
    from example_project.urls import api_schema_view

    assert _login_required(api_schema_view()) is False


@pytest.mark.parametrize("pattern", api_urls.urlpatterns, ids=lambda pattern: pattern.name)
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_rest_api_route_answers_a_bearer_client_in_json(user, application, pattern, method):
    """Through the whole middleware stack: a valid token, an unknown one, none; never a redirect."""
    url = reverse(
        f"offline_access_api:{pattern.name}", kwargs={"pk": 1} if "pk" in str(pattern.pattern) else {}
    )
    credentials = {
        "valid token": f"Bearer {bearer_token(user, application)}",
        "unknown token": "Bearer not-a-token",
        "none": None,
    }
    for case, authorization in credentials.items():
        headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
        response = getattr(Client(), method)(url, **headers)
        assert not response.has_header("Location"), (case, response["Location"])
        assert response["Content-Type"].startswith("application/json"), (case, response.status_code)
        if case != "valid token":
            assert response.status_code in (401, 403), (case, response.status_code)
