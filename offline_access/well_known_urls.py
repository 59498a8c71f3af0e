"""The RFC 8414 metadata document at its well-known location, for the site's root URLconf.

RFC 8414 section 3 inserts the well-known path between the host and the
issuer's path: for issuer ``http://host/o`` (the app's URLs mounted at ``o/``)
the document is at ``http://host/.well-known/oauth-authorization-server/o``,
outside anything ``offline_access.urls`` can serve. Add one line to the root
URLconf, next to the app's URLs::

    path("o/", include("offline_access.urls")),
    path("", include("offline_access.well_known_urls")),

The routes accept any issuer path and the view answers only the one that is
this server's issuer (``OIDC_ISS_ENDPOINT`` when set), so the line is the same
whatever the mount point. Their namespace is ``offline_access_well_known``:
DOT's ``oauth2_provider`` names keep pointing at the app's URLs (RFC 9207
``iss`` and discovery reverse them). System check ``offline_access.W003`` reports
a site that lacks the line.
"""

from __future__ import annotations

from django.urls import path

from . import hardening, views

app_name = "offline_access_well_known"

urlpatterns = [
    # The issuer has a path (the usual case: http://host/o).
    path(
        ".well-known/oauth-authorization-server/<path:issuer_path>",
        hardening.harden(views.OfflineAccessServerMetadataView.as_view()),
        name="oauth-server-metadata",
    ),
    # The issuer is a bare host (OIDC_ISS_ENDPOINT = "https://id.example.com").
    path(
        ".well-known/oauth-authorization-server",
        hardening.harden(views.OfflineAccessServerMetadataView.as_view()),
        name="oauth-server-metadata-host",
    ),
]
