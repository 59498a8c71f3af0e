"""Changelists that stay fast at a million rows: a bounded count, and totals that say so.

Django's paginator runs ``COUNT(*)`` over every row the changelist matches on each
page view, and the admin then counts the unfiltered table a second time for its
"N results (M total)". On PostgreSQL both are scans of the whole table (an MVCC
database keeps no row count), so at 1,000,000 consents the counts alone cost more
than the page they describe.

:class:`LimitedCountPaginator` counts instead at most ``limit + 1`` matching rows
(``SELECT COUNT(*) FROM (SELECT id ... LIMIT 10001)``): the cost is bounded by the
limit, not by the table. Up to the limit the count is exact, as before. Past it the
page says "more than 10,000", and on PostgreSQL an unfiltered list reads the
planner's estimate of the table's rows (``pg_class.reltuples``, kept by ANALYZE and
autovacuum) in the same query and says "about 1,000,000". Pages then reach the first
``limit`` rows only, which also bounds the ``OFFSET`` a deep page link could ask
the database to skip; search and filters narrow a list to its exact count.

The same single query answers on every page view, with or without filters, so a
changelist costs a constant number of queries whatever the number of rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.utils.formats import number_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from .links import url_for_pk

#: Rows a changelist counts exactly before it says "more than"; pages reach this far.
COUNT_LIMIT = 10_000


class LimitedCountPaginator(Paginator):
    """A paginator that counts at most ``limit`` rows (see the module docstring)."""

    def __init__(self, object_list, per_page, orphans=0, allow_empty_first_page=True, *, limit=COUNT_LIMIT):
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.limit = limit

    @cached_property
    def _counted(self) -> tuple[int, int | None]:
        """(matching rows up to ``limit + 1``, the table's estimated rows on PostgreSQL or None)."""
        queryset: Any = self.object_list
        if not hasattr(queryset, "query"):  # a list, in tests or from a subclass
            return len(queryset), None
        capped = queryset.order_by().values("pk")[: self.limit + 1]
        connection = connections[queryset.db]
        if connection.vendor != "postgresql" or queryset.query.where:
            return capped.count(), None
        # Unfiltered: the planner's estimate, read in the same query as the bounded count.
        sql, params = capped.query.get_compiler(using=queryset.db).as_sql()
        table = connection.ops.quote_name(queryset.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT COUNT(*) FROM ({sql}) AS counted), "
                "(SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s))",
                (*params, table),
            )
            counted, estimate = cursor.fetchone()
        # -1 (PostgreSQL 14+) or 0: never analyzed; no estimate then.
        return counted, estimate if estimate and estimate > 0 else None

    @cached_property
    def count(self) -> int:
        """Matching rows, at most ``limit``: what the pages reach."""
        return min(self._counted[0], self.limit)

    @property
    def is_exact(self) -> bool:
        return self._counted[0] <= self.limit

    @property
    def estimate(self) -> int | None:
        """The planner's estimate of all rows, when the count passed the limit on an unfiltered list."""
        estimate = self._counted[1]
        if self.is_exact or estimate is None or estimate <= self.limit:
            return None
        return estimate


def _about(number: int) -> int:
    """``number`` rounded to two significant digits: an estimate claims no more."""
    digits = len(str(number))
    if digits <= 2:
        return number
    unit = 10 ** (digits - 2)
    return round(number / unit) * unit


class LimitedCountChangeList(ChangeList):
    """A changelist whose paginator is a :class:`LimitedCountPaginator`, with honest totals."""

    def get_queryset(self, request, *args, **kwargs):
        # The columns computed per row (LimitedCountAdminMixin.annotate_changelist_rows) only
        # here: the client filter, the actions and the change pages read get_queryset() too.
        queryset = super().get_queryset(request, *args, **kwargs)
        return self.model_admin.annotate_changelist_rows(request, queryset)

    def url_for_result(self, result) -> str:
        """Django's link to the row's change page, reversed once per page rather than per row."""
        return url_for_pk(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            quote(getattr(result, self.pk_attname)),  # as Django's: an integer stays one
            current_app=self.model_admin.admin_site.name,
        )

    def _name(self, count: int) -> str:
        return str(self.opts.verbose_name if count == 1 else self.opts.verbose_name_plural)

    @property
    def result_count_display(self) -> str:
        """ "3 consents", "about 1,000,000 consents" or "more than 10,000 consents"."""
        paginator = self.paginator
        if paginator.is_exact:
            return f"{number_format(self.result_count, force_grouping=True)} {self._name(self.result_count)}"
        if paginator.estimate is not None:
            return _("about %(count)s %(name)s") % {
                "count": number_format(_about(paginator.estimate), force_grouping=True),
                "name": self._name(2),
            }
        return _("more than %(count)s %(name)s") % {
            "count": number_format(paginator.limit, force_grouping=True),
            "name": self._name(2),
        }

    @property
    def result_count_note(self) -> str:
        """Why the last page is not the last row, when it is not."""
        if self.paginator.is_exact:
            return ""
        return _("The pages list the first %(limit)s: search or filter to narrow the list.") % {
            "limit": number_format(self.paginator.limit, force_grouping=True)
        }


class LimitedCountAdminMixin:
    """For a ModelAdmin whose table may hold millions of rows: bounded, constant-cost counting.

    No second, unfiltered count (``show_full_result_count``), no per-choice filter counts
    (facets: a COUNT per filter choice over the whole table), and a paginator that counts
    at most :attr:`list_count_limit` rows.
    """

    list_count_limit = COUNT_LIMIT
    #: Rendering a row costs far more than reading it once the count is bounded: at 100 rows
    #: (Django's default) the consents list took 317 ms median at 1,000,000 rows on PostgreSQL,
    #: nearly all of it Django rendering the page (python -m benchmarks --only admin).
    list_per_page = 50
    show_full_result_count = False
    if hasattr(admin, "ShowFacets"):  # Django 5.0+; Django 4.2 has no facets
        show_facets = admin.ShowFacets.NEVER
    paginator: type[Paginator] = LimitedCountPaginator

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj):
        """Django's row checkbox as one string: its form widget renders a template per row."""
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            obj.pk,
            format_html(_("Select this object for an action - {}"), obj),
        )

    def annotate_changelist_rows(self, request, queryset):
        """``queryset`` with what the changelist's columns compute per row (its page's rows only)."""
        return queryset

    def get_empty_value_display(self):
        """Django's, without raising and catching an AttributeError for each of a page's cells."""
        own = getattr(self, "empty_value_display", None)
        return mark_safe(own if own is not None else self.admin_site.empty_value_display)  # type: ignore[attr-defined]

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        return LimitedCountPaginator(
            queryset, per_page, orphans, allow_empty_first_page, limit=self.list_count_limit
        )

    def get_changelist(self, request, **kwargs):
        return LimitedCountChangeList

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)  # type: ignore[misc]
        context = getattr(response, "context_data", None) or {}
        changelist = context.get("cl")
        if isinstance(changelist, LimitedCountChangeList) and not changelist.paginator.is_exact:
            # Django's "All 10000 selected" would name the limit as if it were the total.
            context["selection_note_all"] = _("All %(count)s selected") % {
                "count": changelist.result_count_display
            }
        return response
