"""Recording and verifying the audit trail."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from apps.audit.models import GENESIS_HASH, AuditEvent
from apps.core.actors import Actor
from apps.core.models import json_safe
from apps.core.permissions import team_id_of

# One advisory lock serialises appends so that each event chains onto exactly one predecessor.
AUDIT_CHAIN_LOCK = 0x4D50_4155  # "MPAU"


def _target_type(target: Any) -> str:
    if isinstance(target, str):
        return target
    meta = getattr(target, "_meta", None)
    return meta.label_lower if meta is not None else type(target).__name__.lower()


def audit_event_record(
    *,
    actor: Actor,
    verb: str,
    target: Any,
    before: dict | None = None,
    after: dict | None = None,
    reason: str = "",
    team_id: int | None = None,
    target_id: Any = None,
    target_repr: str | None = None,
) -> AuditEvent:
    """Append one event to the chain. Must run inside the transaction of the change it records."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_event_record must run inside the service's transaction")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK])
    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    prev_hash = last["hash"] if last else GENESIS_HASH
    seq = (last["seq"] + 1) if last else 1
    if team_id is None and not isinstance(target, str):
        team_id = team_id_of(target)
    event = AuditEvent(
        seq=seq,
        occurred_at=timezone.now(),
        actor_id=actor.user_id,
        actor_name=actor.name[:150],
        actor_kind=actor.kind,
        token_id=actor.token_id,
        verb=verb,
        target_type=_target_type(target),
        target_id=str(target_id if target_id is not None else getattr(target, "pk", ""))[:100],
        target_repr=(target_repr if target_repr is not None else str(target))[:300],
        team_id=team_id,
        before=json_safe(before) if before is not None else None,
        after=json_safe(after) if after is not None else None,
        reason=reason or "",
        request_id=actor.request_id or "",
        source_ip=actor.source_ip,
        prev_hash=prev_hash,
    )
    event.hash = event.compute_hash(prev_hash)
    event.save(force_insert=True)
    return event


@dataclass
class ChainReport:
    """What audit_verify found: ok, how many events it checked, and the first broken link if any."""

    ok: bool
    checked: int
    broken_seq: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} events, the chain is intact."
        return f"BROKEN at event #{self.broken_seq}: {self.problem} ({self.checked} events checked before it)"


def audit_chain_verify(*, batch_size: int = 5000) -> ChainReport:
    """Walk the chain in order and report the first event whose link or hash does not hold.

    Detects an edited event (its hash no longer matches its content), a deleted one (a gap in seq, or the next
    event's prev_hash pointing at a hash that is gone), an inserted one and a reordered pair (prev_hash and seq
    no longer follow). A deletion of the newest events leaves a shorter valid chain: signed exports (the
    Approvals step) anchor the head outside the database for that case.
    """
    prev_hash = GENESIS_HASH
    expected_seq = 1
    checked = 0
    queryset = AuditEvent.objects.order_by("seq")
    last_seq = 0
    while True:
        batch = list(queryset.filter(seq__gt=last_seq)[:batch_size])
        if not batch:
            break
        for event in batch:
            if event.seq != expected_seq:
                return ChainReport(False, checked, event.seq,
                                   f"expected event #{expected_seq} next, found #{event.seq} (missing or inserted)")
            if event.prev_hash != prev_hash:
                return ChainReport(False, checked, event.seq,
                                   "its prev_hash does not match the hash of the event before it")
            if event.compute_hash(prev_hash) != event.hash:
                return ChainReport(False, checked, event.seq, "its content does not match its hash (edited)")
            prev_hash = event.hash
            expected_seq += 1
            checked += 1
            last_seq = event.seq
    return ChainReport(True, checked)


def audit_head() -> dict[str, Any]:
    """The newest event's seq and hash: the value a signed export anchors."""
    last = AuditEvent.objects.order_by("-seq").values("seq", "hash").first()
    return last or {"seq": 0, "hash": GENESIS_HASH}


def atomic_record(**kwargs: Any) -> AuditEvent:
    """Record an event in a transaction of its own (for events with no other change, e.g. a sign-in)."""
    with transaction.atomic():
        return audit_event_record(**kwargs)
