"""Django admin for offline access: consents, enduring consents, token families, client policy.

Nothing here changes data directly: every action calls :mod:`offline_access.services`,
so admin revocations write the same events and revoke tokens the same way as the
commands and the API. Each action is gated by a model permission, asks for
confirmation on a page that says what it will revoke, and records the acting
administrator.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.widgets import AdminSplitDateTime
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model

from . import services
from .models import ClientPolicy, Consent, ConsentEvent, EnduringConsent, OfflineTokenFamily
from .validators import lifetimes

REVOKE_CONSENT = "offline_access.revoke_consent"
REVOKE_TOKEN_FAMILY = "offline_access.revoke_token_family"
GRANT_ENDURING_CONSENT = "offline_access.grant_enduring_consent"


# Filters ------------------------------------------------------------------------


class ConsentStateFilter(admin.SimpleListFilter):
    """Active, expired (past its expiry, processed or not) or revoked."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return Consent.Status.choices

    def queryset(self, request, queryset):
        if self.value() in Consent.Status.values:
            return queryset.in_state(self.value())
        return queryset


class FamilyStateFilter(admin.SimpleListFilter):
    """Live families by default: the screen is about tokens that still work."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", _("Live")), ("ended", _("Ended")), ("all", _("All"))]

    def choices(self, changelist):
        # No "All" entry from Django: no parameter means "live" here.
        value = self.value() or "live"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "live"
        live = queryset.live()
        if value == "live":
            return live
        if value == "ended":
            return queryset.exclude(pk__in=live.values("pk"))
        return queryset


class KeyBoundFilter(admin.SimpleListFilter):
    """Devices whose refresh tokens only work with the device's DPoP key (RFC 9449 5), or not."""

    title = _("key-bound (DPoP)")
    parameter_name = "key_bound"

    def lookups(self, request, model_admin):
        return [("yes", _("Yes")), ("no", _("No"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(dpop_jkt="")
        if self.value() == "no":
            return queryset.filter(dpop_jkt="")
        return queryset


# Confirmed, audited revocations -------------------------------------------------


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


def _user_link(user):
    url = reverse("admin:offline_access_consent_user", args=[user.pk])
    return format_html('<a href="{}">{}</a>', url, user.get_username())


# Consents -----------------------------------------------------------------------


class ConsentEventInline(admin.TabularInline):
    model = ConsentEvent
    fields = ("at", "action", "via", "actor", "reason", "scope")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("at", "pk")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


class ConsentAdminBase(GatedActionsMixin, admin.ModelAdmin):
    list_display = (
        "user_link",
        "client",
        "kind",
        "scope",
        "granted_at",
        "last_used",
        "expires_at",
        "state",
        "live_tokens",
    )
    list_filter = (ConsentStateFilter, "kind", ("application", admin.RelatedOnlyFieldListFilter))
    # The recorded client id and name also find the consents of deleted clients.
    search_fields = (
        "user__username",
        "user__email",
        "application__client_id",
        "application__name",
        "client_id",
        "client_name",
    )
    date_hierarchy = "granted_at"
    list_select_related = ("user", "application")
    raw_id_fields = ("user",)
    inlines = [ConsentEventInline]
    actions = [
        "revoke_selected_consents",
        "revoke_everything_of_selected_users",
        "revoke_everything_of_selected_clients",
    ]
    action_permissions = {
        "revoke_selected_consents": REVOKE_CONSENT,
        "revoke_everything_of_selected_users": REVOKE_CONSENT,
        "revoke_everything_of_selected_clients": REVOKE_CONSENT,
    }
    readonly_fields = (
        "user",
        "application",
        "client_id",
        "client_name",
        "kind",
        "scope",
        "status",
        "created_at",
        "granted_at",
        "granted_by",
        "reason",
        "expires_at",
        "ended_at",
        "ended_by",
        "end_reason",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).with_usage()

    # Consents change only through the services: the pages are read-only.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("user"), ordering="user__username")
    def user_link(self, consent):
        return _user_link(consent.user)

    @admin.display(description=_("client"), ordering="client_name")
    def client(self, consent):
        return consent.client  # the application, or the recorded name of a deleted one

    @admin.display(description=_("last used"), ordering="last_used")
    def last_used(self, consent):
        return consent.last_used

    @admin.display(description=_("live tokens"), ordering="live_tokens")
    def live_tokens(self, consent):
        return consent.live_tokens

    @admin.display(description=_("state"))
    def state(self, consent):
        return consent.get_state_display()

    @admin.action(description=_("Revoke selected consents and their tokens"))
    def revoke_selected_consents(self, request, queryset):
        # Fixed before anything changes: the list's filters may depend on what is revoked.
        consents = Consent.objects.filter(pk__in=list(queryset.values_list("pk", flat=True))).active()
        return confirm_and_revoke(
            self,
            request,
            title=_("Revoke consents"),
            consents=consents,
            families=OfflineTokenFamily.objects.filter(consent__in=consents),
            revoke=lambda reason: services.revoke_consents(
                consents, actor=request.user, reason=reason, via=ConsentEvent.Via.ADMIN
            ),
            selected=queryset.values_list("pk", flat=True),
            action="revoke_selected_consents",
        )

    @admin.action(description=_("Revoke all offline access of the selected consents' users"))
    def revoke_everything_of_selected_users(self, request, queryset):
        return self._revoke_everything(request, queryset, "user", "revoke_everything_of_selected_users")

    @admin.action(description=_("Revoke all offline access to the selected consents' clients"))
    def revoke_everything_of_selected_clients(self, request, queryset):
        return self._revoke_everything(
            request, queryset, "application", "revoke_everything_of_selected_clients"
        )

    def _revoke_everything(self, request, queryset, field, action):
        # Fixed before anything changes: the list's filters may depend on what is revoked.
        owners = list(queryset.values_list(field, flat=True).distinct())
        consents = Consent.objects.active().filter(**{f"{field}__in": owners})
        families = OfflineTokenFamily.objects.filter(**{f"{field}__in": owners})
        return confirm_and_revoke(
            self,
            request,
            title=_("Revoke all offline access"),
            consents=consents,
            families=families,
            revoke=lambda reason: services.revoke_everything(
                consents=Consent.objects.filter(**{f"{field}__in": owners}),
                families=families,
                actor=request.user,
                reason=reason,
                via=ConsentEvent.Via.ADMIN,
            ),
            selected=queryset.values_list("pk", flat=True),
            action=action,
        )


@admin.register(Consent)
class ConsentAdmin(ConsentAdminBase):
    def has_add_permission(self, request):
        return False  # interactive consents come from the consent screen; enduring ones below

    def get_urls(self):
        return [
            path(
                "user/<int:user_id>/",
                self.admin_site.admin_view(self.user_view),
                name="offline_access_consent_user",
            ),
        ] + super().get_urls()

    def user_view(self, request, user_id):
        """All of one user's consents and token families, with "revoke everything"."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        user = get_object_or_404(get_user_model(), pk=user_id)
        consents = Consent.objects.filter(user=user).with_usage().select_related("application")
        families = OfflineTokenFamily.objects.filter(user=user).with_activity().select_related("application")
        may_revoke = request.user.has_perm(REVOKE_CONSENT)
        if request.method == "POST":
            if not may_revoke:
                raise PermissionDenied
            response = confirm_and_revoke(
                self,
                request,
                title=_("Revoke all offline access of %(user)s") % {"user": user.get_username()},
                consents=Consent.objects.active().filter(user=user),
                families=OfflineTokenFamily.objects.filter(user=user),
                revoke=lambda reason: services.revoke_offline_access(
                    user=user, actor=request.user, reason=reason, via=ConsentEvent.Via.ADMIN
                ),
            )
            return response or HttpResponseRedirect(request.path)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Offline access of %(user)s") % {"user": user.get_username()},
            "opts": self.model._meta,
            "subject": user,
            "consents": consents,
            "families": families,
            "may_revoke": may_revoke,
        }
        return TemplateResponse(request, "offline_access/admin/user_offline_access.html", context)


class EnduringConsentForm(forms.ModelForm):
    expires_at = forms.SplitDateTimeField(
        label=_("Expires at"),
        required=False,
        widget=AdminSplitDateTime,
        help_text=_("Leave empty for no expiry."),
    )

    class Meta:
        model = EnduringConsent
        fields = ("user", "application", "reason", "expires_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "reason" in self.fields:  # absent on the read-only change page
            self.fields["reason"].required = True
            self.fields["reason"].help_text = _(
                "The agreement this consent stands for (contract, policy). Kept in its history."
            )

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError(_("The expiry must be in the future."))
        return expires_at


@admin.register(EnduringConsent)
class EnduringConsentAdmin(ConsentAdminBase):
    """Enduring consents (SPEC C3): an administrator grants one with a reason."""

    form = EnduringConsentForm

    def get_list_filter(self, request):
        return (ConsentStateFilter, ("application", admin.RelatedOnlyFieldListFilter))  # all are enduring

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=Consent.Kind.ENDURING)

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("offline_access.view_consent")

    def has_add_permission(self, request):
        return request.user.has_perm(GRANT_ENDURING_CONSENT)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "application", "reason", "expires_at")
        return self.readonly_fields

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def save_model(self, request, obj, form, change):
        consent, _created = services.grant_enduring_consent(
            user=form.cleaned_data["user"],
            application=form.cleaned_data["application"],
            reason=form.cleaned_data["reason"],
            expires_at=form.cleaned_data["expires_at"],
            actor=request.user,
            via=ConsentEvent.Via.ADMIN,
        )
        obj.pk = consent.pk
        obj.refresh_from_db()


# Offline token families -----------------------------------------------------------


@admin.register(OfflineTokenFamily)
class OfflineTokenFamilyAdmin(GatedActionsMixin, admin.ModelAdmin):
    """One row per device or installation holding offline access. Token values never appear."""

    list_display = (
        "family",
        "user_link",
        "application",
        "consent_link",
        "created_at",
        "last_refreshed",
        "idle_expires",
        "absolute_expires",
        "state",
        "key_bound",
    )
    list_filter = (FamilyStateFilter, KeyBoundFilter, ("application", admin.RelatedOnlyFieldListFilter))
    # "=dpop_jkt": a thumbprint seen elsewhere (introspection's cnf.jkt, a log) finds its device.
    search_fields = (
        "user__username",
        "user__email",
        "application__client_id",
        "application__name",
        "=dpop_jkt",
    )
    date_hierarchy = "created_at"
    list_select_related = ("user", "application", "application__offline_access_policy", "consent")
    actions = ["revoke_selected_families"]
    action_permissions = {"revoke_selected_families": REVOKE_TOKEN_FAMILY}
    fields = readonly_fields = (
        "family",
        "user",
        "application",
        "consent",
        "created_at",
        "ended_at",
        "key_bound",
        "dpop_jkt",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).with_activity()

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("device"))
    def family(self, family):
        # DOT's token_family is an identifier, not a credential; its first block is enough.
        return str(family.token_family)[:8]

    @admin.display(description=_("user"), ordering="user__username")
    def user_link(self, family):
        return _user_link(family.user)

    @admin.display(description=_("consent"))
    def consent_link(self, family):
        if family.consent_id is None:
            return "-"
        url = reverse("admin:offline_access_consent_change", args=[family.consent_id])
        return format_html('<a href="{}">#{}</a>', url, family.consent_id)

    @admin.display(description=_("last refreshed"), ordering="last_refreshed")
    def last_refreshed(self, family):
        return family.last_refreshed

    @admin.display(description=_("idle expiry"))
    def idle_expires(self, family):
        idle, _absolute = lifetimes(_policy(family))
        if idle is None or family.last_refreshed is None:
            return "-"
        return family.last_refreshed + idle

    @admin.display(description=_("absolute expiry"))
    def absolute_expires(self, family):
        _idle, absolute = lifetimes(_policy(family))
        return "-" if absolute is None else family.created_at + absolute

    @admin.display(description=_("state"))
    def state(self, family):
        return _("Live") if family.ended_at is None and family.live_tokens else _("Ended")

    @admin.display(description=_("Key-bound (DPoP)"), boolean=True)
    def key_bound(self, family):
        # On the row already read: no query. A thumbprint is not a secret, but the column says enough.
        return bool(family.dpop_jkt)

    @admin.action(description=_("Revoke selected devices (token families); consents stay"))
    def revoke_selected_families(self, request, queryset):
        families = OfflineTokenFamily.objects.filter(pk__in=list(queryset.values_list("pk", flat=True)))
        return confirm_and_revoke(
            self,
            request,
            title=_("Revoke token families"),
            consents=Consent.objects.none(),
            families=families,
            revoke=lambda reason: services.revoke_token_families(
                families, actor=request.user, reason=reason, via=ConsentEvent.Via.ADMIN
            ),
            selected=queryset.values_list("pk", flat=True),
            action="revoke_selected_families",
        )


def _policy(family):
    try:
        return family.application.offline_access_policy
    except ClientPolicy.DoesNotExist:
        return None


# Per-client policy -------------------------------------------------------------------


class ClientPolicyForm(forms.ModelForm):
    class Meta:
        model = ClientPolicy
        fields = (
            "application",
            "allow_offline_access",
            "refresh_token_idle_timeout",
            "refresh_token_absolute_lifetime",
            "require_dpop",
        )
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
