"""One active consent per user, client and kind, enforced on MySQL and MariaDB too.

The constraint was conditional (``status = 'active'``), which Django cannot create on
MySQL/MariaDB (no partial unique indexes): there, two approvals at once left two active
consents. It now covers a column that is True while the consent is active and NULL after,
which every supported database enforces.
"""

from django.db import migrations, models


def clear_ended_slots(apps, schema_editor):
    Consent = apps.get_model("offline_access", "Consent")
    Consent.objects.exclude(status="active").update(active_slot=None)


class Migration(migrations.Migration):
    dependencies = [("offline_access", "0009_dpop")]

    operations = [
        migrations.RemoveConstraint(model_name="consent", name="offline_access_one_active_consent_per_kind"),
        migrations.AddField(
            model_name="consent",
            name="active_slot",
            field=models.BooleanField(default=True, editable=False, null=True),
        ),
        migrations.RunPython(clear_ended_slots, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="consent",
            constraint=models.UniqueConstraint(
                fields=("user", "application", "kind", "active_slot"),
                name="offline_access_one_active_consent_per_kind",
            ),
        ),
    ]
