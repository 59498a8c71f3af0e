"""Django admin for offline access: consents, enduring consents, token families, client policy.

Nothing here changes data directly: every action calls :mod:`offline_access.services`,
so admin revocations write the same events and revoke tokens the same way as the
commands and the API. Each action is gated by a model permission, asks for
confirmation on a page that says what it will revoke, and records the acting
administrator.

The screens live one per module, each registering its models when imported:
``consents`` (consents, enduring consents, the per-user page), ``families`` (token
families) and ``policies`` (client policy, and its inline on DOT's application
admin), with the shared ``filters``, ``pagination`` (bounded counting for tables of
millions of rows), ``search`` (search by user and client, table by table) and
``revocation`` (the confirmation page and the permission-gated actions). Django's
admin autodiscovery imports this package, which imports them all.
"""

from __future__ import annotations

from .consents import (
    GRANT_ENDURING_CONSENT,
    REVOKE_CONSENT,
    ConsentAdmin,
    ConsentAdminBase,
    ConsentEventInline,
    EnduringConsentAdmin,
    EnduringConsentForm,
)
from .families import REVOKE_TOKEN_FAMILY, OfflineTokenFamilyAdmin
from .filters import ClientFilter, ConsentStateFilter, FamilyStateFilter, KeyBoundFilter
from .pagination import LimitedCountAdminMixin, LimitedCountChangeList, LimitedCountPaginator
from .policies import ActingAdministratorFormSet, ClientPolicyAdmin, ClientPolicyForm, ClientPolicyInline
from .revocation import GatedActionsMixin, RevokeForm, confirm_and_revoke

# The names offline_access.admin held before it became a package, so imports keep working.
__all__ = [
    "GRANT_ENDURING_CONSENT",
    "REVOKE_CONSENT",
    "REVOKE_TOKEN_FAMILY",
    "ActingAdministratorFormSet",
    "ClientPolicyAdmin",
    "ClientPolicyForm",
    "ClientFilter",
    "ClientPolicyInline",
    "ConsentAdmin",
    "ConsentAdminBase",
    "ConsentEventInline",
    "ConsentStateFilter",
    "EnduringConsentAdmin",
    "EnduringConsentForm",
    "FamilyStateFilter",
    "GatedActionsMixin",
    "KeyBoundFilter",
    "LimitedCountAdminMixin",
    "LimitedCountChangeList",
    "LimitedCountPaginator",
    "OfflineTokenFamilyAdmin",
    "RevokeForm",
    "confirm_and_revoke",
]
