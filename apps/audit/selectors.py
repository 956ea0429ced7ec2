"""Who may read which audit events.

Platform admins read the whole trail. A member with ``audit.view`` in a team reads that team's events and the
events they caused themselves (their sign-ins, their tokens), which belong to no team.
"""
from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.core.errors import NotFound, PermissionDenied
from apps.core.permissions import has_perm, team_ids_with


def can_open_audit(actor: Actor) -> bool:
    return has_perm(actor, "audit.view_all") or has_perm(actor, "audit.view")


def auditevent_list(*, actor: Actor) -> QuerySet[AuditEvent]:
    if not can_open_audit(actor):
        raise PermissionDenied("You do not have permission to read the audit trail (audit.view).")
    if has_perm(actor, "audit.view_all"):
        return AuditEvent.objects.all()
    team_ids = team_ids_with(actor, "audit.view") or set()
    return AuditEvent.objects.filter(Q(team_id__in=team_ids) | Q(actor_id=actor.user_id))


def auditevent_get(*, actor: Actor, seq: int) -> AuditEvent:
    event = auditevent_list(actor=actor).filter(seq=seq).first()
    if event is None:
        raise NotFound("Audit event not found.")
    return event
