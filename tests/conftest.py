from __future__ import annotations

import pytest
from django.test import Client

from . import factories


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
def native_application(db):
    """A public native client with a loopback redirect and PKCE."""
    return factories.PublicApplicationFactory(name="Phone App", client_id="phone-app")


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
