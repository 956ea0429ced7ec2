"""Who is acting: a signed-in user, a user through an API token, or the system (Celery tasks, standalone)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from apps.accounts.models import User


@dataclass
class Actor:
    """The subject of a permission check and of an audit event."""

    user: User | None
    kind: str = "user"  # "user" (session), "token" (API token) or "system"
    token_id: int | None = None
    scopes: frozenset[str] = frozenset({"read", "write"})
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    source_ip: str | None = None
    system_name: str = "system"

    @property
    def is_system(self) -> bool:
        return self.kind == "system"

    @property
    def name(self) -> str:
        if self.user is None:
            return self.system_name
        return self.user.get_username()

    @property
    def user_id(self) -> int | None:
        return self.user.pk if self.user is not None else None

    @property
    def is_platform_admin(self) -> bool:
        return self.is_system or bool(self.user and self.user.is_active and self.user.is_platform_admin)

    @classmethod
    def system(cls, name: str = "system", request_id: str | None = None) -> Actor:
        return cls(user=None, kind="system", system_name=name, request_id=request_id or uuid.uuid4().hex)

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        """The actor behind an HTTP request (session or token); the request id and address come along."""
        user = getattr(request, "user", None)
        auth = getattr(request, "auth", None)
        token_id = getattr(auth, "pk", None) if auth is not None and hasattr(auth, "scopes") else None
        scopes = frozenset(auth.scopes) if token_id is not None else frozenset({"read", "write"})
        return cls(
            user=user if (user is not None and user.is_authenticated) else None,
            kind="token" if token_id is not None else "user",
            token_id=token_id,
            scopes=scopes,
            request_id=getattr(request, "request_id", None) or uuid.uuid4().hex,
            source_ip=client_ip(request),
        )

    @classmethod
    def for_user(cls, user: User, **kwargs: Any) -> Actor:
        return cls(user=user, **kwargs)


def client_ip(request: Any) -> str | None:
    meta = getattr(request, "META", {}) or {}
    return meta.get("REMOTE_ADDR") or None
