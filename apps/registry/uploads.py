"""Uploads stream to a temporary file on disk, never whole into memory, and stop at the size limit.

Install per view with ``request.upload_handlers = limited_upload_handlers(request)`` before ``request.FILES``
or ``request.data`` is touched; after parsing, ``upload_too_large(request)`` tells whether the limit was hit.
"""
from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler

from apps.core.errors import ValidationFailed


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Django's temporary-file handler (chunks to disk) that gives up once the limit is passed."""

    def __init__(self, request=None, limit: int | None = None):
        super().__init__(request)
        self.limit = limit if limit is not None else settings.MODELPLANE_UPLOAD_MAX_BYTES
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # A declared body well over the limit is refused before a byte is written.
        if content_length and content_length > self.limit + 1024 * 1024:
            self._too_large()
        return super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self._too_large()
        return super().receive_data_chunk(raw_data, start)

    def _too_large(self):
        if self.request is not None:
            self.request._modelplane_upload_too_large = True
        raise StopUpload(connection_reset=True)


def human_bytes(n: int) -> str:
    for unit, size in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def limited_upload_handlers(request) -> list:
    return [LimitedTemporaryFileUploadHandler(request)]


def upload_too_large(request) -> bool:
    return bool(getattr(request, "_modelplane_upload_too_large", False))


def too_large_error() -> ValidationFailed:
    limit = settings.MODELPLANE_UPLOAD_MAX_BYTES
    return ValidationFailed(f"file: the upload is larger than the limit of {human_bytes(limit)}.", code="too_large",
                            fields={"file": [f"larger than {limit} bytes"]}, status=413)
