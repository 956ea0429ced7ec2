"""Registry API shapes. Input serializers check types and lengths; the services decide everything else
(names, run ids, aliases, permissions), so a request is refused for the same reason on the page and here."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.registry.models import (
    AliasAssignment,
    ArtifactScan,
    ModelCard,
    ModelUpload,
    ModelVersion,
    ReferenceProfile,
    RegisteredModel,
    RiskTier,
    ScanFinding,
)


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know: nothing a user sent is dropped silently."""

    def to_internal_value(self, data):
        unknown = sorted(set(data.keys()) - set(self.fields)) if hasattr(data, "keys") else []
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not unknown or not isinstance(exc.detail, dict):
                raise
            raise serializers.ValidationError({**exc.detail, **{k: ["Unknown field."] for k in unknown}}) from exc
        if unknown:
            raise serializers.ValidationError({k: ["Unknown field."] for k in unknown})
        return value


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


TAGS_HELP = "String keys and string values (at most 50; keys not starting with 'mlflow.')."


def _tags_field(**kwargs):
    kwargs.setdefault("help_text", TAGS_HELP)
    return serializers.DictField(child=serializers.CharField(max_length=5000, allow_blank=True), **kwargs)


# ---------------------------------------------------------------------------------------------- models

class AliasHeldSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.version", read_only=True, help_text="Version number.")
    assigned_by = serializers.SerializerMethodField()

    class Meta:
        model = AliasAssignment
        fields = ["alias", "version", "version_id", "assigned_at", "assigned_by"]

    def get_assigned_by(self, obj) -> str | None:
        return _username(obj.assigned_by)


class AliasAssignmentSerializer(AliasHeldSerializer):
    removed_by = serializers.SerializerMethodField()

    class Meta(AliasHeldSerializer.Meta):
        fields = AliasHeldSerializer.Meta.fields + ["removed_at", "removed_by"]

    def get_removed_by(self, obj) -> str | None:
        return _username(obj.removed_by)


class RegisteredModelSerializer(serializers.ModelSerializer):
    team_name = serializers.CharField(source="team.name", read_only=True)
    aliases = serializers.SerializerMethodField(help_text="The aliases the model's versions hold now.")
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["id", "name", "team", "team_name", "description", "tags", "risk_tier", "latest_version", "aliases",
                  "archived_at", "created_by", "created_at", "updated_at"]

    @extend_schema_field(AliasHeldSerializer(many=True))
    def get_aliases(self, obj):
        held = getattr(obj, "current_aliases", None)
        if held is None:
            held = obj.alias_history.filter(removed_at__isnull=True).select_related("version", "assigned_by")
        return AliasHeldSerializer(sorted(held, key=lambda a: a.alias), many=True).data

    def get_created_by(self, obj) -> str | None:
        return _username(obj.created_by)


class RegisteredModelCreateSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=128, help_text="Letters, digits, '.', '_' or '-'; unique.")
    team = serializers.IntegerField(min_value=1, help_text="The owning team's id.")
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    risk_tier = serializers.ChoiceField(choices=RiskTier.choices, required=False, allow_null=True, default=None,
                                        help_text="Decides which model card fields are required (default medium).")
    tags = _tags_field(required=False, default=dict)


class RegisteredModelUpdateSerializer(StrictInputSerializer):
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    risk_tier = serializers.ChoiceField(choices=RiskTier.choices, required=False)
    tags = _tags_field(required=False, help_text=TAGS_HELP + " Replaces all tags.")


class AliasesSerializer(serializers.Serializer):
    current = AliasHeldSerializer(many=True)
    history = AliasAssignmentSerializer(many=True, help_text="Every assignment, newest first; an open one has no "
                                                             "removed_at.")


class AliasSetSerializer(StrictInputSerializer):
    alias = serializers.CharField(max_length=64, help_text="Lower-case; production aliases move only through an "
                                                           "approved promotion.")
    version = serializers.IntegerField(min_value=1, help_text="Version number (not id) of a ready version.")


# ---------------------------------------------------------------------------------------------- versions

class ScanFindingSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScanFinding
        fields = ["id", "severity", "scanner", "file", "code", "message"]


class ArtifactScanSerializer(serializers.ModelSerializer):
    version_number = serializers.IntegerField(source="version.version", read_only=True)
    overridden_by = serializers.SerializerMethodField()
    findings = ScanFindingSerializer(many=True, read_only=True)

    class Meta:
        model = ArtifactScan
        fields = ["id", "version", "version_number", "status", "created_at", "started_at", "finished_at", "scanners",
                  "files_scanned", "max_severity", "error", "overridden_by", "override_justification",
                  "overridden_at", "findings"]

    def get_overridden_by(self, obj) -> str | None:
        return _username(obj.overridden_by)


