"""Confirmed, audited revocations shared by the screens.

The confirmation page with its counts of what will be revoked, and the mixin that
hides an action from, and refuses its POST to, an administrator without its permission.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import get_access_token_model, get_refresh_token_model


class RevokeForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason (optional)"),
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Kept in the history of each revoked consent."),
    )


def _live_token_counts(families):
    """How many refresh and access tokens revoking ``families`` would revoke."""
    refresh_tokens = get_refresh_token_model().objects.filter(
        token_family__in=families.values("token_family")
    )
    now = timezone.now()
    access_tokens = get_access_token_model().objects.filter(
        Q(pk__in=refresh_tokens.values("access_token_id"))
        | Q(source_refresh_token__in=refresh_tokens.values("pk")),
        expires__gt=now,
    )
    return refresh_tokens.filter(revoked__isnull=True).count(), access_tokens.count()


def confirm_and_revoke(modeladmin, request, *, title, consents, families, revoke, selected=(), action=""):
    """Render the confirmation page, or, once confirmed, revoke and report the counts.

    ``consents`` and ``families`` are what will be revoked (for the counts shown);
    ``revoke(reason)`` does it through a service and returns a RevocationResult.
    """
    form = RevokeForm(request.POST if "confirm" in request.POST else None)
    if form.is_bound and form.is_valid():
        result = revoke(form.cleaned_data["reason"])
        modeladmin.message_user(
            request,
            _("Revoked %(consents)s consent(s), %(refresh)s refresh token(s) and %(access)s access token(s).")
            % {"consents": result.consents, "refresh": result.refresh_tokens, "access": result.access_tokens},
            messages.SUCCESS if result else messages.WARNING,
        )
        return None
    refresh_tokens, access_tokens = _live_token_counts(families)
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "consent_count": consents.count(),
        "refresh_token_count": refresh_tokens,
        "access_token_count": access_tokens,
        # "Select all N" across pages: resend the flag, not thousands of ids (Django
        # refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields in one POST).
        "select_across": request.POST.get("select_across") == "1",
        # Django runs an action only when at least one checkbox value is posted.
        "selected": list(selected)[:1] if request.POST.get("select_across") == "1" else selected,
        "action": action,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "offline_access/admin/confirm_revoke.html", context)


class GatedActionsMixin:
    """Actions gated by a permission: hidden without it, and a direct POST gets 403."""

    #: action name -> permission needed to run it
    action_permissions: dict[str, str] = {}

    def changelist_view(self, request, extra_context=None):
        action = request.POST.get("action") if request.method == "POST" else None
        needed = self.action_permissions.get(action or "")
        if needed and not request.user.has_perm(needed):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)

    def get_actions(self, request):
        actions = super().get_actions(request)
        for name, permission in self.action_permissions.items():
            if name in actions and not request.user.has_perm(permission):
                del actions[name]
        return actions
