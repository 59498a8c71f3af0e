from __future__ import annotations

from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission

from ..conf import settings


def _token_scopes(request) -> set[str] | None:
    """The scopes of the bearer token the request came with, or None for a session."""
    token = request.auth
    if token is None or not hasattr(token, "scope"):
        return None
    return set(token.scope.split())


class ActsForSignedInUser(BasePermission):
    """An active signed-in user (session), or their bearer token carrying ``OFFLINE_ACCESS["API_SCOPE"]``.

    An application must not manage the user's other applications merely because
    it holds a token for the user: only a token granted that dedicated scope may.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            # DOT's token authentication does not look at is_active; a client
            # credentials token has no user at all.
            self.message = "This API acts for a signed-in, active user."
            return False
        scopes = _token_scopes(request)
        if scopes is not None and settings.API_SCOPE not in scopes:
            self.message = f"A bearer token needs the {settings.API_SCOPE!r} scope."
            return False
        return True


class StaffSession(BasePermission):
    """The request is authenticated by a signed-in session, never by a bearer token.

    A bearer token reaches this API through a scope that a user hands to a client on
    the consent screen; if it could also carry its user's staff powers, any client an
    administrator ever approved could grant enduring consents or revoke everyone's
    access (issue 8). So the staff endpoints take no bearer token of any scope, and a
    site that wants automation uses the management commands. An anonymous request is
    left to DRF, which answers it "not authenticated".
    """

    message = (
        "The staff endpoints need a signed-in staff session (the browser, or Django admin); "
        "bearer tokens are not accepted here, whatever their scope. "
        "To automate, use the management commands."
    )

    def has_permission(self, request, view) -> bool:
        if request.successful_authenticator is None:
            return False
        # An allow-list: whatever else authenticated the request (a bearer token, or an
        # authenticator a site adds later) is refused.
        return isinstance(request.successful_authenticator, SessionAuthentication)


class HasModelPermission(BasePermission):
    """A staff member holding the permission the view names for the method (after StaffSession).

    A view sets ``required_permissions = {"GET": "offline_access.view_consent", ...}``;
    HEAD needs what GET needs and OPTIONS any of them. The same permissions gate the
    admin screens and actions.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        method = "GET" if request.method == "HEAD" else request.method
        if method == "OPTIONS":
            return any(user.has_perm(needed) for needed in view.required_permissions.values())
        if method not in view.required_permissions:
            return True  # no handler for it: the view answers 405
        return user.has_perm(view.required_permissions[method])
