"""Room on each page of the token family table for its one rewrite (issue 12), on PostgreSQL.

A family row is written once after its insert: when it ends (``ended_at``, which no
index covers). PostgreSQL can then rewrite it on its own page without touching any
of the table's ten indexes (a HOT update), but only if the page has room for the new
version; packed full, every ending inserts ten index entries. Half-full pages leave
room for every row of a page to end, as a whole-client revocation ends them. Pages
written before this migration keep their layout until the table is rewritten
(``VACUUM FULL``). Other databases have no such setting: nothing to do there.
"""

from django.db import migrations

TABLE = "offline_access_offlinetokenfamily"
FILLFACTOR = 50


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = schema_editor.quote_name(TABLE)
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("offline_access", "0012_client_pages"),
    ]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor, elidable=False)]
