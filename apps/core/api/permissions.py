"""API-level gate: a signed-in user, and write methods only with a token that has the write scope.

Object-level decisions are the services' (apps.core.permissions.require); this only refuses early.
"""
from rest_framework import permissions


class IsAuthenticatedWithTokenScope(permissions.BasePermission):
    message = "This API token has the read scope only; this action needs the write scope."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        token = request.auth
        if token is not None and hasattr(token, "scopes") and request.method not in permissions.SAFE_METHODS:
            return "write" in token.scopes
        return True
