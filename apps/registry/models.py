"""Registered models and their versions, as Modelplane sees them beside MLflow.

MLflow is the store of record for names, versions, aliases, runs and artifacts. These rows add what MLflow
lacks (owner team, risk tier, status, model cards, scans, reference profiles, alias history) and link to MLflow
by registered-model name and version number.
"""
from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from apps.accounts.models import Team
from apps.core.models import StateMachineMixin, TimeStampedModel

# MLflow accepts most characters; we keep names that are safe in URLs, KServe resource names and file paths.
model_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    "Start with a letter or digit; then letters, digits, '.', '_' or '-' (at most 128 characters).",
)
alias_validator = RegexValidator(
    r"^[a-z][a-z0-9_-]{0,63}$",
    "Lower-case letter first, then lower-case letters, digits, '_' or '-' (at most 64 characters); "
    "MLflow reserves aliases like 'v1' and 'latest'.",
)


class RiskTier(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class RegisteredModel(TimeStampedModel):
    """A registered model in MLflow, owned by one team, with its risk tier and tags."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="registered_models")
    name = models.CharField(max_length=128, unique=True, validators=[model_name_validator])
    description = models.TextField(blank=True, max_length=5000)
    tags = models.JSONField(default=dict, blank=True)
    risk_tier = models.CharField(max_length=10, choices=RiskTier.choices, default=RiskTier.MEDIUM)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    archived_at = models.DateTimeField(null=True, blank=True)
    latest_version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["team", "name"]), models.Index(fields=["risk_tier"])]

    def __str__(self) -> str:
        return self.name


class ModelVersion(StateMachineMixin, TimeStampedModel):
    """One version of a registered model: its MLflow source and run, signature, status and scan verdict."""

    class Status(models.TextChoices):
        PENDING_SCAN = "pending_scan", "Pending scan"
        READY = "ready", "Ready"
        BLOCKED = "blocked", "Blocked"                   # the scan found a critical or high finding
        ARCHIVED = "archived", "Archived"

    class Origin(models.TextChoices):
        RUN = "run", "From an MLflow run"
        UPLOAD = "upload", "Uploaded"
        SYNC = "sync", "Found in MLflow"

    # A row exists only once MLflow holds the version, so there is no "registering" state to get stuck in.
    TRANSITIONS = {
        "pending_scan": {"ready", "blocked", "archived"},
        "ready": {"pending_scan", "archived"},
        "blocked": {"ready", "pending_scan", "archived"},  # ready only by a platform admin's override
        "archived": set(),
    }

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING_SCAN)
    status_message = models.TextField(blank=True)
    origin = models.CharField(max_length=10, choices=Origin.choices)
    description = models.TextField(blank=True, max_length=5000)
    tags = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=1000, blank=True, help_text="MLflow's source URI of the artifacts.")
    run_id = models.CharField(max_length=64, blank=True, db_index=True)
    mlflow_model_id = models.CharField(max_length=64, blank=True)
    flavors = models.JSONField(default=dict, blank=True)
    signature = models.JSONField(null=True, blank=True)
    input_example = models.JSONField(null=True, blank=True)
    lineage = models.JSONField(default=dict, blank=True,
                               help_text="The run's experiment, parameters, metrics, datasets and source commit, "
                                         "as MLflow held them at registration.")
    replaces = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                 help_text="The version this one replaced (lineage).")
    registered_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                      blank=True, related_name="+")
    mlflow_created_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["model__name", "-version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="modelversion_unique")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"

    def get_team_id(self) -> int:
        return self.model.team_id

    @property
    def deployable(self) -> bool:
        return self.status == self.Status.READY


class AliasAssignment(models.Model):
    """Which version held which alias, from when to when. The open row is the alias's current holder."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_history")
    alias = models.CharField(max_length=64, validators=[alias_validator])
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="alias_history")
    assigned_at = models.DateTimeField()
    assigned_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    removed_at = models.DateTimeField(null=True, blank=True)
    removed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")

    class Meta:
        ordering = ["-assigned_at"]
        constraints = [
            models.UniqueConstraint(fields=["model", "alias"], condition=models.Q(removed_at__isnull=True),
                                    name="alias_one_open_holder"),
        ]

    def get_team_id(self) -> int:
        return self.model.team_id


