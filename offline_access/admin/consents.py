"""Consents and enduring consents, and the per-user page (all of one user's offline access)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AdminSplitDateTime
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .. import services
from ..models import Consent, ConsentEvent, EnduringConsent, OfflineTokenFamily
from .filters import ClientFilter, ConsentStateFilter
from .links import url_for_pk
from .pagination import LimitedCountAdminMixin, LimitedCountPaginator
from .revocation import GatedActionsMixin, confirm_and_revoke
from .search import search_by_owner

REVOKE_CONSENT = "offline_access.revoke_consent"
GRANT_ENDURING_CONSENT = "offline_access.grant_enduring_consent"


# Here beside the per-user page it links to (ConsentAdmin.user_view); the families screen uses it too.
def _user_link(user):
    url = url_for_pk("admin:offline_access_consent_user", user.pk)  # one reverse() a page
    return format_html('<a href="{}">{}</a>', url, user.get_username())


#: Live tokens a consents changelist row counts before it says "100+": a consent behind
#: thousands of devices would otherwise cost its row a count of all their tokens (the
#: per-user page and the consent's own page count them all).
LIVE_TOKENS_SHOWN = 100


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


class ConsentAdminBase(LimitedCountAdminMixin, GatedActionsMixin, admin.ModelAdmin):
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
    # The first column is the user's link (to the per-user page): Django's link to the
    # consent's own page goes on the kind instead of around it (a link in a link is dropped).
    list_display_links = ("kind",)
    # "When given" as fixed ranges (today, past 7 days, ...): no query. Django's date_hierarchy
    # lists the years (months, days) that have rows with a DISTINCT over every matching row.
    list_filter = (
        ConsentStateFilter,
        "kind",
        ("application", ClientFilter),
        ("granted_at", admin.DateFieldListFilter),
    )
    # The recorded client id and name also find the consents of deleted clients.
    search_fields = (
        "user__username",
        "user__email",
        "application__client_id",
        "application__name",
        "client_id",
        "client_name",
    )
    list_select_related = ("user", "application")
    # Only the index-served order is offered (issue 12): sorting a million consents by a
    # per-row subquery (live tokens, last use) would run it for every row, and by user or
    # client name would join and sort the whole table before the first row.
    sortable_by = ("granted_at",)
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

    def annotate_changelist_rows(self, request, queryset):
        return queryset.with_usage(count_up_to=LIVE_TOKENS_SHOWN)

    def get_search_results(self, request, queryset, search_term):
        # search_fields above, answered table by table (see offline_access.admin.search). The
        # recorded client id and name are searched on consents of deleted clients, the only
        # rows where they can differ from the client's own.
        def recorded(term):
            return Q(application__isnull=True) & (
                Q(client_id__icontains=term) | Q(client_name__icontains=term)
            )

        return search_by_owner(queryset, search_term, recorded=recorded), False

    # Consents change only through the services: the pages are read-only.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("user"))
    def user_link(self, consent):
        return _user_link(consent.user)

    @admin.display(description=_("client"))
    def client(self, consent):
        return consent.client  # the application, or the recorded name of a deleted one

    @admin.display(description=_("last used"))
    def last_used(self, consent):
        return consent.last_used

    @admin.display(description=_("live tokens"))
    def live_tokens(self, consent):
        if consent.live_tokens > LIVE_TOKENS_SHOWN:
            return f"{number_format(LIVE_TOKENS_SHOWN)}+"
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
            revoke=lambda reason: self._revoke_owners(field, owners, request.user, reason),
            selected=queryset.values_list("pk", flat=True),
            action=action,
        )

    @staticmethod
    def _revoke_owners(field, owners, actor, reason):
        if field == "application":
            # A client may have 100,000 devices: in batches, each its own short
            # transaction (admin actions run outside one), never one long lock.
            return services.revoke_clients_offline_access(
                owners, actor=actor, reason=reason, via=ConsentEvent.Via.ADMIN
            )
        return services.revoke_everything(
            consents=Consent.objects.filter(**{f"{field}__in": owners}),
            families=OfflineTokenFamily.objects.filter(**{f"{field}__in": owners}),
            actor=actor,
            reason=reason,
            via=ConsentEvent.Via.ADMIN,
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
        # Each list a page at a time (a user may hold thousands of devices): a bounded count
        # and one query for the page's rows, whatever the user holds.
        consents = _page(
            request,
            "consents_page",
            Consent.objects.filter(user=user)
            .with_usage()
            .select_related("application")
            .order_by("-granted_at", "-pk"),
        )
        families = _page(
            request,
            "devices_page",
            OfflineTokenFamily.objects.filter(user=user)
            .with_activity()
            .select_related("application")
            .order_by("-created_at", "-pk"),
        )
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


#: Rows per page of each list on the per-user page.
USER_PAGE_ROWS = 100


def _page(request, parameter, queryset):
    """The page of ``queryset`` that ``request.GET[parameter]`` asks for (a bad number: the first)."""
    paginator = LimitedCountPaginator(queryset, USER_PAGE_ROWS)
    page = paginator.get_page(request.GET.get(parameter))
    links = []  # (page number or ellipsis, its URL or "" for the ellipsis and this page)
    for number in paginator.get_elided_page_range(page.number, on_each_side=2, on_ends=1):
        url = ""
        if number != paginator.ELLIPSIS and number != page.number:
            query = request.GET.copy()  # the other list keeps its page
            query[parameter] = number
            url = "?" + query.urlencode()
        links.append((number, url))
    page.links = links
    return page


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
        # All are enduring: no kind filter.
        return (ConsentStateFilter, ("application", ClientFilter), ("granted_at", admin.DateFieldListFilter))

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
