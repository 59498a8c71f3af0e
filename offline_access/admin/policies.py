"""Per-client policy: its own screen, and an inline on DOT's application page."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import get_application_model

from ..client_metadata import PAGE_FIELDS
from ..models import ClientPolicy, ConsentEvent


class ClientPolicyForm(forms.ModelForm):
    class Meta:
        model = ClientPolicy
        fields = (
            "application",
            "allow_offline_access",
            "refresh_token_idle_timeout",
            "refresh_token_absolute_lifetime",
            "require_dpop",
            # Shown on the consent screen (issue 13); plain text inputs, never rendered as links here.
            *PAGE_FIELDS,
        )
        widgets = {name: forms.URLInput(attrs={"size": 60}) for name in PAGE_FIELDS}
        help_texts = {
            # Says what unticking the box does before the administrator saves.
            "allow_offline_access": _(
                "When off, the client never gets a refresh token, and saving revokes at once its "
                "consents and every token it holds. Turning it back on revives none of them: "
                "each user has to consent again."
            ),
        }


class ActingAdministratorFormSet(forms.BaseInlineFormSet):
    """Names the administrator on the policies it saves, for the events a bar writes."""

    acting_user = None

    def save(self, commit=True):
        for form in self.forms:
            form.instance.changed_by = self.acting_user
            form.instance.changed_via = ConsentEvent.Via.ADMIN
        return super().save(commit)


@admin.register(ClientPolicy)
class ClientPolicyAdmin(admin.ModelAdmin):
    form = ClientPolicyForm
    list_display = (
        "application",
        "allow_offline_access",
        "refresh_token_idle_timeout",
        "refresh_token_absolute_lifetime",
        "require_dpop",
    )
    list_filter = ("allow_offline_access", "require_dpop")
    list_select_related = ("application",)
    search_fields = ("application__client_id", "application__name")
    raw_id_fields = ("application",)

    def save_model(self, request, obj, form, change):
        obj.changed_by, obj.changed_via = request.user, ConsentEvent.Via.ADMIN
        super().save_model(request, obj, form, change)
        if obj.bar_revocation:
            result = obj.bar_revocation
            self.message_user(
                request,
                _(
                    "Barring the client revoked %(consents)s consent(s), %(refresh)s refresh token(s) "
                    "and %(access)s access token(s)."
                )
                % {
                    "consents": result.consents,
                    "refresh": result.refresh_tokens,
                    "access": result.access_tokens,
                },
                messages.WARNING,
            )


class ClientPolicyInline(admin.StackedInline):
    model = ClientPolicy
    form = ClientPolicyForm
    formset = ActingAdministratorFormSet
    can_delete = True
    max_num = 1
    verbose_name_plural = _("offline access policy")

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.acting_user = request.user  # a class made for this request: safe to set
        return formset


def _add_policy_inline_to_application_admin() -> None:
    """Show the policy on DOT's application page when DOT's admin is registered already."""
    application_admin = admin.site._registry.get(get_application_model())
    if application_admin is not None and ClientPolicyInline not in application_admin.inlines:
        # On this one registered instance only: the site's own admin class is left as it is.
        application_admin.inlines = [*application_admin.inlines, ClientPolicyInline]  # type: ignore[misc]


_add_policy_inline_to_application_admin()
