"""A URLconf serving no OAuth endpoints at all (system check E004 stays quiet)."""

urlpatterns: list = []
