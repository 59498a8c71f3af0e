"""The "Not you? Switch account" form on the consent screen (issue 13).

A POST (with CSRF) signs the user out and sends them to the login page with
``next`` = the same authorization request; the address to come back to is
signed by the screen and must be the authorization endpoint.
"""

from __future__ import annotations

import time
from html.parser import HTMLParser
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core import signing
from django.test import Client
from oauth2_provider.models import get_grant_model

from offline_access import switch_account
from offline_access.conf import settings as settings_module

from .factories import PASSWORD
from .oauth import authorize_url, consent_form_data, redirect_params

SWITCH_URL = "/o/switch-account/"


class SwitchForm(HTMLParser):
    """The "Not you?" form of a page: its action and fields."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.method: str | None = None
        self.fields: dict[str, str] = {}
        self.button: str = ""
        self._inside = self._in_button = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and attributes.get("id") == "switch-account-form":
            self._inside = True
            self.action, self.method = attributes.get("action"), attributes.get("method")
        elif self._inside and tag == "input":
            self.fields[attributes["name"]] = attributes.get("value", "")
        elif self._inside and tag == "button":
            self._in_button = True

    def handle_endtag(self, tag):
        if tag == "form":
            self._inside = False
        if tag == "button":
            self._in_button = False

    def handle_data(self, data):
        if self._in_button:
            self.button += data


def logged_in_browser(user, *, csrf=False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def signed_in_as(client: Client):
    return client.session.get(SESSION_KEY)


def next_of(response) -> str | None:
    """The ``next`` the login page is sent, when the answer is a redirect to it."""
    if response.status_code != 302:
        return None
    location = urlsplit(response["Location"])
    assert location.path == settings.LOGIN_URL
    return parse_qs(location.query)["next"][0]


def sign(value) -> str:
    return signing.dumps(value, salt=switch_account._SALT)


# The attack tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/o/authorize/",
        "/admin/",
        "/o/authorize/../../admin/",
        "/o/token/",
    ],
)
def test_switch_account_never_hands_a_posted_next_to_the_login_page(browser, user, next_url):
    """Attack: a forged form posting next=<elsewhere> must not become the login page's next."""
    response = browser.post(SWITCH_URL, {"next": next_url})

    assert next_of(response) != next_url
    assert response.status_code == 400
    # Refused before anything happened: still signed in.
    assert signed_in_as(browser) == str(user.pk)


@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example/o/authorize/?client_id=x",
        "//evil.example/o/authorize/",
        "/\\evil.example/o/authorize/",
        "/admin/",
        "/o/authorize/../../admin/",
        "/o/authorizex/",
        ["/o/authorize/"],
    ],
)
def test_switch_account_refuses_a_signed_address_that_is_not_the_authorization_endpoint(browser, user, path):
    """Even a value this site signed goes back only to the authorization endpoint (defence in depth)."""
    response = browser.post(SWITCH_URL, {"next": sign(path)})

    assert response.status_code == 400
    assert signed_in_as(browser) == str(user.pk)


def test_switch_account_refuses_a_value_signed_for_something_else(browser, user, application):
    """The consent form's own signature (another salt) is no way back."""
    other = signing.dumps(authorize_url(application), salt="offline_access.consent")

    response = browser.post(SWITCH_URL, {"next": other})

    assert response.status_code == 400
    assert signed_in_as(browser) == str(user.pk)


def test_switch_account_refuses_an_address_older_than_a_consent_form(browser, user, application):
    """Signed more than CONSENT_FORM_MAX_AGE ago (the screen's own lifetime): refused."""
    signed_at = time.time() - settings_module.CONSENT_FORM_MAX_AGE.total_seconds() - 5
    with mock.patch("time.time", return_value=signed_at):
        value = sign(authorize_url(application))

    response = browser.post(SWITCH_URL, {"next": value})

    assert response.status_code == 400
    assert signed_in_as(browser) == str(user.pk)


def test_switch_account_get_does_not_sign_out(browser, user, application):
    screen = browser.get(authorize_url(application, prompt="consent"))
    form = SwitchForm(screen.content.decode())

    response = browser.get(SWITCH_URL, {"next": form.fields["next"]})

    assert response.status_code == 405
    assert signed_in_as(browser) == str(user.pk)


