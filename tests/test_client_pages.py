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
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from offline_access.client_metadata import PAGE_URI_MAX_LENGTH, client_pages, validate_page_uri
from offline_access.models import ClientPolicy

from .oauth import authorize_url
from .test_admin import form_data
from .test_device import enter_code, start

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


def test_hostile_values_are_dropped_one_by_one_keeping_the_safe_ones(application):
    ClientPolicy.objects.create(application=application, policy_uri=PRIVACY)
    ClientPolicy.objects.filter(application=application).update(logo_uri=HOSTILE["logo_uri"])
    application.refresh_from_db()

    pages = client_pages(application)

    assert pages.logo_uri is None
    assert pages.policy_uri == PRIVACY


# Rendering ------------------------------------------------------------------------------------------


def record_pages(application, **values) -> ClientPolicy:
    values = {"logo_uri": LOGO, "client_uri": HOME, "policy_uri": PRIVACY, "tos_uri": TERMS, **values}
    policy = ClientPolicy(application=application, **values)
    policy.full_clean()
    policy.save()
    return policy


def test_screen_shows_the_logo_next_to_the_name_never_instead_of_it(browser, application):
    record_pages(application)

    response = browser.get(authorize_url(application, prompt="consent"))
    page = Elements(response.content.decode())

    (logo,) = page.find("img")
    assert logo["src"] == LOGO
    assert logo["alt"] == application.name
    assert (logo["width"], logo["height"]) == ("48", "48")
    assert logo["referrerpolicy"] == "no-referrer"
    # The name is still the heading, in words; the logo is outside it.
    html = response.content.decode()
    heading = html[html.index("<h1>") : html.index("</h1>")]
    assert f"{application.name} wants to access your account" in heading
    assert "<img" not in heading


def test_screen_links_the_pages_in_a_new_tab_without_opener_or_referrer(browser, application):
    record_pages(application)

    page = consent_page(browser, application)

    links = {link["href"]: link for link in page.find("a") if link["href"] in (HOME, PRIVACY, TERMS)}
    assert set(links) == {HOME, PRIVACY, TERMS}
    for link in links.values():
        assert link["target"] == "_blank"
        assert set(link["rel"].split()) >= {"noopener", "noreferrer"}


def test_screen_names_each_page_and_the_home_pages_host(browser, application):
    record_pages(application)

    response = browser.get(authorize_url(application, prompt="consent"))
    text = " ".join(response.content.decode().split())

    assert "Website (sync.example.com)" in text
    assert "Privacy policy" in text
    assert "Terms of service" in text


def test_screen_without_recorded_pages_shows_no_logo_and_no_links(browser, application):
    page = consent_page(browser, application)
    assert page.find("img") == []
    assert page.find("ul", **{"class": "client-pages"}) == []


def test_screen_with_an_empty_policy_shows_no_logo_and_no_links(browser, application):
    ClientPolicy.objects.create(application=application, require_dpop=False)
    page = consent_page(browser, application)
    assert page.find("img") == []
    assert page.find("ul", **{"class": "client-pages"}) == []


def test_screen_shows_only_the_pages_recorded(browser, application):
    ClientPolicy.objects.create(application=application, policy_uri=PRIVACY)

    response = browser.get(authorize_url(application, prompt="consent"))
    page = Elements(response.content.decode())

    assert page.find("img") == []
    assert [link["href"] for link in page.find("a", target="_blank")] == [PRIVACY]
    assert "Terms of service" not in response.content.decode()


def test_screen_escapes_addresses_and_the_name_in_attributes(browser, application):
    tricky = 'https://sync.example.com/p?a="><script>alert(1)</script>'
    application.name = 'Sync" onerror="alert(1)'
    application.save()
    record_pages(application, logo_uri=tricky, policy_uri=tricky)

    response = browser.get(authorize_url(application, prompt="consent"))
    page = Elements(response.content.decode())

    assert page.find("script") == []
    (logo,) = page.find("img")
    assert logo["src"] == tricky
    assert logo["alt"] == application.name
    assert "onerror" not in logo
    assert tricky in [link["href"] for link in page.find("a", target="_blank")]
    assert b"<script>" not in response.content


def test_screen_with_pages_keeps_its_query_count(browser, application, django_assert_num_queries):
    """The policy is loaded by the offline-access check already: the pages add no query."""
    from .test_query_counts import CONSENT_SCREEN_QUERIES

    record_pages(application)
    url = authorize_url(application, prompt="consent")

    with django_assert_num_queries(CONSENT_SCREEN_QUERIES):
        response = browser.get(url)

    assert response.context["client_pages"].logo_uri == LOGO


