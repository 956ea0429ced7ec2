"""The dashboard shell: home, team switcher, and the pages of areas whose roadmap step has not landed."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.core.actors import Actor
from apps.core.navigation import AREAS, ROADMAP
from apps.core.permissions import has_perm
from apps.core.selectors import home_counts


@login_required
def home(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    return render(request, "core/home.html", {"counts": home_counts(actor=actor)})


@login_required
def home_counts_json(request: HttpRequest) -> JsonResponse:
    """The home page polls this to keep its counts live."""
    return JsonResponse(home_counts(actor=Actor.from_request(request)))


@login_required
def area_not_yet(request: HttpRequest, area: str) -> HttpResponse:
    spec = next((a for a in AREAS if a.key == area), None)
    if spec is None or area not in ROADMAP:
        raise Http404
    if not has_perm(Actor.from_request(request), spec.verb):
        return render(request, "403.html", status=403)
    return render(request, "core/not_yet.html", {"area": spec, "roadmap": ROADMAP[area]})


@login_required
@require_POST
def team_switch(request: HttpRequest) -> HttpResponse:
    from apps.accounts.selectors import team_list

    raw = request.POST.get("team", "")
    team = team_list(actor=Actor.from_request(request)).filter(pk=int(raw)).first() if raw.isdigit() else None
    if team is None:
        messages.error(request, "team: choose one of your teams.")
    else:
        request.session["current_team_id"] = team.pk
        messages.success(request, f"Now working in {team.name}.")
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and readiness for load balancers and standalone: PostgreSQL and Redis answer (no sign-in)."""
    from django.core.cache import cache
    from django.db import connection

    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        cache.get("healthz")
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", **checks}, status=200 if ok else 503)
