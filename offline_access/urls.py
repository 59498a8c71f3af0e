"""DOT's URLs, with the app's authorization, token, device and discovery views in their place.

Include under the ``oauth2_provider`` namespace, as DOT's own URLs are, so that
``reverse("oauth2_provider:authorize")`` and OpenID discovery point at these views::

    path("o/", include("offline_access.urls"))

DOT's application-management and dynamic-registration views are left out: a
site that wants them includes them itself, deliberately.

RFC 8414 puts the server metadata at the site's root
(``/.well-known/oauth-authorization-server/o``), which an include under ``o/``
cannot serve: add ``path("", include("offline_access.well_known_urls"))`` too.

The app adds the user's connected-apps page (``connected-apps/``): the clients
holding offline access to the signed-in user's account, each revocable as a
whole or one device at a time.
"""

from __future__ import annotations

from django.urls import URLPattern, path, re_path
from oauth2_provider import urls as dot_urls
from oauth2_provider import views as dot_views

from . import connected_apps, device, dpop, hardening, introspection, switch_account, views

app_name = "oauth2_provider"

#: The app's views, served under DOT's own names and routes.
_REPLACEMENTS = {
    "authorize": path("authorize/", views.OfflineAccessAuthorizationView.as_view(), name="authorize"),
    "token": path("token/", device.OfflineAccessTokenView.as_view(), name="token"),
    "device-authorization": path(
        "device-authorization/",
        device.OfflineAccessDeviceAuthorizationView.as_view(),
        name="device-authorization",
    ),
    "device-confirm": path(
        "device-confirm/<slug:client_id>/<slug:user_code>",
        device.OfflineAccessDeviceConfirmView.as_view(),
        name="device-confirm",
    ),
    "device": path("device/", device.OfflineAccessDeviceUserCodeView.as_view(), name="device"),
    "device-grant-status": path(
        "device-grant-status/<slug:client_id>/<slug:user_code>",
        device.OfflineAccessDeviceStatusView.as_view(),
        name="device-grant-status",
    ),
    "introspect": path(
        "introspect/", introspection.OfflineAccessIntrospectTokenView.as_view(), name="introspect"
    ),
    # RFC 9449 7: DPoP-bound access tokens (Authorization: DPoP + a proof with ath).
    "user-info": path("userinfo/", dpop.accepts_dpop(dot_views.UserInfoView.as_view()), name="user-info"),
    # RFC 8414 metadata, the same document as OpenID discovery (offline_access.metadata).
    # Here in the appended form some clients use (/o/.well-known/oauth-authorization-server);
    # RFC 8414's own location is at the site's root: offline_access.well_known_urls.
    "oauth-server-metadata": path(
        ".well-known/oauth-authorization-server",
        views.OfflineAccessServerMetadataView.as_view(),
        name="oauth-server-metadata",
    ),
    "oauth-server-metadata-issuer": path(
        ".well-known/oauth-authorization-server/<path:issuer_path>",
        views.OfflineAccessServerMetadataView.as_view(),
        name="oauth-server-metadata-issuer",
    ),
    "oidc-connect-discovery-info": re_path(
        r"^\.well-known/openid-configuration/?$",
        views.OfflineAccessDiscoveryView.as_view(),
        name="oidc-connect-discovery-info",
    ),
}

#: POST fields that carry secrets at these endpoints. Django's error reports
#: (500 e-mails, DEBUG-off HTML reports) show them as stars, and a request that
#: puts one in the URL (where access logs keep it) is refused.
_SECRET_FIELDS = {
    "token": ("refresh_token", "code", "code_verifier", "client_secret", "password", "device_code"),
    "revoke-token": ("token", "client_secret"),
    "introspect": ("token", "client_secret"),
}

#: The consent form's fields, hidden from error reports only: the CSRF token unmasks
#: to the user's CSRF secret, and the signed request is what Allow replays.
_CONSENT_FORM_FIELDS = ("request", "csrfmiddlewaretoken")

#: Endpoints that authenticate the client (RFC 6749 2.3): Basic credentials are checked.
_CLIENT_AUTHENTICATED = {"token", "revoke-token", "introspect", "device-authorization"}

#: Resource endpoints taking a bearer token: only from the Authorization header.
_BEARER_RESOURCES = {"user-info", "introspect"}

#: Endpoints whose every answer carries a token, a code or token metadata: no-store.
_NO_STORE = {"token", "revoke-token", "introspect", "user-info"}


def _harden(pattern: URLPattern) -> URLPattern:
    """Wrap each endpoint with :func:`offline_access.hardening.harden`.

    The authorization endpoint answers NUL bytes itself, with an error page.
    """
    name = pattern.name or ""
    if name == "authorize":
        callback = hardening.harden(pattern.callback, hidden_fields=_CONSENT_FORM_FIELDS, refuse_nul=False)
    else:
        fields = _SECRET_FIELDS.get(name, ())
        callback = hardening.harden(
            pattern.callback,
            hidden_fields=fields,
            forbidden_in_url=fields,
            client_authentication=name in _CLIENT_AUTHENTICATED,
            bearer_resource=name in _BEARER_RESOURCES,
            cache=name not in _NO_STORE,
        )
    return URLPattern(pattern.pattern, callback, name=pattern.name)


urlpatterns = [
    _harden(_REPLACEMENTS.get(pattern.name, pattern))
    for pattern in dot_urls.metadata_urlpatterns + dot_urls.base_urlpatterns + dot_urls.oidc_urlpatterns
]

urlpatterns += [
    path("connected-apps/", connected_apps.connected_apps, name="connected-apps"),
    path(
        "connected-apps/<int:consent_id>/revoke/",
        connected_apps.revoke_connected_app,
        name="connected-apps-revoke",
    ),
    path(
        "connected-apps/device/<int:family_id>/revoke/",
        connected_apps.revoke_connected_device,
        name="connected-apps-revoke-device",
    ),
    path("switch-account/", switch_account.switch_account, name="switch-account"),
]
