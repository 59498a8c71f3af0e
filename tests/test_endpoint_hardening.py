"""Hardening of the OAuth endpoints the app serves under ``/o/`` (offline_access.hardening).

- Secrets never reach Django's error reports (the 500 e-mail and the HTML page), DEBUG off.
- Malformed headers (Basic credentials with NUL bytes, junk, odd Content-Types) get a 4xx.
- Bearer tokens are accepted at userinfo only in the Authorization header (RFC 6750 2.3).
- Every answer that carries a token, a code or token metadata is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import base64
import sys
from datetime import timedelta
from unittest import mock
from urllib.parse import urlencode

import django
import pytest
from django.core import mail
from django.core.signals import got_request_exception
from django.test import Client
from django.utils import timezone
from django.views.debug import ExceptionReporter
from oauth2_provider.models import get_device_grant_model

from offline_access.validators import OfflineAccessValidator
from offline_access.views import OfflineAccessAuthorizationView

from . import factories
from .factories import CLIENT_SECRET, PASSWORD
from .oauth import (
    VERIFIER,
    authorize_url,
    basic_authorization,
    client_auth,
    exchange_code,
    get_code,
    refresh,
    stored,
)

STARS = "*" * 20


def basic(client_id: str, secret: str) -> str:
    """An ``Authorization: Basic`` value (RFC 6749 2.3.1 form-encodes the parts; these need none)."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.fixture
def issued(browser, api, application) -> dict:
    """Tokens issued to ``application`` through a code exchange with offline access."""
    response = exchange_code(api, application, get_code(browser, application, prompt="consent"))
    assert response.status_code == 200, response.content
    return response.json()


# Secrets in error reports ------------------------------------------------------------------------


def _fail(self, request, *args, **kwargs):
    raise RuntimeError("forced failure")


def report_of(client: Client, url: str, data: dict, **headers) -> tuple[str, str]:
    """POST while the validator fails inside DOT (a 500); return the text and HTML error reports.

    The text is the e-mail AdminEmailHandler sends to ADMINS through the
    ``django.request`` logger; the HTML is the report an ``include_html`` handler
    would attach, built by the same ExceptionReporter from the same request.
    """
    html_reports: list[str] = []

    def build_html(sender, request, **kwargs):
        html_reports.append(ExceptionReporter(request, *sys.exc_info(), is_email=True).get_traceback_html())

    got_request_exception.connect(build_html)
    try:
        with (
            mock.patch.object(OfflineAccessValidator, "authenticate_client", _fail),
            mock.patch.object(OfflineAccessValidator, "authenticate_client_id", _fail),
        ):
            response = client.post(url, data, headers=headers)
    finally:
        got_request_exception.disconnect(build_html)
    assert response.status_code == 500
    assert len(mail.outbox) == 1, "the 500 was not mailed to ADMINS"
    assert len(html_reports) == 1
    return mail.outbox[0].body, html_reports[0]


def assert_hidden(report: tuple[str, str], secrets: dict[str, str], *, post_fields=()) -> None:
    text, html = report
    assert "forced failure" in text  # it is the report of our 500
    for name, value in secrets.items():
        assert value not in text, f"{name} in the text report"
        assert value not in html, f"{name} in the HTML report"
    for name in post_fields:
        assert f"{name} = '{STARS}'" in text, f"{name} is not starred in the POST section"


@pytest.fixture
def reporting(settings) -> Client:
    """A client that gets the 500 page instead of the exception, DEBUG off, ADMINS set."""
    settings.DEBUG = False
    settings.ADMINS = [("Ops", "ops@example.com")]
    return Client(raise_request_exception=False)


def test_error_report_of_a_refresh_hides_the_refresh_token_and_client_secret(reporting, application, issued):
    data = {
        "grant_type": "refresh_token",
        "refresh_token": issued["refresh_token"],
        "client_id": application.client_id,
        "client_secret": CLIENT_SECRET,
    }
    report = report_of(reporting, "/o/token/", data)
    assert_hidden(
        report,
        {"refresh_token": issued["refresh_token"], "client_secret": CLIENT_SECRET},
        post_fields=["refresh_token", "client_secret"],
    )


