"""An index on DOT's RefreshToken.token_family, which DOT does not create.

Every consent revocation, family ending and the maintenance job
(offline_access.maintenance) finds a family's refresh tokens by ``token_family``;
without an index each of those lookups reads the whole refresh token table.
The refresh token model is swappable, so the index is added to whichever model
``OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL`` names, and skipped when that table
already has an index starting with ``token_family`` (a site may have created
one itself, for example with CREATE INDEX CONCURRENTLY on a large table).
"""

from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings

INDEX_NAME = "offline_access_rt_family_idx"


def _refresh_token_model(apps):
    app_label, model_name = oauth2_settings.REFRESH_TOKEN_MODEL.split(".")
    return apps.get_model(app_label, model_name)


def _family_indexes(schema_editor, model):
    table = model._meta.db_table
    column = model._meta.get_field("token_family").column
    with schema_editor.connection.cursor() as cursor:
        constraints = schema_editor.connection.introspection.get_constraints(cursor, table)
    return {
        name
        for name, details in constraints.items()
        if (details["index"] or details["unique"]) and (details["columns"] or [None])[0] == column
    }


def add_index(apps, schema_editor):
    model = _refresh_token_model(apps)
    if not _family_indexes(schema_editor, model):
        schema_editor.add_index(model, models.Index(fields=["token_family"], name=INDEX_NAME))


def remove_index(apps, schema_editor):
    model = _refresh_token_model(apps)
    if INDEX_NAME in _family_indexes(schema_editor, model):
        schema_editor.remove_index(model, models.Index(fields=["token_family"], name=INDEX_NAME))


class Migration(migrations.Migration):
    dependencies = [
        ("offline_access", "0009_dpop"),
        migrations.swappable_dependency(oauth2_settings.REFRESH_TOKEN_MODEL),
    ]

    operations = [migrations.RunPython(add_index, remove_index, elidable=False)]