def test_device_approval_screen_shows_the_pages_without_another_query(
    browser, api, cli, django_assert_num_queries
):
    from .test_query_counts import DEVICE_APPROVAL_SCREEN_QUERIES

    record_pages(cli)
    confirm_url = enter_code(browser, start(api, cli)["user_code"])

    with django_assert_num_queries(DEVICE_APPROVAL_SCREEN_QUERIES):
        response = browser.get(confirm_url)

    page = Elements(response.content.decode())
    assert [logo["src"] for logo in page.find("img")] == [LOGO]
    assert {link["href"] for link in page.find("a", target="_blank")} == {HOME, PRIVACY, TERMS}
    # No "Not you?" here: the code stays claimed by the account that typed it.
    assert page.find("form", id="switch-account-form") == []


# Validation -----------------------------------------------------------------------------------------

ACCEPTED = [
    LOGO,
    "https://sync.example.com",
    "HTTPS://Sync.Example.com/Privacy",
    "https://sync.example.com:8443/terms?lang=en#section-2",
    "https://xn--bcher-kva.example/logo.svg",
    "https://[2001:db8::1]/logo.png",
]

REFUSED = [
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "javascript://sync.example.com/%0Aalert(1)",
    "vbscript:msgbox(1)",
    "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "ftp://sync.example.com/logo.png",
    "http://sync.example.com/privacy",
    "http://localhost:8000/logo.png",  # DEBUG is off
    "//sync.example.com/privacy",
    "/privacy",
    "sync.example.com/privacy",
    "https://",
    "https:sync.example.com",
    "https://user:secret@sync.example.com/",
    "https://sync.example.com@evil.example/",
    " https://sync.example.com/",
    "https://sync.example.com/\n",
    "https://sync.example.com/a b",
    "https://sync.example.com/\tx",
    "https://sync.example.com/" + "a" * PAGE_URI_MAX_LENGTH,
]


@pytest.mark.parametrize("value", ACCEPTED)
def test_validator_accepts_https_addresses(value):
    validate_page_uri(value)


@pytest.mark.parametrize("value", REFUSED)
def test_validator_refuses_anything_but_https(value):
    with pytest.raises(ValidationError) as refused:
        validate_page_uri(value)
    assert refused.value.code == "invalid_page_uri"


@override_settings(DEBUG=True)
@pytest.mark.parametrize(
    "value", ["http://localhost:8000/logo.png", "http://127.0.0.1/privacy", "http://[::1]:8000/terms"]
)
def test_validator_accepts_loopback_http_while_debug_is_on(value):
    validate_page_uri(value)


@override_settings(DEBUG=True)
@pytest.mark.parametrize(
    "value",
    [
        "http://sync.example.com/",
        "http://localhost.evil.example/",
        "http://127.0.0.1.evil.example/",
        "javascript:alert(1)",
    ],
)
def test_validator_refuses_other_http_while_debug_is_on(value):
    with pytest.raises(ValidationError):
        validate_page_uri(value)


def test_a_value_valid_under_debug_is_not_rendered_without_it(browser, application):
    with override_settings(DEBUG=True):
        record_pages(application, logo_uri="http://localhost:8000/logo.png")

    page = consent_page(browser, application)

    assert page.find("img") == []


@pytest.mark.parametrize("field", ["logo_uri", "client_uri", "policy_uri", "tos_uri"])
def test_model_validation_refuses_javascript(application, field):
    policy = ClientPolicy(application=application, **{field: "javascript:alert(1)"})
    with pytest.raises(ValidationError) as refused:
        policy.full_clean()
    assert set(refused.value.message_dict) == {field}


# Admin ---------------------------------------------------------------------------------------------


def test_admin_cannot_save_a_javascript_address(application, admin_client):
    url = reverse("admin:offline_access_clientpolicy_add")
    data = {
        "application": application.pk,
        "allow_offline_access": "on",
        "refresh_token_idle_timeout": "",
        "refresh_token_absolute_lifetime": "",
        "logo_uri": "javascript:alert(1)",
        "client_uri": HOME,
        "policy_uri": "data:text/html,<script>alert(1)</script>",
        "tos_uri": TERMS,
    }

    response = admin_client.post(url, data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"logo_uri", "policy_uri"}
    assert not ClientPolicy.objects.exists()


