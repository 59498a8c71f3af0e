"""Changelist filters: consent state, token-family state, DPoP key binding, client.

Each costs at most one small query to build its choices, whatever the number of rows
filtered (the client filter's; the others have fixed choices).
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Case, Exists, IntegerField, OuterRef, Value, When
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
            return queryset.ended()
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


class ClientFilter(admin.RelatedFieldListFilter):
    """The clients that have rows on this screen, by name, at most :attr:`limit` of them.

    Django's RelatedOnlyFieldListFilter finds them with ``SELECT DISTINCT application_id``
    over every row of the changelist: a scan of the whole table on each page view. Here
    each client is tested with an EXISTS on the foreign key's index instead, so the cost
    follows the number of clients, not of rows. Past :attr:`limit` clients the list stops
    (search finds the others; a client's filter link keeps working), and the selected
    client is always listed.
    """

    limit = 100

    def field_choices(self, field, request, model_admin):
        rows = model_admin.get_queryset(request).filter(**{field.name: OuterRef("pk")}).values("pk")
        selected = [int(value) for value in self.lookup_val or () if str(value).isdigit()]
        clients = (
            field.related_model._default_manager.filter(Exists(rows))
            .annotate(
                selected=Case(
                    When(pk__in=selected, then=Value(0)), default=Value(1), output_field=IntegerField()
                )
            )
            .order_by("selected", "name", "pk")[: self.limit]
        )
        return [(client.pk, str(client)) for client in clients]
