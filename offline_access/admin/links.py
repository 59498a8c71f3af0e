"""Admin URLs for a page of rows at the cost of one ``reverse()`` per URL name, not per row.

A changelist row links to its change page (and the consents and families screens to the
user's page and the consent): Django reverses each, matching the name against every
URL pattern again for each of the 50 rows. The URL of an integer primary key is the
same string around the number, so :func:`url_for_pk` reverses once with a marker
number and puts each row's key in its place. The result is what ``reverse()`` returns
(the same script prefix, URL conf, language prefix and admin site); any other key
(a string or UUID primary key, which ``reverse()`` quotes) is reversed as usual.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse
from django.utils.translation import get_language

#: A number no real primary key reaches (within a bigint), so it is found only where the key goes.
_MARKER = "9087654321012345678"
_TEMPLATES: dict[tuple, tuple[str, str] | None] = {}


def url_for_pk(viewname: str, pk, current_app: str | None = None) -> str:
    """``reverse(viewname, args=[pk], current_app=current_app)``, reversed once per process and context."""
    if type(pk) is not int:
        return reverse(viewname, args=[pk], current_app=current_app)
    key = (viewname, current_app, get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF, get_language())
    try:
        template = _TEMPLATES[key]
    except KeyError:
        try:
            url = reverse(viewname, args=[int(_MARKER)], current_app=current_app)
        except NoReverseMatch:  # a pattern that refuses the marker: reverse each key itself
            url = ""
        before, marker, after = url.partition(_MARKER)
        # The marker found once: the URL is the same string around any integer key.
        template = _TEMPLATES[key] = (before, after) if marker and _MARKER not in after else None
    if template is None:
        return reverse(viewname, args=[pk], current_app=current_app)
    return f"{template[0]}{pk}{template[1]}"