class ScanSummarySerializer(ArtifactScanSerializer):
    findings_by_severity = serializers.SerializerMethodField()

    class Meta(ArtifactScanSerializer.Meta):
        fields = [f for f in ArtifactScanSerializer.Meta.fields if f != "findings"] + ["findings_by_severity"]

    def get_findings_by_severity(self, obj) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in obj.findings.all():
            counts[finding.severity] = counts.get(finding.severity, 0) + 1
        return counts


class ModelCardSerializer(serializers.ModelSerializer):
    edited_by = serializers.SerializerMethodField()

    class Meta:
        model = ModelCard
        fields = ["revision", *ModelCard.TEXT_FIELDS, "metrics", "edited_by", "created_at"]

    def get_edited_by(self, obj) -> str | None:
        return _username(obj.edited_by)


class CardStateSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="Version id.")
    risk_tier = serializers.CharField()
    card = ModelCardSerializer(allow_null=True, help_text="The newest revision.")
    revisions = serializers.IntegerField(help_text="How many revisions the card has.")
    missing_fields = serializers.ListField(child=serializers.CharField(),
                                           help_text="Fields the model's risk tier requires that are empty.")
    complete = serializers.BooleanField()


def _card_text(field: str) -> serializers.CharField:
    return serializers.CharField(max_length=ModelCard._meta.get_field(field).max_length, required=False,
                                 allow_blank=True)


class CardReviseSerializer(StrictInputSerializer):
    """The fields to change; the others keep their value from the newest revision."""

    intended_use = _card_text("intended_use")
    out_of_scope_use = _card_text("out_of_scope_use")
    training_data = _card_text("training_data")
    evaluation_data = _card_text("evaluation_data")
    limitations = _card_text("limitations")
    ethical_considerations = _card_text("ethical_considerations")
    owners = _card_text("owners")
    contact = _card_text("contact")
    metrics = serializers.DictField(child=serializers.FloatField(), required=False,
                                    help_text="Metric names and numbers.")

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send at least one model card field to change.")
        return attrs


class CardExportSerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()
    version_id = serializers.IntegerField()
    team = serializers.CharField()
    risk_tier = serializers.CharField()
    revision = serializers.IntegerField(allow_null=True)
    edited_by = serializers.CharField(allow_null=True)
    edited_at = serializers.DateTimeField(allow_null=True)
    missing_fields = serializers.ListField(child=serializers.CharField())
    complete = serializers.BooleanField()
    intended_use = serializers.CharField()
    out_of_scope_use = serializers.CharField()
    training_data = serializers.CharField()
    evaluation_data = serializers.CharField()
    metrics = serializers.DictField(child=serializers.FloatField())
    limitations = serializers.CharField()
    ethical_considerations = serializers.CharField()
    owners = serializers.CharField()
    contact = serializers.CharField()
    exported_at = serializers.DateTimeField()


class ReferenceProfileSerializer(serializers.ModelSerializer):
    class Meta:
        model = ReferenceProfile
        fields = ["id", "source", "row_count", "features", "created_at"]


class ModelVersionSerializer(serializers.ModelSerializer):
    model_name = serializers.CharField(source="model.name", read_only=True)
    team = serializers.IntegerField(source="model.team_id", read_only=True)
    registered_by = serializers.SerializerMethodField()
    open_findings = serializers.SerializerMethodField(
        help_text="Critical and high findings of the version's latest scan (0 once a platform admin overrode it).")

    class Meta:
        model = ModelVersion
        fields = ["id", "model", "model_name", "team", "version", "status", "status_message", "deployable", "origin",
                  "description", "tags", "source", "run_id", "open_findings", "registered_by", "mlflow_created_at",
                  "created_at", "updated_at"]

    def get_registered_by(self, obj) -> str | None:
        return _username(obj.registered_by)

    def get_open_findings(self, obj) -> int | None:
        return getattr(obj, "open_findings", None)


class ModelVersionDetailSerializer(ModelVersionSerializer):
    replaces_version = serializers.IntegerField(source="replaces.version", read_only=True, allow_null=True,
                                                default=None, help_text="The version number this one replaced.")
    aliases = serializers.SerializerMethodField(help_text="The aliases this version holds now.")
    latest_scan = serializers.SerializerMethodField()
    card = serializers.SerializerMethodField(help_text="The current model card and what its risk tier still needs.")
    profile = serializers.SerializerMethodField(help_text="The newest reference data profile, if any.")

    class Meta(ModelVersionSerializer.Meta):
        fields = ModelVersionSerializer.Meta.fields + [
            "mlflow_model_id", "flavors", "signature", "input_example", "replaces", "replaces_version", "aliases",
            "latest_scan", "card", "profile"]

    def get_aliases(self, obj) -> list[str]:
        return sorted(obj.alias_history.filter(removed_at__isnull=True).values_list("alias", flat=True))

    @extend_schema_field(ScanSummarySerializer(allow_null=True))
    def get_latest_scan(self, obj):
        from apps.registry import selectors

        scan = selectors.scan_latest(version=obj)
        return ScanSummarySerializer(scan).data if scan else None

    @extend_schema_field(CardStateSerializer)
    def get_card(self, obj):
        return card_state(obj)

    @extend_schema_field(ReferenceProfileSerializer(allow_null=True))
    def get_profile(self, obj):
        from apps.registry import selectors

        profile = selectors.profile_latest(version=obj)
        return ReferenceProfileSerializer(profile).data if profile else None


