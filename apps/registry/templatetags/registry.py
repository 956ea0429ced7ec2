"""Template helpers of the registry pages: Markdown (raw HTML escaped), JSON, severities, MLflow UI links."""
from __future__ import annotations

import json
from urllib.parse import quote

from django import template
from django.conf import settings
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()

_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


@register.filter
def markdown(text: str | None) -> str:
    """Render a model card field written in Markdown, as the card export does: the author's HTML is escaped."""
    from apps.registry.card_export import render_markdown

    return mark_safe(render_markdown(str(text))) if text else ""  # raw HTML is off in the renderer


_STATUS_LABELS = {"pending_scan": "scan pending", "ready": "ready", "blocked": "blocked", "archived": "archived"}


@register.filter
def status_badge(status: str) -> str:
    """A version's status as a badge. A filter, not an included template: the model list shows one per row, and
    25 {% include %}s were the largest part of that page's rendering (benchmarks/registry.py)."""
    return format_html('<span class="vstatus vstatus-{}" data-status="{}">{}</span>', status, status,
                       _STATUS_LABELS.get(status, status))


@register.filter
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def severity_rank(severity: str) -> int:
    return _SEVERITY_ORDER.get(severity, 9)


@register.filter
def field_label(name: str) -> str:
    return name.replace("_", " ").capitalize().replace("Out of scope", "Out-of-scope")


@register.simple_tag
def mlflow_ui(kind: str, *parts) -> str:
    """A deep link into the MLflow UI (settings.MLFLOW_UI_URL): model, version, experiment, run or compare."""
    base = settings.MLFLOW_UI_URL.rstrip("/")
    q = [quote(str(p), safe="") for p in parts]
    if kind == "model":
        return f"{base}/#/models/{q[0]}"
    if kind == "version":
        return f"{base}/#/models/{q[0]}/versions/{q[1]}"
    if kind == "experiment":
        return f"{base}/#/experiments/{q[0]}"
    if kind == "run":
        return f"{base}/#/experiments/{q[0]}/runs/{q[1]}"
    return base


@register.simple_tag(takes_context=True)
def may(context, verb: str, obj=None) -> bool:
    """``{% may "experiment.view" as can_browse %}``: the permission function, for what a page offers."""
    from apps.core.actors import Actor
    from apps.core.permissions import has_perm

    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return False
    return has_perm(Actor.from_request(request), verb, obj)


@register.filter
def attr_of(obj, name: str):
    if isinstance(obj, dict):
        return obj.get(name, "")
    return getattr(obj, name, "")


@register.filter
def columns(schema) -> list[dict]:
    """A signature part as MLflow writes it (a list of column specs); anything else shows as nothing."""
    if not isinstance(schema, list):
        return []
    return [c for c in schema if isinstance(c, dict)]
