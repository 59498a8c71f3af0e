"""Test settings: the example project's, made fast and self-contained.

The database comes from DATABASE_URL exactly as in example_project (tox sets it
per env: empty for SQLite, which Django tests in memory; a PostgreSQL URL whose
database name Django prefixes with ``test_``).
"""

import os

from example_project.signing_key import generate_rsa_private_key_pem

# Set before importing the example settings so they take this key instead of
# reading or creating var/oidc.key: a test run leaves nothing on disk. One key
# per test process, generated in memory.
os.environ["OIDC_RSA_PRIVATE_KEY"] = generate_rsa_private_key_pem()

from example_project.settings import *  # noqa: E402, F403

SECRET_KEY = "offline-access-tests-not-a-secret"

# Hashing cost is irrelevant to what the tests check and dominates their runtime.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# OFFLINE_ACCESS_TEST_LOGIN_REQUIRED_MIDDLEWARE=1 runs the whole suite on a site with
# Django's LoginRequiredMiddleware (5.1+), as DOT's own suite does (tox env
# py311-dj52-loginrequired): every endpoint must answer as without it, and only the
# pages for a person send anonymous visitors to log in. The few tests whose
# expectation legitimately differs ask tests.oauth.login_required_middleware_enabled().
_LOGIN_REQUIRED = os.environ.get("OFFLINE_ACCESS_TEST_LOGIN_REQUIRED_MIDDLEWARE", "")
if _LOGIN_REQUIRED not in ("", "0", "1"):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"OFFLINE_ACCESS_TEST_LOGIN_REQUIRED_MIDDLEWARE={_LOGIN_REQUIRED!r}: set it to 1 (on) or 0 (off)."
    )
if _LOGIN_REQUIRED == "1":
    import django
    from django.core.exceptions import ImproperlyConfigured

    if django.VERSION < (5, 1):
        raise ImproperlyConfigured(
            "OFFLINE_ACCESS_TEST_LOGIN_REQUIRED_MIDDLEWARE is set, but "
            "django.contrib.auth.middleware.LoginRequiredMiddleware exists from Django 5.1; "
            f"this is Django {django.get_version()}. Unset it or install Django>=5.1."
        )
    _AUTHENTICATION_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
    MIDDLEWARE = [*MIDDLEWARE]  # noqa: F405
    MIDDLEWARE.insert(
        MIDDLEWARE.index(_AUTHENTICATION_MIDDLEWARE) + 1,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    )
