from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OfflineAccessConfig(AppConfig):
    name = "offline_access"
    verbose_name = _("Offline access")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from . import account_events, authentication, checks  # noqa: F401  (checks registers the system checks)

        account_events.connect()
        # Each login notes its time in the session that logged in: the OpenID auth_time.
        user_logged_in.connect(authentication.record_login, dispatch_uid="offline_access.record_login")
