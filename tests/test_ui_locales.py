"""OIDC Core 3.1.2.1 ``ui_locales``: the client's language for the pages of the authorization flow.

The first tag the site supports wins over the browser's Accept-Language, on the
consent screen, on the answer to its form and after the login round trip;
anything unsupported or malformed is ignored, never an error.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from offline_access import languages

from . import factories
from .oauth import authorize_url, consent_form_data, redirect_params

SITE = ["en", "de", "es", "fr", "ja", "nl", "pt-br"]
NOTICE_TITLE = {
    "en": "Access while you are away",
    "de": "Zugriff, während Sie nicht da sind",
    "fr": "Accès en votre absence",
    "ja": "あなたが不在の間のアクセス",
    "pt-br": "Acesso enquanto você estiver ausente",
    "es": "Acceso mientras usted no está",
    "nl": "Toegang terwijl u er niet bent",
}


class Page(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.lang = ""
        self.parts: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "html":
            self.lang = dict(attrs).get("lang") or ""

    def handle_data(self, data):
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


def language_of(response) -> str:
    """The language a page was rendered in: its <html lang>, which Content-Language agrees with."""
    assert response.status_code in (200, 400), (response.status_code, response.content[:300])
    page = Page(response.content.decode())
    assert response["Content-Language"] == page.lang
    assert NOTICE_TITLE[page.lang] in page.text or response.status_code == 400
    return page.lang


# The matching rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ui_locales", "expected"),
    [
        ("de", "de"),
        ("fr-CA fr", "fr"),  # OIDC Core's own example: fr-CA, then fr
        ("de-CH", "de"),
        ("pt-BR", "pt-br"),
        ("PT-br", "pt-br"),
        ("pt", "pt-br"),  # Django's rule: a generic tag takes the site's regional variant
        ("pt-PT", "pt-br"),
        ("ja-JP", "ja"),
        ("sv it-IT nl", "nl"),  # unsupported tags skipped, order of preference kept
        ("en-GB de", "en"),
        ("zh-Hant-TW", None),
        ("  nl\tde  ", "nl"),
        ("", None),
        ("de_DE", None),  # POSIX locale, not a BCP47 tag
        ("* de", "de"),
        ("de--CH", None),
        ("toolongtag", None),
        ("x" * 9 + "-de", None),
        ("d\x00e", None),
        ("dé fr", "fr"),
        ("１２", None),
    ],
)
def test_choose_follows_djangos_matching_in_the_order_given(ui_locales, expected):
    assert languages.choose(ui_locales, SITE) == expected


def test_choose_ignores_a_value_with_more_tags_than_anyone_prefers():
    assert languages.choose(" ".join(["sv"] * languages.MAX_TAGS + ["de"]), SITE) is None
    assert languages.choose(" ".join(["sv"] * (languages.MAX_TAGS - 1) + ["de"]), SITE) == "de"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_choose_never_fails_and_only_answers_a_supported_language(ui_locales):
    assert languages.choose(ui_locales, SITE) in (None, *SITE)


def test_a_repeated_parameter_is_malformed_and_ignored():
    assert languages.requested(["de"]) == "de"
    assert languages.requested(["de", "fr"]) is None
    assert languages.requested([]) is None


def test_bcp47_case():
    assert [languages.bcp47(code) for code in ("pt-br", "en", "zh-hans", "sr-latn", "es-419")] == [
        "pt-BR",
        "en",
        "zh-Hans",
        "sr-Latn",
        "es-419",
    ]


def test_supported_is_the_sites_languages_with_the_apps_words(settings):
    assert languages.supported() == SITE
    settings.LANGUAGES = [("it", "Italiano"), ("en-au", "English"), ("ja", "日本語")]
    assert languages.supported() == ["en-au", "ja"]


# On the authorization endpoint ---------------------------------------------------------------------


def test_ui_locales_wins_over_accept_language(browser, application):
    response = browser.get(
        authorize_url(application, prompt="consent", ui_locales="ja"), HTTP_ACCEPT_LANGUAGE="fr"
    )
    assert language_of(response) == "ja"
    assert response.wsgi_request.LANGUAGE_CODE == "ja"  # what a site's own template may read


def test_first_supported_tag_wins(browser, application):
    url = authorize_url(application, prompt="consent", ui_locales="sv-SE de-CH fr")
    assert language_of(browser.get(url, HTTP_ACCEPT_LANGUAGE="es")) == "de"


@pytest.mark.parametrize("ui_locales", ["sv", "", "de_DE", "*", "x" * 5000, "de " * 40, "\u202ede"])
def test_unsupported_or_malformed_falls_back_to_accept_language(browser, application, ui_locales):
    url = authorize_url(application, prompt="consent", ui_locales=ui_locales)
    assert language_of(browser.get(url, HTTP_ACCEPT_LANGUAGE="nl")) == "nl"
    assert language_of(browser.get(url)) == "en"


def test_a_repeated_ui_locales_falls_back_to_accept_language(browser, application):
    url = authorize_url(application, prompt="consent", ui_locales="de") + "&ui_locales=ja"
    assert language_of(browser.get(url, HTTP_ACCEPT_LANGUAGE="fr")) == "fr"


def test_a_nul_byte_in_ui_locales_is_a_400_not_a_500(browser, application):
    response = browser.get(authorize_url(application, prompt="consent", ui_locales="de\x00"))
    assert response.status_code == 400


@settings(max_examples=40, deadline=None)
@given(ui_locales=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_fuzzed_ui_locales_never_breaks_the_page(ui_locales):
    # Hypothesis runs the body many times: the client and rows are the test's own (rolled back).
    user = factories.UserFactory()
    application = factories.ApplicationFactory()
    client = Client()
    client.force_login(user)
    response = client.get(authorize_url(application, prompt="consent", ui_locales=ui_locales))
    assert response.status_code in (200, 400), response.status_code
    if "\x00" not in ui_locales:
        assert response.status_code == 200
        assert response["Content-Language"] in SITE


test_fuzzed_ui_locales_never_breaks_the_page = pytest.mark.django_db(
    test_fuzzed_ui_locales_never_breaks_the_page
)


def test_error_page_of_the_flow_is_in_the_language(browser, application):
    url = authorize_url(application, prompt="consent", ui_locales="de", client_id="no-such-client")
    response = browser.get(url)
    assert response.status_code == 400
    assert language_of(response) == "de"
    assert "Diese Anfrage kann nicht abgeschlossen werden" in Page(response.content.decode()).text


def test_answer_to_the_consent_form_keeps_the_language(browser, application):
    """The form posts back to the same URL, ui_locales included: its answer page is in that language."""
    url = authorize_url(application, prompt="consent", ui_locales="fr")
    shown = browser.get(url, HTTP_ACCEPT_LANGUAGE="de")
    assert language_of(shown) == "fr"
    form = {**consent_form_data(shown), "decision": "allow"}
    assert "code" in redirect_params(browser.post(url, form, HTTP_ACCEPT_LANGUAGE="de"))

    replay = browser.post(url, form, HTTP_ACCEPT_LANGUAGE="de")

    assert replay.status_code == 400
    assert language_of(replay) == "fr"
    assert "Cette page de consentement a déjà été utilisée." in Page(replay.content.decode()).text


def test_expired_form_answer_is_in_the_language(browser, application):
    url = authorize_url(application, prompt="consent", ui_locales="pt-BR")
    response = browser.post(url, {"request": "forged", "decision": "allow"})
    assert response.status_code == 400
    assert language_of(response) == "pt-br"
    assert "Esta solicitação de consentimento não é válida." in Page(response.content.decode()).text


@pytest.mark.parametrize("prompt", ["consent", "login consent"])
def test_language_survives_the_login_round_trip(user, application, prompt):
    """Sent to log in, the user comes back with the whole request, ui_locales included."""
    client = Client()
    url = authorize_url(application, prompt=prompt, ui_locales="ja es")
    if "login" in prompt:
        client.force_login(user)  # prompt=login sends a signed-in user to log in again

    to_login = client.get(url, HTTP_ACCEPT_LANGUAGE="de")
    assert to_login.status_code == 302
    next_url = parse_qs(urlparse(to_login["Location"]).query)["next"][0]
    assert parse_qs(urlparse(next_url).query)["ui_locales"] == ["ja es"]
    logged_in = client.post(
        "/accounts/login/",
        {"username": user.username, "password": factories.PASSWORD, "next": next_url},
        HTTP_ACCEPT_LANGUAGE="de",
    )
    assert logged_in.status_code == 302
    assert logged_in["Location"] == next_url

    assert language_of(client.get(next_url, HTTP_ACCEPT_LANGUAGE="de")) == "ja"


def test_ui_locales_costs_no_query(browser, application):
    plain = authorize_url(application, prompt="consent")
    with CaptureQueriesContext(connection) as without:
        assert browser.get(plain).status_code == 200
    with CaptureQueriesContext(connection) as with_ui_locales:
        assert language_of(browser.get(authorize_url(application, prompt="consent", ui_locales="ja"))) == "ja"
    assert len(with_ui_locales) == len(without)
