"""The client's logo and pages on the consent screen (issue 13).

OIDC Dynamic Client Registration 1.0 names them ``logo_uri``, ``client_uri``,
``policy_uri`` and ``tos_uri``; the site records them on the client's policy in
admin. Only https addresses are accepted when saved, and only safe addresses
are rendered, whatever the database holds.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from offline_access.models import ClientPolicy

from .oauth import authorize_url

LOGO = "https://static.example.com/sync/logo.png"
HOME = "https://sync.example.com/"
PRIVACY = "https://sync.example.com/privacy"
TERMS = "https://sync.example.com/terms"

HOSTILE = {
    "logo_uri": "javascript:alert(1)",
    "client_uri": "JaVaScRiPt:alert(document.cookie)",
    "policy_uri": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "tos_uri": " javascript:alert(1)",
}


class Elements(HTMLParser):
    """Every element's tag and attributes, in page order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}))

    def find(self, tag: str, **attributes: str) -> list[dict[str, str]]:
        return [
            found
            for name, found in self.elements
            if name == tag and all(found.get(key) == value for key, value in attributes.items())
        ]

    def urls(self) -> list[str]:
        return [
            value
            for _tag, attributes in self.elements
            for name, value in attributes.items()
            if name in ("src", "href", "action", "srcset", "formaction", "data", "poster")
        ]


def consent_page(browser, application) -> Elements:
    response = browser.get(authorize_url(application, prompt="consent"))
    assert response.status_code == 200, response.status_code
    return Elements(response.content.decode())


# The template guard: the database may hold anything ------------------------------------------------


def test_screen_never_renders_a_non_http_address_stored_behind_validation(browser, application):
    """Attack: a javascript:/data: address written with update() (no validation) is not rendered."""
    ClientPolicy.objects.create(application=application)
    ClientPolicy.objects.filter(application=application).update(**HOSTILE)

    response = browser.get(authorize_url(application, prompt="consent"))

    assert response.status_code == 200
    page = Elements(response.content.decode())
    for url in page.urls():
        assert urlsplit(url.strip()).scheme in ("", "https", "http"), url
    content = response.content.decode().lower()
    assert "javascript:" not in content
    assert "data:text" not in content
    assert page.find("img") == []


# "Not you? Switch account" ------------------------------------------------------------------------


def switch_next(browser, **data):
    from urllib.parse import parse_qs

    response = browser.post("/o/switch-account/", data)
    return response, parse_qs(urlsplit(response["Location"]).query).get("next", [None])[0] if (
        response.status_code == 302
    ) else None


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
def test_switch_account_never_hands_a_posted_next_to_the_login_page(browser, application, next_url):
    """Attack: a forged form posting next=<elsewhere> must not become the login page's next."""
    response, handed_on = switch_next(browser, next=next_url)

    assert handed_on != next_url
    assert response.status_code == 400
