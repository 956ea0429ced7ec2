"""``Authorization: Bearer mp_<prefix>_<secret>`` for the API."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken

# last_used_at is written at most this often per token, so a busy script does not write on every call.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        # The scheme is case-insensitive (RFC 7235); a blank header is no credentials, not a crash.
        if not parts or parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header; use 'Bearer <token>'.")
        presented = parts[1]
        pieces = presented.split("_", 2)
        if len(pieces) != 3 or pieces[0] != "mp":
            raise exceptions.AuthenticationFailed("Invalid API token.")
        token = ApiToken.objects.select_related("user").filter(prefix=pieces[1]).first()
        if token is None or not token.matches(presented):
            raise exceptions.AuthenticationFailed("Invalid API token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API token has been revoked.")
        now = timezone.now()
        if token.expires_at <= now:
            raise exceptions.AuthenticationFailed("This API token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The owner of this API token is inactive.")
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now,
                                                        last_used_ip=request.META.get("REMOTE_ADDR"))
        return token.user, token

    def authenticate_header(self, request):
        return self.keyword
