"""The audit trail: an append-only hash chain of every state change."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import models

GENESIS_HASH = "0" * 64


def canonical_json(data: Any) -> str:
    """Canonical JSON (sorted keys, no spaces, UTF-8 kept): the same event always gives the same bytes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class AuditEvent(models.Model):
    """One recorded change: who did what to which object, with the state before and after.

    ``hash`` = SHA-256 over the previous event's hash and this event's canonical JSON, so an edited, deleted,
    inserted or reordered event breaks the chain (``manage.py audit_verify``). PostgreSQL refuses UPDATE,
    DELETE and TRUNCATE on this table (trigger from migration 0002). Actor and team are plain ids, not
    foreign keys, so that deleting a user or team never has to touch this table; the actor's name is frozen.
    """

    seq = models.BigIntegerField(unique=True, help_text="Position in the chain, from 1, without gaps.")
    occurred_at = models.DateTimeField(db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor_name = models.CharField(max_length=150)
    actor_kind = models.CharField(max_length=16)  # user, token, system
    token_id = models.BigIntegerField(null=True, blank=True)
    verb = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100, db_index=True)
    target_id = models.CharField(max_length=100, db_index=True)
    target_repr = models.CharField(max_length=300)
    team_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=64, blank=True, db_index=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    HASHED_FIELDS = (
        "seq", "occurred_at", "actor_id", "actor_name", "actor_kind", "token_id", "verb", "target_type",
        "target_id", "target_repr", "team_id", "before", "after", "reason", "request_id", "source_ip",
    )

    class Meta:
        ordering = ["-seq"]
        indexes = [models.Index(fields=["target_type", "target_id"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.actor_name} {self.verb} {self.target_type}:{self.target_id}"

    def payload(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.HASHED_FIELDS}
        data["occurred_at"] = self.occurred_at.isoformat().replace("+00:00", "Z")
        return data

    def compute_hash(self, prev_hash: str) -> str:
        return hashlib.sha256((prev_hash + canonical_json(self.payload())).encode()).hexdigest()

    def get_team_id(self) -> int | None:
        return self.team_id
