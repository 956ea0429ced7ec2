"""Every state change of serving: environments, deployments, rollouts, rollbacks, keys.

Each function checks the actor's permission, locks the row, checks the status machine, writes, records the
audit event and a timeline event in one transaction, and queues the reconcile (which starts and stops replicas
and publishes the routing table) with ``transaction.on_commit``. Reconcile itself moves statuses as the system
(apps/deployments/reconcile.py).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed, field_error
from apps.core.models import validation_error_fields
from apps.core.permissions import has_perm, require
from apps.deployments.models import (
    Deployment,
    DeploymentEvent,
    DeploymentKey,
    Environment,
    Variant,
)
from apps.gateway.contract import DEPLOYMENT_KEY_PREFIX, deployment_key_hash
from apps.registry.models import ModelVersion

# Settings a user may change on a live deployment (the rest are fixed at creation or move through rollouts).
TUNABLE_FIELDS = ("description", "replicas", "cpu", "memory_mb", "timeout_seconds", "max_payload_bytes",
                  "rate_limit_rps", "rate_limit_burst", "sampling_rate", "rollback_window_seconds")


def _queue_reconcile(deployment_id: int) -> None:
    from apps.deployments.tasks import reconcile_deployment

    transaction.on_commit(lambda: reconcile_deployment.delay(deployment_id))


def deployment_event_add(*, deployment: Deployment, kind: str, message: str, actor: Actor | None = None,
                         level: str = DeploymentEvent.Level.INFO, data: dict | None = None) -> DeploymentEvent:
    """One line of the deployment's timeline (who did or saw what)."""
    return DeploymentEvent.objects.create(deployment=deployment, kind=kind, message=message, level=level,
                                          data=data or {}, actor=actor.name if actor else "system")


def _full_clean(obj, fields_map: dict[str, str] | None = None, exclude: list[str] | None = None) -> None:
    try:
        obj.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        fields = validation_error_fields(exc)
        if fields_map:
            fields = {fields_map.get(k, k): v for k, v in fields.items()}
        first = next(iter(fields.items()))
        raise ValidationFailed(f"{first[0]}: {first[1][0]}", fields=fields) from exc


# ------------------------------------------------------------------------------------------- environments

@transaction.atomic
def environment_create(*, actor: Actor, name: str, backend: str = Environment.Backend.LOCAL,
                       description: str = "", backend_settings: dict | None = None,
                       is_production: bool = False) -> Environment:
    """Add a place to serve models. Platform admins only."""
    require(actor, "environment.manage")
    name = (name or "").strip()
    if Environment.objects.filter(name=name).exists():
        raise field_error("name", f"An environment named {name!r} already exists.", code="duplicate")
    if backend_settings is not None and not isinstance(backend_settings, dict):
        raise field_error("backend_settings", "Must be a JSON object.")
    env = Environment(name=name, backend=backend, description=description or "",
                      backend_settings=backend_settings or {}, is_production=bool(is_production),
                      created_by=actor.user)
    _full_clean(env, exclude=["created_by"])
    env.save()
    audit_event_record(actor=actor, verb="environment.created", target=env, after=env.snapshot())
    return env


@transaction.atomic
def environment_update(*, actor: Actor, environment_id: int, **changes: Any) -> Environment:
    """Change an environment's description, backend settings or production flag. Platform admins only."""
    require(actor, "environment.manage")
    env = Environment.objects.select_for_update().filter(pk=environment_id).first()
    if env is None:
        raise NotFound("No such environment.")
    before = env.snapshot()
    for field in ("description", "backend_settings", "is_production"):
        if field in changes and changes[field] is not None:
            setattr(env, field, changes[field])
    if "backend" in changes and changes["backend"] and changes["backend"] != env.backend:
        if env.deployments.exclude(status=Deployment.Status.STOPPED).exists():
            raise Conflict("Stop this environment's deployments before changing its backend.",
                           fields={"backend": ["The environment has deployments that are not stopped."]})
        env.backend = changes["backend"]
    if not isinstance(env.backend_settings, dict):
        raise field_error("backend_settings", "Must be a JSON object.")
    _full_clean(env, exclude=["created_by"])
    env.save()
    audit_event_record(actor=actor, verb="environment.updated", target=env, before=before, after=env.snapshot())
    return env


