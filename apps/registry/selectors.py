"""Registry reads scoped to the actor's teams: another team's model or version is a 404."""
from __future__ import annotations

from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce

from apps.core.actors import Actor
from apps.core.errors import NotFound
from apps.core.permissions import scope_to_teams
from apps.registry.models import (
    AliasAssignment,
    ArtifactScan,
    ModelCard,
    ModelUpload,
    ModelVersion,
    ReferenceProfile,
    RegisteredModel,
    ScanFinding,
)


def registeredmodel_list(*, actor: Actor, filters: dict | None = None) -> QuerySet[RegisteredModel]:
    """Models of the actor's teams, with their current aliases; ``filters``: q (name), tag (key or key=value),
    team (id), alias, risk_tier, status (a version status that at least one version has), archived."""
    # created_by and each alias's assigned_by are shown with every row: joined here, not one query per row.
    qs = scope_to_teams(RegisteredModel.objects.select_related("team", "created_by"), actor, "model.view")
    return registeredmodel_filter(qs, filters).prefetch_related(
        Prefetch("alias_history", queryset=AliasAssignment.objects.filter(removed_at__isnull=True)
                 .select_related("version", "assigned_by"), to_attr="current_aliases"))


def registeredmodel_filter(qs: QuerySet[RegisteredModel], filters: dict | None) -> QuerySet[RegisteredModel]:
    """Narrow an already scoped queryset of models by ``filters`` (see registeredmodel_list); the API's
    FilterSet hands its validated query parameters here, so the page and the API filter alike."""
    f = filters or {}
    if f.get("q"):
        qs = qs.filter(name__icontains=f["q"])
    if f.get("team"):
        qs = qs.filter(team_id=f["team"])
    if f.get("risk_tier"):
        qs = qs.filter(risk_tier=f["risk_tier"])
    # EXISTS rather than a join for the to-many filters: no duplicate rows, so no SELECT DISTINCT, which would
    # sort every visible model on all its columns before the page's LIMIT instead of reading the name index.
    if f.get("alias"):
        qs = qs.filter(Exists(AliasAssignment.objects.filter(model=OuterRef("pk"), alias=f["alias"],
                                                             removed_at__isnull=True)))
    if f.get("status"):
        qs = qs.filter(Exists(ModelVersion.objects.filter(model=OuterRef("pk"), status=f["status"])))
    if f.get("tag"):
        key, _, value = str(f["tag"]).partition("=")
        # containment, not a key path: a key such as "isnull" or "a__b" must not become a lookup
        qs = qs.filter(tags__has_key=key) if not value else qs.filter(tags__contains={key: value})
    if str(f.get("archived", "")).lower() in ("1", "true", "yes"):
        qs = qs.filter(archived_at__isnull=False)
    elif f.get("archived") is not None and str(f.get("archived")).lower() in ("0", "false", "no"):
        qs = qs.filter(archived_at__isnull=True)
    return qs


def registeredmodel_get(*, actor: Actor, pk: int) -> RegisteredModel:
    model = scope_to_teams(RegisteredModel.objects.select_related("team"), actor, "model.view").filter(pk=pk).first()
    if model is None:
        raise NotFound("Model not found.")
    return model


def registeredmodel_get_by_name(*, actor: Actor, name: str) -> RegisteredModel:
    model = scope_to_teams(RegisteredModel.objects.select_related("team"), actor, "model.view").filter(
        name=name).first()
    if model is None:
        raise NotFound("Model not found.")
    return model


OPEN_SEVERITIES = ("critical", "high")


def modelversion_list(*, actor: Actor, model_id: int | None = None) -> QuerySet[ModelVersion]:
    qs = scope_to_teams(ModelVersion.objects.select_related("model", "model__team", "registered_by"), actor,
                        "model.view", field="model__team_id")
    if model_id is not None:
        qs = qs.filter(model_id=model_id)
    # Open findings are those of the latest scan only, and none once a platform admin has overridden it: an old
    # scan's findings were answered by the scans after it. Subqueries per row, not a join over every scan.
    latest = ArtifactScan.objects.filter(version=OuterRef("pk")).order_by("-created_at", "-pk").values("pk")[:1]
    open_ = (ScanFinding.objects.filter(scan_id=OuterRef("latest_scan_id"), scan__overridden_at__isnull=True,
                                        severity__in=OPEN_SEVERITIES)
             .order_by().values("scan_id").annotate(n=Count("pk")).values("n"))
    return qs.annotate(latest_scan_id=Subquery(latest)).annotate(
        open_findings=Coalesce(Subquery(open_, output_field=IntegerField()), 0))


def modelversion_get(*, actor: Actor, pk: int) -> ModelVersion:
    version = scope_to_teams(ModelVersion.objects.select_related("model", "model__team", "replaces"), actor,
                             "model.view", field="model__team_id").filter(pk=pk).first()
    if version is None:
        raise NotFound("Model version not found.")
    return version


