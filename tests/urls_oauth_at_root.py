"""A URLconf mounting the app at the root: issuer http://host, metadata at the root (W003 quiet)."""

from django.urls import include, path

urlpatterns = [
    path("", include("offline_access.urls")),
]
