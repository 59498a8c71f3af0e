"""The client's logo and pages on its policy (issue 13): OIDC Dynamic Client Registration names.

Empty by default; nothing is shown until an administrator records them.
"""

from django.db import migrations, models

import offline_access.client_metadata


class Migration(migrations.Migration):
    dependencies = [
        ("offline_access", "0011_admin_changelist_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="clientpolicy",
            name="client_uri",
            field=models.CharField(
                blank=True,
                help_text="The client's home page (https://), linked from the consent screen.",
                max_length=1024,
                validators=[offline_access.client_metadata.validate_page_uri],
                verbose_name="home page",
            ),
        ),
        migrations.AddField(
            model_name="clientpolicy",
            name="logo_uri",
            field=models.CharField(
                blank=True,
                help_text="Address of the client's logo (https://), shown small on the consent screen next to the client's name, never instead of it. Leave empty for no logo.",
                max_length=1024,
                validators=[offline_access.client_metadata.validate_page_uri],
                verbose_name="logo",
            ),
        ),
        migrations.AddField(
            model_name="clientpolicy",
            name="policy_uri",
            field=models.CharField(
                blank=True,
                help_text="How the client uses people's data (https://), linked from the consent screen.",
                max_length=1024,
                validators=[offline_access.client_metadata.validate_page_uri],
                verbose_name="privacy policy",
            ),
        ),
        migrations.AddField(
            model_name="clientpolicy",
            name="tos_uri",
            field=models.CharField(
                blank=True,
                help_text="The client's terms of service (https://), linked from the consent screen.",
                max_length=1024,
                validators=[offline_access.client_metadata.validate_page_uri],
                verbose_name="terms of service",
            ),
        ),
    ]