def test_switch_account_without_the_csrf_token_does_not_sign_out(user, application):
    """A cross-site page cannot sign the user out (and lose their place) with a forged POST."""
    browser = logged_in_browser(user, csrf=True)
    screen = browser.get(authorize_url(application, prompt="consent"))
    form = SwitchForm(screen.content.decode())

    response = browser.post(SWITCH_URL, {"next": form.fields["next"]})

    assert response.status_code == 403
    assert signed_in_as(browser) == str(user.pk)


def test_switch_account_error_page_cannot_be_framed_or_cached(browser):
    response = browser.post(SWITCH_URL, {"next": "https://evil.example/"})
    assert response.status_code == 400
    assert response["X-Frame-Options"] == "DENY"
    assert "no-store" in response["Cache-Control"]


# The flow --------------------------------------------------------------------------------------------


def test_consent_screen_offers_switch_account_as_its_own_post_form(browser, application):
    screen = browser.get(authorize_url(application, prompt="consent"))
    form = SwitchForm(screen.content.decode())

    assert form.action == SWITCH_URL
    assert form.method == "post"
    assert set(form.fields) == {"csrfmiddlewaretoken", "next"}
    assert " ".join(form.button.split()) == "Not you? Switch account"


def test_switch_account_end_to_end_comes_back_to_the_same_request_as_the_other_user(
    user, other_user, application
):
    """Signed in as A, switch, sign in as B: the consent screen for B, same client and scopes."""
    browser = logged_in_browser(user, csrf=True)
    url = authorize_url(application, scope="openid profile offline_access", prompt="consent")
    screen = browser.get(url)
    assert "You are signed in as <strong>alice</strong>." in " ".join(screen.content.decode().split())
    form = SwitchForm(screen.content.decode())

    response = browser.post(form.action, form.fields)

    assert next_of(response) == url
    assert signed_in_as(browser) is None
    login_page = browser.get(response["Location"])
    assert login_page.status_code == 200
    login = browser.post(
        response["Location"],
        {
            "username": other_user.get_username(),
            "password": PASSWORD,
            "next": url,
            "csrfmiddlewaretoken": browser.cookies[settings.CSRF_COOKIE_NAME].value,
        },
    )
    assert login.status_code == 302
    assert login["Location"] == url
    assert signed_in_as(browser) == str(other_user.pk)

    screen_b = browser.get(login["Location"])

    assert screen_b.status_code == 200
    assert "You are signed in as <strong>mallory</strong>." in " ".join(screen_b.content.decode().split())
    assert screen_b.context["application"] == application
    assert screen_b.context["scopes"] == screen.context["scopes"]
    assert screen_b.context["offline_access"] is True
    # And B's Allow gives B's code.
    data = {
        **consent_form_data(screen_b),
        "decision": "allow",
        "csrfmiddlewaretoken": browser.cookies[settings.CSRF_COOKIE_NAME].value,
    }
    assert "code" in redirect_params(browser.post(url, data))
    assert get_grant_model().objects.get().user == other_user


def test_switch_account_with_the_old_form_after_signing_out_sends_to_login(user, application):
    """The session ended meanwhile (signed out in another tab): the form still leads to login."""
    browser = logged_in_browser(user)
    url = authorize_url(application, prompt="consent")
    form = SwitchForm(browser.get(url).content.decode())
    browser.logout()

    response = browser.post(form.action, form.fields)

    assert next_of(response) == url


def test_the_first_users_consent_form_cannot_be_used_by_the_second(user, other_user, application):
    """The screen shown to A, posted after switching to B, grants nothing (the form is bound to A)."""
    browser = logged_in_browser(user)
    url = authorize_url(application, prompt="consent")
    screen = browser.get(url)
    form = SwitchForm(screen.content.decode())
    browser.post(form.action, form.fields)
    browser.force_login(other_user)

    response = browser.post(url, {**consent_form_data(screen), "decision": "allow"})

    assert response.status_code == 400
    assert not get_grant_model().objects.exists()


def test_switch_account_under_login_required_middleware_sends_a_visitor_back_to_the_request(
    user, application, login_required_middleware
):
    """The middleware would send an anonymous POST to log in and come back to a GET (405)."""
    browser = logged_in_browser(user)
    url = authorize_url(application, prompt="consent")
    form = SwitchForm(browser.get(url).content.decode())
    browser.logout()

    response = browser.post(form.action, form.fields)

    assert next_of(response) == url
