"""The consent screen (SPEC P2, "Who does what: Users", public contract).

What the user reads before a client gets offline access: who asks, what each
scope means, the plain-words offline notice, and exactly two choices. The page
is self-contained, cannot be framed or cached, can be replaced by a site, and
its words can be translated.
"""

from __future__ import annotations

import array
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.template.base import Lexer, TokenType
from django.template.loader import get_template
from django.test import Client, override_settings
from oauth2_provider.models import get_grant_model

from offline_access.models import Consent

from .oauth import authorize_url, consent_form_data, redirect_params

SCOPE_DESCRIPTIONS = settings.OAUTH2_PROVIDER["SCOPES"]
NOTICE_TITLE = "Access while you are away"
NOTICE_TEXT = "will keep this access even when you are offline or signed out"


class Page(HTMLParser):
    """The parts of a rendered page these tests look at.

    ``submits`` and ``hidden`` are the consent form's (the form posting back to the
    authorization endpoint, with no action); other forms' (the "Not you? Switch
    account" form, issue 13) are in ``other_submits`` and ``other_hidden``.

    Forms and buttons are the app's: those of the site's ``<header>`` (the example
    site's sign-out, around every page, issue 13) are left out; the URLs and the
    text are the whole page's.
    """

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self._in_header = 0
        self.forms: list[dict[str, str]] = []
        self.submits: list[dict] = []
        self.hidden: dict[str, str] = {}
        self.other_submits: list[dict] = []
        self.other_hidden: dict[str, str] = {}
        self._in_other_form = False
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts_with_src: list[str] = []
        self.text_parts: list[str] = []
        self._button: dict | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        for name in ("src", "href", "action", "srcset", "poster", "data", "formaction"):
            if name in attributes:
                self.urls.append((tag, name, attributes[name]))
        if tag == "script" and "src" in attributes:
            self.scripts_with_src.append(attributes["src"])
        if tag == "header":
            self._in_header += 1
        if self._in_header:
            return
        if tag == "form":
            self.forms.append(attributes)
            self._in_other_form = bool(attributes.get("action"))
        submits = self.other_submits if self._in_other_form else self.submits
        hidden = self.other_hidden if self._in_other_form else self.hidden
        if tag == "button" and attributes.get("type", "submit") == "submit":
            self._button = {**attributes, "text": ""}
        if tag == "input":
            kind = attributes.get("type", "text")
            if kind in ("submit", "image"):
                submits.append({**attributes, "text": attributes.get("value", "")})
            if kind == "hidden":
                hidden[attributes.get("name", "")] = attributes.get("value", "")

    def handle_endtag(self, tag):
        if tag == "header":
            self._in_header -= 1
        if tag == "button" and self._button is not None:
            self._button["text"] = " ".join(self._button["text"].split())
            (self.other_submits if self._in_other_form else self.submits).append(self._button)
            self._button = None
        if tag == "form":
            self._in_other_form = False

    def handle_data(self, data):
        if self._button is not None:
            self._button["text"] += data
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.text_parts).split())


def show_screen(browser, application, scope="openid offline_access", **params):
    response = browser.get(authorize_url(application, scope=scope, **params))
    assert response.status_code == 200, response.status_code
    return response, Page(response.content.decode())


def test_screen_names_the_application(browser, application):
    _response, page = show_screen(browser, application, prompt="consent")
    assert f"{application.name} wants to access your account" in page.text


def test_screen_escapes_the_application_name(browser, application):
    application.name = '<img src="https://evil.example/x.png">Sync'
    application.save()
    response, page = show_screen(browser, application, prompt="consent")
    assert "evil.example" not in [urlparse(value).netloc for _tag, _attr, value in page.urls]
    assert '<img src="https://evil.example/x.png">Sync wants to access your account' in page.text
    assert b'<img src="https://evil.example' not in response.content


