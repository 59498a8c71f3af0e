"""The app's site for benchmarks run by gunicorn: the test settings, one signing key for every worker.

tests/settings.py generates a fresh RSA key in every process that imports it, so
two gunicorn workers would sign ID tokens with two keys, and the plain DOT site
with a third. The benchmark hands every worker of both sites the same key in
``BENCHMARK_OIDC_RSA_PRIVATE_KEY``; nothing else differs from the test settings
(the MD5 password hasher included: DOT hashes client secrets with the site's
hasher and checks one on every confidential client's token request, so with
Django's default PBKDF2 that check alone would be most of a refresh's time, on
both sites alike).
"""

import os

from tests.settings import *  # noqa: F403

_KEY = os.environ.get("BENCHMARK_OIDC_RSA_PRIVATE_KEY")
if _KEY:
    OAUTH2_PROVIDER = {**OAUTH2_PROVIDER, "OIDC_RSA_PRIVATE_KEY": _KEY}  # noqa: F405

# Like the example site, a new database connection per request by default (CONN_MAX_AGE 0);
# BENCHMARK_CONN_MAX_AGE=<seconds> measures both sites with persistent connections instead.
if os.environ.get("BENCHMARK_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["BENCHMARK_CONN_MAX_AGE"])  # noqa: F405
