from django.contrib import admin
from django.urls import include, path
from oauth2_provider.compat import login_not_required
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONOpenAPIRenderer
from rest_framework.schemas import get_schema_view

import offline_access
from example_project.demo.views import home


def api_schema_view():
    """The REST API's OpenAPI schema, public (also under LoginRequiredMiddleware, which
    DRF < 3.16 does not exempt its views from)."""
    return login_not_required(
        get_schema_view(
            title="django-offline-access API",
            description="Consents and offline tokens, for the signed-in user and for staff.",
            version=offline_access.__version__,
            renderer_classes=[JSONOpenAPIRenderer],
            permission_classes=[AllowAny],
            public=True,
        )
    )


urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # DOT's endpoints plus the app's consent screen; namespaced "oauth2_provider".
    path("o/", include("offline_access.urls")),
    # RFC 8414 metadata at /.well-known/oauth-authorization-server/o (issuer http://host/o).
    path("", include("offline_access.well_known_urls")),
    # The REST API (the "drf" extra) and its OpenAPI schema.
    path("api/offline-access/", include("offline_access.api.urls")),
    path("api/schema/", api_schema_view(), name="api-schema"),
    path("", home, name="home"),
]
