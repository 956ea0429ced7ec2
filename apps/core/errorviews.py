"""Error pages: JSON in the one error shape under /api/, HTML elsewhere."""
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.shortcuts import render

from apps.core.api.errors import error_body


def too_big_message() -> str:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return f"The request body is too large; the limit is {limit} bytes." if limit else "The request body is too large."


def _wants_json(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    """A request Django refused before any view saw it (SuspiciousOperation), e.g. a body over
    DATA_UPLOAD_MAX_MEMORY_SIZE, which is a 413 rather than Django's bare HTML 400."""
    if isinstance(exception, RequestDataTooBig):
        status, code, message = 413, "payload_too_large", too_big_message()
    else:
        status, code, message = 400, "bad_request", "The request could not be understood."
    if _wants_json(request):
        return JsonResponse(error_body(code, message, {"body": [message]} if status == 413 else None), status=status)
    return render(request, "400.html", {"message": message}, status=status)


def not_found(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    return render(request, "404.html", status=404)


def forbidden(request, exception=None):
    if _wants_json(request):
        return JsonResponse(error_body("permission_denied", "You do not have permission to do this."), status=403)
    return render(request, "403.html", status=403)


def server_error(request):
    if _wants_json(request):
        return JsonResponse(error_body("server_error", "Internal error; it has been logged."), status=500)
    return render(request, "500.html", status=500)
