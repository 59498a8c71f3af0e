"""Issue 13: a site puts its own header around the app's pages by overriding offline_access/base.html.

The example site does (example_project/templates/offline_access/base.html): its
header, with the site's name and a sign-out form, is on its own pages and on
the app's. Without such an override the app's pages stand on their own.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings as django_settings

from tests.oauth import authorize_url

SIGN_OUT_FORM = re.compile(
    r'<form method="post" action="/accounts/logout/" class="sign-out">'
    r'<input type="hidden" name="csrfmiddlewaretoken" value="[^"]+">'
    r'<button type="submit">[^<]+</button></form>'
)


def site_header(html: str) -> str:
    match = re.search(r'<header class="site-header">.*?</header>', html, re.DOTALL)
    assert match, "no site header"
    return match.group(0)


def test_consent_screen_in_the_example_site_has_its_header_and_sign_out(browser, user, application):
    response = browser.get(authorize_url(application, prompt="consent"))
    assert response.status_code == 200
    html = response.content.decode()
    header = site_header(html)
    assert '<a class="site-name" href="/">Offline access demo</a>' in header
    assert f"Welcome, <strong>{user.get_username()}</strong>" in header
    assert SIGN_OUT_FORM.search(header)
    # The header comes before the app's content, whose consent form is unchanged.
    assert html.index("<header") < html.index("<main>") < html.index('id="consent-form"')


@pytest.mark.parametrize("path", ["/o/connected-apps/", "/o/device/", "/"])
def test_app_and_example_pages_share_the_header(browser, path):
    response = browser.get(path)
    assert response.status_code == 200
    assert SIGN_OUT_FORM.search(site_header(response.content.decode()))


def test_signed_out_the_header_offers_log_in(client):
    header = site_header(client.get("/accounts/login/").content.decode())
    assert '<a href="/accounts/login/">Log in</a>' in header
    assert "Log out" not in header


def test_sign_out_form_signs_out(browser):
    response = browser.post("/accounts/logout/")
    assert response.status_code == 200
    assert "You are logged out" in response.content.decode()
    assert browser.get("/o/connected-apps/").status_code == 302  # to the login page


def test_app_pages_stand_alone_on_a_site_without_the_override(browser, application, settings):
    settings.TEMPLATES = [{**django_settings.TEMPLATES[0], "DIRS": []}]
    response = browser.get(authorize_url(application, prompt="consent"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "<header" not in html
    assert 'id="consent-form"' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert browser.get("/o/device/").status_code == 200


def test_header_is_in_the_pages_language(browser, application):
    response = browser.get(authorize_url(application, prompt="consent"), HTTP_ACCEPT_LANGUAGE="de")
    header = site_header(response.content.decode())
    assert "Willkommen, <strong>" in header
    assert '<button type="submit">Abmelden</button>' in header
