"""The example site's validator: the app's, plus the user's ``profile`` and ``email`` claims.

Set as ``OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"]`` in example_project/settings.py.
It subclasses :class:`offline_access.validators.OfflineAccessValidator`, so the
offline-access policy stays in force (system check ``offline_access.E001``
accepts subclasses). DOT's hook for claims is ``get_additional_claims``: written
without the ``request`` argument, it returns one function per claim, and DOT
then lists the claims in discovery's ``claims_supported``; userinfo and ID
tokens release each only for the scope ``oidc_claim_scope`` names (OIDC Core
5.4: ``profile`` for the name claims, ``email`` for the email ones).
"""

from __future__ import annotations

from offline_access.validators import OfflineAccessValidator


class DemoValidator(OfflineAccessValidator):
    """Releases what Django's user model knows about the user, by scope (OIDC Core 5.1, 5.4).

    Left out: ``updated_at`` (Django records no time the profile last changed;
    ``last_login`` and ``date_joined`` are other things), and every claim the
    model has no field for (``picture``, ``locale``, ...).
    """

    def get_additional_claims(self):
        return {
            "name": lambda request: request.user.get_full_name(),
            "given_name": lambda request: request.user.first_name,
            "family_name": lambda request: request.user.last_name,
            "preferred_username": lambda request: request.user.get_username(),
            "email": lambda request: request.user.email,
            # Django stores whatever address was typed and never proves the user
            # controls it, so the honest answer is false (OIDC Core 5.1: "true if
            # the End-User's e-mail address has been verified; otherwise false").
            # A site that verifies addresses (e.g. django-allauth) returns its own flag.
            "email_verified": lambda request: False,
        }

    def get_oidc_claims(self, token, token_handler, request):
        claims = super().get_oidc_claims(token, token_handler, request)
        # OIDC Core 5.3.2: a claim with no value is left out, not sent as "" or null;
        # and email_verified says nothing without an email.
        claims = {name: value for name, value in claims.items() if value not in ("", None)}
        if "email" not in claims:
            claims.pop("email_verified", None)
        return claims
