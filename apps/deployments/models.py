"""Environments, deployments, their variants and replicas, deployment keys and the events timeline.

PostgreSQL holds the *desired* state (which versions serve, with how many replicas, which weight); Celery's
reconcile loop (apps/deployments/reconcile.py) makes the backend's *actual* state match it and writes what it
found back into ``Replica`` rows. The gateway never reads these tables: the control plane publishes a route
document (apps/gateway/contract.py) whenever what the gateway needs changes.
"""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from apps.accounts.models import Team
from apps.core.models import StateMachineMixin, TimeStampedModel
from apps.registry.models import ModelVersion, RegisteredModel

# Deployment and environment names appear in gateway URLs and (later) in Kubernetes resource names: DNS-1123.
dns_label_validator = RegexValidator(
    r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
    "Lower-case letters, digits and '-', starting with a letter and not ending with '-' (at most 63).",
)


class Environment(TimeStampedModel):
    """A place to serve models (dev, staging, production) with its serving backend and that backend's settings."""

    class Backend(models.TextChoices):
        LOCAL = "local", "Local processes (MLflow scoring servers on this machine)"
        KUBERNETES = "kubernetes", "Kubernetes / KServe"

    name = models.CharField(max_length=63, unique=True, validators=[dns_label_validator])
    description = models.TextField(blank=True, max_length=2000)
    backend = models.CharField(max_length=20, choices=Backend.choices, default=Backend.LOCAL)
    backend_settings = models.JSONField(default=dict, blank=True,
                                        help_text="Backend options, e.g. {\"namespace\": \"models\"} for "
                                                  "Kubernetes or {\"max_replicas\": 4} for local.")
    is_production = models.BooleanField(
        default=False, help_text="Production: deployments only through an approved promotion (until the "
                                 "approvals step lands, only platform admins may deploy here).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Deployment(StateMachineMixin, TimeStampedModel):
    """A registered model served in an environment: its variants, replicas, limits, strategy and status."""

    class Strategy(models.TextChoices):
        DIRECT = "direct", "Direct (replace; requests may fail during the switch)"
        BLUE_GREEN = "blue_green", "Blue-green (start green, smoke-test, switch at once, keep blue warm)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"          # created; replicas not started yet
        DEPLOYING = "deploying", "Deploying"    # first variant's replicas starting
        RUNNING = "running", "Running"
        UPDATING = "updating", "Updating"       # a rollout in progress (green starting, smoke tests)
        ROLLING_BACK = "rolling_back", "Rolling back"
        DEGRADED = "degraded", "Degraded"       # serving, but fewer ready replicas than desired
        FAILED = "failed", "Failed"             # nothing could be started
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"

    TRANSITIONS = {
        "pending": {"deploying", "stopping", "failed"},
        "deploying": {"running", "degraded", "failed", "stopping"},
        "running": {"updating", "rolling_back", "degraded", "stopping"},
        "degraded": {"running", "updating", "rolling_back", "failed", "stopping"},
        "updating": {"running", "degraded", "rolling_back", "failed", "stopping"},
        "rolling_back": {"running", "degraded", "failed", "stopping"},
        "failed": {"deploying", "updating", "rolling_back", "stopping"},
        "stopping": {"stopped"},
        "stopped": {"deploying"},
    }
    SERVING = frozenset({"running", "degraded", "updating", "rolling_back"})

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="deployments")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=63, unique=True, validators=[dns_label_validator],
                            help_text="Used in the gateway's URLs: /v1/deployments/<name>/invocations.")
    description = models.TextField(blank=True, max_length=2000)
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.BLUE_GREEN)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    status_message = models.TextField(blank=True)
    replicas = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(8)])
    cpu = models.DecimalField(max_digits=5, decimal_places=2, default=1,
                              validators=[MinValueValidator(Decimal("0.1")), MaxValueValidator(64)],
                              help_text="CPU cores per replica (requests and limits on Kubernetes).")
    memory_mb = models.PositiveIntegerField(default=1024, validators=[MinValueValidator(128),
                                                                      MaxValueValidator(262144)])
    timeout_seconds = models.FloatField(default=10.0, validators=[MinValueValidator(0.1),
                                                                  MaxValueValidator(300)])
    max_payload_bytes = models.PositiveIntegerField(default=1024 * 1024,
                                                    validators=[MinValueValidator(1024),
                                                                MaxValueValidator(100 * 1024 * 1024)])
    rate_limit_rps = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.1)],
                                       help_text="Requests per second per key (empty: no limit).")
    rate_limit_burst = models.PositiveIntegerField(null=True, blank=True)
    sampling_rate = models.FloatField(default=1.0, validators=[MinValueValidator(0), MaxValueValidator(1)],
                                      help_text="Share of requests whose inputs and outputs are logged.")
    rollback_window_seconds = models.PositiveIntegerField(
        default=3600, validators=[MaxValueValidator(7 * 24 * 3600)],
        help_text="Blue-green: how long the previous variant is kept warm for an instant rollback.")
    generation = models.PositiveBigIntegerField(default=0, help_text="Bumped on every routing change.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["team", "status"])]

    def __str__(self) -> str:
        return self.name

    def get_team_id(self) -> int:
        return self.team_id

    @property
    def is_serving(self) -> bool:
        return self.status in self.SERVING


class Variant(TimeStampedModel):
    """One model version inside a deployment, with its share of traffic and its role in a rollout.

    ``role``: *live* variants take traffic by weight; a *candidate* is being started and smoke-tested (weight 0);
    a *standby* is the previous live variant kept warm for the rollback window (weight 0); *retired* variants
    have no replicas and stay for the history.
    """

    class Role(models.TextChoices):
        LIVE = "live", "Live"
        CANDIDATE = "candidate", "Candidate"
        STANDBY = "standby", "Standby (kept warm for rollback)"
        RETIRED = "retired", "Retired"

    ACTIVE_ROLES = ("live", "candidate", "standby")   # roles whose replicas should run

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=40, validators=[dns_label_validator])
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="variants")
    weight = models.PositiveSmallIntegerField(default=100, validators=[MaxValueValidator(100)])
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.LIVE)
    replicas = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(8)])
    smoke_passed_at = models.DateTimeField(null=True, blank=True)
    standby_until = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["deployment", "created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["deployment", "name"], name="variant_unique_name")]

    def __str__(self) -> str:
        return f"{self.deployment.name}/{self.name}"

    def get_team_id(self) -> int:
        return self.deployment.team_id


class Replica(TimeStampedModel):
    """One model-server process (local backend) or pod set (Kubernetes) of a variant, as the reconciler saw it.

    For the local backend ``pid`` + ``process_started`` identify the process across worker restarts (a pid
    alone can be reused), so a restarted worker adopts running replicas instead of starting new ones.
    """

    class Status(models.TextChoices):
        STARTING = "starting", "Starting"
        READY = "ready", "Ready"
        UNHEALTHY = "unhealthy", "Unhealthy"
        CRASHED = "crashed", "Crashed (restart pending)"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"

    variant = models.ForeignKey(Variant, on_delete=models.CASCADE, related_name="replica_set")
    index = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.STARTING)
    status_message = models.TextField(blank=True)
    host = models.CharField(max_length=255, default="127.0.0.1")
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    process_started = models.BigIntegerField(null=True, blank=True,
                                             help_text="The process's start time (clock ticks since boot).")
    log_path = models.CharField(max_length=1000, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    restart_count = models.PositiveIntegerField(default=0)
    next_restart_at = models.DateTimeField(null=True, blank=True)
    last_exit = models.CharField(max_length=200, blank=True)
    desired = models.BooleanField(default=True, help_text="False once the replica should be stopped.")
    health_failures = models.PositiveSmallIntegerField(
        default=0, help_text="Failed health checks in a row (3 make a ready replica unhealthy).")
    crash_streak = models.PositiveIntegerField(
        default=0, help_text="Crashes in a row, for the restart backoff (starts over after 10 min ready).")

    class Meta:
        ordering = ["variant", "index", "pk"]
        indexes = [models.Index(fields=["desired", "status"])]
        constraints = [models.UniqueConstraint(fields=["variant", "index"], name="replica_unique_index")]

    def __str__(self) -> str:
        return f"{self.variant}#{self.index}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port else ""

    def get_team_id(self) -> int:
        return self.variant.deployment.team_id


class DeploymentKey(TimeStampedModel):
    """A key that lets a client call one deployment through the gateway. Stored as a SHA-256 hash, shown once."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    snapshot_exclude = ("key_hash",)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def get_team_id(self) -> int:
        return self.deployment.team_id


class DeploymentEvent(models.Model):
    """One entry of a deployment's timeline: what happened, to which variant or replica, said in words."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=60)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.deployment.name}: {self.kind}"
