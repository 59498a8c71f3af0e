"""One command from a fresh clone to a running demo OpenID Provider."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the demo: migrate the database, seed the demo users and clients, then start runserver."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--addrport",
            default="127.0.0.1:8000",
            help="Address and port for runserver. Defaults to 127.0.0.1:8000.",
        )
        parser.add_argument(
            "--no-server",
            action="store_true",
            help="Only migrate and seed; do not start the server.",
        )

    def handle(self, *args: Any, addrport: str, no_server: bool, **options: Any) -> None:
        verbosity = options["verbosity"]
        call_command("migrate", interactive=False, verbosity=verbosity, stdout=self.stdout)
        call_command("seed_demo", base_url=_base_url(addrport), verbosity=verbosity, stdout=self.stdout)
        if no_server:
            return
        # No autoreloader: it would re-run this whole command (migrate, seed) in a child process.
        call_command("runserver", addrport, use_reloader=False)


def _base_url(addrport: str) -> str:
    """The URL a browser on this machine uses to reach ``runserver addrport``."""
    host, _, port = addrport.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"
