"""Words for the consent screen's scope list, in every language the app ships.

The consent screen, the device approval page and the connected-apps page show
each scope's description from DOT's ``OAUTH2_PROVIDER["SCOPES"]``, passed through
gettext when the page is rendered. A site that uses these descriptions (the
example project does) gets them translated with the rest of the page; a site
with its own words adds them to its own catalogue (``LOCALE_PATHS``), or writes
them with ``gettext_lazy``.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

#: The OpenID Connect scopes (OIDC Core 5.4, 11) and the app's API scope, described
#: for the person approving them. English here; gettext translates them on the page.
DESCRIPTIONS = {
    "openid": gettext_noop("Sign you in with your account"),
    "profile": gettext_noop("See your name and username"),
    "email": gettext_noop("See your email address"),
    "address": gettext_noop("See your postal address"),
    "phone": gettext_noop("See your phone number"),
    "offline_access": gettext_noop("Keep access while you are away (offline access)"),
    # OFFLINE_ACCESS["API_SCOPE"]'s default name (the connected-apps API).
    "connected_apps": gettext_noop("See and revoke the apps connected to your account"),
}