def test_error_report_of_a_code_exchange_hides_code_and_verifier(browser, reporting, application):
    code = get_code(browser, application, prompt="consent")
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": application.redirect_uris,
        "code_verifier": VERIFIER,
        "client_id": application.client_id,
        "client_secret": CLIENT_SECRET,
    }
    report = report_of(reporting, "/o/token/", data)
    assert_hidden(
        report,
        {"code": code, "code_verifier": VERIFIER, "client_secret": CLIENT_SECRET},
        post_fields=["code", "code_verifier", "client_secret"],
    )


def test_error_report_of_a_password_grant_hides_the_password(reporting, user):
    application = factories.ApplicationFactory(authorization_grant_type="password")
    data = {
        "grant_type": "password",
        "username": user.username,
        "password": PASSWORD,
        "client_id": application.client_id,
        "client_secret": CLIENT_SECRET,
    }
    report = report_of(reporting, "/o/token/", data)
    assert_hidden(report, {"password": PASSWORD, "client_secret": CLIENT_SECRET}, post_fields=["password"])


def test_error_report_of_a_device_poll_hides_the_device_code(reporting, user):
    application = factories.ApplicationFactory(
        authorization_grant_type="urn:ietf:params:oauth:grant-type:device_code"
    )
    device_code = "device-code-that-is-a-secret-0123456789"
    get_device_grant_model().objects.create(
        device_code=stored(device_code),
        user_code="ABCD1234",
        client_id=application.client_id,
        expires=timezone.now() + timedelta(minutes=10),
        scope="openid",
    )
    data = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device_code,
        "client_id": application.client_id,
        "client_secret": CLIENT_SECRET,
    }
    report = report_of(reporting, "/o/token/", data)
    assert_hidden(report, {"device_code": device_code}, post_fields=["device_code", "client_secret"])


def test_error_report_hides_basic_credentials(reporting, application, issued):
    authorization = basic(application.client_id, CLIENT_SECRET)
    data = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    report = report_of(reporting, "/o/token/", data, authorization=authorization)
    assert_hidden(
        report,
        {
            "Authorization header": authorization.split()[1],
            "client_secret": CLIENT_SECRET,
            "refresh_token": issued["refresh_token"],
        },
    )
    assert f"HTTP_AUTHORIZATION = '{STARS}'" in report[0]


@pytest.mark.parametrize("endpoint", ["/o/revoke_token/", "/o/introspect/"])
def test_error_report_of_revocation_and_introspection_hides_the_token(
    reporting, application, issued, endpoint
):
    data = {
        "token": issued["access_token"],
        "client_id": application.client_id,
        "client_secret": CLIENT_SECRET,
    }
    report = report_of(reporting, endpoint, data)
    assert_hidden(
        report,
        {"token": issued["access_token"], "client_secret": CLIENT_SECRET},
        post_fields=["token", "client_secret"],
    )


def test_error_report_of_the_consent_post_hides_the_csrf_token_and_signed_request(
    settings, user, application
):
    """The consent form's CSRF token unmasks to the user's CSRF secret; the signed request replays it."""
    settings.DEBUG = False
    settings.ADMINS = [("Ops", "ops@example.com")]
    browser = Client(enforce_csrf_checks=True, raise_request_exception=False)
    browser.force_login(user)
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)
    signed, csrf_token = screen.context["form"].initial["request"], str(screen.context["csrf_token"])

    def fail(self, form):
        raise RuntimeError("forced failure")

    with mock.patch.object(OfflineAccessAuthorizationView, "form_valid", fail):
        response = browser.post(
            url, {"request": signed, "decision": "allow", "csrfmiddlewaretoken": csrf_token}
        )

    assert response.status_code == 500
    (report,) = mail.outbox
    assert "forced failure" in report.body
    assert signed not in report.body
    assert csrf_token not in report.body
    assert f"request = '{STARS}'" in report.body
    assert f"csrfmiddlewaretoken = '{STARS}'" in report.body


