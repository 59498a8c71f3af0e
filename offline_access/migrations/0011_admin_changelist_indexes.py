"""Indexes the admin changelists need at scale (issue 12).

The consents changelist orders by (-granted_at, -pk), alone or for one client; the
token-family search finds a device by its DPoP key thumbprint, and its changelist
sorts by first issue.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("offline_access", "0010_consent_active_slot"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="consent",
            index=models.Index(fields=["granted_at", "id"], name="offline_acc_granted_idx"),
        ),
        migrations.AddIndex(
            model_name="consent",
            index=models.Index(
                fields=["application", "granted_at", "id"], name="offline_acc_app_granted_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="offlinetokenfamily",
            index=models.Index(fields=["dpop_jkt"], name="offline_acc_dpop_jkt_idx"),
        ),
        migrations.AddIndex(
            model_name="offlinetokenfamily",
            index=models.Index(fields=["created_at"], name="offline_acc_family_created_idx"),
        ),
    ]
