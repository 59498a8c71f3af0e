from __future__ import annotations

import pytest
from django.test import Client

from . import factories
from .oauth import LOGIN_REQUIRED_MIDDLEWARE


@pytest.fixture
def user(db):
    return factories.UserFactory(username="alice")


@pytest.fixture
def other_user(db):
    return factories.UserFactory(username="mallory")


@pytest.fixture
def application(db):
    """A confidential web client."""
    return factories.ApplicationFactory(name="Calendar Sync", client_id="calendar-sync")


@pytest.fixture
def implicit_application(db):
    """A client registered for the implicit grant (token in the fragment)."""
    return factories.ApplicationFactory(
        name="Old SPA", client_id="old-spa", authorization_grant_type="implicit"
    )


@pytest.fixture
def hybrid_application(db):
    """A client registered for OpenID hybrid response types (code plus a front-channel token)."""
    return factories.ApplicationFactory(
        name="Hybrid", client_id="hybrid", authorization_grant_type="openid-hybrid"
    )


@pytest.fixture
def native_application(db):
    """A public native client with a loopback redirect and PKCE."""
    return factories.PublicApplicationFactory(name="Phone App", client_id="phone-app")


@pytest.fixture
def cli(db):
    """A command-line tool: public client using the device grant (RFC 8628)."""
    return factories.PublicApplicationFactory(
        name="Deploy CLI",
        client_id="deploy-cli",
        authorization_grant_type="urn:ietf:params:oauth:grant-type:device_code",
        redirect_uris="",
    )


@pytest.fixture
def browser(user) -> Client:
    """A browser session in which ``user`` is logged in."""
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def api() -> Client:
    """A client talking to the token endpoint (no session)."""
    return Client()


@pytest.fixture
def enduring_consent(user, application):
    return factories.EnduringConsentFactory(user=user, application=application)


def reset_oauthlib_cores() -> None:
    """Forget the oauthlib servers DOT caches per view class (they hold a validator instance)."""
    from oauth2_provider.settings import oauth2_settings
    from oauth2_provider.views.mixins import OAuthLibMixin

    oauth2_settings.reload()
    pending = [OAuthLibMixin]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "_oauthlib_core" in cls.__dict__:
            delattr(cls, "_oauthlib_core")


@pytest.fixture
def dot_settings(settings):
    """Change DOT's OAUTH2_PROVIDER keys for one test: ``dot_settings(ROTATE_REFRESH_TOKEN=False)``."""

    def change(**values):
        settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, **values}
        reset_oauthlib_cores()

    yield change
    reset_oauthlib_cores()


@pytest.fixture
def login_required_middleware(settings):
    """A site with Django's LoginRequiredMiddleware (5.1+): every view needs a user unless marked.

    DOT's test suite runs with it (its conftest adds it); so does each test asking for this.
    """
    import django

    if django.VERSION < (5, 1):
        pytest.skip("LoginRequiredMiddleware exists from Django 5.1")
    if LOGIN_REQUIRED_MIDDLEWARE not in settings.MIDDLEWARE:  # the whole run may have it already
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, LOGIN_REQUIRED_MIDDLEWARE]


@pytest.fixture(autouse=True)
def _site_language_after_each_test():
    """LocaleMiddleware activates the request's language and leaves it active in the thread.

    A test sending ``Accept-Language: de`` would leave German active for the next test's
    code outside requests (form errors, messages): each test starts in the site's language.
    """
    from django.utils import translation

    yield
    translation.deactivate()
