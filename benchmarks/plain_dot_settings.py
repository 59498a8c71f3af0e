"""A plain django-oauth-toolkit site, the benchmarks' baseline: the app's settings without the app.

Everything of :mod:`benchmarks.app_settings` (the test settings) except:

- ``offline_access`` is not installed, nor the example's demo app (its validator,
  signal receiver and commands build on ``offline_access``);
- DOT's own views (:mod:`benchmarks.plain_dot_urls`) and DOT's stock validator.

Every other ``OAUTH2_PROVIDER`` setting is the app site's: rotation, reuse protection,
the grace period, PKCE, OIDC and its signing key. It runs on a database migrated
with the app installed: DOT's tables are the same, the app's extra tables unused.
"""

from benchmarks.app_settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app not in ("offline_access", "example_project.demo")]  # noqa: F405
ROOT_URLCONF = "benchmarks.plain_dot_urls"
OAUTH2_PROVIDER = {  # noqa: F405
    **OAUTH2_PROVIDER,  # noqa: F405
    "OAUTH2_VALIDATOR_CLASS": "oauth2_provider.oauth2_validators.OAuth2Validator",
}
