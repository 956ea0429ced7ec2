"""``Idempotency-Key`` on API POSTs: a retried request gets the first answer instead of a second change.

The key is scoped to the caller (the bearer token or the session) and the answer is kept in Redis for 24 hours.
Reusing a key with a different body is a 422; a retry while the first request still runs is a 409.
An answer marked ``Cache-Control: no-store`` (it holds a secret, e.g. a new API token) is never kept: a retry
gets a 409 saying the request was done, and the secret stays shown once.
"""
from __future__ import annotations

import hashlib

from django.core.cache import cache
from django.http import HttpResponse, JsonResponse

from apps.core.api.errors import error_body

TTL_SECONDS = 24 * 60 * 60
IN_FLIGHT_SECONDS = 60
MAX_KEY_LENGTH = 255


class IdempotencyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        key = request.headers.get("Idempotency-Key")
        if key is None or request.method != "POST" or not request.path.startswith("/api/"):
            return self.get_response(request)
        if not key or len(key) > MAX_KEY_LENGTH:
            return JsonResponse(error_body("invalid", f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                                           {"Idempotency-Key": ["invalid length"]}), status=400)
        caller = request.headers.get("Authorization") or request.COOKIES.get("sessionid") or "anonymous"
        scope = hashlib.sha256(f"{caller}\n{key}".encode()).hexdigest()
        if request.content_type == "multipart/form-data":
            # Uploads stream to disk and may be hundreds of MB: never read them into memory here. Their
            # fingerprint is the declared length, so a retry of the same upload still matches.
            body_print = f"multipart:{request.META.get('CONTENT_LENGTH', '')}".encode()
        else:
            body_print = request.body
        fingerprint = hashlib.sha256(request.method.encode() + request.path.encode() + b"\n" + body_print).hexdigest()
        cache_key = f"idem:{scope}"
        stored = cache.get(cache_key)
        if stored is not None:
            if stored.get("fingerprint") != fingerprint:
                return JsonResponse(error_body(
                    "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request; use a new key.",
                    {"Idempotency-Key": ["reused with a different request"]}), status=422)
            if stored.get("state") == "in_flight":
                return JsonResponse(error_body("idempotency_in_flight",
                                               "A request with this Idempotency-Key is still in progress."),
                                    status=409)
            if stored.get("secret"):
                response = JsonResponse(error_body(
                    "idempotency_answer_not_kept",
                    "The request with this Idempotency-Key was done; its answer held a secret, which is shown "
                    "only once and not kept."), status=409)
            else:
                response = HttpResponse(stored["body"].encode("latin-1"), status=stored["status"],
                                        content_type=stored["content_type"])
            response["Idempotent-Replayed"] = "true"
            return response
        if not cache.add(cache_key, {"fingerprint": fingerprint, "state": "in_flight"}, IN_FLIGHT_SECONDS):
            return JsonResponse(error_body("idempotency_in_flight",
                                           "A request with this Idempotency-Key is still in progress."), status=409)
        response = self.get_response(request)
        if response.status_code < 500 and not getattr(response, "streaming", False):
            if hasattr(response, "render") and not getattr(response, "is_rendered", True):
                response.render()
            if "no-store" in response.get("Cache-Control", ""):
                # The answer holds a secret (a new API token's): remember that the request was done, never the body.
                cache.set(cache_key, {"fingerprint": fingerprint, "state": "done", "secret": True}, TTL_SECONDS)
                return response
            cache.set(cache_key, {
                "fingerprint": fingerprint, "state": "done", "status": response.status_code,
                "content_type": response.get("Content-Type", "application/json"),
                "body": response.content.decode("latin-1"),
            }, TTL_SECONDS)
        else:
            cache.delete(cache_key)
        return response


