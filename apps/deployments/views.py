"""The serving pages: deployments (list, create, the deployment page with its charts, timeline, actions and
"try it" box, settings), keys, replica output and environments.

Reads go through apps.deployments.selectors (another team's deployment is a 404) and every change through
apps.deployments.services, the same functions the API calls; a refusal is shown on the form with the
service's own words (apply_service_error) and its status code. The "try it" box calls the gateway through
apps.deployments.console, never a model server.
"""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts.selectors import team_list
from apps.core.actors import Actor
from apps.core.errors import NotFound, ServiceError
from apps.core.forms import apply_service_error, form_status, posted
from apps.core.permissions import has_perm, scope_to_teams
from apps.core.selectors import page_by_name
from apps.deployments import selectors, services
from apps.deployments.forms import (
    STRATEGY_HELP,
    DeploymentCreateForm,
    DeploymentFilterForm,
    DeploymentKeyForm,
    DeploymentUpdateForm,
    EnvironmentForm,
    ReasonForm,
    RolloutForm,
)
from apps.deployments.models import Deployment, Environment, Replica, Variant
from apps.registry import selectors as registry_selectors
from apps.registry.models import ModelVersion

DEPLOYMENTS_PAGE_SIZE = 25
EVENTS_SHOWN = 60
CHART_WINDOW = timedelta(hours=1)
# Colours of the variants in the charts, in the order the variants were created (the legend names them).
VARIANT_COLOURS = ["#3b5bdb", "#e67700", "#2b8a3e", "#862e9c", "#0b7285", "#c92a2a"]


def _forbidden(request: HttpRequest, message: str | None = None) -> HttpResponse:
    return render(request, "403.html", {"message": message} if message else {}, status=403)


def _get_deployment(actor: Actor, pk: int) -> Deployment:
    try:
        return selectors.deployment_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404 from None


def gateway_base_url() -> str:
    """Where clients reach the gateway: the public URL when one is configured (behind a load balancer), else
    the URL the control plane itself uses."""
    return (getattr(settings, "MODELPLANE_GATEWAY_PUBLIC_URL", "") or settings.MODELPLANE_GATEWAY_URL).rstrip("/")


# ------------------------------------------------------------------------------------------------ list

def _list_rows(deployments: list[Deployment]) -> list[dict]:
    ready = selectors.replica_ready_counts(deployment_ids=[d.pk for d in deployments])
    rows = []
    for d in deployments:
        active = getattr(d, "active_variants", [])
        live = [v for v in active if v.role == Variant.Role.LIVE]
        rows.append({
            "deployment": d,
            "variants": active,
            "ready": ready.get(d.pk, 0),
            "desired": sum(v.replicas for v in live),
        })
    return rows


@login_required
def deployment_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    if not has_perm(actor, "deployment.view"):
        return _forbidden(request, "Deployments are shown to members of a team (deployment.view).")
    teams = list(team_list(actor=actor))
    environments = list(selectors.environment_list(actor=actor))
    form = DeploymentFilterForm(request.GET or None, teams=teams, environments=environments)
    rows, next_after, status = [], None, 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        filters = {k: v for k, v in (form.cleaned_data if form.is_bound else {}).items() if v not in (None, "")}
        after = filters.pop("after", "")
        deployments, next_after = page_by_name(selectors.deployment_list(actor=actor, filters=filters),
                                               after=after, size=DEPLOYMENTS_PAGE_SIZE)
        rows = _list_rows(deployments)
    query = request.GET.copy()
    query.pop("after", None)
    return render(request, "deployments/deployment_list.html", {
        "form": form, "rows": rows, "next_after": next_after, "query": query.urlencode(),
        "filtered": any(v for k, v in request.GET.items() if k != "after"), "paged": bool(request.GET.get("after")),
        "can_create": has_perm(actor, "deployment.create"),
    }, status=status)


# ------------------------------------------------------------------------------------------------ create