def test_admin_saves_https_addresses(application, admin_client):
    url = reverse("admin:offline_access_clientpolicy_add")
    data = {
        "application": application.pk,
        "allow_offline_access": "on",
        "logo_uri": LOGO,
        "client_uri": HOME,
        "policy_uri": PRIVACY,
        "tos_uri": TERMS,
    }

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    policy = ClientPolicy.objects.get()
    assert (policy.logo_uri, policy.client_uri, policy.policy_uri, policy.tos_uri) == (
        LOGO,
        HOME,
        PRIVACY,
        TERMS,
    )


def test_admin_inline_on_the_application_page_refuses_a_javascript_address(application, admin_client):
    url = reverse("admin:oauth2_provider_application_change", args=[application.pk])
    page = admin_client.get(url)
    (inline,) = [
        inline for inline in page.context["inline_admin_formsets"] if inline.formset.model is ClientPolicy
    ]
    prefix = inline.formset.prefix
    data = form_data(page, f"{prefix}-TOTAL_FORMS")
    for field in ("logo_uri", "client_uri", "policy_uri", "tos_uri"):
        assert f"{prefix}-0-{field}" in data, field
    data[f"{prefix}-0-tos_uri"] = ["javascript:alert(1)"]
    data["_save"] = ["Save"]

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert not ClientPolicy.objects.exists()
    assert "tos_uri" in response.context["inline_admin_formsets"][-1].formset.forms[0].errors


@pytest.mark.parametrize(
    "url_name", ["admin:offline_access_clientpolicy_change", "admin:oauth2_provider_application_change"]
)
def test_admin_never_renders_a_stored_address_as_a_link(application, admin_client, url_name):
    policy = ClientPolicy.objects.create(application=application)
    ClientPolicy.objects.filter(pk=policy.pk).update(**HOSTILE)
    pk = policy.pk if url_name.startswith("admin:offline_access") else application.pk

    response = admin_client.get(reverse(url_name, args=[pk]))

    assert response.status_code == 200
    page = Elements(response.content.decode())
    for url in page.urls():
        assert urlsplit(url.strip()).scheme in ("", "https", "http"), url
    # Shown as the text it is, in a text input, for the administrator to correct.
    assert page.find("input", type="url", value=HOSTILE["logo_uri"])


# Connected apps ------------------------------------------------------------------------------------


def test_connected_apps_page_shows_logo_and_pages_without_another_query(
    browser, user, application, django_assert_num_queries
):
    from . import factories
    from .test_connected_apps import CONNECTED_APPS_QUERIES

    record_pages(application)
    without_pages = factories.ApplicationFactory(name="Backup Tool")
    hostile = factories.ApplicationFactory(name="Zz Hostile")
    for client in (application, without_pages, hostile):
        factories.ConsentFactory(user=user, application=client)
    ClientPolicy.objects.create(application=hostile)
    ClientPolicy.objects.filter(application=hostile).update(**HOSTILE)

    with django_assert_num_queries(CONNECTED_APPS_QUERIES):
        response = browser.get("/o/connected-apps/")

    assert response.status_code == 200
    page = Elements(response.content.decode())
    # One logo (decorative there: the name is the heading beside it), no hostile address anywhere.
    assert [(logo["src"], logo["alt"], logo["referrerpolicy"]) for logo in page.find("img")] == [
        (LOGO, "", "no-referrer")
    ]
    links = page.find("a", target="_blank")
    assert [link["href"] for link in links] == [HOME, PRIVACY, TERMS]
    assert all({"noopener", "noreferrer"} <= set(link["rel"].split()) for link in links)
    for url in page.urls():
        assert urlsplit(url.strip()).scheme in ("", "https", "http"), url
    assert "javascript:" not in response.content.decode().lower()


def test_screen_shows_an_internationalised_host_as_punycode(browser, application):
    """A look-alike host (Cyrillic "а" in "pаypal") reads as the real one in Unicode.

    The link text is what the user checks before following it, so the host is shown
    in its ASCII form, as browsers do for mixed-script hosts.
    """
    record_pages(application, client_uri="https://p\u0430ypal.example/")

    response = browser.get(authorize_url(application, prompt="consent"))
    text = " ".join(response.content.decode().split())

    assert "Website (xn--pypal-4ve.example)" in text
    assert "Website (p\u0430ypal" not in text