def test_screen_describes_each_requested_scope(browser, application):
    requested = ["openid", "profile", "email", "read", "offline_access"]
    response, page = show_screen(browser, application, scope=" ".join(requested), prompt="consent")
    for name in requested:
        assert SCOPE_DESCRIPTIONS[name] in page.text, name
    assert [name for name, _ in response.context["scopes"]] == requested


def test_screen_does_not_describe_scopes_not_requested(browser, application):
    _response, page = show_screen(browser, application, scope="openid read", prompt="consent")
    assert SCOPE_DESCRIPTIONS["read"] in page.text
    for name in ("profile", "email", "offline_access"):
        assert SCOPE_DESCRIPTIONS[name] not in page.text, name


def test_screen_lists_a_repeated_scope_once(browser, application):
    """A scope is a set of names (RFC 6749 3.3): repeating one does not repeat its line."""
    response, page = show_screen(
        browser, application, scope="openid read read offline_access read", prompt="consent"
    )
    assert page.text.count(SCOPE_DESCRIPTIONS["read"]) == 1
    assert [name for name, _ in response.context["scopes"]] == ["openid", "read", "offline_access"]


def test_P2_offline_notice_shown_when_offline_access_requested_with_prompt_consent(browser, application):
    response, page = show_screen(browser, application, prompt="consent")
    assert response.context["offline_access"] is True
    assert NOTICE_TITLE in page.text
    assert f"{application.name} {NOTICE_TEXT}" in page.text
    assert SCOPE_DESCRIPTIONS["offline_access"] in page.text


@pytest.mark.parametrize(
    "scope, params",
    [
        ("openid offline_access", {}),
        ("openid offline_access", {"approval_prompt": "force"}),
        ("openid", {"prompt": "consent"}),
        ("openid read", {}),
    ],
    ids=["offline-without-prompt", "offline-with-approval-prompt", "consent-without-offline", "neither"],
)
def test_P2_no_offline_notice_otherwise(browser, application, scope, params):
    response, page = show_screen(browser, application, scope=scope, **params)
    assert response.context["offline_access"] is False
    assert NOTICE_TITLE not in page.text
    assert NOTICE_TEXT not in page.text
    assert SCOPE_DESCRIPTIONS["offline_access"] not in page.text


def test_screen_has_exactly_two_submit_buttons_allow_and_deny(browser, application):
    _response, page = show_screen(browser, application, prompt="consent")
    assert [button["text"] for button in page.submits] == ["Allow", "Deny"]
    assert [(button["name"], button["value"]) for button in page.submits] == [
        ("decision", "allow"),
        ("decision", "deny"),
    ]
    # The one other button is "Not you?" in its own form: it decides nothing (issue 13).
    assert [button["text"] for button in page.other_submits] == ["Not you? Switch account"]
    assert "name" not in page.other_submits[0]


def test_screen_is_one_post_form_to_the_authorization_endpoint(browser, application):
    _response, page = show_screen(browser, application, prompt="consent")
    consent_forms = [form for form in page.forms if not form.get("action")]
    assert len(consent_forms) == 1
    form = consent_forms[0]
    assert form["method"].lower() == "post"
    # No action: the form posts back to the URL it was served from. The only other
    # form is "Not you? Switch account" (issue 13), also a POST.
    assert [(other["method"], other["action"]) for other in page.forms if other is not form] == [
        ("post", "/o/switch-account/")
    ]


def test_screen_carries_a_csrf_token_and_only_the_signed_request(browser, application):
    response, page = show_screen(browser, application, prompt="consent")
    assert set(page.hidden) == {"csrfmiddlewaretoken", "request"}
    assert len(page.hidden["csrfmiddlewaretoken"]) >= 32
    assert page.hidden["request"] == response.context["form"].initial["request"]
    # "Not you?" carries its own CSRF token and the signed way back, nothing else.
    assert set(page.other_hidden) == {"csrfmiddlewaretoken", "next"}