# Malformed headers: a 4xx, never a 500 -----------------------------------------------------------

HUGE = 100_000


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


#: Authorization: Basic values no client could send on purpose. Each is refused as
#: ``401 invalid_client`` before DOT looks up a client (RFC 6749 2.3.1, 5.2).
MALFORMED_BASIC = {
    "nul-in-client-id": "Basic " + b64(f"calendar-sync\x00:{CLIENT_SECRET}".encode()),
    "nul-in-secret": "Basic " + b64(f"calendar-sync:{CLIENT_SECRET}\x00".encode()),
    "percent-encoded-nul": "Basic " + b64(f"calendar%00sync:{CLIENT_SECRET}".encode()),
    "percent-encoded-nul-in-secret": "Basic " + b64(b"calendar-sync:secret%00"),
    "not-base64": "Basic !!!not-base64!!!",
    "truncated-base64": "Basic " + b64(b"calendar-sync:secret")[:-3],
    "not-utf8": "Basic " + b64(b"\xff\xfe:\xff"),
    "latin1-char": "Basic \xe9t\xe9",
    "non-latin1-char": "Basic \u20ac\u2603",
    "no-colon": "Basic " + b64(b"calendar-sync"),
    "no-credentials": "Basic",
    "huge-base64-of-zeros": "Basic " + "A" * HUGE,
}

#: Client-authenticating POST endpoints, with a request that would be valid but for its client.
CLIENT_ENDPOINTS = {
    "/o/token/": {"grant_type": "refresh_token", "refresh_token": "abc"},
    "/o/revoke_token/": {"token": "abc"},
    "/o/introspect/": {"token": "abc"},
    "/o/device-authorization/": {"scope": "openid"},
}


def post_form(client: Client, url: str, data: dict, **headers):
    """POST ``data`` form-encoded, as OAuth clients do (the test client's default is multipart)."""
    return client.post(
        url, urlencode(data), content_type="application/x-www-form-urlencoded", headers=headers
    )


@pytest.mark.parametrize("endpoint", sorted(CLIENT_ENDPOINTS))
@pytest.mark.parametrize("authorization", sorted(MALFORMED_BASIC))
def test_malformed_basic_credentials_are_invalid_client(api, application, endpoint, authorization):
    response = post_form(
        api, endpoint, CLIENT_ENDPOINTS[endpoint], authorization=MALFORMED_BASIC[authorization]
    )
    assert response.status_code == 401, (response.status_code, response.content[:300])
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"].startswith("Basic")
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("endpoint", sorted(CLIENT_ENDPOINTS))
def test_huge_but_well_formed_basic_credentials_are_refused(api, application, endpoint):
    """Well formed, so DOT looks the client up (PostgreSQL compares 100 KB fine) and finds none."""
    authorization = "Basic " + b64(b"x" * HUGE + b":" + b"y" * HUGE)
    response = post_form(api, endpoint, CLIENT_ENDPOINTS[endpoint], authorization=authorization)
    expected = {
        "/o/token/": (401, "invalid_client"),
        "/o/revoke_token/": (401, "invalid_client"),
        "/o/introspect/": (401, "invalid_client"),
        # Basic authenticates here as at the token endpoint (RFC 8628 3.1, issue 10).
        "/o/device-authorization/": (401, "invalid_client"),
    }[endpoint]
    assert response.status_code == expected[0], response.content[:300]
    if expected[1]:
        assert response.json()["error"] == expected[1]


