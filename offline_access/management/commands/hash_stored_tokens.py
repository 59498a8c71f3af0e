"""Convert DOT credentials still stored in plaintext into keyed hashes (issue 9, tokens at rest).

Run once after upgrading, and again whenever it reports rows converted (a token
refreshed while its batch ran may be written back once more by DOT)::

    manage.py hash_stored_tokens [--batch-size 1000] [--dry-run]

Each batch is its own short transaction over rows locked by primary key, so a
table of millions of rows is never locked as a whole. Rows already stored as a
hash (``h1$...``) are skipped, so the command can be run any number of times;
tokens issued before it keep working after it, because lookups hash what is
presented. It also deletes sealed successor pairs whose grace period is over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_device_grant_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.settings import oauth2_settings

from offline_access import token_storage
from offline_access.device import normalise_user_code
from offline_access.models import SealedSuccessorPair


def convert_table(
    model, field: str, *, batch_size: int, dry_run: bool, canonical: Callable[[str], str] = str
) -> int:
    """Hash the plaintext values of ``model.field`` in batches; return how many (would) change.

    ``canonical`` gives the form of a value that is hashed (a user code's, which
    lookups normalise the same way).
    """
    converted, last_pk = 0, None
    with_checksum = field == "token"  # access and refresh tokens: DOT's lookup checksum follows
    while True:
        with transaction.atomic(using=model.objects.db):
            rows = model.objects.exclude(**{f"{field}__startswith": token_storage.PREFIX}).exclude(
                **{field: ""}
            )
            if last_pk is not None:
                rows = rows.filter(pk__gt=last_pk)
            if not dry_run:
                # Locked so that a rotation in flight re-reads the converted row after us.
                rows = rows.select_for_update()
            batch = list(rows.order_by("pk").values_list("pk", field)[:batch_size])
            if not batch:
                return converted
            last_pk = batch[-1][0]
            converted += len(batch)
            if dry_run:
                continue
            updated = []
            for pk, plaintext in batch:
                row = model(pk=pk)
                stored = token_storage.stored_value(canonical(plaintext))
                setattr(row, field, stored)
                if with_checksum:
                    row.token_checksum = token_storage.checksum(stored)
                updated.append(row)
            model.objects.bulk_update(updated, [field, "token_checksum"] if with_checksum else [field])


class Command(BaseCommand):
    help = (
        "Store access tokens, refresh tokens, authorization codes and device (user) codes that are still "
        "kept in plaintext as keyed hashes, in batches. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Rows per transaction (default 1000)."
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be converted without changing anything."
        )

    def handle(self, *args, **options):
        batch_size, dry_run = options["batch_size"], options["dry_run"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        tables = [
            ("access tokens", get_access_token_model(), "token", str),
            ("refresh tokens", get_refresh_token_model(), "token", str),
            ("authorization codes", get_grant_model(), "code", str),
            ("device codes", get_device_grant_model(), "device_code", str),
            ("device user codes", get_device_grant_model(), "user_code", normalise_user_code),
        ]
        verb = "Would convert" if dry_run else "Converted"
        for label, model, field, canonical in tables:
            count = convert_table(model, field, batch_size=batch_size, dry_run=dry_run, canonical=canonical)
            self.stdout.write(f"{verb} {count} {label}.")
        stale = SealedSuccessorPair.objects.filter(
            created_at__lt=timezone.now()
            - timedelta(seconds=oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS)
        )
        if dry_run:
            self.stdout.write(f"Would delete {stale.count()} sealed successor pairs past the grace period.")
        else:
            deleted, _ = stale.delete()
            self.stdout.write(f"Deleted {deleted} sealed successor pairs past the grace period.")