def test_screen_loads_nothing_from_elsewhere(browser, application):
    response, page = show_screen(
        browser, application, scope="openid profile email read offline_access", prompt="consent"
    )
    assert page.scripts_with_src == []
    for tag, attribute, value in page.urls:
        url = urlparse(value.strip())
        assert not url.netloc, (tag, attribute, value)
        assert url.scheme in ("", "https", "http"), (tag, attribute, value)
    assert re.search(rb"""(?i)(src|href)\s*=\s*["']?\s*(https?:)?//""", response.content) is None
    assert re.search(rb"(?i)@import|url\(\s*['\"]?\s*(https?:)?//", response.content) is None


@override_settings(X_FRAME_OPTIONS="SAMEORIGIN")
def test_screen_cannot_be_framed_or_cached(browser, application):
    """The view itself says DENY: a site whose default allows same-origin framing keeps it."""
    response, _page = show_screen(browser, application, prompt="consent")
    assert response["X-Frame-Options"] == "DENY"
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"no-cache", "no-store"} <= cache_control
    assert "private" in cache_control


@override_settings(X_FRAME_OPTIONS="SAMEORIGIN")
def test_error_page_cannot_be_framed_or_cached(browser, application):
    response = browser.get(authorize_url(application, redirect_uri="https://attacker.example/cb"))
    assert response.status_code == 400
    assert response["X-Frame-Options"] == "DENY"
    cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
    assert {"no-cache", "no-store"} <= cache_control


def test_screen_shows_who_is_signed_in(browser, application, user):
    _response, page = show_screen(browser, application, prompt="consent")
    assert f"You are signed in as {user.get_username()}." in page.text


def test_screen_shows_the_current_user_not_another(application, other_user, client):
    client.force_login(other_user)
    _response, page = show_screen(client, application, prompt="consent")
    assert "You are signed in as mallory." in page.text
    assert "alice" not in page.text


# Overriding the template ------------------------------------------------------------------------

CUSTOM_TEMPLATE = (
    "{% load i18n %}<p>CUSTOM {{ application.name }}: "
    "{% for name, description in scopes %}[{{ description }}]{% endfor %}"
    "{% if offline_access %} OFFLINE{% endif %}</p>"
    '<form method="post">{% csrf_token %}{{ form.request }}'
    '<button name="decision" value="allow">{% trans "Allow" %}</button>'
    '<button name="decision" value="deny">{% trans "Deny" %}</button></form>'
)


def templates_with_dir(directory: Path) -> list[dict]:
    backend = dict(settings.TEMPLATES[0])
    backend["DIRS"] = [directory, *backend["DIRS"]]
    return [backend]


def test_template_overridable_by_a_site_template_directory(browser, application, tmp_path):
    (tmp_path / "offline_access").mkdir()
    (tmp_path / "offline_access" / "consent.html").write_text(CUSTOM_TEMPLATE)

    with override_settings(TEMPLATES=templates_with_dir(tmp_path)):
        response, page = show_screen(browser, application, prompt="consent")

    assert page.text.startswith(f"CUSTOM {application.name}: [")
    assert f"[{SCOPE_DESCRIPTIONS['offline_access']}] OFFLINE" in page.text
    assert [button["text"] for button in page.submits] == ["Allow", "Deny"]
    # The overriding page still drives the flow.
    data = {"request": page.hidden["request"], "decision": "allow"}
    response = browser.post(authorize_url(application, prompt="consent"), data)
    assert response.status_code == 302
    assert "code=" in response["Location"]


def test_template_overridable_by_setting(browser, application, tmp_path):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "my_consent.html").write_text(CUSTOM_TEMPLATE)

    with override_settings(
        TEMPLATES=templates_with_dir(tmp_path),
        OFFLINE_ACCESS={"CONSENT_TEMPLATE": "custom/my_consent.html"},
    ):
        response, page = show_screen(browser, application, prompt="consent")

    assert [template.name for template in response.templates][0] == "custom/my_consent.html"
    assert page.text.startswith(f"CUSTOM {application.name}:")