def test_good_basic_credentials_still_work(api, application, issued):
    response = api.post(
        "/o/token/",
        {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        headers={"authorization": basic(application.client_id, CLIENT_SECRET)},
    )
    assert response.status_code == 200, response.content
    response = api.post(
        "/o/introspect/",
        {"token": response.json()["access_token"]},
        headers={"authorization": basic(application.client_id, CLIENT_SECRET)},
    )
    assert response.json()["active"] is True


#: Every endpoint the app serves under /o/ that a client or browser calls directly.
ENDPOINTS = [
    ("post", "/o/token/"),
    ("post", "/o/revoke_token/"),
    ("post", "/o/introspect/"),
    ("get", "/o/introspect/"),
    ("get", "/o/userinfo/"),
    ("post", "/o/userinfo/"),
    ("get", "/o/authorize/?response_type=code&client_id=calendar-sync&scope=openid"),
    ("post", "/o/device-authorization/"),
    ("get", "/o/.well-known/jwks.json"),
    ("get", "/o/.well-known/openid-configuration"),
    ("get", "/o/.well-known/oauth-authorization-server"),
]

#: Authorization header values, malformed Basic ones included.
AUTHORIZATION_FUZZ = {
    **MALFORMED_BASIC,
    "empty": "",
    "scheme-only": "Bearer",
    "bearer-nul": "Bearer abc\x00def",
    "bearer-huge": "Bearer " + "x" * HUGE,
    "bearer-non-latin1": "Bearer \u20ac",
    "bearer-two-tokens": "Bearer abc def",
    "digest": 'Digest username="calendar-sync"',
    "lowercase-basic": "basic " + b64(b"calendar-sync:wrong"),
    "huge-basic": "Basic " + b64(b"x" * HUGE + b":y"),
}


@pytest.mark.parametrize("method, url", ENDPOINTS, ids=[f"{m}-{u.split('?')[0]}" for m, u in ENDPOINTS])
@pytest.mark.parametrize("authorization", sorted(AUTHORIZATION_FUZZ))
def test_fuzzed_authorization_header_never_500s(api, application, method, url, authorization):
    response = getattr(api, method)(url, headers={"authorization": AUTHORIZATION_FUZZ[authorization]})
    assert response.status_code < 500


CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded; charset=bogus",
    "application/x-www-form-urlencoded; charset=utf-16",
    "\u20ac/\u2603",
]
# Django 6.0 refuses a Content-Type over 10,000 characters while it builds the request,
# before any middleware or view runs (a ValueError in WSGIRequest): out of the app's reach.
if django.VERSION < (6, 0):
    CONTENT_TYPES.append("x" * HUGE)


@pytest.mark.parametrize("url", ["/o/token/", "/o/revoke_token/", "/o/introspect/", "/o/userinfo/"])
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_odd_content_type_never_500s(api, application, url, content_type):
    body = f"grant_type=refresh_token&token=abc&client_id={application.client_id}&client_secret=x"
    # generic(): post() would encode the body in the declared charset itself.
    response = api.generic("POST", url, body.encode(), content_type=content_type)
    assert 400 <= response.status_code < 500, response.status_code


# Bearer tokens only in the Authorization header (RFC 6750 2.3, RFC 9700 2.x) --------------------


def assert_transport_refused(response) -> None:
    """RFC 6750 3.1: a malformed protected-resource request is 400 invalid_request, with a challenge."""
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response.json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response["WWW-Authenticate"]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "sub" not in response.json()


def test_userinfo_refuses_an_access_token_in_the_query_string(api, issued):
    assert_transport_refused(api.get(f"/o/userinfo/?access_token={issued['access_token']}"))


def test_userinfo_refuses_a_query_token_even_beside_a_good_header(api, issued):
    """The token already sits in an access log: the client must learn to stop, not be served."""
    response = api.get(
        f"/o/userinfo/?access_token={issued['access_token']}",
        headers={"authorization": f"Bearer {issued['access_token']}"},
    )
    assert_transport_refused(response)


def test_userinfo_refuses_an_access_token_in_a_posted_form(api, issued):
    assert_transport_refused(api.post("/o/userinfo/", {"access_token": issued["access_token"]}))


@pytest.mark.parametrize("method", ["get", "post"])
def test_userinfo_accepts_the_token_in_the_authorization_header(api, issued, method):
    response = getattr(api, method)(
        "/o/userinfo/", headers={"authorization": f"Bearer {issued['access_token']}"}
    )
    assert response.status_code == 200, response.content
    assert "sub" in response.json()


