from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from django import forms
from django.core import signing
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .conf import settings

_SALT = "offline_access.consent"


def sign_consent_request(payload: dict[str, Any]) -> str:
    """Sign what the consent screen shows, so the POST cannot change it (SPEC P3)."""
    return signing.dumps(payload, salt=_SALT, compress=True)


def new_form_identity() -> dict[str, str]:
    """What makes each rendering of the consent screen its own single-use form.

    A random nonce (claimed once on POST, :func:`offline_access.services.use_consent_form`)
    and the moment the page was shown (a revocation after it refuses the form).
    Both go into the signed payload next to the request.
    """
    return {"nonce": secrets.token_urlsafe(32), "rendered_at": timezone.now().isoformat()}


class ConsentForm(forms.Form):
    """The Allow/Deny form of the consent screen.

    It carries one signed field holding the whole authorization request as shown
    to the user. Nothing else posted back (scope, prompt, client) is read: the
    grant is built from the signed copy only.
    """

    request = forms.CharField(widget=forms.HiddenInput)
    decision = forms.ChoiceField(choices=[("allow", _("Allow")), ("deny", _("Deny"))])

    def __init__(self, *args: Any, user=None, **kwargs: Any) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_request(self) -> dict[str, Any]:
        max_age = settings.CONSENT_FORM_MAX_AGE
        try:
            payload = signing.loads(self.cleaned_data["request"], salt=_SALT, max_age=max_age)
        except signing.SignatureExpired:
            raise forms.ValidationError(
                _("This consent screen has expired. Go back to the application and sign in again."),
                code="expired",
            ) from None
        except signing.BadSignature:  # also a forged or truncated value
            raise forms.ValidationError(
                _("This consent request is not valid. Go back to the application and try again."),
                code="invalid",
            ) from None
        if not isinstance(payload, dict) or payload.get("user") != getattr(self.user, "pk", None):
            raise forms.ValidationError(
                _("This consent screen was shown to another account. Start again from the application."),
                code="wrong_user",
            )
        try:
            # A payload without these (signed by an older version) would be reusable: refused.
            payload["rendered_at"] = datetime.fromisoformat(payload["rendered_at"])
            if not isinstance(payload["nonce"], str) or not payload["nonce"]:
                raise ValueError("empty nonce")
        except (KeyError, TypeError, ValueError):
            raise forms.ValidationError(
                _("This consent request is not valid. Go back to the application and try again."),
                code="invalid",
            ) from None
        return payload

    @property
    def allowed(self) -> bool:
        return self.cleaned_data.get("decision") == "allow"


class DeviceDecisionForm(forms.Form):
    """Allow or Deny on the device grant's approval page (the scopes come from the stored grant)."""

    decision = forms.ChoiceField(choices=[("allow", _("Allow")), ("deny", _("Deny"))])