def test_default_template_is_the_apps(browser, application):
    response, _page = show_screen(browser, application, prompt="consent")
    assert response.templates[0].name == "offline_access/consent.html"


# Translation ---------------------------------------------------------------------------------------


def _template_source(name: str) -> str:
    origin = get_template(name).origin
    return Path(origin.name).read_text()


def translated_strings(source: str) -> tuple[list[str], str]:
    """The gettext message ids of {% trans %}/{% blocktrans %} tags, and the text outside them."""
    inside: list[str] = []
    outside: list[str] = []
    in_block = False
    for token in Lexer(source).tokenize():
        contents = token.contents.strip()
        if token.token_type == TokenType.BLOCK:
            tag = contents.split()[0]
            if tag in ("blocktrans", "blocktranslate"):
                in_block = True
                inside.append("")
            elif tag in ("endblocktrans", "endblocktranslate"):
                in_block = False
            elif tag in ("trans", "translate"):
                match = re.match(r"""(?:trans|translate)\s+(["'])(.*?)\1""", contents)
                if match:  # else a variable's value, translated when rendered (scope descriptions)
                    inside.append(match.group(2))
        elif token.token_type == TokenType.VAR and in_block:
            inside[-1] += f"%({contents})s"
        elif token.token_type == TokenType.TEXT:
            if in_block:
                inside[-1] += token.contents
            else:
                outside.append(token.contents)
    return inside, re.sub(r"<[^>]*>", " ", "".join(outside))


def test_consent_template_marks_its_words_for_translation():
    inside, outside = translated_strings(_template_source("offline_access/consent.html"))
    assert "Allow" in inside
    assert "Deny" in inside
    assert NOTICE_TITLE in inside
    assert any(NOTICE_TEXT in text for text in inside)
    assert any("You are signed in as" in text for text in inside)
    assert any("wants to access your account" in text for text in inside)
    # No user-visible words are left outside the translation tags.
    leftover = " ".join(outside.split())
    assert re.search(r"[A-Za-z]{2,}", leftover) is None, leftover


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU gettext catalog, as msgfmt writes it."""
    catalog = {"": "Content-Type: text/plain; charset=UTF-8\n", **messages}
    keys = sorted(catalog)
    ids = strs = b""
    entries = []
    for key in keys:
        msgid, msgstr = key.encode(), catalog[key].encode()
        entries.append((len(ids), len(msgid), len(strs), len(msgstr)))
        ids += msgid + b"\0"
        strs += msgstr + b"\0"
    key_start = 7 * 4 + 16 * len(keys)
    value_start = key_start + len(ids)
    key_offsets: list[int] = []
    value_offsets: list[int] = []
    for id_offset, id_length, str_offset, str_length in entries:
        key_offsets += [id_length, id_offset + key_start]
        value_offsets += [str_length, str_offset + value_start]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + len(keys) * 8, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.array("i", key_offsets + value_offsets).tobytes() + ids + strs)


def test_screen_is_translated_when_the_site_has_a_catalog(browser, application, tmp_path):
    inside, _outside = translated_strings(_template_source("offline_access/consent.html"))
    notice = next(text for text in inside if NOTICE_TEXT in text)
    write_mo(
        tmp_path / "fr" / "LC_MESSAGES" / "django.mo",
        {
            "Allow": "Autoriser",
            "Deny": "Refuser",
            NOTICE_TITLE: "Accès en votre absence",
            notice: "%(name)s garde cet accès même hors ligne.",
        },
    )

    # A site's own catalogue (LOCALE_PATHS) wins over the app's shipped French.
    with override_settings(LOCALE_PATHS=[tmp_path]):
        response = browser.get(authorize_url(application, prompt="consent"), HTTP_ACCEPT_LANGUAGE="fr")
    page = Page(response.content.decode())

    assert [button["text"] for button in page.submits] == ["Autoriser", "Refuser"]
    assert "Accès en votre absence" in page.text
    assert f"{application.name} garde cet accès même hors ligne." in page.text
    assert NOTICE_TEXT not in page.text


def test_consent_post_without_the_csrf_token_is_refused(user, application):
    """A cross-site page cannot make a signed-in user's browser click Allow (CSRF)."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    url = authorize_url(application, prompt="consent")
    data = {**consent_form_data(browser.get(url)), "decision": "allow"}

    assert browser.post(url, data).status_code == 403
    assert not Consent.objects.exists()
    assert not get_grant_model().objects.exists()

    data["csrfmiddlewaretoken"] = browser.cookies[settings.CSRF_COOKIE_NAME].value
    assert "code" in redirect_params(browser.post(url, data))