def card_state(version: ModelVersion) -> dict:
    """The current card of a version with the fields its model's risk tier still needs."""
    from apps.registry import selectors

    card = selectors.modelcard_current(version=version)
    tier = version.model.risk_tier
    missing = card.missing_fields(tier) if card else list(ModelCard.REQUIRED_BY_TIER.get(tier, ()))
    return CardStateSerializer({
        "version": version.pk, "risk_tier": tier, "card": card, "revisions": version.cards.count(),
        "missing_fields": missing, "complete": not missing,
    }).data


class RegisterFromRunSerializer(StrictInputSerializer):
    model_name = serializers.CharField(max_length=128, help_text="An existing model of your team gets a new "
                                                                 "version; a new name creates the model.")
    run_id = serializers.CharField(max_length=64, help_text="The MLflow run that logged the model.")
    artifact_path = serializers.CharField(max_length=500, required=False, default="model",
                                          help_text="Where in the run the model was logged (default 'model').")
    team = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None,
                                    help_text="The owning team's id; required for a new model.")
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True, default="")
    tags = _tags_field(required=False, default=dict)
    risk_tier = serializers.ChoiceField(choices=RiskTier.choices, required=False, allow_null=True, default=None,
                                        help_text="For a new model (default medium).")


class UploadSerializer(RegisterFromRunSerializer):
    run_id = None
    artifact_path = None
    file = serializers.FileField(help_text="An MLflow model directory as .zip, or a scikit-learn model as .pkl, "
                                           ".pickle or .skops. Never loaded: it is scanned before any use.")
    tags = serializers.JSONField(required=False, default=dict, help_text=TAGS_HELP + " A JSON object.")


class ModelUploadSerializer(serializers.ModelSerializer):
    """An upload on its way to a version: received → logging → registered (or failed, with the reason)."""

    team_name = serializers.CharField(source="team.name", read_only=True)
    created_by = serializers.SerializerMethodField()
    version_number = serializers.IntegerField(source="version.version", read_only=True, allow_null=True,
                                              default=None, help_text="The registered version's number.")
    retryable = serializers.SerializerMethodField(help_text="Whether POST .../retry/ would queue it again.")

    class Meta:
        model = ModelUpload
        fields = ["id", "team", "team_name", "model_name", "filename", "size", "status", "error", "version",
                  "version_number", "description", "tags", "risk_tier", "attempts", "retryable", "created_by",
                  "created_at", "started_at", "finished_at"]
        extra_kwargs = {"version": {"help_text": "The registered version's id, once registered."}}

    def get_created_by(self, obj) -> str | None:
        return _username(obj.created_by)

    def get_retryable(self, obj) -> bool:
        return obj.status == ModelUpload.Status.FAILED and bool(obj.file_path)


class ArchiveSerializer(StrictInputSerializer):
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class OverrideSerializer(StrictInputSerializer):
    justification = serializers.CharField(max_length=5000, help_text="Why the blocking finding is acceptable "
                                                                     "(at least 20 characters).")


class LineageSerializer(serializers.Serializer):
    version = serializers.IntegerField(help_text="Version id.")
    graph = serializers.JSONField(help_text="{nodes: [{id, kind, label, ...}], edges: [{from, to, label}]}: "
                                            "version → run → experiment, params and metrics, datasets, source "
                                            "commit; version → the version it replaced.")
    lineage = serializers.JSONField(help_text="The run's facts as MLflow held them at registration.")


class WebhookAcceptedSerializer(serializers.Serializer):
    event = serializers.CharField(help_text="entity.action, e.g. model_version.created")
    delivery_id = serializers.CharField()
    queued = serializers.BooleanField(help_text="Whether a registry sync was queued.")


class ProfileCreateSerializer(StrictInputSerializer):
    """Exactly one of: an uploaded CSV/Parquet file, or the path of one in the version's run artifacts."""

    file = serializers.FileField(required=False)
    artifact_path = serializers.CharField(required=False, max_length=500)

    def validate(self, attrs):
        if bool(attrs.get("file")) == bool(attrs.get("artifact_path")):
            raise serializers.ValidationError({"file": ["Send either file or artifact_path (one of them)."]})
        return attrs
