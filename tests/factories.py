from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from oauth2_provider.models import get_application_model

from offline_access.models import Consent

CLIENT_SECRET = "test-client-secret"
PASSWORD = "test-password"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password(PASSWORD)


class ApplicationFactory(factory.django.DjangoModelFactory):
    """A confidential web client using the authorization-code grant."""

    class Meta:
        model = get_application_model()

    name = factory.Sequence(lambda n: f"Client {n}")
    client_id = factory.Sequence(lambda n: f"client-{n}")
    client_secret = CLIENT_SECRET
    client_type = "confidential"
    authorization_grant_type = "authorization-code"
    redirect_uris = "https://client.example/callback"
    algorithm = "RS256"
    skip_authorization = False


class PublicApplicationFactory(ApplicationFactory):
    """A native app: public client, loopback redirect, PKCE."""

    client_type = "public"
    client_secret = ""
    redirect_uris = "http://127.0.0.1/callback"


class ConsentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Consent

    user = factory.SubFactory(UserFactory)
    application = factory.SubFactory(ApplicationFactory)
    kind = Consent.Kind.INTERACTIVE
    scope = "openid offline_access"


class EnduringConsentFactory(ConsentFactory):
    kind = Consent.Kind.ENDURING
    scope = "offline_access"
    reason = "Signed service contract"
