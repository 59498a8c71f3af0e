"""A plain django-oauth-toolkit site's URLs: DOT's own views at ``o/``, for the benchmarks' baseline.

The same admin and login pages as the example site, so that the only difference
a workload measures is the app's views and validator in place of DOT's.
"""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("o/", include("oauth2_provider.urls")),
]
