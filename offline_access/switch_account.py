"""Sign out from the consent screen and sign in as someone else (issue 13).

The consent screen says who is signed in; "Not you? Switch account" is a small
POST form (CSRF-protected: a cross-site page cannot sign a user out) to
:func:`switch_account`, which signs the user out and sends them to
``settings.LOGIN_URL`` with ``next`` = the same authorization request, so the
new account sees the consent screen for the same client and scopes.

The address to come back to is never taken from the POST as it stands: the
screen puts it in the form signed (:func:`signed_return_path`), and the view
accepts it only with a valid signature, as a path on this site, and only to the
authorization endpoint. Anything else is a 400 and nobody is signed out.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.contrib import auth
from django.contrib.auth.views import redirect_to_login
from django.core import signing
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.http import require_POST
from oauth2_provider.compat import login_not_required

from .conf import settings

_SALT = "offline_access.switch_account"

#: The URL name of the view, under the namespace the app's URLs are included with.
URL_NAME = "oauth2_provider:switch-account"


def switch_account_url() -> str | None:
    """Where the consent screen's "Not you?" form posts, or None when the site left the view out."""
    try:
        return reverse(URL_NAME)
    except NoReverseMatch:
        return None


def signed_return_path(request) -> str:
    """The authorization request being shown, signed for the "Not you?" form.

    Compressed, as the consent form's own signed request is: a request repeating a
    scope name for 100 KB stays a small page.
    """
    return signing.dumps(request.get_full_path(), salt=_SALT, compress=True)


def verified_return_path(request, value: str) -> str | None:
    """The path to come back to after signing in again, or None when ``value`` is not one.

    It must be signed by this site, no older than a consent form may be, a path on
    this site (no scheme, no host), and the authorization endpoint's path.
    """
    try:
        path = signing.loads(value, salt=_SALT, max_age=settings.CONSENT_FORM_MAX_AGE)
    except signing.BadSignature:  # SignatureExpired included
        return None
    if not isinstance(path, str):
        return None
    if not url_has_allowed_host_and_scheme(path, allowed_hosts={request.get_host()}):
        return None
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or parts.path != reverse("oauth2_provider:authorize"):
        return None
    return path


@require_POST
@never_cache
@xframe_options_deny
@login_not_required  # a visitor whose session ended meanwhile is sent to log in, not refused
def switch_account(request):
    """Sign out and go to the login page, coming back to the authorization request."""
    path = verified_return_path(request, request.POST.get("next", ""))
    if path is None:
        return TemplateResponse(
            request,
            settings.CONSENT_TEMPLATE,
            {
                "error": {
                    "error": "invalid_request",
                    "description": _(
                        "This request to switch accounts is no longer valid, and you were not signed out. "
                        "Go back to the application and start again."
                    ),
                }
            },
            status=400,
        )
    auth.logout(request)
    return redirect_to_login(path)
