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
