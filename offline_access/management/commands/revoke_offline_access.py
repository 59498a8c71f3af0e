from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from offline_access import services
from offline_access.management.commands.grant_enduring_consent import find_application, find_user
from offline_access.models import Consent, ConsentEvent, OfflineTokenFamily


class Command(BaseCommand):
    help = (
        "Revoke a user's offline access (consents, refresh and access tokens), for one client or all; "
        "or, with --all-users, every user's offline access to one client, in batches."
    )

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="Username of the user.")
        who.add_argument(
            "--all-users",
            action="store_true",
            help="Every user of the client named by --application (in short transactions of "
            "--batch-size consents each).",
        )
        parser.add_argument("--application", help="Client ID; omit to revoke every client's access.")
        parser.add_argument("--reason", default="", help="Why (kept in each consent's history).")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=services.CLIENT_REVOCATION_BATCH_SIZE,
            help="With --all-users: consents per transaction.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be revoked without changing anything."
        )

    def handle(self, *args, **options):
        if options["all_users"]:
            return self.handle_client(options)
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

    def handle_client(self, options):
        if not options["application"]:
            raise CommandError(
                "--all-users needs --application CLIENT_ID: the client whose access to revoke."
            )
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        application = find_application(options["application"])
        target = f"client {application.client_id!r}"
        if options["dry_run"]:
            consents = Consent.objects.filter(application=application, status=Consent.Status.ACTIVE)
            families = OfflineTokenFamily.objects.filter(application=application, ended_at__isnull=True)
            uncovered = families.filter(Q(consent__isnull=True) | ~Q(consent__status=Consent.Status.ACTIVE))
            self.stdout.write(
                f"Would revoke {consents.count()} consent(s) and {families.count()} token family(ies) "
                f"({uncovered.count()} without an active consent) of every user for {target}."
            )
            return
        result = services.revoke_client_offline_access(
            application,
            reason=options["reason"],
            via=ConsentEvent.Via.COMMAND,
            batch_size=options["batch_size"],
        )
        if not result:
            raise CommandError(f"Nothing to revoke: {target} has no active consent or live offline token.")
        self.stdout.write(
            f"Revoked {result.consents} consent(s), {result.refresh_tokens} refresh token(s) and "
            f"{result.access_tokens} access token(s) of every user for {target}, in {result.batches} "
            f"batch(es)."
        )
