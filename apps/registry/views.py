"""The registry pages: models, versions (card, lineage, scan, signature, profile, aliases), registering, and
MLflow's experiments and runs.

Every change goes through apps.registry.services; reads of our rows go through apps.registry.selectors.
Experiments and runs live in MLflow only, and MLflow has no teams: whoever holds ``experiment.view`` in some
team browses them all, as they could in the MLflow UI itself. When MLflow is down, a page says so with a 503.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from apps.accounts.selectors import team_list
from apps.core.actors import Actor
from apps.core.errors import NotFound, ServiceError, ServiceUnavailable
from apps.core.forms import apply_service_error, form_status, posted
from apps.core.permissions import has_perm, team_ids_with
from apps.core.selectors import page_by_name
from apps.registry import mlflow_adapter as mlf
from apps.registry import selectors, services
from apps.registry.card_export import CONTENT_SECURITY_POLICY, card_document, card_html
from apps.registry.forms import (
    AliasForm,
    AliasRemoveForm,
    ArchiveForm,
    ModelCardForm,
    ModelFilterForm,
    ModelUpdateForm,
    RegisterFromRunForm,
    ScanOverrideForm,
    UploadForm,
    format_key_values,
)
from apps.registry.models import (
    AliasAssignment,
    ArtifactScan,
    ModelCard,
    ModelUpload,
    ModelVersion,
    RegisteredModel,
    RiskTier,
    ScanFinding,
)
from apps.registry.uploads import limited_upload_handlers, too_large_error, upload_too_large

MODELS_PAGE_SIZE = 25
RUNS_PAGE_SIZE = 50
EXPERIMENTS_PAGE_SIZE = 50
COMPARE_MAX_RUNS = 10
HISTORY_CHART_MAX_METRICS = 8
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
EXPERIMENT_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
SEARCH_TEXT_RE = re.compile(r"^[A-Za-z0-9 _.\-/]{0,128}$")

# Plotly colours per lineage node kind (the legend on the page repeats them in words).
NODE_COLOURS = {"version": "#3b5bdb", "replaces": "#868e96", "run": "#2b8a3e", "experiment": "#0b7285",
                "params": "#e67700", "dataset": "#862e9c", "commit": "#495057"}


def _forbidden(request: HttpRequest, message: str | None = None) -> HttpResponse:
    return render(request, "403.html", {"message": message} if message else {}, status=403)


def _unavailable(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    return render(request, "registry/unavailable.html", {"message": exc.message}, status=503)


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return default


def _register_teams(actor: Actor):
    """The teams in which the actor may register models (for the team choice of the register forms)."""
    ids = team_ids_with(actor, "model.register")
    teams = team_list(actor=actor)
    return list(teams if ids is None else teams.filter(pk__in=ids))


@dataclass
class _Submitted:
    """What a posted form's service call came to: ``done`` with its ``result``, or the service's ``error``
    (already put on the form). Neither: the form was not posted, or is invalid."""

    done: bool = False
    result: Any = None
    error: ServiceError | None = None


def _submit(request: HttpRequest, form, call: Callable[[dict], Any]) -> _Submitted:
    """For a valid POST, run ``call(form.cleaned_data)`` (a service); a refusal goes on the form, next to the
    fields it names. The page then answers with ``form_status(form, outcome.error)``."""
    if form is None or request.method != "POST" or not form.is_valid():
        return _Submitted()
    try:
        return _Submitted(done=True, result=call(form.cleaned_data))
    except ServiceError as exc:
        apply_service_error(form, exc)
        return _Submitted(error=exc)


def _button(request: HttpRequest, *, allowed: bool, call: Callable[[], Any], success: str,
            target: str) -> HttpResponse:
    """A POST-only button (scan again, retry an upload): the service, its outcome as a message, back to ``target``."""
    if not allowed:
        return _forbidden(request)
    try:
        call()
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, success)
    return redirect(target)


def _polled(request: HttpRequest, load: Callable[[Actor], Any], describe: Callable[[Any], dict]) -> JsonResponse:
    """What a page's script polls while a worker is busy: ``describe(load(actor))`` as JSON, or a 404."""
    try:
        found = load(Actor.from_request(request))
    except NotFound:
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    return JsonResponse(describe(found))


def _get_model(actor: Actor, pk: int) -> RegisteredModel:
    try:
        return selectors.registeredmodel_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404 from None


def _get_version(actor: Actor, pk: int) -> ModelVersion:
    try:
        return selectors.modelversion_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404 from None


# ------------------------------------------------------------------------------------------------ models

def _url_prefix(name: str) -> str:
    """The URL of ``name`` for pk 0 without its trailing "0/": rows add their own pk by formatting."""
    url = reverse(name, args=[0])
    assert url.endswith("/0/"), url
    return url[:-2]