def test_introspection_refuses_its_bearer_token_in_the_query_string(api, user, issued):
    """DOT lets a resource server authenticate to introspection with an access token, also from the URL."""
    resource_server = factories.ApplicationFactory(authorization_grant_type="client-credentials")
    token = resource_server.accesstoken_set.create(
        user=user,
        token="resource-server-token-0123456789",
        scope="introspection",
        expires=timezone.now() + timedelta(minutes=5),
    )
    response = api.post(f"/o/introspect/?access_token={token.token}", {"token": issued["access_token"]})
    assert_transport_refused(response)
    # In the header, the same token works.
    response = api.post(
        "/o/introspect/",
        {"token": issued["access_token"]},
        headers={"authorization": f"Bearer {token.token}"},
    )
    assert response.json()["active"] is True


def test_introspection_refuses_the_token_to_inspect_in_the_query_string(api, application, issued):
    """RFC 7662 2.1: the token is POSTed in the form body, not put in a URL."""
    response = api.get(
        f"/o/introspect/?token={issued['access_token']}",
        headers={"authorization": basic(application.client_id, CLIENT_SECRET)},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "active" not in response.json()


@pytest.mark.parametrize("field", ["refresh_token", "client_secret"])
def test_token_endpoint_refuses_secrets_in_the_query_string(api, application, issued, field):
    """RFC 6749 2.3.1: client credentials MUST NOT be in the request URI; tokens neither."""
    data = {
        "grant_type": "refresh_token",
        "refresh_token": issued["refresh_token"],
        "client_id": application.client_id,
        "client_secret": CLIENT_SECRET,
    }
    query = {field: data.pop(field)}
    response = api.post("/o/token/?" + urlencode(query), data)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert "access_token" not in response.json()


@pytest.mark.parametrize("endpoint", ["/o/revoke_token/", "/o/introspect/"])
def test_revocation_and_introspection_refuse_secrets_in_the_query_string(api, application, issued, endpoint):
    response = api.post(
        f"{endpoint}?client_secret={CLIENT_SECRET}",
        {"token": issued["access_token"], "client_id": application.client_id},
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    # The token was neither revoked nor described.
    response = api.get("/o/userinfo/", headers={"authorization": f"Bearer {issued['access_token']}"})
    assert response.status_code == 200


# Cache-Control: no-store on everything that carries a token, a code or token metadata --------------


def assert_not_cacheable(response) -> None:
    """RFC 6749 5.1 (and 5.2, RFC 7009, RFC 7662 4, OIDC Core 5.3): never stored by a cache."""
    cache_control = {part.strip() for part in response.get("Cache-Control", "").split(",")}
    assert "no-store" in cache_control, (response.status_code, response.get("Cache-Control"))
    assert response.get("Pragma") == "no-cache", (response.status_code, response.get("Pragma"))


def test_token_endpoint_success_is_not_cacheable(api, application, issued):
    response = refresh(api, application, issued["refresh_token"])
    assert response.status_code == 200
    assert_not_cacheable(response)


TOKEN_ERRORS = {
    "invalid_grant": (400, {"grant_type": "refresh_token", "refresh_token": "bogus"}),
    "invalid_client": (
        401,
        {"grant_type": "refresh_token", "refresh_token": "bogus", "client_secret": "wrong"},
    ),
    "unsupported_grant_type": (400, {"grant_type": "bogus"}),
    "invalid_request": (400, {"grant_type": "refresh_token"}),
    "nul-byte": (400, {"grant_type": "refresh_token", "refresh_token": "a\x00b"}),
    "device-code-missing": (400, {"grant_type": "urn:ietf:params:oauth:grant-type:device_code"}),
}


@pytest.mark.parametrize("case", sorted(TOKEN_ERRORS))
def test_token_endpoint_errors_are_not_cacheable(api, application, case):
    status, data = TOKEN_ERRORS[case]
    response = api.post("/o/token/", {**client_auth(application), **data})
    assert response.status_code == status, response.content
    assert_not_cacheable(response)


def test_malformed_basic_credentials_answer_is_not_cacheable(api, application):
    response = api.post("/o/token/", {"grant_type": "bogus"}, headers={"authorization": "Basic !!"})
    assert response.status_code == 401
    assert_not_cacheable(response)


@pytest.mark.parametrize(
    "data, status",
    [({"token": "abc"}, 200), ({"token": ""}, 400), ({"token": "abc", "client_secret": "wrong"}, 401)],
    ids=["ok", "invalid_request", "invalid_client"],
)
def test_revocation_answers_are_not_cacheable(api, application, data, status):
    response = api.post("/o/revoke_token/", {**client_auth(application), **data})
    assert response.status_code == status
    assert_not_cacheable(response)


@pytest.mark.parametrize("case", ["active", "inactive", "missing-token", "unauthenticated"])
def test_introspection_answers_are_not_cacheable(api, application, issued, case):
    data = {
        "active": {"token": issued["access_token"], **client_auth(application)},
        "inactive": {"token": "bogus", **client_auth(application)},
        "missing-token": client_auth(application),
        "unauthenticated": {"token": issued["access_token"], "client_id": "nobody", "client_secret": "x"},
    }[case]
    response = api.post("/o/introspect/", data)
    assert response.status_code < 500
    assert_not_cacheable(response)


@pytest.mark.parametrize(
    "headers, status",
    [({"authorization": "Bearer {token}"}, 200), ({"authorization": "Bearer bogus"}, 401), ({}, 401)],
    ids=["claims", "invalid_token", "no-token"],
)
def test_userinfo_answers_are_not_cacheable(api, issued, headers, status):
    headers = {name: value.format(token=issued["access_token"]) for name, value in headers.items()}
    response = api.get("/o/userinfo/", headers=headers)
    assert response.status_code == status
    assert_not_cacheable(response)


def test_refused_query_token_at_userinfo_is_not_cacheable(api, issued):
    response = api.get(f"/o/userinfo/?access_token={issued['access_token']}")
    assert response.status_code == 400
    assert_not_cacheable(response)


# A token answer whose access token is gone before the view finishes (issue 9) ---------


def test_refresh_answer_whose_access_token_was_rotated_away_is_not_a_500(browser, api, application):
    """Found by tests/test_concurrency_live.py: DOT re-reads the access token it issued.

    Parallel refreshes with a grace period: a racer is answered with the pair another
    request minted, and before DOT's view re-reads that access token (for its
    ``app_authorized`` signal), a client already rotated the pair, which deletes
    it. DOT's ``get()`` then raised DoesNotExist: a 500. The racer gets its answer.
    """
    from oauth2_provider.models import get_access_token_model
    from oauth2_provider.views.mixins import OAuthLibMixin

    issued = exchange_code(api, application, get_code(browser, application, prompt="consent")).json()
    original = OAuthLibMixin.create_token_response

    def rotated_away_meanwhile(self, request):
        answer = original(self, request)
        get_access_token_model().objects.all().delete()  # the concurrent rotation
        return answer

    with mock.patch.object(OAuthLibMixin, "create_token_response", rotated_away_meanwhile):
        response = refresh(api, application, issued["refresh_token"])

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    assert response.json()["refresh_token"] != issued["refresh_token"]


# RFC 6749 5.2: a failed client authentication names the scheme the client can use ---------


@pytest.mark.parametrize("endpoint", ["/o/token/", "/o/revoke_token/"])
@pytest.mark.parametrize("how", ["basic", "body"])
def test_failed_client_authentication_challenges_with_basic_not_bearer(api, application, endpoint, how):
    """RFC 6749 5.2: a 401 invalid_client carries a challenge for the scheme the client
    authenticated with (HTTP Basic; the body method has no scheme of its own, and Basic is
    the one these endpoints take in a header). oauthlib's challenge said Bearer, a scheme
    for resource requests that no client can answer here."""
    data = {"grant_type": "refresh_token", "refresh_token": "x", "token": "x"}
    headers = {}
    if how == "basic":
        headers["HTTP_AUTHORIZATION"] = basic_authorization(application.client_id, "wrong")
    else:
        data |= {"client_id": application.client_id, "client_secret": "wrong"}
    response = api.post(endpoint, data, **headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"] == 'Basic realm="oauth"'
