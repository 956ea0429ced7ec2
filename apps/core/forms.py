"""Form helpers: a service's refusal shown on the page, next to the field it names."""
from __future__ import annotations

from django import forms

from apps.core.errors import ServiceError


def apply_service_error(form: forms.Form, exc: ServiceError) -> None:
    if not exc.fields:
        form.add_error(None, exc.message)
        return
    for field, problems in exc.fields.items():
        for problem in problems:
            if field in form.fields:
                form.add_error(field, problem)
            else:
                form.add_error(None, f"{field}: {problem}")
