"""The user's connected-apps page (issue 4, "Users"; SPEC "Who does what: Users", C4, C5).

Every client holding offline access to the signed-in user's account, what it may
do, when access was given and last used, on how many devices; revoking the whole
application or one device asks for confirmation, needs POST + CSRF, and the token
endpoint refuses the revoked tokens at once. A user reaches only their own grants.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import formats, timezone
from oauth2_provider.models import get_refresh_token_model

from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily

from . import dpop as dpop_client
from . import factories
from .oauth import authorize_url, get_code, offline_tokens, refresh, stored
from .test_consent_screen import _template_source, translated_strings

#: GET /o/connected-apps/ for a logged-in user: session, user, consents, devices.
CONNECTED_APPS_QUERIES = 4

SCOPE_DESCRIPTIONS = settings.OAUTH2_PROVIDER["SCOPES"]
LIST_URL = "/o/connected-apps/"
#: What the list says of an application still allowed but signed in nowhere.
NOT_SIGNED_IN = (
    "Allowed, but not signed in on any device, so it cannot use your account while you are away. "
    "It gets that access back only when you sign in to it again."
)
LOGIN_URL = "/accounts/login/"
#: What the list says of a device whose sign-in is bound to its DPoP key (RFC 9449).
KEY_BOUND = "Bound to this device's key: the sign-in cannot be copied to another device."


def revoke_app_url(consent_id: int) -> str:
    return f"/o/connected-apps/{consent_id}/revoke/"


def revoke_device_url(family_id: int) -> str:
    return f"/o/connected-apps/device/{family_id}/revoke/"


class Page(HTMLParser):
    """What a person (or a screen reader) finds on a rendered page.

    Forms and buttons are the app's: those of the site's ``<header>`` (the example
    site's sign-out, around every page, issue 13) are left out.
    """

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self._in_header = 0
        self.headings: list[tuple[str, str]] = []  # (tag, text)
        self.buttons: list[dict] = []  # attributes + "text" + "form" (the enclosing form's attributes)
        self.forms: list[dict] = []
        self.hidden: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []  # (href, text)
        self.times: list[str] = []  # datetime attributes of <time>
        self.text_parts: list[str] = []
        self._heading: list | None = None
        self._button: dict | None = None
        self._link: list | None = None
        self._form: dict | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag == "header":
            self._in_header += 1
        if tag in ("h1", "h2", "h3", "h4"):
            self._heading = [tag, ""]
        elif self._in_header and tag in ("form", "button", "input"):
            pass
        elif tag == "form":
            self._form = attributes
            self.forms.append(attributes)
        elif tag == "button":
            self._button = {**attributes, "text": "", "form": self._form}
        elif tag == "a":
            self._link = [attributes.get("href", ""), ""]
        elif tag == "time":
            self.times.append(attributes.get("datetime", ""))
        elif tag == "input" and attributes.get("type") == "hidden":
            self.hidden[attributes.get("name", "")] = attributes.get("value", "")

    def handle_endtag(self, tag):
        if tag == "header":
            self._in_header -= 1
        if self._heading is not None and tag == self._heading[0]:
            self.headings.append((tag, " ".join(self._heading[1].split())))
            self._heading = None
        elif tag == "button" and self._button is not None:
            self._button["text"] = " ".join(self._button["text"].split())
            self.buttons.append(self._button)
            self._button = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], " ".join(self._link[1].split())))
            self._link = None
        elif tag == "form":
            self._form = None

    def handle_data(self, data):
        for part in (self._heading, self._link):
            if part is not None:
                part[1] += data
        if self._button is not None:
            self._button["text"] += data
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.text_parts).split())

    def accessible_names(self) -> list[str]:
        return [button.get("aria-label") or button["text"] for button in self.buttons]


def show(client: Client, url: str = LIST_URL) -> tuple[object, Page]:
    response = client.get(url)
    assert response.status_code == 200, (response.status_code, response.get("Location"))
    return response, Page(response.content.decode())


def shown_datetime(value) -> str:
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def family_of(tokens: dict) -> OfflineTokenFamily:
    token = get_refresh_token_model().objects.get(token=stored(tokens["refresh_token"]))
    return OfflineTokenFamily.objects.get(token_family=token.token_family)


def active_consent(user, application) -> Consent:
    return Consent.objects.active().get(user=user, application=application)


def userinfo(api: Client, tokens: dict):
    return api.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")


# Access -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_every_page_requires_login(client, user, application, enduring_consent, method):
    family = OfflineTokenFamily.objects.create(
        token_family="00000000-0000-0000-0000-000000000001",
        user=user,
        application=application,
        consent=enduring_consent,
    )
    for url in (LIST_URL, revoke_app_url(enduring_consent.pk), revoke_device_url(family.pk)):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        location = urlparse(response["Location"])
        assert location.path == LOGIN_URL, url
        assert f"next={url}" in response["Location"].replace("%2F", "/"), url
    enduring_consent.refresh_from_db()
    assert enduring_consent.status == Consent.Status.ACTIVE


def test_urls_are_named_in_the_oauth2_provider_namespace():
    assert reverse("oauth2_provider:connected-apps") == LIST_URL
    assert reverse("oauth2_provider:connected-apps-revoke", args=[7]) == revoke_app_url(7)
    assert reverse("oauth2_provider:connected-apps-revoke-device", args=[8]) == revoke_device_url(8)


@override_settings(X_FRAME_OPTIONS="SAMEORIGIN")
def test_pages_cannot_be_framed_or_cached(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    consent = active_consent(user, application)
    for url in (LIST_URL, revoke_app_url(consent.pk), revoke_device_url(family_of(tokens).pk)):
        response = browser.get(url)
        assert response.status_code == 200, url
        assert response["X-Frame-Options"] == "DENY", url
        cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
        assert {"no-cache", "no-store"} <= cache_control, url


def test_list_refuses_post(browser):
    assert browser.post(LIST_URL).status_code == 405


@pytest.mark.parametrize("method", ["put", "delete", "patch"])
def test_revoke_pages_refuse_other_methods(browser, api, user, application, method):
    tokens = offline_tokens(browser, api, application)
    consent = active_consent(user, application)
    for url in (revoke_app_url(consent.pk), revoke_device_url(family_of(tokens).pk)):
        assert getattr(browser, method)(url).status_code == 405, url
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200


# The list -----------------------------------------------------------------------------------------


def test_list_shows_name_scopes_given_at_last_used_and_devices(browser, api, user, application):
    first = offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, application)
    rotated = refresh(api, application, second["refresh_token"]).json()
    consent = active_consent(user, application)
    last_refresh = get_refresh_token_model().objects.get(token=stored(rotated["refresh_token"])).created

    response, page = show(browser)

    assert ("h2", "Calendar Sync") in page.headings
    assert SCOPE_DESCRIPTIONS["openid"] in page.text
    assert SCOPE_DESCRIPTIONS["offline_access"] in page.text
    assert SCOPE_DESCRIPTIONS["read"] not in page.text  # never approved
    assert f"Access given {shown_datetime(consent.granted_at)}" in page.text
    assert f"Last used {shown_datetime(last_refresh)}" in page.text
    assert "2 devices or installations" in page.text
    assert NOT_SIGNED_IN not in page.text
    [app] = response.context["connected_apps"]
    assert app.application == application
    assert app.consent_id == consent.pk
    assert app.granted_at == consent.granted_at
    assert app.last_used == last_refresh
    assert [family.pk for family in app.devices] == [family_of(first).pk, family_of(second).pk]
    # Each device: when it first signed in and when it was last refreshed.
    first_family, second_family = app.devices
    assert f"Device 1 First signed in {shown_datetime(first_family.created_at)}" in page.text
    assert f"last refreshed {shown_datetime(last_refresh)}" in page.text
    assert second_family.last_refreshed == last_refresh
    assert consent.granted_at.isoformat() in [value.replace("Z", "+00:00") for value in page.times]


def test_list_says_which_devices_are_bound_to_their_key(browser, api, user, native_application):
    # One device signed in with DPoP (its refresh tokens need its key), one without.
    key = dpop_client.new_key()
    code = get_code(browser, native_application, prompt="consent")
    bound = dpop_client.exchange(api, native_application, code, dpop_client.proof(key))
    assert bound.status_code == 200, bound.content
    assert bound.json()["token_type"] == "DPoP"
    bearer = offline_tokens(browser, api, native_application)
    assert family_of(bearer).dpop_jkt == ""

    response, page = show(browser)

    [app] = response.context["connected_apps"]
    assert [family.pk for family in app.devices] == [family_of(bound.json()).pk, family_of(bearer).pk]
    assert page.text.count(KEY_BOUND) == 1
    first, second = page.text.split("Device 2", 1)
    assert KEY_BOUND in first  # said of device 1, the bound one
    assert KEY_BOUND not in second


def test_list_shows_a_consent_not_used_yet(browser, enduring_consent):
    response, page = show(browser)
    assert ("h2", "Calendar Sync") in page.headings
    assert "Last used Not used yet" in page.text
    assert "Devices None" in page.text
    assert NOT_SIGNED_IN in page.text
    assert SCOPE_DESCRIPTIONS["offline_access"] in page.text
    [app] = response.context["connected_apps"]
    assert app.devices == []


def test_list_shows_every_connected_app_once(browser, api, user, application, native_application):
    offline_tokens(browser, api, application)
    offline_tokens(browser, api, native_application)
    # An administrator's enduring consent next to the user's own: still one entry.
    factories.EnduringConsentFactory(user=user, application=application)

    response, page = show(browser)

    assert [heading for heading in page.headings if heading[0] == "h2"] == [
        ("h2", "Calendar Sync"),
        ("h2", "Phone App"),
    ]
    calendar = response.context["connected_apps"][0]
    assert len(calendar.devices) == 1
    assert sorted(name for name, _ in calendar.scopes) == ["offline_access", "openid"]  # each once


def test_list_leaves_out_other_users_and_ended_consents(browser, other_user, user):
    factories.ConsentFactory(user=other_user, application=factories.ApplicationFactory(name="Mallory's App"))
    factories.ConsentFactory(
        user=user,
        application=factories.ApplicationFactory(name="Revoked App"),
        status=Consent.Status.REVOKED,
    )
    factories.EnduringConsentFactory(
        user=user,
        application=factories.ApplicationFactory(name="Expired App"),
        expires_at=timezone.now() - timedelta(minutes=1),
    )

    response, page = show(browser)

    assert response.context["connected_apps"] == []
    for name in ("Mallory's App", "Revoked App", "Expired App"):
        assert name not in page.text
    assert "No application can access your account while you are away." in page.text


def test_list_leaves_out_revoked_devices(browser, api, user, application):
    kept = offline_tokens(browser, api, application)
    revoked = offline_tokens(browser, api, application)
    browser.post(revoke_device_url(family_of(revoked).pk))

    response, page = show(browser)

    [app] = response.context["connected_apps"]
    assert [family.pk for family in app.devices] == [family_of(kept).pk]
    assert "1 device or installation" in page.text


def test_app_signed_out_by_the_client_stays_listed_as_allowed_on_no_device(browser, api, user, application):
    """RFC 7009: the client revoked its refresh token, ending its only device; the consent stands."""
    tokens = offline_tokens(browser, api, application)
    revoked = api.post(
        "/o/revoke_token/",
        {
            "token": tokens["refresh_token"],
            "client_id": application.client_id,
            "client_secret": "test-client-secret",
        },
    )
    assert revoked.status_code == 200

    response, page = show(browser)

    assert ("h2", "Calendar Sync") in page.headings
    assert "Devices None" in page.text
    assert NOT_SIGNED_IN in page.text
    [app] = response.context["connected_apps"]
    assert app.devices == []
    assert page.accessible_names() == ["Revoke access of Calendar Sync"]

    # The revoke button still withdraws the permission itself.
    consent = active_consent(user, application)
    _response, confirm = show(browser, revoke_app_url(consent.pk))
    assert "It is not signed in on any device now; this withdraws your permission." in confirm.text
    assert "signed out of 0" not in confirm.text
    assert browser.post(revoke_app_url(consent.pk)).status_code == 302
    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED
    assert consent.events.filter(action=ConsentEvent.Action.REVOKED, via=ConsentEvent.Via.USER).exists()
    response, page = show(browser)
    assert response.context["connected_apps"] == []
    assert "Calendar Sync no longer has access to your account." in page.text


def test_app_whose_last_device_the_user_revoked_stays_listed_as_allowed(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    browser.post(revoke_device_url(family_of(tokens).pk))

    _response, page = show(browser)

    assert ("h2", "Calendar Sync") in page.headings
    assert NOT_SIGNED_IN in page.text


def test_list_is_accessible_headings_and_button_names(browser, api, application, native_application):
    offline_tokens(browser, api, application)
    offline_tokens(browser, api, application)
    offline_tokens(browser, api, native_application)

    _response, page = show(browser)

    assert [heading for heading in page.headings if heading[0] == "h1"] == [("h1", "Connected apps")]
    assert page.accessible_names() == [
        "Revoke access of Calendar Sync on device 1",
        "Revoke access of Calendar Sync on device 2",
        "Revoke access of Calendar Sync",
        "Revoke access of Phone App on device 1",
        "Revoke access of Phone App",
    ]
    # Each visible label is part of its accessible name (WCAG 2.5.3), and no
    # button relies on tabindex: the focus order is the reading order.
    for button in page.buttons:
        assert button["text"] in button["aria-label"]
        assert "tabindex" not in button
    # The buttons lead to the confirmation pages; nothing changes on a click.
    assert {button["form"]["method"] for button in page.buttons} == {"get"}


def test_list_escapes_the_application_name(browser, user):
    name = '<img src="https://evil.example/x.png">Sync'
    factories.EnduringConsentFactory(user=user, application=factories.ApplicationFactory(name=name))

    response, page = show(browser)

    assert ("h2", name) in page.headings
    assert b'<img src="https://evil.example' not in response.content
    assert f"Revoke access of {name}" in page.accessible_names()


def test_pages_mark_their_words_for_translation():
    for template in ("offline_access/connected_apps.html", "offline_access/connected_apps_confirm.html"):
        inside, outside = translated_strings(_template_source(template))
        assert inside, template
        leftover = " ".join(outside.split())
        assert re.search(r"[A-Za-z]{2,}", leftover) is None, (template, leftover)
    inside, _outside = translated_strings(_template_source("offline_access/connected_apps.html"))
    assert KEY_BOUND in inside


def test_consent_screen_links_to_the_connected_apps_page(browser, application):
    response = browser.get(authorize_url(application, prompt="consent"))
    page = Page(response.content.decode())
    assert "You can see and revoke it at any time on your connected apps page." in page.text
    assert (LIST_URL, "connected apps page") in page.links


# Revoking an application ---------------------------------------------------------------------------


def test_confirm_page_says_what_will_happen_and_changes_nothing(browser, api, user, application):
    first = offline_tokens(browser, api, application)
    offline_tokens(browser, api, application)
    consent = active_consent(user, application)

    _response, page = show(browser, revoke_app_url(consent.pk))

    assert page.headings[0] == ("h1", "Revoke access of Calendar Sync?")
    assert "Calendar Sync will no longer be able to access your account" in page.text
    assert "It will be signed out of 2 devices or installations." in page.text
    assert [form["method"] for form in page.forms] == ["post"]
    assert "csrfmiddlewaretoken" in page.hidden
    assert page.accessible_names() == ["Revoke access of Calendar Sync"]
    assert (LIST_URL, "Cancel") in page.links
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert not consent.events.filter(action=ConsentEvent.Action.REVOKED).exists()
    assert refresh(api, application, first["refresh_token"]).status_code == 200


def test_C5_user_revokes_an_application_and_the_token_endpoint_refuses_it_at_once(
    browser, api, user, application, native_application
):
    first = offline_tokens(browser, api, application)
    second = offline_tokens(browser, api, application)
    other_app = offline_tokens(browser, api, native_application)
    consent = active_consent(user, application)

    response = browser.post(revoke_app_url(consent.pk))

    assert response.status_code == 302
    assert response["Location"] == LIST_URL
    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED
    assert consent.ended_by == user
    assert consent.ended_at is not None
    event = consent.events.get(action=ConsentEvent.Action.REVOKED)
    assert event.via == ConsentEvent.Via.USER == "user"
    assert event.actor == user
    for tokens in (first, second):
        refused = refresh(api, application, tokens["refresh_token"])
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_grant"
        assert userinfo(api, tokens).status_code == 401
    # Another application keeps its access.
    assert refresh(api, native_application, other_app["refresh_token"]).status_code == 200
    # Back on the list: a success message, and the application is gone.
    response, page = show(browser)
    assert "Calendar Sync no longer has access to your account." in page.text
    assert [message.level_tag for message in response.context["messages"]] == ["success"]
    assert [app.application for app in response.context["connected_apps"]] == [native_application]


def test_revoking_an_application_revokes_its_enduring_consent_too(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    interactive = active_consent(user, application)
    enduring = factories.EnduringConsentFactory(user=user, application=application)

    browser.post(revoke_app_url(enduring.pk))

    assert not Consent.objects.active().filter(user=user, application=application).exists()
    for consent in (interactive, enduring):
        event = consent.events.get(action=ConsentEvent.Action.REVOKED)
        assert (event.via, event.actor) == (ConsentEvent.Via.USER, user)
    assert refresh(api, application, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoking_an_application_twice_is_harmless(browser, api, user, application):
    offline_tokens(browser, api, application)
    consent = active_consent(user, application)
    browser.post(revoke_app_url(consent.pk))

    again = browser.post(revoke_app_url(consent.pk))
    confirm = browser.get(revoke_app_url(consent.pk))

    assert again.status_code == 302
    assert again["Location"] == LIST_URL
    assert confirm.status_code == 302
    assert confirm["Location"] == LIST_URL
    assert consent.events.filter(action=ConsentEvent.Action.REVOKED).count() == 1


# Revoking one device --------------------------------------------------------------------------------


def test_device_confirm_page_says_what_will_happen_and_changes_nothing(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    offline_tokens(browser, api, application)
    family = family_of(tokens)

    _response, page = show(browser, revoke_device_url(family.pk))

    assert page.headings[0] == ("h1", "Revoke access of Calendar Sync on this device?")
    assert f"First signed in {shown_datetime(family.created_at)}" in page.text
    assert "Calendar Sync will stop working on it at once" in page.text
    assert "Calendar Sync keeps its access on your 1 other device." in page.text
    assert [form["method"] for form in page.forms] == ["post"]
    assert page.accessible_names() == ["Revoke access of Calendar Sync on this device"]
    family.refresh_from_db()
    assert family.ended_at is None
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200


def test_user_revokes_one_device_and_only_its_tokens_are_refused(browser, api, user, application):
    phone = offline_tokens(browser, api, application)
    laptop = offline_tokens(browser, api, application)
    consent = active_consent(user, application)

    response = browser.post(revoke_device_url(family_of(phone).pk))

    assert response.status_code == 302
    assert response["Location"] == LIST_URL
    refused = refresh(api, application, phone["refresh_token"])
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert userinfo(api, phone).status_code == 401
    # The other device of the same application still refreshes.
    assert userinfo(api, laptop).status_code == 200
    assert refresh(api, application, laptop["refresh_token"]).status_code == 200
    # The consent stays; the event says the user revoked a device.
    consent.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    event = consent.events.get(action=ConsentEvent.Action.DEVICES_REVOKED)
    assert event.action == "devices_revoked"
    assert (event.via, event.actor) == (ConsentEvent.Via.USER, user)
    assert not consent.events.filter(action=ConsentEvent.Action.REVOKED).exists()
    _response, page = show(browser)
    assert "Calendar Sync no longer has access on that device." in page.text


def test_revoking_a_device_twice_is_harmless(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    family = family_of(tokens)
    browser.post(revoke_device_url(family.pk))

    again = browser.post(revoke_device_url(family.pk))
    confirm = browser.get(revoke_device_url(family.pk))

    assert (again.status_code, again["Location"]) == (302, LIST_URL)
    assert (confirm.status_code, confirm["Location"]) == (302, LIST_URL)
    events = active_consent(user, application).events.filter(action=ConsentEvent.Action.DEVICES_REVOKED)
    assert events.count() == 1


# CSRF and other users' ids ---------------------------------------------------------------------------


def test_revoking_without_csrf_token_is_forbidden(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    consent = active_consent(user, application)
    family = family_of(tokens)

    for url in (revoke_app_url(consent.pk), revoke_device_url(family.pk)):
        assert strict.post(url).status_code == 403, url

    consent.refresh_from_db()
    family.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert family.ended_at is None
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200


def test_revoking_with_the_confirm_pages_csrf_token_works(browser, api, user, application):
    tokens = offline_tokens(browser, api, application)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    consent = active_consent(user, application)

    _response, page = show(strict, revoke_app_url(consent.pk))
    response = strict.post(
        revoke_app_url(consent.pk), {"csrfmiddlewaretoken": page.hidden["csrfmiddlewaretoken"]}
    )

    assert response.status_code == 302
    consent.refresh_from_db()
    assert consent.status == Consent.Status.REVOKED
    assert refresh(api, application, tokens["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("method", ["get", "post"])
def test_another_users_consent_and_device_are_not_found(api, user, other_user, application, method):
    victim = Client()
    victim.force_login(user)
    tokens = offline_tokens(victim, api, application)
    consent = active_consent(user, application)
    family = family_of(tokens)
    attacker = Client()
    attacker.force_login(other_user)

    for url in (revoke_app_url(consent.pk), revoke_device_url(family.pk)):
        assert getattr(attacker, method)(url).status_code == 404, url

    consent.refresh_from_db()
    family.refresh_from_db()
    assert consent.status == Consent.Status.ACTIVE
    assert family.ended_at is None
    assert not consent.events.exclude(action=ConsentEvent.Action.GRANTED).exists()
    assert refresh(api, application, tokens["refresh_token"]).status_code == 200
    # The attacker's own list does not show the victim's application either.
    assert Page(attacker.get(LIST_URL).content.decode()).headings == [("h1", "Connected apps")]


@pytest.mark.parametrize("method", ["get", "post"])
def test_unknown_ids_are_not_found(browser, method):
    for url in (revoke_app_url(999999), revoke_device_url(999999)):
        assert getattr(browser, method)(url).status_code == 404, url


# Query count ------------------------------------------------------------------------------------------


def connect(user, apps: int, devices: int) -> None:
    """``apps`` applications with an active consent, each held by ``devices`` live token families.

    Every other device is key-bound (DPoP), so the pinned count covers saying so.
    """
    for _ in range(apps):
        application = factories.ApplicationFactory()
        consent = factories.ConsentFactory(user=user, application=application)
        for number in range(devices):
            family = OfflineTokenFamily.objects.create(
                token_family=uuid.uuid4(),
                user=user,
                application=application,
                consent=consent,
                dpop_jkt=f"{number:043d}" if number % 2 == 0 else "",
            )
            get_refresh_token_model().objects.create(
                user=user, application=application, token=uuid.uuid4().hex, token_family=family.token_family
            )


@pytest.mark.parametrize("apps, devices", [(1, 1), (20, 1), (1, 20), (20, 3)])
def test_list_query_count_is_pinned_and_constant(browser, user, apps, devices, django_assert_num_queries):
    connect(user, apps, devices)

    with django_assert_num_queries(CONNECTED_APPS_QUERIES):
        response = browser.get(LIST_URL)

    assert response.status_code == 200
    assert len(response.context["connected_apps"]) == apps
    assert {len(app.devices) for app in response.context["connected_apps"]} == {devices}
    bound = sum(1 for app in response.context["connected_apps"] for family in app.devices if family.dpop_jkt)
    assert Page(response.content.decode()).text.count(KEY_BOUND) == bound > 0
