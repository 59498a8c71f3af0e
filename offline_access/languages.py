"""The languages the app's pages can be shown in, and OIDC's ``ui_locales``.

OpenID Connect Core 1.0 3.1.2.1: ``ui_locales`` is a space-separated list of
BCP47 language tags, in order of preference, for the pages of the
authorization flow. The first tag this site supports wins over the browser's
``Accept-Language``; a value naming nothing supported (or not a tag list at
all) is ignored, as the spec allows. :func:`choose` is the pure matching rule;
:func:`supported` says what this site supports, and is what discovery's
``ui_locales_supported`` lists (:mod:`offline_access.metadata`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from django.conf import settings as django_settings
from django.utils.translation import to_locale

#: Where the app's own catalogues are (offline_access/locale/<locale>/LC_MESSAGES/django.mo).
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

#: The language the message ids are written in: it needs no catalogue.
SOURCE_LANGUAGE = "en"

#: One BCP47-shaped tag (RFC 5646 2.1 without its rarer forms): letters, then
#: subtags of 1-8 letters or digits. Anything else in ``ui_locales`` is ignored.
_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")

#: More tags than anyone prefers is a malformed value, not a reason to loop.
MAX_TAGS = 16


def choose(ui_locales: str, supported: Sequence[str]) -> str | None:
    """The first language of ``ui_locales`` found in ``supported`` (Django codes), or None.

    Matching follows Django's rules for ``Accept-Language``
    (``get_supported_language_variant``): a tag matches the same code in any
    case (``pt-BR`` is ``pt-br``), else its generic language (``de-CH`` is
    ``de``), else a supported regional variant of it (``pt`` is ``pt-br`` when
    only that is supported). Tags are tried in the order given; malformed tags
    are skipped; a value with more than :data:`MAX_TAGS` tags is ignored whole.
    """
    tags = ui_locales.split()
    if len(tags) > MAX_TAGS:
        return None
    codes = {code.lower(): code for code in supported}
    for tag in tags:
        if not _TAG.fullmatch(tag):
            continue
        tag = tag.lower()
        generic = tag.split("-")[0]
        for candidate in (tag, generic):
            if candidate in codes:
                return codes[candidate]
        for code in codes:
            if code.startswith(generic + "-"):
                return codes[code]
    return None


def requested(ui_locales: list[str]) -> str | None:
    """The language a request's ``ui_locales`` values pick on this site, or None.

    ``ui_locales`` are all the values of the query parameter: sent more than once,
    it is malformed (RFC 6749 3.1) and ignored like any other malformed value.
    """
    if len(ui_locales) != 1:
        return None
    return choose(ui_locales[0], supported())


def supported() -> list[str]:
    """The site's ``LANGUAGES`` codes in which the app's pages are translated, in their order.

    A language is translated when it is English (the source language) or a
    ``django.mo`` catalogue for it exists in the app (the shipped languages) or in
    one of the site's ``LOCALE_PATHS`` (a language the site added).
    """
    return list(
        _supported(
            tuple(code for code, _name in django_settings.LANGUAGES),
            tuple(str(path) for path in django_settings.LOCALE_PATHS),
        )
    )


@lru_cache(maxsize=8)
def _supported(codes: tuple[str, ...], locale_paths: tuple[str, ...]) -> tuple[str, ...]:
    # Keyed on the settings, so override_settings gets a fresh answer.
    directories = [LOCALE_DIR, *map(Path, locale_paths)]
    return tuple(code for code in codes if _is_translated(code, directories))


def _is_translated(code: str, directories: Iterable[Path]) -> bool:
    if code.lower().split("-")[0] == SOURCE_LANGUAGE:
        return True
    locale = to_locale(code)
    return any((directory / locale / "LC_MESSAGES" / "django.mo").is_file() for directory in directories)


def bcp47(code: str) -> str:
    """A Django language code as a BCP47 tag in its conventional case: ``pt-br`` -> ``pt-BR``.

    RFC 5646 2.1.1: language lower case, script title case, region upper case.
    """
    language, *subtags = code.split("-")
    parts = [language.lower()]
    for subtag in subtags:
        if len(subtag) == 2 or (len(subtag) == 3 and subtag.isdigit()):
            parts.append(subtag.upper())
        elif len(subtag) == 4:
            parts.append(subtag.title())
        else:
            parts.append(subtag.lower())
    return "-".join(parts)
