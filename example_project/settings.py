"""Settings for the demo OpenID Provider (example_project).

Configured from the environment so the same file serves the demo, the test
suite (tests/settings.py builds on it) and a PostgreSQL run:

- ``DJANGO_DEBUG``: "1"/"true" or "0"/"false"; defaults to true for the demo.
- ``DJANGO_SECRET_KEY``: required for anything but a local demo.
- ``DJANGO_ALLOWED_HOSTS``: extra host names, comma separated.
- ``DATABASE_URL``: dj-database-url syntax; empty or unset means SQLite in
  ``db.sqlite3`` at the repository root.
- ``OIDC_RSA_PRIVATE_KEY``: PEM key that signs ID tokens; unset means a key
  generated once and kept in ``var/oidc.key``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
import django

from example_project.signing_key import load_or_create_rsa_private_key
from offline_access.scopes import DESCRIPTIONS as SCOPE_DESCRIPTIONS

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in {"1", "true", "yes", "on"}


DEBUG = _env_bool("DJANGO_DEBUG", default=True)

# INSECURE demo default, public in this repository: never use it outside a local demo.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "django-insecure-offline-access-demo-key-do-not-deploy"

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"] + [
    host.strip() for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "oauth2_provider",
    "offline_access",
    "example_project.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Pages in the browser's language (Accept-Language) among LANGUAGES; the
    # authorization endpoint's ui_locales (OIDC Core 3.1.2.1) wins over it.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "example_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database_url = os.environ.get("DATABASE_URL", "").strip()
DATABASES: dict[str, Any] = {
    "default": (
        dj_database_url.parse(_database_url)
        if _database_url
        else {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    )
}

# SQLite behind runserver, which serves each request in its own thread and
# connection. With SQLite's defaults, parallel token requests answered 500
# "database is locked": a transaction that began by reading could not upgrade to
# writing while another wrote, and SQLite fails such an upgrade at once rather
# than wait. So: a transaction takes the write lock when it begins (IMMEDIATE)
# and waiters queue for up to 20 s (busy timeout) instead of failing; WAL lets
# readers go on while one transaction writes. Tests use an in-memory database,
# where SQLite ignores WAL (the pragma answers "memory").
SQLITE_OPTIONS: dict[str, Any] = {"timeout": 20}
if django.VERSION >= (5, 1):  # both options arrived in Django 5.1
    SQLITE_OPTIONS |= {"init_command": "PRAGMA journal_mode=WAL", "transaction_mode": "IMMEDIATE"}
# On Django 4.2, example_project/demo/apps.py switches the file to WAL instead, and
# the demo makes do without IMMEDIATE transactions (see use_sqlite_wal there).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
# MySQL/MariaDB (DATABASE_URL=mysql://...): utf8mb4 on the connection (Django 4.2's
# default is the 3-byte utf8, which cannot store an emoji in a client's name) and for
# the test database Django creates (else it takes the server's default character set).
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    DATABASES["default"]["OPTIONS"] = {"charset": "utf8mb4", **DATABASES["default"].get("OPTIONS", {})}
    DATABASES["default"]["TEST"] = {"CHARSET": "utf8mb4", **DATABASES["default"].get("TEST", {})}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
# English and the languages the app ships catalogues for (offline_access/locale);
# discovery lists them as ui_locales_supported.
LANGUAGES = [
    ("en", "English"),
    ("de", "Deutsch"),
    ("es", "Español"),
    ("fr", "Français"),
    ("ja", "日本語"),
    ("nl", "Nederlands"),
    ("pt-br", "Português (Brasil)"),
]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

X_FRAME_OPTIONS = "DENY"
# The demo's signal receiver (example_project/demo/receivers.py) mails the user;
# the console shows the mail instead of sending it.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "offline-access-demo@example.com"

# Django's database sessions, minus a 500 on PostgreSQL for a cookie holding a NUL byte.
SESSION_ENGINE = "example_project.sessions"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

OAUTH2_PROVIDER = {
    # The app's validator enforces the offline_access issuance rules (SPEC.md P1-P8);
    # the demo's subclass adds the profile and email claims (example_project/demo/validators.py).
    "OAUTH2_VALIDATOR_CLASS": "example_project.demo.validators.DemoValidator",
    # An OpenID Provider, not only an OAuth 2.0 server: offline_access is an OIDC scope.
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": os.environ.get("OIDC_RSA_PRIVATE_KEY")
    or load_or_create_rsa_private_key(BASE_DIR / "var" / "oidc.key"),
    # OIDC scopes plus one API scope; the descriptions appear on the consent screen,
    # translated: the app ships these words in every language it ships (offline_access.scopes).
    "SCOPES": {
        "openid": SCOPE_DESCRIPTIONS["openid"],
        "profile": SCOPE_DESCRIPTIONS["profile"],
        "email": SCOPE_DESCRIPTIONS["email"],
        "read": "Read your data",  # the demo's own API scope: English only
        "offline_access": SCOPE_DESCRIPTIONS["offline_access"],
        # OFFLINE_ACCESS["API_SCOPE"]: lets a token list and revoke the user's connected apps.
        "connected_apps": SCOPE_DESCRIPTIONS["connected_apps"],
    },
    # DOT's default ("__all__") would hand out every scope, offline_access
    # included, to a request that names none.
    "DEFAULT_SCOPES": ["openid"],
    # Already DOT's default; stated because native clients depend on it.
    "PKCE_REQUIRED": True,
    # Rotation (DOT's default) with reuse protection: a refresh token works once;
    # replaying an old one, a sign it was stolen, revokes the whole token family.
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    # ...but a client on a bad network may send a refresh, lose the response
    # and retry: for 30 s the rotated token still works instead of counting as
    # a replay.
    "REFRESH_TOKEN_GRACE_PERIOD_SECONDS": 30,
    # Lets a client end the user's browser session (OIDC RP-Initiated Logout)...
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    # ...but logging out must not end offline access: offline tokens exist for
    # when the user is away, and end when the consent behind them is revoked.
    "OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS": False,
    # Short-lived access tokens (DOT defaults to 10 hours): long-lived access
    # goes through the refresh token, which is checked against consent.
    "ACCESS_TOKEN_EXPIRE_SECONDS": 600,
    # Public clients (the native app, the CLI) authenticate with their client_id
    # only; discovery says so.
    "OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED": ["client_secret_post", "client_secret_basic", "none"],
    # Device authorization grant (RFC 8628, for command-line tools): where the
    # user enters the code the device shows. The demo runs on 127.0.0.1:8000.
    "OAUTH_DEVICE_VERIFICATION_URI": os.environ.get("DEMO_BASE_URL", "http://127.0.0.1:8000") + "/o/device/",
}

# Every key keeps its documented default (see docs/reference/settings.md).
OFFLINE_ACCESS: dict[str, object] = {}

# The cache behind the device page's attempt limit and DPoP replay protection: shared by
# every worker only with a shared backend. REDIS_URL (e.g. redis://127.0.0.1:6379/0) selects
# Django's own RedisCache; without it the local-memory cache serves one process (the demo),
# and `check --deploy` warns (offline_access.W002, W004).
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
        }
    }
