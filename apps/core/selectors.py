"""Cross-app reads for the home page."""
from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from apps.core.actors import Actor


def home_counts(*, actor: Actor) -> dict[str, int]:
    """Live counts for the home page, each scoped to what the actor may see."""
    from apps.accounts.selectors import apitoken_list, membership_list, team_list
    from apps.audit.selectors import auditevent_list

    now = timezone.now()
    counts = {
        "teams": team_list(actor=actor).count(),
        "members": membership_list(actor=actor).values("user_id").distinct().count(),
        "active_tokens": apitoken_list(actor=actor).active().count(),
    }
    try:
        counts["audit_events_24h"] = auditevent_list(actor=actor).filter(
            occurred_at__gte=now - timedelta(hours=24)).count()
    except Exception:  # noqa: BLE001 - PermissionDenied: the actor may not read the audit trail
        counts["audit_events_24h"] = None
    return counts


def page_by_name(qs, *, after: str, size: int) -> tuple[list, str | None]:
    """One page of a queryset ordered by a unique ``name``, keyset-style (``name > after``): the page's rows and
    the ``after`` of the next page (None on the last). The list pages of models and deployments use it."""
    if after:
        qs = qs.filter(name__gt=after)
    rows = list(qs.order_by("name")[: size + 1])
    if len(rows) > size:
        return rows[:size], rows[size - 1].name
    return rows, None
