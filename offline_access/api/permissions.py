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
    """The signed-in user (session), or a bearer token carrying ``OFFLINE_ACCESS["API_SCOPE"]``.

    An application must not manage the user's other applications merely because
    it holds a token for the user: only a token granted that dedicated scope may.
    """

    message = "A bearer token needs the scope that manages connected apps."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        scopes = _token_scopes(request)
        if scopes is None:
            return True
        return bool(request.auth.is_valid()) and settings.API_SCOPE in scopes


class HasModelPermission(BasePermission):
    """A staff member holding the permission the view names for the method.

    A view sets ``required_permissions = {"GET": "offline_access.view_consent", ...}``.
    The same permissions gate the admin screens and actions.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff):
            return False
        needed = view.required_permissions.get(request.method)
        if needed is None:
            return False
        if _token_scopes(request) is not None and settings.API_SCOPE not in _token_scopes(request):
            return False
        return user.has_perm(needed)
