"""DRF's exceptions and our ServiceError, rendered in the one error shape."""
from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import ServiceError

_CODES = {
    400: "invalid", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 429: "throttled",
}


def _flatten(detail) -> dict[str, list[str]]:
    """DRF's nested error detail as {"field": ["message", ...]}; nested fields use dots (``scopes.0``)."""
    out: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value):
                out.setdefault(prefix or "non_field_errors", []).extend(str(v) for v in value)
            else:
                for i, inner in enumerate(value):
                    if inner:
                        walk(f"{prefix}.{i}" if prefix else str(i), inner)
        else:
            out.setdefault(prefix or "non_field_errors", []).append(str(value))

    walk("", detail)
    return out


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):
        response = Response(exc.as_dict(), status=exc.status)
        if exc.status == 503:
            response["Retry-After"] = "30"
        return response
    if isinstance(exc, RequestDataTooBig):  # DRF reads the body itself; Django's limit still holds
        from apps.core.errorviews import too_big_message

        message = too_big_message()
        return Response(error_body("payload_too_large", message, {"body": [message]}), status=413)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django answer 500 and log it
    code = _CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        parts = [f"{k}: {v[0]}" if k != "non_field_errors" else v[0] for k, v in fields.items()]
        message = "; ".join(parts) or "Invalid input."
        response.data = error_body("invalid", message, fields)
    else:
        detail = getattr(exc, "detail", None)
        if isinstance(detail, (dict, list)):
            response.data = error_body(code, "Invalid request.", _flatten(detail))
        else:
            message = str(detail) if detail is not None else response.status_text
            if isinstance(exc, exceptions.ParseError):
                response.data = error_body("parse_error", message, {"body": [message]})
            else:
                response.data = error_body(code, message)
    return response