# -------------------------------------------------------------------------------------------- deployments

def _deployable_version(*, actor: Actor, version_id: Any, field: str = "model_version") -> ModelVersion:
    try:
        version_id = int(version_id)
    except (TypeError, ValueError):
        raise field_error(field, "A model version id is required.", code="required") from None
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None or not has_perm(actor, "model.view", version.model):
        raise field_error(field, f"No model version with id {version_id}.", code="not_found")
    if version.status == ModelVersion.Status.BLOCKED:
        reason = version.status_message or "the artifact scan found a critical or high finding"
        raise field_error(field, f"{version} is blocked by its artifact scan: {reason}", code="blocked")
    if version.status != ModelVersion.Status.READY:
        raise field_error(field, f"{version} is {version.get_status_display().lower()}; only ready (scanned) "
                                 f"versions can be deployed.", code="not_ready")
    return version


def _require_may_deploy_to(actor: Actor, environment: Environment) -> None:
    if environment.is_production and not (actor.user is not None and actor.user.is_platform_admin):
        raise PermissionDenied(
            f"{environment.name} is a production environment: deployments there go through an approved "
            f"promotion (until the approvals workflow lands, only platform admins may deploy there).",
            code="promotion_required")


def _coerce_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Form and JSON values into the model's types, with a 400 naming the field when one is not a number."""
    out: dict[str, Any] = {}
    numeric = {"replicas": int, "memory_mb": int, "max_payload_bytes": int, "rate_limit_burst": int,
               "rollback_window_seconds": int, "timeout_seconds": float, "rate_limit_rps": float,
               "sampling_rate": float}
    for key, value in values.items():
        if key in numeric:
            if value in (None, ""):
                out[key] = None
                continue
            if isinstance(value, bool):
                raise field_error(key, "A number is required.")
            try:
                out[key] = numeric[key](value)
            except (TypeError, ValueError):
                raise field_error(key, f"A number is required, not {value!r}.") from None
        elif key == "cpu":
            try:
                out[key] = Decimal(str(value))
            except (InvalidOperation, ValueError):
                raise field_error(key, f"A number is required, not {value!r}.") from None
        else:
            out[key] = value
    return out


def _validate_rate_limit(deployment: Deployment) -> None:
    if deployment.rate_limit_burst is not None and deployment.rate_limit_rps is None:
        raise field_error("rate_limit_burst", "Set rate_limit_rps too (a burst needs a rate).")


def _variant_name(deployment: Deployment, version: ModelVersion) -> str:
    base = f"v{version.version}"
    taken = set(deployment.variants.values_list("name", flat=True))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


