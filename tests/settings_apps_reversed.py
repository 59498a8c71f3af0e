"""The test settings with ``offline_access`` listed before ``oauth2_provider`` (the W005 mistake)."""

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "offline_access"]  # noqa: F405
INSTALLED_APPS.insert(INSTALLED_APPS.index("oauth2_provider"), "offline_access")
