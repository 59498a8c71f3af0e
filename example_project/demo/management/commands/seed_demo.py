"""Create (or reset) the demo users and OAuth clients, and print how to use them."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.urls import reverse
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings

from example_project.demo.flow import (
    CLI_CLIENT_ID,
    NATIVE_CLIENT_ID,
    NATIVE_EXAMPLE_REDIRECT_URI,
    NATIVE_REDIRECT_URI,
    WEB_CLIENT_ID,
    WEB_CLIENT_SECRET,
    WEB_REDIRECT_URI,
    native_authorization_example,
)

USERS = [
    # (username, password, email, is_superuser)
    ("alice", "alice-demo-password", "alice@example.com", False),
    ("admin", "admin-demo-password", "admin@example.com", True),
]


class Command(BaseCommand):
    help = (
        "Create or reset the demo users (alice, admin) and OAuth clients (demo-web, demo-native, demo-cli). "
        "Safe to run again: it restores the documented passwords, secret and settings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the demo server runs, for the printed URLs. Defaults to http://127.0.0.1:8000.",
        )

    @transaction.atomic
    def seed(self) -> None:
        User = get_user_model()
        for username, password, email, is_superuser in USERS:
            user, _ = User.objects.get_or_create(username=username)
            user.email = email
            user.is_active = True
            user.is_staff = is_superuser
            user.is_superuser = is_superuser
            # Reset every run so the printed password always works.
            user.set_password(password)
            user.save()

        Application = get_application_model()
        clients = [
            {
                "client_id": WEB_CLIENT_ID,
                "name": "Demo Web App",
                "client_type": Application.CLIENT_CONFIDENTIAL,
                "redirect_uris": WEB_REDIRECT_URI,
                # DOT hashes client_secret on save; the plain value is printed below.
                "client_secret": WEB_CLIENT_SECRET,
            },
            {
                "client_id": NATIVE_CLIENT_ID,
                "name": "Demo Native App",
                "client_type": Application.CLIENT_PUBLIC,
                # A public client cannot keep a secret (DOT's generated one is never
                # checked); PKCE binds the code to the app that asked for it.
                "redirect_uris": NATIVE_REDIRECT_URI,
            },
            {
                "client_id": CLI_CLIENT_ID,
                "name": "Demo CLI",
                "client_type": Application.CLIENT_PUBLIC,
                # Device authorization grant (RFC 8628): the user approves on another
                # device, so there is nothing to redirect to.
                "authorization_grant_type": Application.GRANT_DEVICE_CODE,
                "redirect_uris": "",
            },
        ]
        for fields in clients:
            application = Application.objects.filter(client_id=fields["client_id"]).first()
            if application is None:
                application = Application(client_id=fields["client_id"])
            values = {"authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE, **fields}
            for name, value in values.items():
                setattr(application, name, value)
            application.algorithm = Application.RS256_ALGORITHM
            application.skip_authorization = False
            application.full_clean()
            application.save()

    def handle(self, *args: Any, base_url: str, **options: Any) -> None:
        self.seed()
        base_url = base_url.rstrip("/")
        example = native_authorization_example(base_url)
        code_seconds = oauth2_settings.AUTHORIZATION_CODE_EXPIRE_SECONDS
        cli_command = ".venv/bin/python -m example_project.clients.cli"
        if base_url != "http://127.0.0.1:8000":
            cli_command += f" --base-url {base_url}"
        self.stdout.write(
            f"""
Demo data is ready.

Log in at {base_url}{reverse("login")}
  user   alice / alice-demo-password
  admin  admin / admin-demo-password   (Django admin: {base_url}{reverse("admin:index")})

OAuth clients
  {WEB_CLIENT_ID:<12} Demo Web App     confidential, client secret: {WEB_CLIENT_SECRET}
               redirect URI {WEB_REDIRECT_URI}
  {NATIVE_CLIENT_ID:<12} Demo Native App  public (no secret; PKCE S256)
               redirect URI {NATIVE_REDIRECT_URI} on any port (RFC 8252 section 7.3)
  {CLI_CLIENT_ID:<12} Demo CLI         public (no secret), device authorization grant (RFC 8628)

Try the command-line client (device grant; keeps its token in ~/.config/offline-access-demo/):
  {cli_command} login    # shows a code to approve in the browser, as alice
  {cli_command}          # later runs: refreshes without asking, prints whom it acts for

Play the native app:
1. Logged in as alice, open this authorization request (asks for offline access, prompt=consent):

   {example.authorization_url}

   PKCE code_verifier: {example.code_verifier}
   code_challenge:     {example.code_challenge} (S256)

2. Choose "Allow". The browser goes to {NATIVE_EXAMPLE_REDIRECT_URI}?code=...&state={example.state};
   nothing listens there, so copy the code from the address bar.
3. Within {code_seconds} seconds, exchange the code for tokens:

{example.exchange_command}

4. Later, with nobody logged in, use the refresh token:

{example.refresh_command}
"""
        )
