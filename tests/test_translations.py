"""The shipped catalogues: complete, faithful to their message ids, compiled, and used.

Every language in ``offline_access/locale`` translates every message the app
marks (a fresh ``makemessages`` finds nothing new), with no fuzzy or empty
entry, the same placeholders and HTML as the English, and the plural forms its
header declares; the ``.mo`` files say what the ``.po`` files say; and the
consent screen renders in each language.
"""

from __future__ import annotations

import ast
import gettext
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import translation

from offline_access import languages

from .oauth import authorize_url, consent_form_data, submit_consent

LOCALE_DIR = Path(languages.LOCALE_DIR)
#: Shipped languages: gettext locale name -> Django language code.
SHIPPED = {"de": "de", "es": "es", "fr": "fr", "ja": "ja", "nl": "nl", "pt_BR": "pt-br"}
PLURAL_FORMS = {
    "de": "nplurals=2; plural=(n != 1);",
    "es": "nplurals=2; plural=(n != 1);",
    "fr": "nplurals=2; plural=(n > 1);",
    "ja": "nplurals=1; plural=0;",
    "nl": "nplurals=2; plural=(n != 1);",
    "pt_BR": "nplurals=2; plural=(n > 1);",
}
#: The sentence of the consent screen that grants offline access (SPEC P2's "plain words").
OFFLINE_NOTICE = (
    "%(name)s will keep this access even when you are offline or signed out, "
    "until you revoke it. Signing out of this site does not end it."
)
#: ``%(name)s``, ``%s``, ``%d`` and ``{name}``: what Python fills in.
PLACEHOLDER = re.compile(r"%\([^)]*\)[sdifr]|%[sdifr]|\{[A-Za-z_][A-Za-z0-9_]*\}")
TAG = re.compile(r"<[^>]*>")


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file (header included, first), enough of the format for these checks."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, int] | None = None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if entry is not None:
                entries.append(entry)
            entry, target = None, None
            continue
        entry = entry or Entry()
        if line.startswith("#,"):
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            assert target is not None, line
            text = ast.literal_eval(line)
            if target[0] == "msgstr":
                entry.msgstr[target[1]] += text
            else:
                setattr(entry, target[0], getattr(entry, target[0]) + text)
        else:
            keyword, _space, quoted = line.partition(" ")
            text = ast.literal_eval(quoted)
            if keyword == "msgid":
                entry.msgid, target = text, ("msgid", 0)
            elif keyword == "msgid_plural":
                entry.msgid_plural, target = text, ("msgid_plural", 0)
            else:
                match = re.fullmatch(r"msgstr(?:\[(\d+)\])?", keyword)
                assert match, line
                index = int(match.group(1) or 0)
                entry.msgstr[index], target = text, ("msgstr", index)
    return entries


def catalogue(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / "django.po"


def header(entries: list[Entry]) -> dict[str, str]:
    assert entries[0].msgid == "", "the header comes first"
    pairs = (line.partition(":") for line in entries[0].msgstr[0].splitlines() if line)
    return {key.strip(): value.strip() for key, _colon, value in pairs}


def messages(locale: str) -> list[Entry]:
    return read_po(catalogue(locale))[1:]


def test_the_shipped_languages_are_the_ones_listed():
    shipped = sorted(path.name for path in LOCALE_DIR.iterdir() if (path / "LC_MESSAGES").is_dir())
    assert shipped == sorted(SHIPPED)


@pytest.mark.parametrize("locale", sorted(SHIPPED))
def test_catalogue_header(locale):
    fields = header(read_po(catalogue(locale)))
    assert fields["Language"] == locale
    assert fields["Content-Type"] == "text/plain; charset=UTF-8"
    assert fields["Plural-Forms"] == PLURAL_FORMS[locale]
    assert "fuzzy" not in read_po(catalogue(locale))[0].flags


@pytest.mark.parametrize("locale", sorted(SHIPPED))
def test_every_message_is_translated_and_none_is_fuzzy(locale):
    nplurals = int(re.search(r"nplurals=(\d+)", PLURAL_FORMS[locale]).group(1))
    entries = messages(locale)
    assert entries
    for entry in entries:
        assert "fuzzy" not in entry.flags, entry.msgid
        expected_forms = nplurals if entry.msgid_plural is not None else 1
        assert sorted(entry.msgstr) == list(range(expected_forms)), entry.msgid
        assert all(text.strip() for text in entry.msgstr.values()), entry.msgid


@pytest.mark.parametrize("locale", sorted(SHIPPED))
def test_translations_keep_placeholders_and_markup(locale):
    for entry in messages(locale):
        sources = [entry.msgid] if entry.msgid_plural is None else [entry.msgid, entry.msgid_plural]
        wanted = sorted(set(PLACEHOLDER.findall(sources[-1])))
        assert all(sorted(set(PLACEHOLDER.findall(source))) == wanted for source in sources), entry.msgid
        for text in entry.msgstr.values():
            assert sorted(set(PLACEHOLDER.findall(text))) == wanted, (entry.msgid, text)
            # Same tags, same attributes, same order: a link stays a link to the same place.
            assert TAG.findall(text) == TAG.findall(entry.msgid), (entry.msgid, text)
            # No stray '%' that Python's formatting would choke on.
            assert "%" not in PLACEHOLDER.sub("", text).replace("%%", ""), (entry.msgid, text)


@pytest.mark.parametrize("locale", sorted(SHIPPED))
def test_protocol_identifiers_stay_untranslated(locale):
    identifiers = re.compile(
        r"\b(?:offline_access|invalid_dpop_proof|dpop_jkt|auth_time|token_\w+|DPoP|RFC \d+)\b"
    )
    for entry in messages(locale):
        for text in entry.msgstr.values():
            for name in identifiers.findall(entry.msgid):
                assert name in text, (entry.msgid, text, name)


@pytest.mark.parametrize("locale", sorted(SHIPPED))
def test_messages_naming_a_button_use_that_buttons_words(locale):
    """The phishing warning says to choose Deny: it must name the button as this language shows it."""
    by_id = {entry.msgid: entry.msgstr[0] for entry in messages(locale)}
    allow, deny = by_id["Allow"], by_id["Deny"]
    warning = next(text for msgid, text in by_id.items() if msgid.startswith("If someone sent you this code"))
    assert deny in warning
    assert allow in by_id["Choose Allow or Deny."] and deny in by_id["Choose Allow or Deny."]


def test_catalogues_cover_every_message_the_app_marks(tmp_path, monkeypatch):
    """A fresh makemessages over the app finds exactly the ids the catalogues translate."""
    app = tmp_path / "offline_access"
    shutil.copytree(LOCALE_DIR.parent, app, ignore=shutil.ignore_patterns("__pycache__", "locale"))
    (app / "locale").mkdir()
    monkeypatch.chdir(app)
    call_command("makemessages", locale=["de"], verbosity=0)
    fresh = {
        (entry.msgid, entry.msgid_plural) for entry in read_po(app / "locale/de/LC_MESSAGES/django.po")[1:]
    }
    assert fresh, "makemessages found no messages"
    for locale in SHIPPED:
        shipped = {(entry.msgid, entry.msgid_plural) for entry in messages(locale)}
        assert shipped == fresh, (locale, sorted(fresh - shipped)[:5], sorted(shipped - fresh)[:5])


@pytest.mark.parametrize("locale", sorted(SHIPPED))
def test_compiled_catalogue_says_what_the_po_says(locale, tmp_path):
    """The shipped .mo is the compiled .po (compilemessages was run after the last edit)."""
    fresh = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "--check", "-o", str(fresh), str(catalogue(locale))], check=True)
    with fresh.open("rb") as compiled, catalogue(locale).with_suffix(".mo").open("rb") as shipped:
        assert gettext.GNUTranslations(shipped)._catalog == gettext.GNUTranslations(compiled)._catalog