@transaction.atomic
def deployment_create(*, actor: Actor, name: str, environment_id: Any, model_version_id: Any,
                      strategy: str = Deployment.Strategy.BLUE_GREEN, **settings_: Any) -> Deployment:
    """Serve a ready model version in an environment: the deployment, its first variant, then a reconcile."""
    version = _deployable_version(actor=actor, version_id=model_version_id)
    require(actor, "deployment.create", version.model)
    try:
        environment = Environment.objects.get(pk=int(environment_id))
    except (TypeError, ValueError, Environment.DoesNotExist):
        raise field_error("environment", f"No environment with id {environment_id!r}.", code="not_found") from None
    _require_may_deploy_to(actor, environment)
    unknown = set(settings_) - set(TUNABLE_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown fields: {', '.join(sorted(unknown))}.",
                               fields={k: ["Unknown field."] for k in sorted(unknown)})
    values = {k: v for k, v in _coerce_settings(settings_).items() if v is not None or k.startswith("rate_")}
    name = (name or "").strip()
    if Deployment.objects.filter(name=name).exists():
        raise field_error("name", f"A deployment named {name!r} already exists.", code="duplicate")
    deployment = Deployment(name=name, environment=environment, model=version.model, team_id=version.model.team_id,
                            strategy=strategy, created_by=actor.user, **values)
    _full_clean(deployment, exclude=["created_by", "team", "model", "environment"])
    _validate_rate_limit(deployment)
    try:
        with transaction.atomic():
            deployment.save()
    except IntegrityError:
        raise field_error("name", f"A deployment named {name!r} already exists.", code="duplicate") from None
    variant = Variant.objects.create(deployment=deployment, name=_variant_name(deployment, version),
                                     model_version=version, weight=100, role=Variant.Role.LIVE,
                                     replicas=deployment.replicas)
    audit_event_record(actor=actor, verb="deployment.created", target=deployment,
                       after={**deployment.snapshot(), "variant": variant.name, "model_version": version.version})
    deployment_event_add(deployment=deployment, kind="created", actor=actor,
                         message=f"Created in {environment.name} with {version} ({deployment.replicas} "
                                 f"replica{'s' if deployment.replicas != 1 else ''}, {deployment.get_strategy_display()}).")
    _queue_reconcile(deployment.pk)
    return deployment


def _locked(deployment_id: Any, actor: Actor, verb: str) -> Deployment:
    try:
        pk = int(deployment_id)
    except (TypeError, ValueError):
        raise NotFound("No such deployment.") from None
    deployment = Deployment.objects.select_for_update().select_related("environment", "model").filter(pk=pk).first()
    if deployment is None or not has_perm(actor, "deployment.view", deployment):
        raise NotFound("No such deployment.")
    require(actor, verb, deployment)
    return deployment


@transaction.atomic
def deployment_update(*, actor: Actor, deployment_id: int, **changes: Any) -> Deployment:
    """Change a deployment's replicas, limits, sampling or rollback window; the gateway gets the new route."""
    deployment = _locked(deployment_id, actor, "deployment.update")
    unknown = set(changes) - set(TUNABLE_FIELDS)
    if unknown:
        raise ValidationFailed(f"Unknown or read-only fields: {', '.join(sorted(unknown))}.",
                               fields={k: ["Unknown or read-only field."] for k in sorted(unknown)})
    values = _coerce_settings(changes)
    before = deployment.snapshot()
    for key, value in values.items():
        if value is None and not key.startswith("rate_"):
            continue
        setattr(deployment, key, value)
    _full_clean(deployment, exclude=["created_by", "team", "model", "environment"])
    _validate_rate_limit(deployment)
    after = deployment.snapshot()
    changed = {k: after[k] for k in after if before.get(k) != after[k]}
    if not changed:
        return deployment   # nothing to record, publish or reconcile
    deployment.generation += 1
    deployment.save()
    if "replicas" in changed:
        deployment.variants.filter(role__in=Variant.ACTIVE_ROLES).update(replicas=deployment.replicas)
    audit_event_record(actor=actor, verb="deployment.updated", target=deployment, before=before,
                       after=deployment.snapshot())
    deployment_event_add(deployment=deployment, kind="updated", actor=actor, data=changed,
                         message="Settings changed: " + ", ".join(f"{k} = {v}" for k, v in changed.items()))
    _queue_reconcile(deployment.pk)
    return deployment


