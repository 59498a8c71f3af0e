from __future__ import annotations

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


class HasModelPermission(BasePermission):
    """A staff member holding the permission the view names for the method.

    A view sets ``required_permissions = {"GET": "offline_access.view_consent", ...}``;
    HEAD needs what GET needs and OPTIONS any of them. The same permissions gate the
    admin screens and actions.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        scopes = _token_scopes(request)
        if scopes is not None and settings.API_SCOPE not in scopes:
            self.message = f"A bearer token needs the {settings.API_SCOPE!r} scope."
            return False
        method = "GET" if request.method == "HEAD" else request.method
        if method == "OPTIONS":
            return any(user.has_perm(needed) for needed in view.required_permissions.values())
        if method not in view.required_permissions:
            return True  # no handler for it: the view answers 405
        return user.has_perm(view.required_permissions[method])
