"""The user's connected-apps page: the applications holding offline access, and revoking them.

Every client holding offline access to the signed-in user's account, and a way
to take it back, for the whole application or for one device. The views only
look up the user's own rows (anything else is a 404) and call services.py, the
same functions the admin, the API and the commands use (SPEC C5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.http import require_http_methods, require_safe
from oauth2_provider.scopes import get_scopes_backend

from . import services
from .client_metadata import ClientPages, client_pages
from .models import Consent, ConsentEvent, OfflineTokenFamily

#: Stored with the revocation event (SPEC C4); the audit trail is not translated.
USER_REVOCATION_REASON = "Revoked by the user on the connected-apps page."


def _user_id(request: HttpRequest) -> int:
    user_id = request.user.pk
    assert user_id is not None, "login_required lets only signed-in users through"
    return user_id


def _user_page(view):
    """Login required; never cached or framed, like the consent screen."""
    return never_cache(xframe_options_deny(login_required(view)))


@dataclass
class ConnectedApp:
    """One application on the connected-apps page.

    A client normally holds one active consent; when an administrator's enduring
    consent and the user's own are both active, the page shows the application
    once, and revoking it revokes both.
    """

    application: Any
    #: The consent whose id the revoke URL carries (the most recently given one).
    consent_id: int
    granted_at: datetime
    last_used: datetime | None
    scope_names: list[str] = field(default_factory=list)
    scopes: list[tuple[str, str]] = field(default_factory=list)
    devices: list[OfflineTokenFamily] = field(default_factory=list)
    #: Its logo and pages, as safe to show (:mod:`offline_access.client_metadata`).
    pages: ClientPages = field(default_factory=ClientPages)


def _connected_apps(consents, devices) -> list[ConnectedApp]:
    """Group the user's active consents by application and attach the live devices."""
    descriptions = get_scopes_backend().get_all_scopes()
    apps: dict[int, ConnectedApp] = {}
    app_of_consent: dict[int, ConnectedApp] = {}
    for consent in consents:  # newest first within an application
        app = apps.get(consent.application_id)
        if app is None:
            app = apps[consent.application_id] = ConnectedApp(
                application=consent.application,
                consent_id=consent.pk,
                granted_at=consent.granted_at,
                last_used=consent.last_used,
                pages=client_pages(consent.application),
            )
        elif consent.last_used and (app.last_used is None or consent.last_used > app.last_used):
            app.last_used = consent.last_used
        app.scope_names.extend(consent.scopes)
        app_of_consent[consent.pk] = app
    for app in apps.values():
        app.scopes = [(name, descriptions.get(name, name)) for name in dict.fromkeys(app.scope_names)]
    for family in devices:
        # Two statements: a consent may have ended in between; its devices then go unlisted.
        app = app_of_consent.get(family.consent_id)
        if app is not None:
            app.devices.append(family)
    return list(apps.values())


@_user_page
@require_safe
def connected_apps(request: HttpRequest) -> HttpResponse:
    """List the applications that may act for the user while they are away."""
    active = Consent.objects.active().filter(user_id=_user_id(request))
    consents = (
        active.with_usage()
        # The client's policy in the same query: its logo and pages (issue 13).
        .select_related("application", "application__offline_access_policy")
        .order_by("application__name", "application_id", "-granted_at", "-pk")
    )
    devices = (
        OfflineTokenFamily.objects.live()
        .filter(user_id=_user_id(request), consent__in=active.values("pk"))
        .with_activity()
        .order_by("created_at", "pk")
    )
    return render(
        request,
        "offline_access/connected_apps.html",
        {"connected_apps": _connected_apps(list(consents), devices)},
    )


def _back_to_list(request: HttpRequest, message: str, level: int = messages.SUCCESS) -> HttpResponse:
    messages.add_message(request, level, message)
    return redirect("oauth2_provider:connected-apps")


@_user_page
@require_http_methods(["GET", "HEAD", "POST"])
def revoke_connected_app(request: HttpRequest, consent_id: int) -> HttpResponse:
    """Confirm (GET), then revoke (POST) every active consent of one application.

    ``consent_id`` names the application through one of the user's consents; the
    revocation covers all of the user's active consents for that application and
    every token issued under them, so the application loses offline access at once.
    """
    consent = get_object_or_404(
        Consent.objects.filter(user_id=_user_id(request)).select_related("application"), pk=consent_id
    )
    application = consent.client  # a deleted client's consents are ended: nothing left to revoke
    consents = (
        Consent.objects.active().filter(user_id=_user_id(request), application_id=consent.application_id)
        if consent.application_id is not None
        else Consent.objects.none()
    )
    gone = _("%(name)s no longer has access to your account.") % {"name": application.name}
    if request.method == "POST":
        services.revoke_consents(
            consents, actor=request.user, reason=USER_REVOCATION_REASON, via=ConsentEvent.Via.USER
        )
        return _back_to_list(request, gone)
    if not consents.exists():
        return _back_to_list(request, gone, messages.INFO)
    device_count = OfflineTokenFamily.objects.live().filter(consent__in=consents.values("pk")).count()
    return render(
        request,
        "offline_access/connected_apps_confirm.html",
        {"application": application, "family": None, "device_count": device_count},
    )


@_user_page
@require_http_methods(["GET", "HEAD", "POST"])
def revoke_connected_device(request: HttpRequest, family_id: int) -> HttpResponse:
    """Confirm (GET), then revoke (POST) the tokens of one device; the consent stays."""
    families = OfflineTokenFamily.objects.filter(user_id=_user_id(request))
    family = get_object_or_404(families.with_activity().select_related("application"), pk=family_id)
    application = family.application
    device = families.live().filter(pk=family.pk)
    gone = _("%(name)s no longer has access on that device.") % {"name": application.name}
    if request.method == "POST":
        services.revoke_token_families(
            families.filter(pk=family.pk),  # by key: revoking changes what live() selects
            actor=request.user,
            reason=USER_REVOCATION_REASON,
            via=ConsentEvent.Via.USER,
        )
        return _back_to_list(request, gone)
    if not device.exists():
        return _back_to_list(request, gone, messages.INFO)
    other_devices = (
        families.live()
        .filter(
            application=application, consent__in=Consent.objects.active().filter(user_id=_user_id(request))
        )
        .exclude(pk=family.pk)
        .count()
    )
    return render(
        request,
        "offline_access/connected_apps_confirm.html",
        {"application": application, "family": family, "other_device_count": other_devices},
    )
