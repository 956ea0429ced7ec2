"""Serving API shapes. Input serializers check types; the services decide the rest (names, versions, statuses,
permissions), so a request is refused for the same reason on the page and here."""
from __future__ import annotations

from rest_framework import serializers

from apps.deployments.models import Deployment, DeploymentEvent, DeploymentKey, Environment, Replica, Variant
from apps.registry.api.serializers import StrictInputSerializer


class EnvironmentSerializer(serializers.ModelSerializer):
    deployment_count = serializers.IntegerField(read_only=True, help_text="Deployments not stopped.")

    class Meta:
        model = Environment
        fields = ["id", "name", "description", "backend", "backend_settings", "is_production", "deployment_count",
                  "created_at", "updated_at"]


class EnvironmentCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=63)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    backend = serializers.ChoiceField(choices=Environment.Backend.choices, default=Environment.Backend.LOCAL)
    backend_settings = serializers.DictField(required=False, default=dict)
    is_production = serializers.BooleanField(required=False, default=False)


class EnvironmentUpdateSerializer(StrictInputSerializer):
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    backend = serializers.ChoiceField(choices=Environment.Backend.choices, required=False)
    backend_settings = serializers.DictField(required=False)
    is_production = serializers.BooleanField(required=False)


class ReplicaSerializer(serializers.ModelSerializer):
    variant = serializers.CharField(source="variant.name", read_only=True)
    url = serializers.CharField(read_only=True)

    class Meta:
        model = Replica
        fields = ["id", "variant", "index", "status", "status_message", "url", "pid", "started_at", "ready_at",
                  "restart_count", "next_restart_at", "last_exit", "desired"]


class VariantSerializer(serializers.ModelSerializer):
    model_version_number = serializers.IntegerField(source="model_version.version", read_only=True)
    model_name = serializers.CharField(source="model_version.model.name", read_only=True)

    class Meta:
        model = Variant
        fields = ["id", "name", "role", "weight", "replicas", "model_version", "model_name",
                  "model_version_number", "smoke_passed_at", "standby_until", "retired_at", "created_at"]


class DeploymentSerializer(serializers.ModelSerializer):
    team_name = serializers.CharField(source="team.name", read_only=True)
    environment_name = serializers.CharField(source="environment.name", read_only=True)
    model_name = serializers.CharField(source="model.name", read_only=True)
    variants = serializers.SerializerMethodField(help_text="Live, candidate and standby variants.")
    invocations_path = serializers.SerializerMethodField(
        help_text="The gateway path for MLflow's scoring format; OIP v2 is /v2/models/<name>/infer.")

    class Meta:
        model = Deployment
        fields = ["id", "name", "description", "team", "team_name", "environment", "environment_name", "model",
                  "model_name", "strategy", "status", "status_message", "replicas", "cpu", "memory_mb",
                  "timeout_seconds", "max_payload_bytes", "rate_limit_rps", "rate_limit_burst", "sampling_rate",
                  "rollback_window_seconds", "generation", "variants", "invocations_path", "created_at",
                  "updated_at"]

    def get_variants(self, obj) -> list[dict]:
        variants = getattr(obj, "active_variants", None)
        if variants is None:
            variants = obj.variants.filter(role__in=Variant.ACTIVE_ROLES).select_related("model_version__model")
        return VariantSerializer(variants, many=True).data

    def get_invocations_path(self, obj) -> str:
        return f"/v1/deployments/{obj.name}/invocations"


class _TunableFields(StrictInputSerializer):
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    replicas = serializers.IntegerField(required=False, min_value=1, max_value=8)
    cpu = serializers.DecimalField(required=False, max_digits=5, decimal_places=2)
    memory_mb = serializers.IntegerField(required=False)
    timeout_seconds = serializers.FloatField(required=False)
    max_payload_bytes = serializers.IntegerField(required=False)
    rate_limit_rps = serializers.FloatField(required=False, allow_null=True)
    rate_limit_burst = serializers.IntegerField(required=False, allow_null=True)
    sampling_rate = serializers.FloatField(required=False)
    rollback_window_seconds = serializers.IntegerField(required=False)


class DeploymentCreateSerializer(_TunableFields):
    name = serializers.CharField(max_length=63)
    environment = serializers.IntegerField(help_text="Environment id.")
    model_version = serializers.IntegerField(help_text="Model version id (must be ready: scanned, not blocked).")
    strategy = serializers.ChoiceField(choices=Deployment.Strategy.choices, default=Deployment.Strategy.BLUE_GREEN)


class DeploymentUpdateSerializer(_TunableFields):
    pass


class RolloutSerializer(StrictInputSerializer):
    model_version = serializers.IntegerField(help_text="Model version id of the same registered model.")
    strategy = serializers.ChoiceField(choices=Deployment.Strategy.choices, required=False,
                                       help_text="Defaults to the deployment's strategy.")


class ReasonSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class DeploymentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["id", "created_at", "kind", "level", "message", "data", "actor"]


class DeploymentKeySerializer(serializers.ModelSerializer):
    created_by = serializers.SerializerMethodField()
    active = serializers.SerializerMethodField()

    class Meta:
        model = DeploymentKey
        fields = ["id", "deployment", "name", "prefix", "created_by", "created_at", "expires_at", "revoked_at",
                  "active"]

    def get_created_by(self, obj) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None

    def get_active(self, obj) -> bool:
        from django.utils import timezone

        return obj.revoked_at is None and (obj.expires_at is None or obj.expires_at > timezone.now())


class DeploymentKeyCreatedSerializer(DeploymentKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown this once; only its hash is kept.")

    class Meta(DeploymentKeySerializer.Meta):
        fields = DeploymentKeySerializer.Meta.fields + ["key"]


class DeploymentKeyCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ReplicaLogSerializer(serializers.Serializer):
    replica = serializers.IntegerField()
    output = serializers.CharField(help_text="The last bytes of the model server's stdout and stderr.")


class MetricsPointSerializer(serializers.Serializer):
    variant = serializers.CharField(help_text="The variant that answered (empty: none did, e.g. 503s).")
    minute = serializers.DateTimeField()
    count = serializers.IntegerField()
    sampled = serializers.IntegerField(help_text="Requests whose inputs and outputs were logged.")
    errors = serializers.IntegerField(help_text="5xx answers and gateway errors.")
    client_errors = serializers.IntegerField(help_text="4xx answers.")
    rps = serializers.FloatField()
    error_rate = serializers.FloatField()
    mean_ms = serializers.FloatField()
    max_ms = serializers.FloatField()
    p50_ms = serializers.FloatField(allow_null=True)
    p95_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)


class TrySerializer(StrictInputSerializer):
    payload = serializers.JSONField(help_text="An MLflow scoring request body (dataframe_split, ...).")
