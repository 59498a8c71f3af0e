"""An example receiver: tell the user when an application gains offline access.

Sites connect their own receivers the same way (see offline_access.signals).
The demo prints the mail to the console (EMAIL_BACKEND in settings).
"""

from __future__ import annotations

from django.core.mail import send_mail
from django.dispatch import receiver

from offline_access.signals import consent_granted


@receiver(consent_granted, dispatch_uid="demo-tell-user-about-offline-access")
def tell_user_about_offline_access(sender, consent, actor, via, **kwargs):
    user = consent.user
    if not user.email:
        return
    send_mail(
        subject=f"{consent.application.name} can now access your account while you are away",
        message=(
            f"Hello {user.get_username()},\n\n"
            f"{consent.application.name} now has offline access to your account: it keeps working "
            "while you are signed out, until you revoke it on your connected apps page.\n\n"
            "If this was not you, revoke it there and change your password."
        ),
        from_email=None,
        recipient_list=[user.email],
    )
