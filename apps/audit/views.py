"""The audit page: the trail, filtered, newest first, with each event's before/after."""
from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from apps.audit.filters import AuditEventFilter
from apps.audit.selectors import auditevent_get, auditevent_list
from apps.core.actors import Actor
from apps.core.errors import NotFound, PermissionDenied

PAGE_SIZE = 50


@login_required
def event_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        queryset = auditevent_list(actor=actor)
    except PermissionDenied as exc:
        return render(request, "403.html", {"message": exc.message}, status=403)
    filterset = AuditEventFilter(request.GET or None, queryset=queryset)
    if filterset.is_bound and not filterset.is_valid():
        return render(request, "audit/event_list.html",
                      {"filter": filterset, "events": [], "next_before": None}, status=400)
    events = filterset.qs.order_by("-seq")
    before = request.GET.get("before", "")
    if before.isdigit():
        events = events.filter(seq__lt=int(before))
    page = list(events[: PAGE_SIZE + 1])
    next_before = page[PAGE_SIZE - 1].seq if len(page) > PAGE_SIZE else None
    query = request.GET.copy()
    query.pop("before", None)
    return render(request, "audit/event_list.html", {
        "filter": filterset, "events": page[:PAGE_SIZE], "next_before": next_before,
        "query": query.urlencode(),
    })


@login_required
def event_detail(request: HttpRequest, seq: int) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        event = auditevent_get(actor=actor, seq=seq)
    except PermissionDenied as exc:
        return render(request, "403.html", {"message": exc.message}, status=403)
    except NotFound:
        raise Http404
    return render(request, "audit/event_detail.html", {
        "event": event,
        "before_json": json.dumps(event.before, indent=2, sort_keys=True) if event.before is not None else "",
        "after_json": json.dumps(event.after, indent=2, sort_keys=True) if event.after is not None else "",
    })
