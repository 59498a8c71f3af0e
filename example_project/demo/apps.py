from __future__ import annotations

import django
from django.apps import AppConfig
from django.db.backends.signals import connection_created


class DemoConfig(AppConfig):
    """Demo-only pieces of example_project: the home page and the seed/demo commands."""

    name = "example_project.demo"
    label = "demo"
    verbose_name = "Offline access demo"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (connects the example signal receiver)

        if django.VERSION < (5, 1):
            connection_created.connect(use_sqlite_wal, dispatch_uid="demo-sqlite-wal")


def use_sqlite_wal(sender, connection, **kwargs) -> None:
    """Django 4.2 fallback for the ``init_command`` of example_project/settings.py.

    Django 4.2 has no SQLite ``init_command`` nor ``transaction_mode`` option, so on
    4.2 the demo gets WAL from here and the 20 s busy timeout from the settings, but
    no IMMEDIATE transactions: under parallel writes it may still answer "database
    is locked" (tests/test_sqlite_demo.py is skipped there). Use Django 5.1 or later
    for the demo, or PostgreSQL.
    """
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
