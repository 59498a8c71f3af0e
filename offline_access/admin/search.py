"""Changelist search by user and client that each table's indexes can answer.

Django's search turns ``search_fields`` across relations into one ``WHERE`` of ORs
over the joined tables (``username ILIKE %x% OR client_id ILIKE %x% OR ...``): no
index can answer an OR that spans tables, so PostgreSQL walks every consent (or
device) and its joins, a million of them, to find a handful. Here each term finds the
matching users and clients in their own (small) tables first, then the rows of
those users or clients through the foreign-key indexes, as a UNION of ids. The
semantics are Django's: every whitespace-separated term (quotes keep a phrase
together) must match some field, case-insensitively, anywhere in its value.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Q
from django.utils.text import smart_split, unescape_string_literal
from oauth2_provider.models import get_application_model


def _terms(search_term: str) -> list[str]:
    terms = []
    for bit in smart_split(search_term):
        if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        if bit:
            terms.append(bit)
    return terms


def _user_lookups(term: str) -> Q:
    User = get_user_model()
    matches = Q(**{f"{User.USERNAME_FIELD}__icontains": term})
    email = User.get_email_field_name()
    try:
        User._meta.get_field(email)
    except FieldDoesNotExist:
        return matches
    return matches | Q(**{f"{email}__icontains": term})


def search_by_owner(queryset, search_term: str, *, recorded=None, exact=()):
    """``queryset`` narrowed to rows whose user or client matches every term of ``search_term``.

    ``recorded(term)``: a Q on the rows' own columns that also matches (the consents'
    recorded client id and name, for consents of deleted clients). ``exact``: own columns
    matched by the whole term, exactly (an indexed identifier such as a DPoP thumbprint).
    """
    search_term = search_term.strip()
    if not search_term:
        return queryset
    User, Application = get_user_model(), get_application_model()
    rows = queryset.model._default_manager.order_by()  # a UNION's parts take no ORDER BY (SQLite)
    for term in _terms(search_term):
        users = User._default_manager.filter(_user_lookups(term)).values("pk")
        clients = Application._default_manager.filter(Q(client_id__icontains=term) | Q(name__icontains=term))
        parts = [
            rows.filter(user__in=users).values("pk"),
            rows.filter(application__in=clients.values("pk")).values("pk"),
        ]
        if recorded is not None:
            parts.append(rows.filter(recorded(term)).values("pk"))
        parts += [rows.filter(**{field: term}).values("pk") for field in exact if field]
        queryset = queryset.filter(pk__in=parts[0].union(*parts[1:]))
    return queryset
