"""Consents outlive their client (issue 9, account events).

A consent keeps the client's id and name, so its history still says which client
it was after the client is deleted; the link to the application becomes
nullable (SET_NULL). Existing rows get the names of their clients now.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery
from oauth2_provider.settings import oauth2_settings


def record_client_names(apps, schema_editor):
    """Fill the new columns of existing consents from their clients: one UPDATE, no rows in memory."""
    Consent = apps.get_model("offline_access", "Consent")
    Application = apps.get_model(oauth2_settings.APPLICATION_MODEL)
    client = Application.objects.filter(pk=OuterRef("application_id"))
    Consent.objects.using(schema_editor.connection.alias).filter(
        application__isnull=False, client_id=""
    ).update(
        client_id=Subquery(client.values("client_id")[:1]),
        client_name=Subquery(client.values("name")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("offline_access", "0004_consent_form_use_and_code_hash"),
        migrations.swappable_dependency(oauth2_settings.APPLICATION_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="consent",
            name="client_id",
            field=models.CharField(
                blank=True,
                help_text="The client's ID as it was: recorded when given, updated when the client is deleted.",
                max_length=255,
                verbose_name="client ID",
            ),
        ),
        migrations.AddField(
            model_name="consent",
            name="client_name",
            field=models.CharField(
                blank=True,
                help_text=(
                    "The client's name as it was: recorded when given, updated when the client is deleted."
                ),
                max_length=255,
                verbose_name="client name",
            ),
        ),
        migrations.AlterField(
            model_name="consent",
            name="application",
            field=models.ForeignKey(
                blank=True,
                help_text=(
                    "The OAuth client (DOT application) the consent was given to. "
                    "Empty once the client is deleted."
                ),
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="offline_access_consents",
                to=oauth2_settings.APPLICATION_MODEL,
                verbose_name="client",
            ),
        ),
        migrations.AlterField(
            model_name="consentevent",
            name="via",
            field=models.CharField(
                choices=[
                    ("consent_screen", "Consent screen"),
                    ("admin", "Django admin"),
                    ("command", "Management command"),
                    ("api", "REST API"),
                    ("user", "The user's connected-apps page"),
                    ("system", "Automatic (expiry, code replay)"),
                    ("account", "Account change (deactivation, password change)"),
                    ("client", "Client deleted"),
                ],
                help_text="Where it happened.",
                max_length=16,
                verbose_name="via",
            ),
        ),
        migrations.RunPython(record_client_names, migrations.RunPython.noop, elidable=True),
    ]