def _deployable_versions(actor: Actor, *, model_id: int | None = None):
    """Ready versions of models in the teams where the actor may create deployments (what the forms offer;
    the service checks the chosen one again)."""
    qs = registry_selectors.modelversion_list(actor=actor, model_id=model_id).filter(
        status=ModelVersion.Status.READY, model__archived_at__isnull=True)
    return scope_to_teams(qs, actor, "deployment.create", field="model__team_id").order_by("model__name",
                                                                                           "-version")


@login_required
def deployment_create(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    if not has_perm(actor, "deployment.create"):
        return _forbidden(request, "Creating deployments needs the ML engineer or team admin role in a team "
                                   "(deployment.create).")
    environments = list(selectors.environment_list(actor=actor))
    versions = list(_deployable_versions(actor))
    initial = {}
    if request.GET.get("version", "").isdigit():
        initial["model_version"] = int(request.GET["version"])
    form = DeploymentCreateForm(posted(request), initial=initial, environments=environments, versions=versions,
                                may_deploy_to_production=actor.is_platform_admin)
    error = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            deployment = services.deployment_create(
                actor=actor, name=data["name"], environment_id=data["environment"],
                model_version_id=data["model_version"], strategy=data["strategy"], **form.settings_kwargs())
        except ServiceError as exc:
            error = exc
            apply_service_error(form, exc)
        else:
            messages.success(request, f"Deployment {deployment.name} created. Its replicas are starting; this page "
                                      "follows them.")
            return redirect("deployments:deployment_detail", pk=deployment.pk)
    return render(request, "deployments/deployment_create.html", {
        "form": form, "strategy_help": STRATEGY_HELP, "versions_json": form.version_models,
        "production_envs": [e for e in environments if e.is_production],
        "is_platform_admin": actor.is_platform_admin, "has_versions": bool(versions),
    }, status=form_status(form, error))


# ------------------------------------------------------------------------------------------------ the deployment page

def _replica_counts(variants: list[Variant], replicas: list[Replica]) -> dict[int, dict]:
    counts = {v.pk: {"ready": 0, "desired": v.replicas if v.role in Variant.ACTIVE_ROLES else 0} for v in variants}
    for r in replicas:
        if r.desired and r.status == Replica.Status.READY and r.variant_id in counts:
            counts[r.variant_id]["ready"] += 1
    return counts


def _rollback_plan(variants: list[Variant]) -> dict:
    """What a rollback would do now, said before the button is pressed: services.rollback_plan decides, for
    this page and for the service alike."""
    plan = services.rollback_plan(variants)
    live_names = ", ".join(f"{v.name} ({v.model_version})" for v in plan.live) or "nothing"
    target = plan.target
    if plan.kind == "cancel":
        text = (f"Cancel the rollout: {target.name} ({target.model_version}) stops before it takes traffic; "
                f"{live_names} keeps serving.")
    elif plan.kind == "standby":
        until = (f", kept warm until {timezone.localtime(target.standby_until):%Y-%m-%d %H:%M}"
                 if target.standby_until else "")
        text = f"Switch all traffic back at once to {target.name} ({target.model_version}){until}; {live_names} stops."
    elif plan.kind == "restart":
        text = (f"Start {target.model_version} again (no warm standby is left): requests may fail until its replicas "
                f"are ready; {live_names} stops.")
    else:
        text = "Nothing to roll back to: this deployment has served one version only."
    return {"possible": plan.kind != "none", "kind": plan.kind, "text": text}


def _normalise_series(raw: Any) -> dict[str, list[dict]]:
    """apps.monitoring's rollup series as {variant: [{minute, count, errors, p50, p95, p99}]}, whatever the
    point type (a dataclass or a dict) and whether it is grouped by variant or flat."""
    def pick(point, *names):
        for name in names:
            value = point.get(name) if isinstance(point, dict) else getattr(point, name, None)
            if value is not None:
                return value
        return None

    grouped: dict[str, list] = {}
    if isinstance(raw, dict):
        grouped = {str(k): list(v or []) for k, v in raw.items()}
    else:
        for point in raw or []:
            grouped.setdefault(str(pick(point, "variant") or ""), []).append(point)
    out: dict[str, list[dict]] = {}
    for variant, points in grouped.items():
        rows = []
        for p in points:
            minute = pick(p, "minute")
            if minute is None:
                continue
            rows.append({"minute": minute.isoformat() if hasattr(minute, "isoformat") else str(minute),
                         "count": pick(p, "count") or 0, "errors": pick(p, "errors") or 0,
                         "p50": pick(p, "p50_ms", "p50"), "p95": pick(p, "p95_ms", "p95"),
                         "p99": pick(p, "p99_ms", "p99")})
        if rows:
            out[variant] = sorted(rows, key=lambda r: r["minute"])
    return out


def _charts(deployment: Deployment) -> tuple[list[dict], str]:
    """Plotly figures of the last hour from the prediction log's rollups, or why there are none."""
    try:
        from apps.monitoring.selectors import rollup_series
    except ImportError:
        return [], "Charts arrive with the prediction log (apps.monitoring), which is not installed here."
    now = timezone.now()
    series = _normalise_series(rollup_series(deployment_id=deployment.pk, since=now - CHART_WINDOW))
    if not series:
        return [], "No traffic in the last hour."
    colours = {name: VARIANT_COLOURS[i % len(VARIANT_COLOURS)] for i, name in enumerate(sorted(series))}

    def label(name: str) -> str:
        return name or "unrouted"

    layout = {"height": 280, "margin": {"l": 55, "r": 15, "t": 10, "b": 40}, "hovermode": "x unified",
              "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
              "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#fff",
              # The whole window, so one busy minute is one narrow bar rather than the full width.
              "xaxis": {"type": "date", "range": [(now - CHART_WINDOW).isoformat(), now.isoformat()],
                        "tickformat": "%H:%M"}}
    requests_fig = {"data": [{"type": "bar", "name": label(n), "x": [p["minute"] for p in pts],
                              "y": [p["count"] for p in pts], "marker": {"color": colours[n]}}
                             for n, pts in series.items()],
                    "layout": {**layout, "barmode": "stack", "yaxis": {"title": {"text": "requests / min"},
                                                                       "rangemode": "tozero"}}}
    errors_fig = {"data": [{"type": "bar", "name": label(n), "x": [p["minute"] for p in pts],
                            "y": [p["errors"] for p in pts], "marker": {"color": colours[n]}}
                           for n, pts in series.items()],
                  "layout": {**layout, "barmode": "stack", "yaxis": {"title": {"text": "errors / min"},
                                                                     "rangemode": "tozero"}}}
    dashes = {"p50": "dot", "p95": "solid", "p99": "dash"}
    latency_fig = {"data": [{"type": "scatter", "mode": "lines+markers", "name": f"{label(n)} {q}",
                             "x": [p["minute"] for p in pts], "y": [p[q] for p in pts],
                             "line": {"color": colours[n], "dash": dashes[q]}, "marker": {"size": 4}}
                            for n, pts in series.items() for q in ("p50", "p95", "p99")],
                   "layout": {**layout, "yaxis": {"title": {"text": "latency (ms)"}, "rangemode": "tozero"}}}
    charts = [
        {"id": "chart-requests", "title": "Requests per minute", "figure": requests_fig},
        {"id": "chart-errors", "title": "Errors per minute", "figure": errors_fig},
        {"id": "chart-latency", "title": "Latency p50 / p95 / p99", "figure": latency_fig},
    ]
    for chart in charts:
        chart["data_id"] = f"{chart['id']}-data"
    return charts, ""


def _try_example(variants: list[Variant]) -> str:
    """The "try it" box's first text: the live version's logged input example as a scoring request."""
    from apps.deployments.reconcile import scoring_payload

    for variant in variants:
        if variant.role == Variant.Role.LIVE:
            payload = scoring_payload(variant.model_version.input_example)
            if payload is not None:
                return json.dumps(payload, indent=2)
    return '{\n  "dataframe_split": {\n    "columns": [],\n    "data": []\n  }\n}'


def _status_payload(deployment: Deployment, variants: list[Variant], replicas: list[Replica],
                    last_event_id: int | None) -> dict:
    counts = _replica_counts(variants, replicas)
    live = [v for v in variants if v.role == Variant.Role.LIVE]
    ready = sum(counts[v.pk]["ready"] for v in live)
    desired = sum(counts[v.pk]["desired"] for v in live)
    # Changes when anything the live sections show changes, so the page refetches them only then.
    fingerprint = "|".join([deployment.status, str(deployment.generation), str(last_event_id or 0),
                            ",".join(f"{r.pk}:{r.status}:{r.restart_count}:{r.port}" for r in replicas),
                            ",".join(f"{v.pk}:{v.role}:{v.weight}" for v in variants)])
    return {
        "id": deployment.pk, "name": deployment.name, "status": deployment.status,
        "status_display": deployment.get_status_display(), "status_message": deployment.status_message,
        "serving": deployment.is_serving, "generation": deployment.generation,
        "replicas_ready": ready, "replicas_desired": desired, "last_event_id": last_event_id,
        "updated_at": deployment.updated_at.isoformat(), "fingerprint": fingerprint,
    }


def _detail_context(request: HttpRequest, actor: Actor, deployment: Deployment, **overrides: Any) -> dict:
    variants = list(selectors.variant_list(deployment=deployment))
    replicas = list(selectors.replica_list(deployment=deployment))
    counts = _replica_counts(variants, replicas)
    for v in variants:
        v.ready_count = counts[v.pk]["ready"]
        v.desired_count = counts[v.pk]["desired"]
    events = list(selectors.event_list(deployment=deployment)[:EVENTS_SHOWN])
    can_update = has_perm(actor, "deployment.update", deployment)
    can_rollback = has_perm(actor, "deployment.rollback", deployment)
    live_version_ids = {v.model_version_id for v in variants if v.role in (Variant.Role.LIVE, Variant.Role.CANDIDATE)}
    rollout_versions = []
    if can_update:
        rollout_versions = [v for v in _deployable_versions(actor, model_id=deployment.model_id)
                            if v.pk not in live_version_ids]
    charts, charts_empty = _charts(deployment)
    base = gateway_base_url()
    context = {
        "deployment": deployment,
        "variants": [v for v in variants if v.role != Variant.Role.RETIRED],
        "retired": [v for v in variants if v.role == Variant.Role.RETIRED],
        "replicas": replicas,
        "events": events,
        "status": _status_payload(deployment, variants, replicas, events[0].pk if events else None),
        "charts": charts, "charts_empty": charts_empty,
        "gateway": {"mlflow": f"{base}/v1/deployments/{deployment.name}/invocations",
                    "oip": f"{base}/v2/models/{deployment.name}/infer",
                    "oip_ready": f"{base}/v2/models/{deployment.name}/ready"},
        "can_update": can_update, "can_rollback": can_rollback,
        "can_invoke": has_perm(actor, "deployment.invoke", deployment),
        "can_keys": has_perm(actor, "deployment.key_manage", deployment),
        "rollout_form": RolloutForm(versions=rollout_versions, strategy=deployment.strategy)
        if can_update and rollout_versions else None,
        "rollback_form": ReasonForm(prefix="rollback") if can_rollback else None,
        "stop_form": ReasonForm(prefix="stop") if can_update else None,
        "rollback_plan": _rollback_plan(variants),
        "strategy_help": STRATEGY_HELP,
        "try_example": _try_example(variants),
        "action_error": None,
    }
    context.update(overrides)
    return context


@login_required
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    return render(request, "deployments/deployment_detail.html", _detail_context(request, actor, deployment))


@login_required
def deployment_status(request: HttpRequest, pk: int) -> JsonResponse:
    """The deployment page polls this every few seconds, and refetches its live sections when it changes."""
    actor = Actor.from_request(request)
    try:
        deployment = selectors.deployment_get(actor=actor, pk=pk)
    except NotFound as exc:
        return JsonResponse(exc.as_dict(), status=404)
    variants = list(selectors.variant_list(deployment=deployment, include_retired=False))
    replicas = list(selectors.replica_list(deployment=deployment))
    last = selectors.event_list(deployment=deployment).values_list("pk", flat=True).first()
    return JsonResponse(_status_payload(deployment, variants, replicas, last))


def _action_refused(request: HttpRequest, actor: Actor, deployment: Deployment, exc: ServiceError,
                    **forms) -> HttpResponse:
    """An action the service refused: the deployment page again, the refusal above the action's form."""
    deployment = _get_deployment(actor, deployment.pk)  # as it is now, not as the refused change left the object
    context = _detail_context(request, actor, deployment, **forms)
    context["action_error"] = exc.message
    return render(request, "deployments/deployment_detail.html", context, status=exc.status)


@login_required
@require_POST
def deployment_rollout(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    if not has_perm(actor, "deployment.update", deployment):
        return _forbidden(request, "Rolling out a version needs the ML engineer or team admin role in the "
                                   "deployment's team (deployment.update).")
    live = {v.model_version_id for v in deployment.active_variants if v.role != Variant.Role.STANDBY}
    versions = [v for v in _deployable_versions(actor, model_id=deployment.model_id) if v.pk not in live]
    form = RolloutForm(request.POST, versions=versions, strategy=deployment.strategy)
    if form.is_valid():
        try:
            services.deployment_rollout_start(actor=actor, deployment_id=deployment.pk,
                                              model_version_id=form.cleaned_data["model_version"],
                                              strategy=form.cleaned_data["strategy"])
        except ServiceError as exc:
            apply_service_error(form, exc)
            return _action_refused(request, actor, deployment, exc, rollout_form=form)
        messages.success(request, "Rollout started; the timeline below follows it.")
        return redirect("deployments:deployment_detail", pk=deployment.pk)
    context = _detail_context(request, actor, deployment, rollout_form=form)
    return render(request, "deployments/deployment_detail.html", context, status=400)


def _reason_action(request: HttpRequest, pk: int, *, verb: str, refusal: str, prefix: str, act, done: str
                   ) -> HttpResponse:
    """A POST with a reason (rollback, stop): the permission, the form, the service, then back to the page."""
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    if not has_perm(actor, verb, deployment):
        return _forbidden(request, refusal)
    form = ReasonForm(request.POST, prefix=prefix)
    if form.is_valid():
        try:
            act(actor=actor, deployment_id=deployment.pk, reason=form.cleaned_data["reason"])
        except ServiceError as exc:
            apply_service_error(form, exc)
            return _action_refused(request, actor, deployment, exc, **{f"{prefix}_form": form})
        messages.success(request, done.format(name=deployment.name))
        return redirect("deployments:deployment_detail", pk=deployment.pk)
    context = _detail_context(request, actor, deployment, **{f"{prefix}_form": form})
    return render(request, "deployments/deployment_detail.html", context, status=400)


@login_required
@require_POST
def deployment_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    return _reason_action(
        request, pk, verb="deployment.rollback", prefix="rollback", act=services.deployment_rollback,
        refusal="Rolling back needs the ML engineer or team admin role in the deployment's team "
                "(deployment.rollback).",
        done="Rollback started; the timeline below follows it.")


@login_required
@require_POST
def deployment_stop(request: HttpRequest, pk: int) -> HttpResponse:
    return _reason_action(
        request, pk, verb="deployment.update", prefix="stop", act=services.deployment_stop,
        refusal="Stopping a deployment needs the ML engineer or team admin role in its team (deployment.update).",
        done="{name} is stopping: the gateway refuses its requests now.")


@login_required
@require_POST
def deployment_start(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    if not has_perm(actor, "deployment.update", deployment):
        return _forbidden(request, "Starting a deployment needs the ML engineer or team admin role in its team "
                                   "(deployment.update).")
    try:
        services.deployment_start(actor=actor, deployment_id=deployment.pk)
    except ServiceError as exc:
        return _action_refused(request, actor, deployment, exc)
    messages.success(request, f"{deployment.name} is starting.")
    return redirect("deployments:deployment_detail", pk=deployment.pk)


@login_required
def deployment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    if not has_perm(actor, "deployment.update", deployment):
        return _forbidden(request, "Changing a deployment's settings needs the ML engineer or team admin role in "
                                   "its team (deployment.update).")
    form = DeploymentUpdateForm(posted(request), initial=DeploymentUpdateForm.initial_from(deployment))
    error = None
    if request.method == "POST" and form.is_valid():
        changes = form.changes_from(deployment)
        if not changes:
            messages.info(request, "Nothing changed.")
            return redirect("deployments:deployment_detail", pk=deployment.pk)
        try:
            services.deployment_update(actor=actor, deployment_id=deployment.pk, **changes)
        except ServiceError as exc:
            error = exc
            apply_service_error(form, exc)
        else:
            messages.success(request, f"Settings of {deployment.name} saved; the gateway gets them within a "
                                      "reconcile pass.")
            return redirect("deployments:deployment_detail", pk=deployment.pk)
    return render(request, "deployments/deployment_edit.html", {"deployment": deployment, "form": form},
                  status=form_status(form, error))


@login_required
@require_POST
def deployment_try(request: HttpRequest, pk: int) -> JsonResponse:
    """The "try it" box: one request through the gateway (apps.deployments.console); JSON in, JSON out.

    The gateway's own answer (any status) comes back as ``{"status", "latency_ms", "request_id", "body"}``
    with 200; a refusal here (bad JSON, no permission, the gateway not answering) is the API's error shape
    with its status."""
    from apps.deployments.console import console_invoke

    actor = Actor.from_request(request)
    try:
        deployment = selectors.deployment_get(actor=actor, pk=pk)
    except NotFound as exc:
        return JsonResponse(exc.as_dict(), status=404)
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except ValueError as exc:
            return JsonResponse({"error": {"code": "invalid", "message": f"payload: Not valid JSON: {exc}.",
                                           "fields": {"payload": [f"Not valid JSON: {exc}."]}}}, status=400)
        payload = body.get("payload") if isinstance(body, dict) else None
    else:
        payload = request.POST.get("payload")
    if payload in (None, ""):
        return JsonResponse({"error": {"code": "required", "message": "payload: This field is required.",
                                       "fields": {"payload": ["This field is required."]}}}, status=400)
    try:
        answer = console_invoke(actor=actor, deployment=deployment, payload=payload)
    except ServiceError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    return JsonResponse({"status": answer.status, "latency_ms": answer.latency_ms,
                         "request_id": answer.request_id, "body": answer.body})


# ------------------------------------------------------------------------------------------------ replicas

@login_required
def replica_output(request: HttpRequest, pk: int, replica_id: int) -> HttpResponse:
    """The last lines a model server wrote (stdout and stderr): why it crashed, what it is doing."""
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    try:
        replica = selectors.replica_get(deployment=deployment, pk=replica_id)
    except NotFound:
        raise Http404 from None
    output, unavailable = "", ""
    try:
        from apps.deployments.replicas import replica_log_tail
    except ImportError:
        unavailable = "Replica output is not available in this installation (apps.deployments.replicas is missing)."
    else:
        try:
            output = replica_log_tail(replica=replica) or ""
        except OSError as exc:
            unavailable = f"The output could not be read: {exc.strerror or exc}."
    return render(request, "deployments/replica_output.html", {
        "deployment": deployment, "replica": replica, "output": output, "unavailable": unavailable,
        "auto": request.GET.get("auto") == "1",
    })


# ------------------------------------------------------------------------------------------------ keys

@never_cache  # the page shows a new key once; no browser or proxy cache may keep it
@login_required
def key_list(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    can_manage = has_perm(actor, "deployment.key_manage", deployment)
    form = DeploymentKeyForm(posted(request)) if can_manage else None
    new_key = new_record = error = None
    if request.method == "POST":
        if not can_manage:
            return _forbidden(request, "Managing keys needs the ML engineer or team admin role in the deployment's "
                                       "team (deployment.key_manage).")
        if form.is_valid():
            # The key is in this response only and stored nowhere (not in the session, not in a URL). A reload
            # re-posts the form; its one-time nonce makes that a no-op instead of a second key.
            nonce = form.cleaned_data.get("nonce")
            if nonce and not cache.add(f"deploymentkeyform:{actor.user_id}:{nonce}", 1, 24 * 60 * 60):
                messages.info(request, "That form was already submitted: the key exists and was shown once. Revoke "
                                       "it and create another if you did not copy it.")
                return redirect("deployments:key_list", pk=deployment.pk)
            try:
                new_record, new_key = services.deploymentkey_create(
                    actor=actor, deployment_id=deployment.pk, name=form.cleaned_data["name"],
                    expires_at=form.cleaned_data["expires_at"])
            except ServiceError as exc:
                error = exc
                apply_service_error(form, exc)
            else:
                form = DeploymentKeyForm()
    now = timezone.now()
    keys = list(selectors.key_list(deployment=deployment))
    for key in keys:
        key.state = ("revoked" if key.revoked_at else
                     "expired" if key.expires_at is not None and key.expires_at <= now else "active")
    return render(request, "deployments/key_list.html", {
        "deployment": deployment, "keys": keys, "form": form, "can_manage": can_manage,
        "new_key": new_key, "new_record": new_record, "gateway_url": gateway_base_url(),
    }, status=form_status(form, error) if request.method == "POST" else 200)


@login_required
@require_POST
def key_revoke(request: HttpRequest, pk: int, key_id: int) -> HttpResponse:
    actor = Actor.from_request(request)
    deployment = _get_deployment(actor, pk)
    try:
        key = selectors.key_get(deployment=deployment, pk=key_id)
    except NotFound:
        raise Http404 from None
    if not has_perm(actor, "deployment.key_manage", deployment):
        return _forbidden(request, "Revoking keys needs the ML engineer or team admin role in the deployment's "
                                   "team (deployment.key_manage).")
    try:
        services.deploymentkey_revoke(actor=actor, key_id=key.pk)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Key {key.name} ({key.prefix}) revoked: the gateway refuses it as soon as it "
                                  "has the new route.")
    return redirect("deployments:key_list", pk=deployment.pk)


# ------------------------------------------------------------------------------------------------ environments

@login_required
def environment_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    return render(request, "deployments/environment_list.html", {
        "environments": selectors.environment_list(actor=actor),
        "can_manage": has_perm(actor, "environment.manage"),
    })


def _environment_form_page(request: HttpRequest, actor: Actor, env: Environment | None) -> HttpResponse:
    if not has_perm(actor, "environment.manage"):
        return _forbidden(request, "Environments are managed by platform admins (environment.manage).")
    initial = {}
    if env is not None:
        initial = {"name": env.name, "description": env.description, "backend": env.backend,
                   "backend_settings": json.dumps(env.backend_settings or {}, indent=2),
                   "is_production": env.is_production}
    form = EnvironmentForm(posted(request), initial=initial, editing=env is not None)
    error = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if env is None:
                env = services.environment_create(
                    actor=actor, name=data["name"], backend=data["backend"], description=data["description"],
                    backend_settings=data["backend_settings"], is_production=data["is_production"])
                messages.success(request, f"Environment {env.name} created.")
            else:
                services.environment_update(
                    actor=actor, environment_id=env.pk, description=data["description"], backend=data["backend"],
                    backend_settings=data["backend_settings"], is_production=data["is_production"])
                messages.success(request, f"Environment {env.name} saved.")
        except ServiceError as exc:
            error = exc
            apply_service_error(form, exc)
        else:
            return redirect("deployments:environment_list")
    return render(request, "deployments/environment_form.html", {"form": form, "environment": env},
                  status=form_status(form, error))


@login_required
def environment_create(request: HttpRequest) -> HttpResponse:
    return _environment_form_page(request, Actor.from_request(request), None)


@login_required
def environment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        env = selectors.environment_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404 from None
    return _environment_form_page(request, actor, env)