class ModelCard(TimeStampedModel):
    """A revision of a version's model card. Each edit adds a revision; the newest is the card."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="cards")
    revision = models.PositiveIntegerField()
    intended_use = models.TextField(blank=True, max_length=10000)
    out_of_scope_use = models.TextField(blank=True, max_length=10000)
    training_data = models.TextField(blank=True, max_length=10000)
    evaluation_data = models.TextField(blank=True, max_length=10000)
    metrics = models.JSONField(default=dict, blank=True, help_text="Evaluation metrics, pulled from the run.")
    limitations = models.TextField(blank=True, max_length=10000)
    ethical_considerations = models.TextField(blank=True, max_length=10000)
    owners = models.CharField(max_length=500, blank=True)
    contact = models.CharField(max_length=300, blank=True)
    edited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                  related_name="+")

    TEXT_FIELDS = ("intended_use", "out_of_scope_use", "training_data", "evaluation_data", "limitations",
                   "ethical_considerations", "owners", "contact")
    # What each risk tier requires before a card is complete.
    REQUIRED_BY_TIER = {
        RiskTier.LOW: ("intended_use", "owners", "contact"),
        RiskTier.MEDIUM: ("intended_use", "out_of_scope_use", "training_data", "evaluation_data", "owners",
                          "contact"),
        RiskTier.HIGH: ("intended_use", "out_of_scope_use", "training_data", "evaluation_data", "metrics",
                        "limitations", "ethical_considerations", "owners", "contact"),
    }

    class Meta:
        ordering = ["-revision"]
        constraints = [models.UniqueConstraint(fields=["version", "revision"], name="modelcard_unique_revision")]

    def get_team_id(self) -> int:
        return self.version.model.team_id

    def missing_fields(self, tier: str) -> list[str]:
        return [f for f in self.REQUIRED_BY_TIER.get(tier, ()) if not getattr(self, f)]


class ArtifactScan(TimeStampedModel):
    """One safety scan of a version's artifacts, without loading them; its findings decide deployability."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        BLOCKED = "blocked", "Blocked"
        ERROR = "error", "Error"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="scans")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    scanners = models.JSONField(default=dict, blank=True, help_text="Scanner names and versions.")
    files_scanned = models.PositiveIntegerField(default=0)
    max_severity = models.CharField(max_length=10, blank=True)
    error = models.TextField(blank=True)
    overridden_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                      related_name="+")
    override_justification = models.TextField(blank=True)
    overridden_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def get_team_id(self) -> int:
        return self.version.model.team_id


class ScanFinding(models.Model):
    """One problem a scanner found in one file."""

    SEVERITIES = ["critical", "high", "medium", "low", "info"]

    scan = models.ForeignKey(ArtifactScan, on_delete=models.CASCADE, related_name="findings")
    severity = models.CharField(max_length=10, choices=[(s, s) for s in SEVERITIES])
    scanner = models.CharField(max_length=50)
    file = models.CharField(max_length=500)
    code = models.CharField(max_length=100)
    message = models.TextField()

    class Meta:
        ordering = ["scan", "id"]


class ReferenceProfile(TimeStampedModel):
    """Per-feature statistics of the reference (training) data that drift monitoring compares against."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="profiles")
    source = models.CharField(max_length=500, help_text="Where the data came from (run dataset or upload).")
    row_count = models.PositiveIntegerField()
    features = models.JSONField(help_text="{name: {type, count, missing, quantiles | histogram | frequencies}}")

    class Meta:
        ordering = ["-created_at"]

    def get_team_id(self) -> int:
        return self.version.model.team_id


class ModelUpload(StateMachineMixin, TimeStampedModel):
    """An uploaded model file on its way to becoming a version: the request stores the file and this row, a
    Celery task logs it to MLflow and registers it (apps.registry.tasks.process_upload), so no web worker waits
    on MLflow for a large file. A failed one keeps its file and can be retried."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"        # stored, waiting for the worker
        LOGGING = "logging", "Logging to MLflow"
        REGISTERED = "registered", "Registered"
        FAILED = "failed", "Failed"

    TRANSITIONS = {
        "received": {"logging", "failed"},
        "logging": {"registered", "failed", "received"},  # received again: a retry of an upload whose worker died
        "failed": {"received"},                            # a retry
        "registered": set(),
    }

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="model_uploads")
    model_name = models.CharField(max_length=128, validators=[model_name_validator])
    filename = models.CharField(max_length=255, help_text="The file's name as uploaded (its suffix decides the "
                                                          "kind: .zip, .pkl, .pickle, .skops).")
    file_path = models.CharField(max_length=1000, help_text="Where the file waits on disk (MODELPLANE_UPLOAD_DIR); "
                                                            "emptied once the file is deleted.")
    size = models.BigIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    # What the registration is asked for, kept for the worker (and for a retry).
    description = models.TextField(blank=True, max_length=5000)
    tags = models.JSONField(default=dict, blank=True)
    risk_tier = models.CharField(max_length=10, choices=RiskTier.choices, blank=True)
    version = models.ForeignKey(ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "-created_at"]), models.Index(fields=["status", "finished_at"])]

    def __str__(self) -> str:
        return f"upload {self.pk} of {self.model_name} ({self.filename})"
