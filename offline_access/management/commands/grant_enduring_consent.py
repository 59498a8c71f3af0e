from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from oauth2_provider.models import get_application_model

from offline_access import services
from offline_access.models import ConsentEvent


class Command(BaseCommand):
    help = (
        "Record an enduring consent (OIDC Core 11 'other conditions'): the client may get offline "
        "access for the user without prompt=consent."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Username of the user.")
        parser.add_argument("--application", required=True, help="Client ID of the DOT application.")
        parser.add_argument(
            "--reason",
            default="Granted with the grant_enduring_consent command.",
            help="The agreement this consent stands for (kept in the consent's history).",
        )
        parser.add_argument("--expires-in", type=int, metavar="DAYS", help="Expire after DAYS days.")

    def handle(self, *args, **options):
        user = find_user(options["user"])
        application = find_application(options["application"])
        days = options["expires_in"]
        if days is not None and days <= 0:
            raise CommandError("--expires-in must be a positive number of days.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        try:
            consent, created = services.grant_enduring_consent(
                user=user,
                application=application,
                reason=options["reason"],
                expires_at=expires_at,
                via=ConsentEvent.Via.COMMAND,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Granted" if created else "Renewed"
        until = f"until {consent.expires_at:%Y-%m-%d %H:%M %Z}" if consent.expires_at else "with no expiry"
        self.stdout.write(
            f"{verb} enduring consent #{consent.pk} for user {user.get_username()!r} "
            f"and client {application.client_id!r}, {until}."
        )


def find_user(username):
    User = get_user_model()
    try:
        return User._default_manager.get_by_natural_key(username)
    except User.DoesNotExist:
        raise CommandError(f"No user with username {username!r}. Check the spelling.") from None


def find_application(client_id):
    Application = get_application_model()
    try:
        return Application.objects.get(client_id=client_id)
    except Application.DoesNotExist:
        raise CommandError(
            f"No application with client ID {client_id!r}. "
            "Use the client ID (not the name) shown in the admin."
        ) from None
