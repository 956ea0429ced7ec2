"""The dashboard's navigation: every area of the product, shown to the roles that may use it.

An area whose issue has not landed yet points at a page that says so ("not yet") rather than vanishing,
so users see where the product is going.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse

from apps.core.actors import Actor
from apps.core.permissions import has_perm


@dataclass(frozen=True)
class Area:
    key: str
    label: str
    url_name: str
    verb: str  # shown when the actor holds this verb in any team (or is a platform admin for platform verbs)
    ready: bool  # False: the page says which roadmap step brings it


AREAS: tuple[Area, ...] = (
    Area("home", "Home", "core:home", "profile.view", True),
    Area("models", "Models", "registry:model_list", "model.view", True),
    Area("deployments", "Deployments", "deployments:deployment_list", "deployment.view", True),
    Area("approvals", "Approvals", "core:area_approvals", "promotion.view", False),
    Area("monitoring", "Monitoring", "core:area_monitoring", "monitoring.view", False),
    Area("costs", "Costs", "core:area_costs", "cost.view", False),
    Area("audit", "Audit", "audit:event_list", "audit.view", True),
    Area("admin", "Admin", "accounts:team_list", "membership.manage", True),  # members reach their teams from Profile
)

# Which roadmap step brings each area (shown on its "not yet" page).
ROADMAP = {
    "approvals": "Approvals (step 4 of 9): promotion requests, gates and separation of duties.",
    "monitoring": "Monitoring (step 5 of 9): latency, throughput, errors, drift, fairness and alerts.",
    "costs": "Costs (step 8 of 9): metering, budgets, showback and right-sizing.",
}


def navigation_for(actor: Actor, path: str) -> list[dict]:
    items = []
    for area in AREAS:
        if area.key == "audit":
            allowed = has_perm(actor, "audit.view") or has_perm(actor, "audit.view_all")
        else:
            allowed = has_perm(actor, area.verb)
        if not allowed:
            continue
        url = reverse(area.url_name)
        active = path == url if area.key == "home" else path.startswith(url)
        items.append({"key": area.key, "label": area.label, "url": url, "ready": area.ready, "active": active})
    return items