@transaction.atomic
def deployment_rollout_start(*, actor: Actor, deployment_id: int, model_version_id: Any,
                             strategy: str | None = None) -> Deployment:
    """Move a deployment to another version of its model, by its strategy (or the one given).

    Direct: the new variant goes live at once and the old one stops (requests may fail until it is ready).
    Blue-green: the new variant starts as a candidate with no traffic; reconcile health-checks and smoke-tests
    it, switches all traffic at once, and keeps the old one warm for the rollback window.
    """
    deployment = _locked(deployment_id, actor, "deployment.update")
    version = _deployable_version(actor=actor, version_id=model_version_id)
    if version.model_id != deployment.model_id:
        raise field_error("model_version", f"{version} is not a version of {deployment.model.name}.")
    _require_may_deploy_to(actor, deployment.environment)
    if strategy is not None and strategy not in Deployment.Strategy.values:
        raise field_error("strategy", f"Choose one of {', '.join(Deployment.Strategy.values)}.")
    strategy = strategy or deployment.strategy
    if deployment.variants.filter(role=Variant.Role.CANDIDATE).exists():
        raise Conflict("A rollout is already in progress; roll it back or wait for it to finish.",
                       code="rollout_in_progress")
    live = list(deployment.variants.filter(role=Variant.Role.LIVE))
    if any(v.model_version_id == version.pk for v in live):
        raise field_error("model_version", f"{version} is already live in this deployment.", code="already_live")
    before = deployment.snapshot()
    deployment.transition_to(Deployment.Status.UPDATING)
    now = timezone.now()
    variant = Variant.objects.create(deployment=deployment, name=_variant_name(deployment, version),
                                     model_version=version, replicas=deployment.replicas,
                                     role=Variant.Role.LIVE if strategy == "direct" else Variant.Role.CANDIDATE,
                                     weight=100 if strategy == "direct" else 0)
    if strategy == Deployment.Strategy.DIRECT:
        for old in live:
            old.role, old.weight, old.retired_at = Variant.Role.RETIRED, 0, now
            old.save(update_fields=["role", "weight", "retired_at", "updated_at"])
        message = (f"Direct rollout to {version}: {', '.join(v.name for v in live) or 'nothing'} stopped, "
                   f"{variant.name} starting; requests may fail until it is ready.")
    else:
        message = (f"Blue-green rollout to {version}: {variant.name} starting with no traffic; traffic switches "
                   f"once it is ready and its smoke requests pass.")
    deployment.generation += 1
    deployment.status_message = message
    deployment.save()
    audit_event_record(actor=actor, verb="deployment.rollout_started", target=deployment, before=before,
                       after={**deployment.snapshot(), "variant": variant.name, "model_version": version.version,
                              "strategy": strategy})
    deployment_event_add(deployment=deployment, kind="rollout_started", actor=actor, message=message,
                         data={"variant": variant.name, "version": version.version, "strategy": strategy})
    _queue_reconcile(deployment.pk)
    return deployment


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback does with a deployment's variants as they are: decided here once, carried out by
    deployment_rollback and described on the deployment page before the button is pressed."""

    kind: str  # "cancel" (a candidate still starting), "standby" (the warm one), "restart" (a retired version), "none"
    live: list[Variant]
    target: Variant | None  # the candidate to cancel, the standby to switch to, or the variant to start again


def rollback_plan(variants: list[Variant]) -> RollbackPlan:
    """The rollback for ``variants`` (all of one deployment's): cancel the candidate, else switch to the newest
    warm standby, else start the most recently retired version that is not live, else nothing."""
    live = [v for v in variants if v.role == Variant.Role.LIVE]
    candidate = next((v for v in variants if v.role == Variant.Role.CANDIDATE), None)
    if candidate is not None:
        return RollbackPlan("cancel", live, candidate)
    standby = max((v for v in variants if v.role == Variant.Role.STANDBY), key=lambda v: v.pk, default=None)
    if standby is not None:
        return RollbackPlan("standby", live, standby)
    live_versions = {v.model_version_id for v in live}
    previous = max((v for v in variants if v.role == Variant.Role.RETIRED and v.model_version_id not in live_versions),
                   key=lambda v: (v.retired_at or v.created_at, v.pk), default=None)
    if previous is not None:
        return RollbackPlan("restart", live, previous)
    return RollbackPlan("none", live, None)


@transaction.atomic
def deployment_rollback(*, actor: Actor, deployment_id: int, reason: str = "") -> Deployment:
    """Undo the last rollout: cancel a candidate still starting, or put the warm standby back at once
    (blue-green), or start the previous version again (direct, or after the rollback window)."""
    deployment = _locked(deployment_id, actor, "deployment.rollback")
    if len(reason) > 2000:
        raise field_error("reason", "At most 2000 characters.", code="max_length")
    before = deployment.snapshot()
    now = timezone.now()
    plan = rollback_plan(list(deployment.variants.select_related("model_version")))
    live = plan.live
    if plan.kind == "cancel":
        candidate = plan.target
        candidate.role, candidate.weight, candidate.retired_at = Variant.Role.RETIRED, 0, now
        candidate.save(update_fields=["role", "weight", "retired_at", "updated_at"])
        message = f"Rollout cancelled: {candidate.name} stopped; {', '.join(v.name for v in live)} keeps serving."
        deployment.transition_to(Deployment.Status.RUNNING if deployment.can_transition_to("running")
                                 else Deployment.Status.ROLLING_BACK)
    elif plan.kind == "standby":
        standby = plan.target
        for old in live:
            old.role, old.weight, old.retired_at = Variant.Role.RETIRED, 0, now
            old.save(update_fields=["role", "weight", "retired_at", "updated_at"])
        standby.role, standby.weight, standby.standby_until = Variant.Role.LIVE, 100, None
        standby.save(update_fields=["role", "weight", "standby_until", "updated_at"])
        message = (f"Rolled back to {standby.name} ({standby.model_version}), kept warm: traffic switched at once; "
                   f"{', '.join(v.name for v in live)} stopped.")
        deployment.transition_to(Deployment.Status.ROLLING_BACK)
    elif plan.kind == "none":
        raise Conflict("Nothing to roll back to: this deployment has had one version only.",
                       code="nothing_to_roll_back")
    else:
        version = plan.target.model_version
        if version.status != ModelVersion.Status.READY:
            raise Conflict(f"Cannot roll back to {version}: it is {version.get_status_display().lower()}.",
                           code="not_ready")
        for old in live:
            old.role, old.weight, old.retired_at = Variant.Role.RETIRED, 0, now
            old.save(update_fields=["role", "weight", "retired_at", "updated_at"])
        variant = Variant.objects.create(deployment=deployment, name=_variant_name(deployment, version),
                                         model_version=version, replicas=deployment.replicas,
                                         role=Variant.Role.LIVE, weight=100)
        message = (f"Rolling back to {version}: {variant.name} starting (no warm standby was left); requests may "
                   f"fail until it is ready.")
        deployment.transition_to(Deployment.Status.ROLLING_BACK)
    deployment.generation += 1
    deployment.status_message = message
    deployment.save()
    audit_event_record(actor=actor, verb="deployment.rolled_back", target=deployment, before=before,
                       after=deployment.snapshot(), reason=reason)
    deployment_event_add(deployment=deployment, kind="rolled_back", actor=actor, level="warning",
                         message=message + (f" Reason: {reason}" if reason else ""))
    _queue_reconcile(deployment.pk)
    return deployment


@transaction.atomic
def deployment_stop(*, actor: Actor, deployment_id: int, reason: str = "") -> Deployment:
    """Stop serving: the gateway answers 503 at once and every replica process is stopped."""
    deployment = _locked(deployment_id, actor, "deployment.update")
    before = deployment.snapshot()
    deployment.transition_to(Deployment.Status.STOPPING)
    deployment.generation += 1
    deployment.status_message = "Stopping: the gateway refuses requests; replicas are being stopped."
    deployment.save()
    audit_event_record(actor=actor, verb="deployment.stopped", target=deployment, before=before,
                       after=deployment.snapshot(), reason=reason)
    deployment_event_add(deployment=deployment, kind="stopping", actor=actor, level="warning",
                         message="Stop requested." + (f" Reason: {reason}" if reason else ""))
    _queue_reconcile(deployment.pk)
    return deployment


@transaction.atomic
def deployment_start(*, actor: Actor, deployment_id: int) -> Deployment:
    """Start a stopped deployment again with the variants that were live when it stopped."""
    deployment = _locked(deployment_id, actor, "deployment.update")
    _require_may_deploy_to(actor, deployment.environment)
    for variant in deployment.variants.filter(role=Variant.Role.LIVE).select_related("model_version"):
        if not variant.model_version.deployable:
            raise Conflict(f"{variant.model_version} is {variant.model_version.get_status_display().lower()}: "
                           f"roll out a ready version instead.", code="not_ready")
    before = deployment.snapshot()
    deployment.transition_to(Deployment.Status.DEPLOYING)
    deployment.generation += 1
    deployment.status_message = "Starting replicas."
    deployment.save()
    audit_event_record(actor=actor, verb="deployment.started", target=deployment, before=before,
                       after=deployment.snapshot())
    deployment_event_add(deployment=deployment, kind="starting", actor=actor, message="Start requested.")
    _queue_reconcile(deployment.pk)
    return deployment


# ------------------------------------------------------------------------------------------------- keys

def _parse_expiry(expires_at: Any) -> datetime | None:
    if expires_at in (None, ""):
        return None
    if isinstance(expires_at, str):
        from django.utils.dateparse import parse_datetime

        parsed = parse_datetime(expires_at)
        if parsed is None:
            raise field_error("expires_at", "Use an ISO 8601 date and time, e.g. 2027-01-31T00:00:00Z.")
        expires_at = parsed
    if timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, timezone.utc)
    if expires_at <= timezone.now():
        raise field_error("expires_at", "Must be in the future.")
    return expires_at


@transaction.atomic
def deploymentkey_create(*, actor: Actor, deployment_id: int, name: str,
                         expires_at: Any = None) -> tuple[DeploymentKey, str]:
    """A new key for calling the deployment through the gateway. The full key is returned once, never stored."""
    deployment = _locked(deployment_id, actor, "deployment.key_manage")
    name = (name or "").strip()
    if not name:
        raise field_error("name", "This field is required.", code="required")
    if len(name) > 100:
        raise field_error("name", "At most 100 characters.", code="max_length")
    expires = _parse_expiry(expires_at)
    prefix = secrets.token_hex(4)
    key = f"{DEPLOYMENT_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    record = DeploymentKey.objects.create(deployment=deployment, name=name, prefix=prefix,
                                          key_hash=deployment_key_hash(key), created_by=actor.user,
                                          expires_at=expires)
    deployment.generation += 1
    deployment.save(update_fields=["generation", "updated_at"])
    audit_event_record(actor=actor, verb="deployment_key.created", target=record, after=record.snapshot(),
                       team_id=deployment.team_id)
    deployment_event_add(deployment=deployment, kind="key_created", actor=actor,
                         message=f"Key {record.name!r} ({record.prefix}) created.")
    _queue_reconcile(deployment.pk)
    return record, key


@transaction.atomic
def deploymentkey_revoke(*, actor: Actor, key_id: Any) -> DeploymentKey:
    """Revoke a key: the gateway refuses it as soon as it has the new route (normally well under a second)."""
    try:
        record = DeploymentKey.objects.select_for_update().select_related("deployment").get(pk=int(key_id))
    except (TypeError, ValueError, DeploymentKey.DoesNotExist):
        raise NotFound("No such key.") from None
    if not has_perm(actor, "deployment.view", record.deployment):
        raise NotFound("No such key.")
    require(actor, "deployment.key_manage", record.deployment)
    if record.revoked_at is not None:
        return record
    before = record.snapshot()
    record.revoked_at = timezone.now()
    record.save(update_fields=["revoked_at", "updated_at"])
    deployment = Deployment.objects.select_for_update().get(pk=record.deployment_id)
    deployment.generation += 1
    deployment.save(update_fields=["generation", "updated_at"])
    audit_event_record(actor=actor, verb="deployment_key.revoked", target=record, before=before,
                       after=record.snapshot(), team_id=deployment.team_id)
    deployment_event_add(deployment=deployment, kind="key_revoked", actor=actor,
                         message=f"Key {record.name!r} ({record.prefix}) revoked.")
    _queue_reconcile(deployment.pk)
    return record
