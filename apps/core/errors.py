"""The one error type of Modelplane. Services raise it; the API and the pages turn it into the one error shape.

API body: ``{"error": {"code": "...", "message": "...", "fields": {"name": ["..."]}}}``.
"""
from __future__ import annotations


class ServiceError(Exception):
    """A refusal a user can act on: it carries an HTTP status, a stable code, a message and per-field problems."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, fields: dict[str, list[str]] | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.fields = {k: [str(m) for m in (v if isinstance(v, (list, tuple)) else [v])]
                       for k, v in (fields or {}).items()}

    def as_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.fields:
            body["fields"] = self.fields
        return {"error": body}


class ValidationFailed(ServiceError):
    status = 400
    code = "invalid"


class PermissionDenied(ServiceError):
    status = 403
    code = "permission_denied"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class ServiceUnavailable(ServiceError):
    status = 503
    code = "unavailable"


def field_error(field: str, message: str, *, code: str = "invalid") -> ValidationFailed:
    """Shorthand for the common case: one field, one problem."""
    return ValidationFailed(f"{field}: {message}", code=code, fields={field: [message]})
