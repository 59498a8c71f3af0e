"""Django's database sessions, refusing a session key that holds a NUL byte.

A browser can send a NUL inside a quoted cookie (``"abcdefgh\\000"``, plain ASCII on
the wire, unquoted by Python's cookie parser). Django's database store looks the
key up as is, and PostgreSQL refuses NUL in a query, so every page of the site
would answer 500. No session engine issues such a key: it is treated as no session.
"""

from __future__ import annotations

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and "\x00" not in key