# Rendered -----------------------------------------------------------------------------------------


class Page(HTMLParser):
    """The consent page's language, text and submit buttons' accessible names.

    ``buttons`` are the consent form's (no action: it posts back); ``other_buttons``
    those of other forms ("Not you? Switch account", issue 13). The site's
    ``<header>`` (the example site's sign-out, issue 13) is left out.
    """

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self._in_header = 0
        self.lang = ""
        self.buttons: list[str] = []
        self.other_buttons: list[str] = []
        self.text_parts: list[str] = []
        self._button: list[str] | None = None
        self._in_other_form = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang") or ""
        if tag == "header":
            self._in_header += 1
        if tag == "form" and not self._in_header:
            self._in_other_form = bool(attributes.get("action"))
        if tag == "button" and not self._in_header:
            self._button = []

    def handle_endtag(self, tag):
        if tag == "header":
            self._in_header -= 1
        if tag == "button" and self._button is not None:
            name = " ".join("".join(self._button).split())
            (self.other_buttons if self._in_other_form else self.buttons).append(name)
            self._button = None
        if tag == "form" and not self._in_header:
            self._in_other_form = False

    def handle_data(self, data):
        if self._button is not None:
            self._button.append(data)
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())


def in_language(language: str, message: str, **values) -> str:
    with translation.override(language):
        return translation.gettext(message) % values


@pytest.mark.parametrize("language", sorted(SHIPPED.values()))
def test_consent_screen_renders_in_each_language(browser, application, language):
    response = browser.get(authorize_url(application, prompt="consent"), HTTP_ACCEPT_LANGUAGE=language)

    assert response.status_code == 200
    assert response["Content-Language"] == language
    page = Page(response.content.decode())
    assert page.lang == language
    notice = in_language(language, OFFLINE_NOTICE, name=application.name)
    assert notice != OFFLINE_NOTICE % {"name": application.name}
    assert notice in page.text
    assert in_language(language, "Keep access while you are away (offline access)") in page.text
    assert page.buttons == [in_language(language, "Allow"), in_language(language, "Deny")]
    assert "Allow" not in page.buttons and "Deny" not in page.buttons
    assert page.other_buttons == [in_language(language, "Not you? Switch account")]
    assert page.other_buttons != ["Not you? Switch account"]


def test_consent_screen_in_english_keeps_the_contracts_button_names(browser, application):
    """SPEC's public contract: "Allow" and "Deny", in the site's default language and in English."""
    for accept in ({}, {"HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.8"}, {"HTTP_ACCEPT_LANGUAGE": "sv"}):
        response = browser.get(authorize_url(application, prompt="consent"), **accept)
        assert Page(response.content.decode()).buttons == ["Allow", "Deny"], accept


@pytest.mark.parametrize("language", sorted(SHIPPED.values()))
def test_the_answer_to_a_form_posted_twice_is_in_the_language(browser, application, language):
    url = authorize_url(application, prompt="consent")
    shown = browser.get(url, HTTP_ACCEPT_LANGUAGE=language)
    assert submit_consent(browser, url, shown).status_code == 302

    replay = browser.post(
        url, {**consent_form_data(shown), "decision": "allow"}, HTTP_ACCEPT_LANGUAGE=language
    )

    assert replay.status_code == 400
    message = "This consent screen has already been used. Go back to the application and start again."
    assert in_language(language, message) in Page(replay.content.decode()).text
