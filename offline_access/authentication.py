"""When this browser session authenticated: the OpenID ``auth_time`` (OIDC Core 1.0, 2).

DOT puts the user's ``last_login`` into ID tokens. That is per user, not per
session: a login on another device moves it, and a session would then look
freshly authenticated to ``max_age`` and to the relying party. This module keeps
the time in the session instead:

- :func:`record_login`, a ``user_logged_in`` receiver, stores the moment of each
  login (Django's ``login()``: the login form, ``Client.login``/``force_login``,
  any backend that calls it) in the session that logged in.
- :func:`session_auth_time` reads it back. A session without it (logged in
  before this app recorded it) has an unknown authentication time:
  ``max_age`` treats it as too old (the user logs in once more, after which it
  is known); an ID token without ``max_age`` gets the user's ``last_login``,
  as DOT gave before (:func:`claimed_auth_time`).
- Re-authentication markers: when the authorization endpoint sends the user to
  log in for ``prompt=login`` or ``max_age``, it notes in the session when it did
  so, for that request. The request that comes back passes if the session
  authenticated after that moment, however long the login took (no loop with
  ``max_age=0``), and not otherwise (a user who follows the ``next`` link without
  logging in does not pass).

Times are POSIX timestamps (floats) in the session: JSON-serialisable with every
session serializer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

#: Session key of this session's authentication time (POSIX seconds).
SESSION_AUTH_TIME = "offline_access.auth_time"
#: Session key of the re-authentication markers: request fingerprint -> when the user was sent.
SESSION_REAUTH = "offline_access.reauth"
#: At most this many requests wait for a re-authentication in one session (oldest dropped).
MAX_REAUTH_MARKERS = 8


def record_login(sender, request: HttpRequest | None = None, user=None, **kwargs) -> None:
    """``user_logged_in`` receiver: this session authenticated now."""
    session = getattr(request, "session", None)
    if session is not None:
        session[SESSION_AUTH_TIME] = time.time()


def _as_datetime(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # absent or not ours: unknown
    try:
        moment = datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    # Django's convention, as timezone.now(): naive local time when USE_TZ is False.
    return moment if settings.USE_TZ else timezone.make_naive(moment)


def as_claim(moment: datetime) -> int:
    """A datetime as an ID token's NumericDate (RFC 7519 2), read as Django stores it."""
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone() if not settings.USE_TZ else UTC)
    return int(moment.timestamp())


def session_auth_time(request: HttpRequest) -> datetime | None:
    """When this session authenticated, or None when it was not recorded."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    return _as_datetime(session.get(SESSION_AUTH_TIME))


def claimed_auth_time(recorded: datetime | None, user) -> datetime | None:
    """The ``auth_time`` to put in an ID token: the recorded one, else DOT's ``last_login``.

    None lets DOT decide (it uses ``last_login``, or now when that is empty).
    """
    if recorded is not None:
        return recorded
    return getattr(user, "last_login", None)


# Re-authentication requested by the authorization endpoint ---------------------------


def without_login_prompt(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Query parameters with ``login`` taken out of ``prompt`` (and ``prompt`` dropped if it empties)."""
    kept = []
    for key, value in pairs:
        if key == "prompt":
            value = " ".join(part for part in value.split() if part != "login")
            if not value:
                continue
        kept.append((key, value))
    return kept


def request_fingerprint(pairs: Iterable[tuple[str, str]]) -> str:
    """Identifies an authorization request, ``login`` in ``prompt`` left out.

    The request sent to log in for ``prompt=login`` comes back without ``login``
    (so that the user logs in once); both must have the same fingerprint.
    """
    normalised = without_login_prompt(pairs)
    digest = hashlib.sha256(repr(sorted(normalised)).encode("utf-8")).hexdigest()
    return digest[:32]


def reauthentication_requested_at(request: HttpRequest, fingerprint: str) -> datetime | None:
    markers = request.session.get(SESSION_REAUTH)
    if not isinstance(markers, dict):
        return None
    return _as_datetime(markers.get(fingerprint))


def request_reauthentication(request: HttpRequest, fingerprint: str) -> None:
    """Note that this request sent the user to log in, now."""
    markers = request.session.get(SESSION_REAUTH)
    markers = dict(markers) if isinstance(markers, dict) else {}
    markers.pop(fingerprint, None)
    markers[fingerprint] = time.time()
    while len(markers) > MAX_REAUTH_MARKERS:
        markers.pop(next(iter(markers)))
    request.session[SESSION_REAUTH] = markers


def forget_reauthentication(request: HttpRequest, fingerprint: str) -> None:
    """The request came back (authenticated or refused): its marker is used up."""
    markers = request.session.get(SESSION_REAUTH)
    if isinstance(markers, dict) and fingerprint in markers:
        markers = dict(markers)
        del markers[fingerprint]
        request.session[SESSION_REAUTH] = markers
