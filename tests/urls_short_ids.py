"""A URL conf whose one pattern takes ids of at most three digits (tests/test_admin_scale.py)."""

from django.http import HttpResponse
from django.urls import re_path

urlpatterns = [re_path(r"^short/(?P<pk>[0-9]{1,3})/$", lambda request, pk: HttpResponse(pk), name="short")]
