"""Form helpers shared by every page: a service's refusal shown on the form, and the page's status code."""
from __future__ import annotations

from django import forms
from django.http import HttpRequest

from apps.core.errors import ServiceError


def apply_service_error(form: forms.Form, exc: ServiceError) -> None:
    """Put a service's refusal on the form: next to each field it names and, when it is a refusal rather than
    a typo (403, 409, 503), its whole message above the form too, where the reason and the way out are said."""
    if not exc.fields:
        form.add_error(None, exc.message)
        return
    for field, problems in exc.fields.items():
        for problem in problems:
            if field in form.fields:
                form.add_error(field, problem)
            else:
                form.add_error(None, f"{field}: {problem}")
    if exc.status in (403, 409, 503) and exc.message not in form.non_field_errors():
        form.add_error(None, exc.message)


def posted(request: HttpRequest):
    """The form data of a POST, even an empty one (``request.POST or None`` would take that for a GET)."""
    return request.POST if request.method == "POST" else None


def form_status(form: forms.Form | None, exc: ServiceError | None = None) -> int:
    """The page's status: the service's refusal, else 400 when the form has errors, else 200."""
    if exc is not None:
        return exc.status
    return 400 if form is not None and form.errors else 200
