"""DOT's URLs with the authorization and discovery views replaced.

Include under the ``oauth2_provider`` namespace, as DOT's own URLs are, so that
``reverse("oauth2_provider:authorize")`` and OpenID discovery point at these views::

    path("o/", include("offline_access.urls"))
"""

from __future__ import annotations

from django.urls import path, re_path
from oauth2_provider import urls as dot_urls

from . import views

app_name = "oauth2_provider"

_REPLACED = {"authorize", "oidc-connect-discovery-info"}

urlpatterns = [
    path("authorize/", views.OfflineAccessAuthorizationView.as_view(), name="authorize"),
    re_path(
        r"^\.well-known/openid-configuration/?$",
        views.OfflineAccessDiscoveryView.as_view(),
        name="oidc-connect-discovery-info",
    ),
] + [
    pattern
    # DOT's application-management and dynamic-registration views are left out:
    # a site that wants them includes them itself, deliberately.
    for pattern in dot_urls.metadata_urlpatterns + dot_urls.base_urlpatterns + dot_urls.oidc_urlpatterns
    if getattr(pattern, "name", None) not in _REPLACED
]
