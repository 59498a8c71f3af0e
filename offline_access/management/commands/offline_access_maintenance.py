"""Periodic maintenance, for cron or Celery beat (offline_access.maintenance)::

    manage.py offline_access_maintenance [--only STEP ...] [--dry-run] [--batch-size N] [--progress-every N]

Steps, in this order: ``consents`` (process expired consents), ``families`` (end
token families past their idle timeout or absolute lifetime), ``tokens`` (delete
DOT tokens and codes nobody can use any more; consent history stays), ``dpop``
(delete bindings of expired DPoP access tokens). Safe to run again and on two
machines at once; exits 0 when done.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from offline_access import maintenance


class Command(BaseCommand):
    help = (
        "Process expired consents, end lapsed token families, delete expired tokens and codes "
        "(keeping consent history) and expired DPoP bindings, in batches. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--only",
            action="append",
            choices=maintenance.STEPS,
            metavar="STEP",
            help=f"Run only this step (repeatable): {', '.join(maintenance.STEPS)}. Default: all.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what each step would do without changing anything."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=maintenance.DEFAULT_BATCH_SIZE,
            help=f"Rows per transaction (default {maintenance.DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--progress-every",
            type=int,
            default=100,
            metavar="N",
            help="Write a progress line to stderr every N batches (default 100; verbosity 2: every batch).",
        )

    def handle(self, *args, **options):
        batch_size, every = options["batch_size"], options["progress_every"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if every < 1:
            raise CommandError("--progress-every must be at least 1.")
        verbosity = options["verbosity"]
        if verbosity >= 2:
            every = 1

        def progress(report: maintenance.StepReport) -> None:
            if verbosity >= 1 and report.batches % every == 0:
                self.stderr.write(f"... {report}")

        reports = maintenance.run(
            options["only"], batch_size=batch_size, dry_run=options["dry_run"], progress=progress
        )
        for report in reports:
            self.stdout.write(str(report))