def modelversion_get_by_number(*, actor: Actor, model: RegisteredModel, version: int) -> ModelVersion:
    found = modelversion_list(actor=actor, model_id=model.pk).filter(version=version).first()
    if found is None:
        raise NotFound("Model version not found.")
    return found


def modelcard_current(*, version: ModelVersion) -> ModelCard | None:
    return version.cards.order_by("-revision").first()


def scan_latest(*, version: ModelVersion) -> ArtifactScan | None:
    return version.scans.prefetch_related("findings").order_by("-created_at").first()


def artifactscan_list(*, actor: Actor) -> QuerySet[ArtifactScan]:
    """Scans of the versions of the actor's teams, newest first."""
    return scope_to_teams(ArtifactScan.objects.select_related("version", "version__model", "overridden_by"),
                          actor, "model.view", field="version__model__team_id")


def artifactscan_get(*, actor: Actor, pk: int) -> ArtifactScan:
    scan = scope_to_teams(ArtifactScan.objects.select_related("version", "version__model", "version__model__team"),
                          actor, "model.view", field="version__model__team_id").filter(pk=pk).first()
    if scan is None:
        raise NotFound("Scan not found.")
    return scan


def alias_history(*, model: RegisteredModel) -> QuerySet[AliasAssignment]:
    return model.alias_history.select_related("version", "assigned_by", "removed_by").order_by("-assigned_at")


def modelupload_list(*, actor: Actor) -> QuerySet[ModelUpload]:
    """Uploads to the actor's teams, newest first."""
    return scope_to_teams(ModelUpload.objects.select_related("team", "created_by", "version"), actor, "model.view")


def modelupload_get(*, actor: Actor, pk: int) -> ModelUpload:
    upload = modelupload_list(actor=actor).filter(pk=pk).first()
    if upload is None:
        raise NotFound("Upload not found.")
    return upload


ALIAS_DRIFT_VERBS = ("alias.drift_reverted", "alias.drift_adopted")


def alias_drift_recent(*, model: RegisteredModel, days: int = 30, limit: int = 10) -> list:
    """The sync's recent answers to aliases moved straight in MLflow (reverted or adopted), newest first, from
    the audit trail. The caller has already scoped ``model`` to the actor."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.audit.models import AuditEvent

    return list(AuditEvent.objects.filter(
        target_type=RegisteredModel._meta.label_lower, target_id=str(model.pk), verb__in=ALIAS_DRIFT_VERBS,
        occurred_at__gte=timezone.now() - timedelta(days=days)).order_by("-seq")[:limit])


def profile_latest(*, version: ModelVersion) -> ReferenceProfile | None:
    return version.profiles.order_by("-created_at").first()


def lineage_graph(*, version: ModelVersion) -> dict:
    """Nodes and edges: version → run → experiment; run → datasets, params/metrics, commit; version → replaced."""
    lineage = version.lineage or {}
    nodes = [{"id": "version", "kind": "version", "label": str(version)}]
    edges = []
    if lineage.get("run_id"):
        nodes.append({"id": "run", "kind": "run", "label": lineage.get("run_name") or lineage["run_id"],
                      "run_id": lineage["run_id"]})
        edges.append({"from": "version", "to": "run", "label": "logged by"})
        if lineage.get("experiment_id"):
            nodes.append({"id": "experiment", "kind": "experiment", "label": lineage.get("experiment_name"),
                          "experiment_id": lineage["experiment_id"]})
            edges.append({"from": "run", "to": "experiment", "label": "in"})
        if lineage.get("params") or lineage.get("metrics"):
            nodes.append({"id": "params", "kind": "params", "label": f"{len(lineage.get('params') or {})} params, "
                                                                      f"{len(lineage.get('metrics') or {})} metrics",
                          "params": lineage.get("params") or {}, "metrics": lineage.get("metrics") or {}})
            edges.append({"from": "run", "to": "params", "label": "recorded"})
        for i, ds in enumerate(lineage.get("datasets") or []):
            nodes.append({"id": f"dataset{i}", "kind": "dataset", "label": f"{ds.get('name')} ({ds.get('digest')})",
                          **{k: ds.get(k) for k in ("name", "digest", "source_type", "source", "context")}})
            edges.append({"from": "run", "to": f"dataset{i}", "label": ds.get("context") or "input"})
        commit = (lineage.get("source") or {}).get("git_commit")
        if commit:
            nodes.append({"id": "commit", "kind": "commit", "label": commit[:12], "commit": commit,
                          "repo": (lineage.get("source") or {}).get("git_repo_url", "")})
            edges.append({"from": "run", "to": "commit", "label": "source"})
    if version.replaces_id:
        nodes.append({"id": "replaces", "kind": "version", "label": str(version.replaces),
                      "version_id": version.replaces_id})
        edges.append({"from": "version", "to": "replaces", "label": "replaced"})
    return {"nodes": nodes, "edges": edges}