def _clip(text: str, limit: int) -> str:
    """truncatechars without the template engine (same result for plain text)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _model_rows(models: list[RegisteredModel]) -> list[dict]:
    """What each row of the model list shows, computed in Python: {% url %}, truncatechars, date and an
    {% include %} per row cost the template engine ~0.4 ms a row, most of the page (benchmarks/registry.py)."""
    model_url, version_url = _url_prefix("registry:model_detail"), _url_prefix("registry:version_detail")
    aliases: dict[int, list[tuple[str, int]]] = {}
    for model_id, alias, number in (AliasAssignment.objects.filter(model_id__in=[m.pk for m in models],
                                                                   removed_at__isnull=True)
                                    .order_by("alias").values_list("model_id", "alias", "version__version")):
        aliases.setdefault(model_id, []).append((alias, number))
    tiers = dict(RiskTier.choices)
    rows = []
    for m in models:
        updated = timezone.localtime(m.updated_at)
        rows.append({
            "name": m.name, "url": f"{model_url}{m.pk}/", "archived": m.archived_at is not None,
            "description": _clip(m.description, 80), "team": m.team.name, "risk_tier": m.risk_tier,
            "risk_tier_label": tiers.get(m.risk_tier, m.risk_tier),
            "latest_url": f"{version_url}{m.latest_pk}/" if m.latest_pk else "",
            "latest_version": m.latest_number, "latest_status": m.latest_status,
            "versions_label": f"{m.version_count} version{'' if m.version_count == 1 else 's'}",
            "aliases": aliases.get(m.pk, []),
            "tags": [f"{k}={_clip(str(v), 30)}" for k, v in (m.tags or {}).items()],
            "updated_iso": updated.isoformat(), "updated": updated.strftime("%Y-%m-%d %H:%M"),
        })
    return rows


@login_required
def model_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    if not has_perm(actor, "model.view"):
        return _forbidden(request)
    teams = list(team_list(actor=actor))
    form = ModelFilterForm(request.GET or None, teams=teams)
    rows, next_after, status = [], None, 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        filters = {k: v for k, v in (form.cleaned_data if form.is_bound else {}).items() if v not in (None, "")}
        after = filters.pop("after", "")
        # Correlated subqueries touch only the page's rows (each an index scan on (model, version)); a join +
        # GROUP BY counted every version of every visible model before the LIMIT (benchmarks/registry.py:
        # 16 ms -> 0.3 ms of SQL at 1000 x 10). Only the columns the rows show: versions and aliases carry
        # JSON (lineage, signature, input example) that the list never reads.
        versions = ModelVersion.objects.filter(model_id=OuterRef("pk"))
        per_model = versions.order_by().values("model_id").annotate(n=Count("id")).values("n")
        newest = versions.order_by("-version")
        qs = (selectors.registeredmodel_list(actor=actor, filters=filters)
              .select_related(None).select_related("team").prefetch_related(None)
              .only("pk", "name", "description", "archived_at", "risk_tier", "tags", "updated_at", "team__name")
              .annotate(version_count=Coalesce(Subquery(per_model, output_field=IntegerField()), 0),
                        latest_pk=Subquery(newest.values("pk")[:1]),
                        latest_number=Subquery(newest.values("version")[:1]),
                        latest_status=Subquery(newest.values("status")[:1]))
              .order_by("name"))
        models, next_after = page_by_name(qs, after=after, size=MODELS_PAGE_SIZE)
        rows = _model_rows(models)
    query = request.GET.copy()
    query.pop("after", None)
    sync_report = cache.get("registry:sync:last") if actor.is_platform_admin else None
    return render(request, "registry/model_list.html", {
        "form": form, "rows": rows, "next_after": next_after, "query": query.urlencode(),
        "filtered": any(v for k, v in request.GET.items() if k != "after"), "paged": bool(request.GET.get("after")),
        "can_register": has_perm(actor, "model.register"),
        "unclaimed": (sync_report or {}).get("unclaimed") or [],
    }, status=status)


@login_required
def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    model = _get_model(actor, pk)
    versions = list(selectors.modelversion_list(actor=actor, model_id=model.pk).order_by("-version"))
    history = list(selectors.alias_history(model=model))
    current = [a for a in history if a.removed_at is None]
    aliases_by_version: dict[int, list[str]] = {}
    for a in current:
        aliases_by_version.setdefault(a.version_id, []).append(a.alias)
    for v in versions:
        v.current_aliases = sorted(aliases_by_version.get(v.pk, []))
    can_alias = has_perm(actor, "alias.set", model)
    ready = [v for v in versions if v.status == ModelVersion.Status.READY]
    return render(request, "registry/model_detail.html", {
        "model": model, "versions": versions, "alias_history": history, "current_aliases": current,
        "can_register": has_perm(actor, "model.register", model) and model.archived_at is None,
        "can_update": has_perm(actor, "model.update", model), "can_alias": can_alias,
        "alias_form": AliasForm(versions=ready) if can_alias and ready else None,
        "production_aliases": settings.MODELPLANE_PRODUCTION_ALIASES,
        "alias_drift": selectors.alias_drift_recent(model=model),
    })


@login_required
def model_edit(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    model = _get_model(actor, pk)
    if not has_perm(actor, "model.update", model):
        return _forbidden(request)
    initial = {"risk_tier": model.risk_tier, "description": model.description, "tags": format_key_values(model.tags)}
    form = ModelUpdateForm(posted(request), initial=initial)
    outcome = _submit(request, form, lambda data: services.registeredmodel_update(actor=actor, model_id=model.pk,
                                                                                  **data))
    if outcome.done:
        messages.success(request, f"{model.name} updated.")
        return redirect("registry:model_detail", pk=model.pk)
    return render(request, "registry/model_edit.html", {"model": model, "form": form},
                  status=form_status(form, outcome.error))


# ------------------------------------------------------------------------------------------------ registering

def _register_context(actor: Actor, request: HttpRequest) -> dict:
    """The team choices, preselecting the team the user works in (the shell's team switcher), as the top bar does."""
    teams = _register_teams(actor)
    current = request.session.get("current_team_id")
    if current not in {t.pk for t in teams}:
        current = teams[0].pk if teams else None
    return {"teams": teams, "current_team_id": current}


@login_required
def register(request: HttpRequest) -> HttpResponse:
    """Register the model a run logged: ``runs:/<run_id>/<artifact_path>``."""
    actor = Actor.from_request(request)
    if not has_perm(actor, "model.register"):
        return _forbidden(request, "Registering models needs the data scientist, ML engineer or team admin role "
                                   "in a team (model.register).")
    initial = {k: request.GET[k] for k in ("model_name", "run_id", "artifact_path") if request.GET.get(k)}
    form = RegisterFromRunForm(posted(request), initial=initial, **_register_context(actor, request))
    outcome = _submit(request, form, lambda data: services.modelversion_register_from_run(
        actor=actor, run_id=data["run_id"], artifact_path=data["artifact_path"], **form.service_kwargs()))
    if outcome.done:
        messages.success(request, f"Registered {outcome.result}. Its artifacts are being scanned.")
        return redirect("registry:version_detail", pk=outcome.result.pk)
    return render(request, "registry/register.html", {"form": form, "mode": "run"},
                  status=form_status(form, outcome.error))


@csrf_exempt  # the upload handlers must be set before CSRF's check reads the body; _upload checks CSRF itself
@login_required
def upload(request: HttpRequest) -> HttpResponse:
    """Register an uploaded MLflow model zip or scikit-learn file, streamed to disk with a size limit."""
    actor = Actor.from_request(request)
    if not has_perm(actor, "model.register"):
        return _forbidden(request, "Registering models needs the data scientist, ML engineer or team admin role "
                                   "in a team (model.register).")
    request.upload_handlers = limited_upload_handlers(request)
    return _upload(request, actor)


@csrf_protect
def _upload(request: HttpRequest, actor: Actor) -> HttpResponse:
    initial = {"model_name": request.GET["model_name"]} if request.GET.get("model_name") else {}
    context = _register_context(actor, request)
    if request.method != "POST":
        return render(request, "registry/register.html", {"form": UploadForm(initial=initial, **context),
                                                          "mode": "upload"})
    files = request.FILES  # parses the body now, through the limited handlers, so that the limit is known
    if upload_too_large(request):
        form = UploadForm(request.POST, **context)
        form.is_valid()
        exc = too_large_error()
        form.errors.pop("file", None)
        form.add_error("file", exc.message.removeprefix("file: "))
        return render(request, "registry/register.html", {"form": form, "mode": "upload"}, status=413)
    form = UploadForm(request.POST, files, **context)
    try:
        outcome = _submit(request, form, lambda data: services.modelupload_receive(
            actor=actor, upload_path=Path(data["file"].temporary_file_path()), filename=data["file"].name,
            **form.service_kwargs()))
    finally:
        for uploaded in files.values():
            uploaded.close()
    if outcome.done:
        received = outcome.result
        messages.success(request, f"Uploaded {received.filename}. It is being logged to MLflow and registered "
                                  f"as the next version of {received.model_name}.")
        target = reverse("registry:upload_detail", args=[received.pk])
        if request.headers.get("X-Requested-With") == "XMLHttpRequest":
            # The page's upload script navigates itself; a redirect would be followed by the XHR, which
            # would take the success message meant for the page.
            return JsonResponse({"redirect": target})
        return redirect(target)
    return render(request, "registry/register.html", {"form": form, "mode": "upload"},
                  status=form_status(form, outcome.error))


def _get_upload(actor: Actor, pk: int):
    try:
        return selectors.modelupload_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404 from None


@login_required
def upload_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """An upload on its way to a version: the page polls upload_status while the worker logs and registers it,
    then links to the version; a failed one shows why and offers a retry."""
    actor = Actor.from_request(request)
    upload = _get_upload(actor, pk)
    return render(request, "registry/upload_detail.html", {
        "upload": upload, "pending": upload.status in (ModelUpload.Status.RECEIVED, ModelUpload.Status.LOGGING),
        "can_retry": (upload.status == ModelUpload.Status.FAILED and bool(upload.file_path)
                      and has_perm(actor, "model.register", upload)),
    })


@login_required
def upload_status(request: HttpRequest, pk: int) -> JsonResponse:
    """The upload page polls this until the upload is registered or failed."""
    return _polled(request, lambda actor: selectors.modelupload_get(actor=actor, pk=pk), lambda upload: {
        "status": upload.status, "error": upload.error or None,
        "version_url": reverse("registry:version_detail", args=[upload.version_id]) if upload.version_id else None,
    })


@login_required
@require_POST
def upload_retry(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    upload = _get_upload(actor, pk)
    return _button(request, allowed=has_perm(actor, "model.register", upload),
                   call=lambda: services.modelupload_retry(actor=actor, upload_id=upload.pk),
                   success=f"{upload.filename} is queued again.",
                   target=reverse("registry:upload_detail", args=[upload.pk]))


# ------------------------------------------------------------------------------------------------ aliases

@login_required
def aliases(request: HttpRequest, pk: int) -> HttpResponse:
    """A model's aliases: who holds which now, the full history, and the form to set or move one."""
    actor = Actor.from_request(request)
    model = _get_model(actor, pk)
    can_alias = has_perm(actor, "alias.set", model)
    if request.method == "POST" and not can_alias:
        return _forbidden(request)
    ready = _ready_versions(model)
    form = None
    if can_alias:
        form = (AliasForm(request.POST, versions=ready) if request.method == "POST"
                else AliasForm(versions=ready, initial={"version": request.GET.get("version")}))
    outcome = _submit(request, form, lambda data: services.alias_set(actor=actor, model_id=model.pk,
                                                                     alias=data["alias"], version=data["version"]))
    if outcome.done:
        messages.success(request, f"{form.cleaned_data['alias']} now points at "
                                  f"{model.name} v{form.cleaned_data['version']}.")
        return redirect(_next_url(request, reverse("registry:aliases", args=[model.pk])))
    return _aliases_page(request, model, form=form, ready=ready, can_alias=can_alias,
                         status=form_status(form, outcome.error))


def _ready_versions(model: RegisteredModel) -> list[ModelVersion]:
    return list(model.versions.filter(status=ModelVersion.Status.READY).order_by("-version"))


def _aliases_page(request: HttpRequest, model: RegisteredModel, *, form, ready: list[ModelVersion],
                  can_alias: bool, status: int) -> HttpResponse:
    history = list(selectors.alias_history(model=model))
    return render(request, "registry/aliases.html", {
        "model": model, "form": form, "ready_versions": ready, "alias_history": history,
        "current_aliases": [a for a in history if a.removed_at is None], "can_alias": can_alias,
        "production_aliases": settings.MODELPLANE_PRODUCTION_ALIASES,
        "next": _next_url(request, ""),
    }, status=status)


@login_required
@require_POST
def alias_remove(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    model = _get_model(actor, pk)
    if not has_perm(actor, "alias.set", model):
        return _forbidden(request)
    form = AliasRemoveForm(request.POST)
    if form.is_valid():
        try:
            services.alias_remove(actor=actor, model_id=model.pk, alias=form.cleaned_data["alias"])
        except ServiceError as exc:
            messages.error(request, exc.message)
            status = exc.status
        else:
            messages.success(request, f"Alias {form.cleaned_data['alias']} removed from {model.name}.")
            return redirect(_next_url(request, reverse("registry:aliases", args=[model.pk])))
    else:
        status = 400
        messages.error(request, "alias: " + " ".join(form.errors.get("alias", ["This field is required."])))
    ready = _ready_versions(model)
    return _aliases_page(request, model, form=AliasForm(versions=ready), ready=ready, can_alias=True, status=status)


# ------------------------------------------------------------------------------------------------ versions

def _card_state(version: ModelVersion, card: ModelCard | None) -> dict:
    tier = version.model.risk_tier
    required = list(ModelCard.REQUIRED_BY_TIER.get(tier, ()))
    missing = card.missing_fields(tier) if card is not None else required
    return {"required": required, "missing": missing, "complete": not missing}


def _lineage_figure(graph: dict, version: ModelVersion) -> dict:
    """A left-to-right network of the lineage nodes as Plotly scatter traces (edges, then nodes)."""
    columns: dict[str, int] = {"replaces": 0, "version": 1, "run": 2}
    placed: dict[str, tuple[float, float]] = {}
    right = [n for n in graph["nodes"] if n["id"] not in columns]
    for node in graph["nodes"]:
        if node["id"] in columns:
            placed[node["id"]] = (columns[node["id"]], 0.0)
    span = max(len(right) - 1, 1)
    for i, node in enumerate(right):
        placed[node["id"]] = (3, (span / 2 - i) if len(right) > 1 else 0.0)
    edge_x, edge_y, label_x, label_y, label_text = [], [], [], [], []
    for edge in graph["edges"]:
        (x0, y0), (x1, y1) = placed[edge["from"]], placed[edge["to"]]
        edge_x += [x0, x1, None]
        edge_y += [y0, y1, None]
        label_x.append((x0 + x1) / 2)
        label_y.append((y0 + y1) / 2)
        label_text.append(edge["label"])
    xs, ys, texts, hovers, colours, links, positions = [], [], [], [], [], [], []
    for node in graph["nodes"]:
        x, y = placed[node["id"]]
        kind = "replaces" if node["id"] == "replaces" else node["kind"]
        xs.append(x)
        ys.append(y)
        texts.append(_short(str(node.get("label") or node["id"]), 34))
        hovers.append(_node_hover(node))
        colours.append(NODE_COLOURS.get(kind, "#495057"))
        links.append(_node_link(node, version))
        # Neighbouring columns put their labels on opposite sides, so that long names do not run into each other.
        positions.append("top center" if x in (0, 2) else "bottom center")
    height = 170 if len(right) <= 1 else 70 * len(right) + 80
    left = min(x for x, _ in placed.values())
    return {
        "data": [
            {"type": "scatter", "mode": "lines", "x": edge_x, "y": edge_y, "hoverinfo": "skip",
             "line": {"color": "#adb5bd", "width": 1.5}, "showlegend": False},
            {"type": "scatter", "mode": "text", "x": label_x, "y": label_y, "text": label_text,
             "textfont": {"size": 10, "color": "#868e96"}, "hoverinfo": "skip", "showlegend": False},
            {"type": "scatter", "mode": "markers+text", "x": xs, "y": ys, "text": texts,
             "textposition": positions, "hovertext": hovers, "hoverinfo": "text", "customdata": links,
             "marker": {"size": 22, "color": colours, "line": {"color": "#fff", "width": 2}},
             "textfont": {"size": 12}, "showlegend": False},
        ],
        "layout": {
            "height": height, "margin": {"l": 20, "r": 20, "t": 10, "b": 10}, "hovermode": "closest",
            "xaxis": {"visible": False, "range": [left - 0.5, 3.8]}, "yaxis": {"visible": False,
                                                                         "range": [-(span / 2) - 0.8, span / 2 + 0.5]},
            "plot_bgcolor": "rgba(0,0,0,0)", "paper_bgcolor": "rgba(0,0,0,0)", "dragmode": False,
        },
    }


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _node_hover(node: dict) -> str:
    kind = node["kind"]
    if kind == "params":
        lines = [f"{k} = {v}" for k, v in list((node.get("params") or {}).items())[:8]]
        lines += [f"{k}: {_fmt(v)}" for k, v in list((node.get("metrics") or {}).items())[:8]]
        return "<br>".join(lines) or node["label"]
    if kind == "dataset":
        source = node.get("source")
        where = source.get("uri") if isinstance(source, dict) else source
        return f"{node.get('name')}<br>digest {node.get('digest')}<br>{node.get('source_type')}: {where}"
    if kind == "commit":
        return f"commit {node.get('commit')}<br>{node.get('repo') or ''}"
    return str(node.get("label"))


def _node_link(node: dict, version: ModelVersion) -> str:
    if node["id"] == "run" and node.get("run_id"):
        return reverse("registry:run_detail", args=[node["run_id"]])
    if node["id"] == "experiment" and node.get("experiment_id"):
        return reverse("registry:experiment_detail", args=[node["experiment_id"]])
    if node["id"] == "replaces" and node.get("version_id"):
        return reverse("registry:version_detail", args=[node["version_id"]])
    return ""


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@login_required
def version_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    version = _get_version(actor, pk)
    model = version.model
    card = selectors.modelcard_current(version=version)
    scan = selectors.scan_latest(version=version)
    findings = _sorted_findings(scan)
    history = list(selectors.alias_history(model=model).filter(version=version))
    graph = selectors.lineage_graph(version=version)
    lineage = version.lineage or {}
    can_alias = has_perm(actor, "alias.set", model)
    alias_form = None
    if can_alias and version.status == ModelVersion.Status.READY:
        ready = list(model.versions.filter(status=ModelVersion.Status.READY).order_by("-version"))
        alias_form = AliasForm(versions=ready, initial={"version": version.version})
    profile = selectors.profile_latest(version=version)
    return render(request, "registry/version_detail.html", {
        "version": version, "model": model, "card": card, "card_state": _card_state(version, card),
        "scan": scan, "findings": findings, "earlier_scans": list(version.scans.order_by("-created_at")[1:6]),
        "alias_history": history, "current_aliases": [a for a in history if a.removed_at is None],
        "lineage": lineage, "lineage_graph": graph, "lineage_figure": _lineage_figure(graph, version),
        "datasets": lineage.get("datasets") or [], "profile": profile,
        "profile_features": sorted((profile.features or {}).items()) if profile else [],
        "can_update": has_perm(actor, "model.update", model), "can_alias": can_alias, "alias_form": alias_form,
        "can_rescan": has_perm(actor, "model.register", model) and version.status != ModelVersion.Status.ARCHIVED,
        "can_override": has_perm(actor, "scan.override", model),
        "scan_pending": version.status == ModelVersion.Status.PENDING_SCAN or (
            scan is not None and scan.status in (ArtifactScan.Status.QUEUED, ArtifactScan.Status.RUNNING)),
        "production_aliases": settings.MODELPLANE_PRODUCTION_ALIASES,
    })


def _sorted_findings(scan: ArtifactScan | None) -> list:
    if scan is None:
        return []
    order = ScanFinding.SEVERITIES
    return sorted(scan.findings.all(), key=lambda f: (order.index(f.severity) if f.severity in order else 9, f.pk))


@login_required
def scan_status(request: HttpRequest, pk: int) -> JsonResponse:
    """The version page polls this while a scan is queued or running."""
    return _polled(request, lambda actor: selectors.modelversion_get(actor=actor, pk=pk), _scan_state)


def _scan_state(version: ModelVersion) -> dict:
    scan = selectors.scan_latest(version=version)
    return {
        "version": version.version, "status": version.status, "status_message": version.status_message,
        "scan": None if scan is None else {
            "id": scan.pk, "status": scan.status, "max_severity": scan.max_severity or None,
            "findings": scan.findings.count(), "files_scanned": scan.files_scanned,
            "finished_at": scan.finished_at.isoformat() if scan.finished_at else None},
    }


@login_required
@require_POST
def scan_request(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    version = _get_version(actor, pk)
    return _button(request, allowed=has_perm(actor, "model.register", version),
                   call=lambda: services.artifactscan_request(actor=actor, version_id=version.pk),
                   success=f"A new scan of {version} is queued.",
                   target=reverse("registry:version_detail", args=[version.pk]))


@login_required
def scan_override(request: HttpRequest, pk: int) -> HttpResponse:
    """A platform admin releases a version blocked by its scan, with a written justification (audited)."""
    actor = Actor.from_request(request)
    try:
        scan = selectors.artifactscan_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404 from None
    if not has_perm(actor, "scan.override", scan.version):
        return _forbidden(request, "Only a platform admin may release a version that its scan blocked "
                                   "(scan.override).")
    form = ScanOverrideForm(posted(request))
    outcome = _submit(request, form, lambda data: services.artifactscan_override(
        actor=actor, scan_id=scan.pk, justification=data["justification"]))
    if outcome.done:
        messages.success(request, f"{scan.version} released despite its scan; the justification is in the "
                                  "audit trail.")
        return redirect("registry:version_detail", pk=scan.version_id)
    return render(request, "registry/scan_override.html", {
        "scan": scan, "version": scan.version, "findings": _sorted_findings(scan), "form": form,
    }, status=form_status(form, outcome.error))


@login_required
def version_archive(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    version = _get_version(actor, pk)
    if not has_perm(actor, "model.update", version):
        return _forbidden(request)
    form = ArchiveForm(posted(request))
    outcome = _submit(request, form, lambda data: services.modelversion_archive(actor=actor, version_id=version.pk,
                                                                                reason=data["reason"]))
    if outcome.done:
        messages.success(request, f"{version} archived.")
        return redirect("registry:version_detail", pk=version.pk)
    return render(request, "registry/version_archive.html", {"version": version, "form": form},
                  status=form_status(form, outcome.error))


# ------------------------------------------------------------------------------------------------ cards

@login_required
def card_edit(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    version = _get_version(actor, pk)
    if not has_perm(actor, "model.update", version):
        return _forbidden(request)
    card = selectors.modelcard_current(version=version)
    form = ModelCardForm(posted(request), initial=ModelCardForm.initial_from(card))

    def revise(_data):
        changes = form.changes_from(card)
        return services.modelcard_revise(actor=actor, version_id=version.pk, changes=changes) if changes else None

    outcome = _submit(request, form, revise)
    if outcome.done and outcome.result is None:
        messages.info(request, "Nothing changed: the card keeps its revision.")
        return redirect("registry:version_detail", pk=version.pk)
    if outcome.done:
        messages.success(request, f"Model card revision {outcome.result.revision} saved.")
        return redirect(reverse("registry:version_detail", args=[version.pk]) + "#card")
    required = ModelCard.REQUIRED_BY_TIER.get(version.model.risk_tier, ())
    return render(request, "registry/card_edit.html", {
        "version": version, "card": card, "form": form, "required": required,
        "card_state": _card_state(version, card),
    }, status=form_status(form, outcome.error))


@login_required
def card_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The card as a document to hand on; the same JSON and HTML as the API's export (apps.registry.card_export)."""
    actor = Actor.from_request(request)
    version = _get_version(actor, pk)
    document = card_document(version=version, card=selectors.modelcard_current(version=version))
    stem = f"{version.model.name}-v{version.version}-model-card"
    if fmt == "json":
        response = JsonResponse(document, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="{stem}.json"'
        return response
    response = HttpResponse(card_html(document), content_type="text/html; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="{stem}.html"'
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


# ------------------------------------------------------------------------------------------------ experiments

def _experiment_gate(request: HttpRequest) -> tuple[Actor, HttpResponse | None]:
    actor = Actor.from_request(request)
    if not has_perm(actor, "experiment.view"):
        return actor, _forbidden(request, "Browsing MLflow experiments needs the data scientist, ML engineer or "
                                          "team admin role in a team (experiment.view).")
    return actor, None


@login_required
def experiment_list(request: HttpRequest) -> HttpResponse:
    _actor, refused = _experiment_gate(request)
    if refused:
        return refused
    q = request.GET.get("q", "").strip()
    token = request.GET.get("page_token") or None
    if not SEARCH_TEXT_RE.match(q) or (token and len(token) > 2000):
        return render(request, "registry/experiment_list.html", {
            "q": q, "experiments": [], "q_error": "Letters, digits, spaces, '_', '.', '-' or '/' only "
                                                  "(at most 128)."}, status=400)
    from mlflow.entities import ViewType

    try:
        with mlf.mlflow_call("listing experiments"):
            page = mlf.client().search_experiments(
                view_type=ViewType.ACTIVE_ONLY, max_results=EXPERIMENTS_PAGE_SIZE, page_token=token,
                filter_string=f"name ILIKE '%{q}%'" if q else None, order_by=["last_update_time DESC"])
    except ServiceUnavailable as exc:
        return _unavailable(request, exc)
    except ServiceError as exc:
        return render(request, "registry/experiment_list.html", {"q": q, "experiments": [],
                                                                 "q_error": exc.message}, status=exc.status)
    experiments = [{
        "id": e.experiment_id, "name": e.name,
        "created": mlf._ms_to_datetime(e.creation_time), "updated": mlf._ms_to_datetime(e.last_update_time),
        "tags": {k: v for k, v in (e.tags or {}).items() if not k.startswith("mlflow.")},
    } for e in page]
    return render(request, "registry/experiment_list.html", {
        "q": q, "experiments": experiments, "next_token": getattr(page, "token", None), "paged": bool(token),
    })


@login_required
def experiment_detail(request: HttpRequest, experiment_id: str) -> HttpResponse:
    _actor, refused = _experiment_gate(request)
    if refused:
        return refused
    if not EXPERIMENT_ID_RE.match(experiment_id):
        raise Http404
    token = request.GET.get("page_token") or None
    try:
        with mlf.mlflow_call(f"reading experiment {experiment_id}",
                             not_found=NotFound(f"MLflow has no experiment {experiment_id}.")):
            c = mlf.client()
            experiment = c.get_experiment(experiment_id)
            runs = c.search_runs([experiment_id], max_results=RUNS_PAGE_SIZE, page_token=token,
                                 order_by=["attributes.start_time DESC"])
    except NotFound:
        raise Http404 from None
    except ServiceError as exc:
        return _unavailable(request, exc)
    metric_keys: list[str] = []
    param_keys: list[str] = []
    for run in runs:
        for k in run.data.metrics:
            if k not in metric_keys:
                metric_keys.append(k)
        for k in run.data.params:
            if k not in param_keys:
                param_keys.append(k)
    metric_keys, param_keys = sorted(metric_keys)[:6], sorted(param_keys)[:4]
    rows = [{
        "id": r.info.run_id, "name": r.info.run_name or r.info.run_id[:8], "status": r.info.status,
        "start": mlf._ms_to_datetime(r.info.start_time), "user": r.info.user_id,
        "duration": _duration(r.info.start_time, r.info.end_time),
        "metrics": [_fmt(r.data.metrics[k]) if k in r.data.metrics else "" for k in metric_keys],
        "params": [r.data.params.get(k, "") for k in param_keys],
    } for r in runs]
    return render(request, "registry/experiment_detail.html", {
        "experiment": experiment, "runs": rows, "metric_keys": metric_keys, "param_keys": param_keys,
        "next_token": getattr(runs, "token", None), "paged": bool(token), "compare_max": COMPARE_MAX_RUNS,
        "colspan": 5 + len(param_keys) + len(metric_keys),
        "tags": {k: v for k, v in (experiment.tags or {}).items() if not k.startswith("mlflow.")},
    })


def _duration(start: int | None, end: int | None) -> str:
    if not start or not end:
        return ""
    seconds = max(0, (end - start) / 1000)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _artifacts(c, run_id: str) -> list[dict]:
    """The run's artifacts, two levels deep (MLflow lists one directory per call)."""
    out = []
    for item in c.list_artifacts(run_id)[:200]:
        out.append({"path": item.path, "is_dir": item.is_dir, "size": item.file_size, "depth": 0})
        if item.is_dir:
            for child in c.list_artifacts(run_id, item.path)[:50]:
                out.append({"path": child.path, "is_dir": child.is_dir, "size": child.file_size, "depth": 1})
    return out


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    actor, refused = _experiment_gate(request)
    if refused:
        return refused
    if not RUN_ID_RE.match(run_id):
        raise Http404
    try:
        with mlf.mlflow_call(f"reading run {run_id}", not_found=NotFound(f"MLflow has no run {run_id}.")):
            c = mlf.client()
            run = c.get_run(run_id)
            experiment = c.get_experiment(run.info.experiment_id)
            artifacts = _artifacts(c, run_id)
            # MLflow 3 keeps a logged model beside the run, not among its artifacts.
            logged_models = [m for m in c.search_logged_models(
                experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'",
                max_results=50) if m.source_run_id == run_id]
    except NotFound:
        raise Http404 from None
    except ServiceError as exc:
        return _unavailable(request, exc)
    tags = dict(run.data.tags)
    datasets = []
    for item in run.inputs.dataset_inputs or []:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), "")
        source = mlf._json_or_text(item.dataset.source)
        datasets.append({"name": item.dataset.name, "digest": item.dataset.digest, "context": context,
                         "source_type": item.dataset.source_type,
                         "source": source.get("uri", source) if isinstance(source, dict) else source})
    versions = selectors.modelversion_list(actor=actor).filter(run_id=run_id).order_by("model__name", "version")
    return render(request, "registry/run_detail.html", {
        "run": run, "experiment": experiment, "params": sorted(run.data.params.items()),
        "metrics": sorted((k, _fmt(v)) for k, v in run.data.metrics.items()),
        "user_tags": sorted((k, v) for k, v in tags.items() if not k.startswith("mlflow.")),
        "system_tags": sorted((k, v) for k, v in tags.items() if k.startswith("mlflow.")
                              and k != "mlflow.log-model.history"),
        "datasets": datasets, "artifacts": artifacts, "versions": versions,
        "logged_models": [{"name": m.name, "id": m.model_id, "status": str(m.status).rsplit(".", 1)[-1].lower(),
                           "created": mlf._ms_to_datetime(m.creation_timestamp)} for m in logged_models],
        "start": mlf._ms_to_datetime(run.info.start_time), "end": mlf._ms_to_datetime(run.info.end_time),
        "duration": _duration(run.info.start_time, run.info.end_time),
        "can_register": has_perm(actor, "model.register") and bool(
            logged_models or any(a["path"].rsplit("/", 1)[-1] == "MLmodel" for a in artifacts)),
    })


@login_required
def run_compare(request: HttpRequest) -> HttpResponse:
    """Runs side by side: parameters (differences marked), metrics, and Plotly charts of the metrics."""
    _actor, refused = _experiment_gate(request)
    if refused:
        return refused
    ids = list(dict.fromkeys(r.strip() for r in request.GET.getlist("runs") if r.strip()))
    problem = None
    if len(ids) < 2:
        problem = "Choose at least two runs to compare."
    elif len(ids) > COMPARE_MAX_RUNS:
        problem = f"Compare at most {COMPARE_MAX_RUNS} runs at a time."
    elif any(not RUN_ID_RE.match(r) for r in ids):
        problem = "A run id is 32 lower-case hexadecimal characters."
    if problem:
        return render(request, "registry/run_compare.html", {"error": problem, "runs": []}, status=400)
    runs, missing = [], []
    try:
        c = mlf.client()
        for run_id in ids:
            try:
                with mlf.mlflow_call(f"reading run {run_id}", not_found=NotFound(run_id)):
                    runs.append(c.get_run(run_id))
            except NotFound:
                missing.append(run_id)
        if missing:
            return render(request, "registry/run_compare.html", {
                "error": "MLflow has no run " + ", ".join(missing) + ".", "runs": []}, status=400)
        metric_keys = sorted({k for r in runs for k in r.data.metrics})
        histories: dict[str, dict[str, list]] = {}
        with mlf.mlflow_call("reading metric histories"):
            for key in metric_keys[:HISTORY_CHART_MAX_METRICS]:
                per_run = {r.info.run_id: c.get_metric_history(r.info.run_id, key)
                           for r in runs if key in r.data.metrics}
                if any(len(h) > 1 for h in per_run.values()):
                    histories[key] = per_run
    except ServiceError as exc:
        return _unavailable(request, exc)
    names = {r.info.run_id: (r.info.run_name or r.info.run_id[:8]) for r in runs}
    labels = _unique_labels([names[r.info.run_id] for r in runs])
    label_of = {r.info.run_id: label for r, label in zip(runs, labels)}
    param_keys = sorted({k for r in runs for k in r.data.params})
    param_rows = [{"key": k, "values": [r.data.params.get(k, "–") for r in runs],
                   "differs": len({r.data.params.get(k) for r in runs}) > 1} for k in param_keys]
    metric_rows = [{"key": k, "values": [_fmt(r.data.metrics[k]) if k in r.data.metrics else "–" for r in runs],
                    "differs": len({r.data.metrics.get(k) for r in runs}) > 1} for k in metric_keys]
    charts = []
    if metric_keys:
        charts.append({"id": "chart-latest", "title": "Latest value of each metric", "figure": {
            "data": [{"type": "bar", "name": label_of[r.info.run_id], "x": metric_keys,
                      "y": [_finite(r.data.metrics.get(k)) for k in metric_keys]} for r in runs],
            "layout": _chart_layout(barmode="group", xaxis={"title": {"text": "metric"}},
                                    yaxis={"title": {"text": "value"}}),
        }})
    for chart in charts:
        chart["data_id"] = f"{chart['id']}-data"
    for key, per_run in histories.items():
        charts.append({"id": f"chart-history-{len(charts)}", "title": f"{key} by step", "figure": {
            "data": [{"type": "scatter", "mode": "lines+markers", "name": label_of[run_id],
                      "x": [m.step for m in sorted(h, key=lambda m: (m.step, m.timestamp))],
                      "y": [_finite(m.value) for m in sorted(h, key=lambda m: (m.step, m.timestamp))]}
                     for run_id, h in per_run.items()],
            "layout": _chart_layout(xaxis={"title": {"text": "step"}, "tickformat": "d", "rangemode": "tozero"},
                                    yaxis={"title": {"text": key}}),
        }, "data_id": f"chart-history-{len(charts)}-data"})
    experiment_ids = sorted({r.info.experiment_id for r in runs})
    experiment_name = ""
    if len(experiment_ids) == 1:
        try:
            with mlf.mlflow_call("reading the experiment"):
                experiment_name = c.get_experiment(experiment_ids[0]).name
        except ServiceError:
            experiment_name = ""  # only the breadcrumb's label; the comparison stands without it
    return render(request, "registry/run_compare.html", {
        "runs": [{"id": r.info.run_id, "label": label_of[r.info.run_id], "experiment_id": r.info.experiment_id,
                  "status": r.info.status} for r in runs],
        "param_rows": param_rows, "metric_rows": metric_rows, "charts": charts,
        "experiment_ids": experiment_ids, "experiment_name": experiment_name,
    })


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _chart_layout(**extra) -> dict:
    return {"height": 340, "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
            "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
            "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "#fff", **extra}
