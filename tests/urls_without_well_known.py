"""A URLconf mounting the app under o/ without RFC 8414's root location (system check W003)."""

from django.urls import include, path

urlpatterns = [
    path("o/", include("offline_access.urls")),
]
