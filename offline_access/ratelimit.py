"""Attempt limits kept in Django's cache framework (RFC 8628 section 5.1).

A short user code can be guessed, so the device page slows guessing down: each
failed attempt counts against the account and the client address, and a subject
that used up its attempts is refused for one whole window, right answers
included, so a guess that would have been right teaches nothing.

Counts live in fixed windows aligned on the clock, so one window's counter is a
single cache key that every web worker increments (``cache.add`` then
``cache.incr``: atomic on Redis and Memcached). Across a window boundary a
subject can fail at most ``2 * attempts - 1`` times before the block starts; the
block then lasts a full window from the failure that used up the attempts.

The cache must be shared by all workers (Redis, Memcached, the database cache):
with a per-process cache such as ``LocMemCache`` every worker counts apart.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.core.cache import caches
from django.http import HttpRequest
from django.utils.module_loading import import_string

_PREFIX = "offline_access:attempts"


@dataclass(frozen=True)
class AttemptLimit:
    """At most ``attempts`` failures per subject in a ``window``; then a block for one window."""

    name: str
    attempts: int
    window: timedelta
    cache_alias: str = "default"

    @property
    def _seconds(self) -> int:
        return max(1, math.ceil(self.window.total_seconds()))

    def _key(self, kind: str, subject: str, suffix: int | str = "") -> str:
        # Hashed: a subject (an address from a site's callable, say) may hold
        # characters that Memcached refuses in keys.
        digest = hashlib.sha256(subject.encode()).hexdigest()[:40]
        return f"{_PREFIX}:{self.name}:{kind}:{digest}:{suffix}"

    def retry_after(self, subjects: Iterable[str]) -> int | None:
        """Seconds until every blocked subject among ``subjects`` may try again; None if none is."""
        now = time.time()
        keys = [self._key("blocked", subject) for subject in subjects]
        until = [value for value in caches[self.cache_alias].get_many(keys).values() if value > now]
        return max(1, math.ceil(max(until) - now)) if until else None

    def record_failure(self, subjects: Iterable[str]) -> None:
        """Count one failed attempt for each subject; block those that reach the limit."""
        cache = caches[self.cache_alias]
        now = time.time()
        period = int(now // self._seconds)
        timeout = (period + 1) * self._seconds - int(now) + 1
        for subject in subjects:
            key = self._key("failures", subject, period)
            if cache.add(key, 1, timeout):
                failures = 1
            else:
                try:
                    failures = cache.incr(key)
                except ValueError:  # expired between add and incr: a new period
                    cache.set(key, 1, timeout)
                    failures = 1
            if failures >= self.attempts:
                cache.set(self._key("blocked", subject), now + self._seconds, self._seconds + 1)


def client_address(request: HttpRequest, getter=None) -> str | None:
    """The address a limit counts against: ``REMOTE_ADDR``, or what the site's ``getter`` says.

    ``X-Forwarded-For`` is not read: any client can send it. Behind a reverse proxy
    the site either sets ``REMOTE_ADDR`` from the proxy's header it trusts (a
    middleware) or names a callable here.
    """
    if getter is None:
        return request.META.get("REMOTE_ADDR") or None
    if isinstance(getter, str):
        getter = import_string(getter)
    return getter(request) or None
