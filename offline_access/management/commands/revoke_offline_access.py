from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from offline_access import services
from offline_access.management.commands.grant_enduring_consent import find_application, find_user
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily


class Command(BaseCommand):
    help = "Revoke a user's offline access (consents, refresh and access tokens), for one client or all."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="Username of the user.")
        parser.add_argument("--application", help="Client ID; omit to revoke every client's access.")
        parser.add_argument("--reason", default="", help="Why (kept in each consent's history).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be revoked without changing anything."
        )

    def handle(self, *args, **options):
        user = find_user(options["user"])
        application = find_application(options["application"]) if options["application"] else None
        target = f"client {application.client_id!r}" if application else "all clients"
        if options["dry_run"]:
            consents = Consent.objects.active().filter(user=user)
            families = OfflineTokenFamily.objects.filter(user=user, ended_at__isnull=True)
            if application is not None:
                consents = consents.filter(application=application)
                families = families.filter(application=application)
            self.stdout.write(
                f"Would revoke {consents.count()} consent(s) and {families.count()} token "
                f"family(ies) of user {user.get_username()!r} for {target}."
            )
            return
        result = services.revoke_offline_access(
            user=user, application=application, reason=options["reason"], via=ConsentEvent.Via.COMMAND
        )
        if not result:
            raise CommandError(
                f"Nothing to revoke: user {user.get_username()!r} has no active consent or live "
                f"offline token for {target}."
            )
        self.stdout.write(
            f"Revoked {result.consents} consent(s), {result.refresh_tokens} refresh token(s) and "
            f"{result.access_tokens} access token(s) of user {user.get_username()!r} for {target}."
        )
