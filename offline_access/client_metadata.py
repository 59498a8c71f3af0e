"""What the consent screen shows about a client besides its name: logo and pages.

The four addresses are the OpenID Connect Dynamic Client Registration 1.0
(section 2) metadata names ``logo_uri``, ``client_uri``, ``policy_uri`` and
``tos_uri``. DOT's Application has no such fields; the site records them on the
client's :class:`~offline_access.models.ClientPolicy` in admin.

A logo and links are supplied for the client, not by the site, so they are
held to one rule both when saved and when shown (:func:`is_safe_page_uri`):
an absolute ``https`` URL without credentials in it; ``http`` only for a
loopback host (``localhost``, ``127.0.0.1``, ``[::1]``) and only while
``settings.DEBUG`` is on, for development. A value in the database that breaks
the rule (written by raw SQL, ``update()``, or before the rule existed) is
never rendered: :func:`client_pages` leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings as django_settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.validators import URLValidator
from django.utils.translation import gettext_lazy as _

#: The longest address accepted (logo CDNs add long query strings; 2048 is a common browser floor).
PAGE_URI_MAX_LENGTH = 1024

#: Hosts where plain http is accepted, while DEBUG is on.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

#: The model fields, by their OIDC Dynamic Client Registration names.
PAGE_FIELDS = ("logo_uri", "client_uri", "policy_uri", "tos_uri")

_url_syntax = URLValidator(schemes=["https", "http"])


def page_uri_error(value: str) -> str | None:
    """Why ``value`` may not be shown as a client's logo or page, or None when it may."""
    if len(value) > PAGE_URI_MAX_LENGTH:
        return str(_("Use an address of at most %(max)d characters.") % {"max": PAGE_URI_MAX_LENGTH})
    if value != value.strip() or any(ord(character) < 0x21 or ord(character) == 0x7F for character in value):
        return str(_("The address must not contain spaces or control characters."))
    try:
        _url_syntax(value)
        parts = urlsplit(value)
    except (ValidationError, ValueError):
        return str(_("Enter a full https:// address, for example https://example.com/privacy."))
    if _ascii_host(parts.hostname) is None:
        return str(_("Enter a full https:// address, for example https://example.com/privacy."))
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        # https://bank.example@evil.example/ reads as the bank's address and is not.
        return str(_("The address must not contain a user name or password."))
    scheme = parts.scheme.lower()
    if scheme == "https":
        return None
    if scheme == "http" and parts.hostname in LOOPBACK_HOSTS and django_settings.DEBUG:
        return None
    return str(
        _("Use an https:// address (plain http is accepted only for localhost, and only while DEBUG is on).")
    )


def _ascii_host(hostname: str | None) -> str | None:
    """``hostname`` in its IDNA (punycode) form, or None when it has none."""
    if not hostname:
        return None
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def is_safe_page_uri(value: str | None) -> bool:
    """Whether ``value`` may be put in a page as a client's logo ``src`` or link ``href``."""
    if not value:
        return False
    return page_uri_error(value) is None


def validate_page_uri(value: str) -> None:
    """Model and form validator of the client's logo and page addresses."""
    error = page_uri_error(value)
    if error is not None:
        raise ValidationError(error, code="invalid_page_uri")


@dataclass(frozen=True)
class ClientPages:
    """A client's logo and pages as the consent screen may show them: each safe, or None."""

    logo_uri: str | None = None
    client_uri: str | None = None
    policy_uri: str | None = None
    tos_uri: str | None = None

    @property
    def client_host(self) -> str | None:
        """The home page's host, shown next to its link so the user sees where it leads.

        In its ASCII (punycode) form, as browsers show mixed-script hosts: in Unicode a
        look-alike host (a Cyrillic "а" in "pаypal") reads as the real one.
        """
        return _ascii_host(urlsplit(self.client_uri).hostname) if self.client_uri else None

    @property
    def has_links(self) -> bool:
        return bool(self.client_uri or self.policy_uri or self.tos_uri)

    def __bool__(self) -> bool:
        return bool(self.logo_uri or self.has_links)


def client_pages(application) -> ClientPages:
    """The client's recorded logo and pages that are safe to render (see the module docstring).

    No query when the client's policy was loaded already (the authorization
    endpoint's offline-access check and the device approval page load it); one otherwise.
    """
    try:
        rules = application.offline_access_policy
    except ObjectDoesNotExist:
        return ClientPages()
    return ClientPages(
        **{
            name: value if is_safe_page_uri(value) else None
            for name in PAGE_FIELDS
            for value in [getattr(rules, name)]
        }
    )
