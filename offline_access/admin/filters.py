"""Changelist filters: consent state, token-family state, DPoP key binding."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from ..models import Consent


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
