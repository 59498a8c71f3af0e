"""Offline token families: one row per device or installation, revocable without the consent."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import services
from ..models import ClientPolicy, Consent, ConsentEvent, OfflineTokenFamily
from ..validators import lifetimes
from .consents import _user_link
from .filters import ClientFilter, FamilyStateFilter, KeyBoundFilter
from .links import url_for_pk
from .pagination import LimitedCountAdminMixin
from .revocation import GatedActionsMixin, confirm_and_revoke
from .search import search_by_owner

REVOKE_TOKEN_FAMILY = "offline_access.revoke_token_family"


@admin.register(OfflineTokenFamily)
class OfflineTokenFamilyAdmin(LimitedCountAdminMixin, GatedActionsMixin, admin.ModelAdmin):
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
    list_filter = (
        FamilyStateFilter,
        KeyBoundFilter,
        ("application", ClientFilter),
        ("created_at", admin.DateFieldListFilter),  # fixed ranges, no query (see ConsentAdminBase)
    )
    # "=dpop_jkt": a thumbprint seen elsewhere (introspection's cnf.jkt, a log) finds its device.
    search_fields = (
        "user__username",
        "user__email",
        "application__client_id",
        "application__name",
        "=dpop_jkt",
    )
    # The consent column needs only the row's consent_id: no join of the consents.
    list_select_related = ("user", "application", "application__offline_access_policy")
    # The list shows live devices by default, and each counted row is tested for a live
    # refresh token in DOT's table: counting 10,001 of them took as long as the rest of
    # the page at a million devices (issue 12). Past 1,000 the page says "more than 1,000
    # devices": search or filter for the rest.
    list_count_limit = 1_000
    # Newest first by default (-pk); "first issued" sorts on its index. No sort by a per-row
    # subquery (last refreshed) or a joined name: each would read every family first.
    sortable_by = ("created_at",)
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

    def annotate_changelist_rows(self, request, queryset):
        return queryset.with_activity()

    def get_search_results(self, request, queryset, search_term):
        # search_fields above, answered table by table (offline_access.admin.search); a
        # thumbprint is case-sensitive (base64url), so it is matched exactly, on its index.
        return search_by_owner(queryset, search_term, exact=("dpop_jkt",)), False

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

    @admin.display(description=_("user"))
    def user_link(self, family):
        return _user_link(family.user)

    @admin.display(description=_("consent"))
    def consent_link(self, family):
        if family.consent_id is None:
            return "-"
        url = url_for_pk("admin:offline_access_consent_change", family.consent_id)
        return format_html('<a href="{}">#{}</a>', url, family.consent_id)

    @admin.display(description=_("last refreshed"))
    def last_refreshed(self, family):
        return family.last_refreshed

    @admin.display(description=_("idle expiry"))
    def idle_expires(self, family):
        idle, _absolute = _lifetimes(family)
        if idle is None or family.last_refreshed is None:
            return "-"
        return family.last_refreshed + idle

    @admin.display(description=_("absolute expiry"))
    def absolute_expires(self, family):
        _idle, absolute = _lifetimes(family)
        return "-" if absolute is None else family.created_at + absolute

    @admin.display(description=_("state"))
    def state(self, family):
        # Translated now: a lazy string would be translated again by each comparison the
        # changelist makes with it (Django tests every cell against its empty values).
        return gettext("Live") if family.ended_at is None and family.live_tokens else gettext("Ended")

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


def _lifetimes(family):
    """The family's client's (idle timeout, absolute lifetime), worked out once per row."""
    try:
        return family._offline_access_lifetimes
    except AttributeError:
        family._offline_access_lifetimes = lifetimes(_policy(family))
        return family._offline_access_lifetimes


def _policy(family):
    try:
        return family.application.offline_access_policy
    except ClientPolicy.DoesNotExist:
        return None
