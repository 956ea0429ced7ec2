"""Shared model bases."""
from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models

from apps.core.errors import InvalidTransition


def json_safe(value: Any) -> Any:
    """A value as canonical JSON can hold it (times in UTC ISO 8601, decimals and UUIDs as strings)."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return value


class TimeStampedModel(models.Model):
    """Base for Modelplane's own rows: creation and update times, and a snapshot for audit events."""

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Fields never copied into an audit snapshot (secrets, hashes).
    snapshot_exclude: tuple[str, ...] = ()

    class Meta:
        abstract = True

    def snapshot(self) -> dict[str, Any]:
        """The row's own fields as JSON-safe values, for the before/after of an audit event."""
        data: dict[str, Any] = {}
        for f in self._meta.concrete_fields:
            if f.name in self.snapshot_exclude or f.name in ("created_at", "updated_at"):
                continue
            data[f.attname] = json_safe(getattr(self, f.attname))
        return data


class StateMachineMixin:
    """Allowed status moves, declared on the model as ``TRANSITIONS = {from: {to, ...}}``."""

    TRANSITIONS: dict[str, set[str]] = {}
    status: str

    def can_transition_to(self, new_status: str) -> bool:
        return new_status in self.TRANSITIONS.get(self.status, set())

    def transition_to(self, new_status: str) -> None:
        if not self.can_transition_to(new_status):
            raise InvalidTransition(f"Cannot move from {self.status!r} to {new_status!r}.",
                                    fields={"status": [f"{self.status} → {new_status} is not allowed"]})
        self.status = new_status


def validation_error_fields(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "message_dict"):
        return {k: list(v) for k, v in exc.message_dict.items()}
    return {"non_field_errors": list(exc.messages)}
