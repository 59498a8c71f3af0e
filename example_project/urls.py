from django.contrib import admin
from django.urls import include, path

from example_project.demo.views import home

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # DOT's endpoints plus the app's consent screen; namespaced "oauth2_provider".
    path("o/", include("offline_access.urls")),
    path("", home, name="home"),
]
