"""The REST API's URLs. Mount them where you like, e.g. ``api/offline-access/``.

The example site also serves their OpenAPI schema (``/api/schema/``); DRF builds
it from these views, so a site can do the same with ``get_schema_view``.
"""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "offline_access_api"

urlpatterns = [
    path("me/consents/", views.MyConsentList.as_view(), name="my-consents"),
    path("me/consents/<int:pk>/revoke/", views.RevokeMyConsent.as_view(), name="my-consent-revoke"),
    path("me/devices/", views.MyDeviceList.as_view(), name="my-devices"),
    path("me/devices/<int:pk>/revoke/", views.RevokeMyDevice.as_view(), name="my-device-revoke"),
    path("consents/", views.ConsentList.as_view(), name="consents"),
    path("consents/enduring/", views.GrantEnduringConsent.as_view(), name="enduring-consent"),
    path("consents/<int:pk>/revoke/", views.RevokeConsent.as_view(), name="consent-revoke"),
    path("revoke/", views.RevokeEverything.as_view(), name="revoke-everything"),
]