# approval_prompt=auto (DOT): the distinct scopes of live tokens, AccessToken.allow_scopes' rule (issue 12)

ALLOW_SCOPES_CASES = [
    # (live token scopes, requested scopes)
    (["read write"], ["read"]),
    (["read write"], ["read", "write"]),
    (["read"], ["read", "write"]),
    (["read", "write"], ["read", "write"]),  # no single token covers both
    (["readonly"], ["read"]),  # a prefix is not the scope
    (["xread"], ["read"]),
    (["read:all"], ["read"]),
    (["READ"], ["read"]),  # case-sensitive (SQLite's LIKE would not be)
    (["read%"], ["read"]),
    (["read"], ["re_d"]),  # no LIKE wildcards
    (["read"], ["re%"]),
    ([" read  write "], ["write"]),  # extra spaces
    (["read\twrite\nopenid"], ["write", "openid"]),  # str.split() separates on any whitespace
    ([""], ["read"]),
    ([""], []),  # no scopes asked: any live token will do
    ([], []),
    (["read write"], ["read write"]),  # a name holding a space is never a word
    (["read write"], [""]),
    (["openid read"], ["openid", "read", "openid"]),
]


@pytest.mark.parametrize(("token_scopes", "requested"), ALLOW_SCOPES_CASES)
def test_live_token_covers_agrees_with_dots_allow_scopes(
    user, other_user, application, token_scopes, requested
):
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model

    from offline_access.views import live_token_covers

    from . import factories

    model = get_access_token_model()
    now = timezone.now()
    for number, scope in enumerate(token_scopes):
        model.objects.create(
            user=user,
            application=application,
            token=f"t{number}",
            expires=now + timedelta(hours=1),
            scope=scope,
        )
    # Never counted: expired, another user's, another client's.
    everything = "read write openid READ xread re_d re% read:all"
    model.objects.create(
        user=user, application=application, token="old", expires=now - timedelta(seconds=1), scope=everything
    )
    model.objects.create(
        user=other_user,
        application=application,
        token="other",
        expires=now + timedelta(hours=1),
        scope=everything,
    )
    model.objects.create(
        user=user,
        application=factories.ApplicationFactory(),
        token="elsewhere",
        expires=now + timedelta(hours=1),
        scope=everything,
    )

    live = model.objects.filter(user=user, application=application, expires__gt=now)
    dot = any(token.allow_scopes(requested) for token in live)
    assert live_token_covers(user, application, requested) is dot


def test_approval_prompt_auto_skips_the_screen_when_a_live_token_covers_the_scopes(
    browser, user, application
):
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model

    url = authorize_url(application, scope="openid read", approval_prompt="auto")
    assert browser.get(url).status_code == 200  # nothing yet: the screen
    get_access_token_model().objects.create(
        user=user,
        application=application,
        token="live",
        expires=timezone.now() + timedelta(hours=1),
        scope="openid read write",
    )

    assert "code" in redirect_params(browser.get(url))
