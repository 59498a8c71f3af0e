from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OfflineAccessConfig(AppConfig):
    name = "offline_access"
    verbose_name = _("Offline access")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import account_events, checks  # noqa: F401  (checks registers the system checks)

        account_events.connect()
