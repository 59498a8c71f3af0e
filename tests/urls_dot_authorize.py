"""A URLconf that mounts DOT's own URLs, authorization view included (system check E004)."""

from django.urls import include, path

urlpatterns = [
    path("o/", include("oauth2_provider.urls")),
]
