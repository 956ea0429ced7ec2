"""Serving forms: they check the shape of what a person typed (numbers are numbers, JSON is JSON); the services
decide whether it may happen (versions, environments, limits, permissions), so a page and the API refuse the
same things for the same reasons."""
from __future__ import annotations

import json
import uuid

from django import forms

from apps.deployments.models import Deployment, Environment

# What each strategy does, said under its choice on the forms (the model's labels are the short form).
STRATEGY_HELP = {
    Deployment.Strategy.DIRECT: "The new version replaces the old one at once: requests may fail during the "
                                "switch, until its replicas are ready.",
    Deployment.Strategy.BLUE_GREEN: "The new version starts beside the old one with no traffic, is health-checked "
                                    "and smoke-tested with its input example, then takes all traffic at once; the "
                                    "previous version is kept warm for the rollback window, so a rollback is "
                                    "instant.",
}
STRATEGY_CHOICES = [(Deployment.Strategy.BLUE_GREEN, "Blue-green"), (Deployment.Strategy.DIRECT, "Direct")]


class OpenChoiceField(forms.TypedChoiceField):
    """A select whose posted value is only checked for its type: the service decides whether the id may be used
    (another team's version, a blocked one, an unknown environment), and its refusal lands on this field with
    its own words instead of Django's "Select a valid choice"."""

    def valid_value(self, value) -> bool:
        return True


def _number_input(**attrs) -> forms.NumberInput:
    return forms.NumberInput(attrs={"inputmode": "decimal", **attrs})


class _SettingsFields(forms.Form):
    """The settings a deployment keeps and may change later (apps.deployments.services.TUNABLE_FIELDS).

    An empty number means "the default" on create and "unchanged" on edit, except the rate limit, where empty
    means none.
    Ranges are the model's and are checked by the service; the inputs carry them as hints.
    """

    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    replicas = forms.IntegerField(required=False, widget=_number_input(min=1, max=8),
                                  help_text="Model-server processes (or pods) per version, 1 to 8.")
    cpu = forms.DecimalField(required=False, max_digits=5, decimal_places=2, label="CPU cores",
                             widget=_number_input(min="0.1", max=64, step="0.1"),
                             help_text="Per replica (requests and limits on Kubernetes).")
    memory_mb = forms.IntegerField(required=False, label="Memory (MB)", widget=_number_input(min=128),
                                   help_text="Per replica, at least 128.")
    timeout_seconds = forms.FloatField(required=False, label="Timeout (seconds)",
                                       widget=_number_input(min="0.1", max=300, step="0.1"),
                                       help_text="The gateway answers 504 when a replica takes longer.")
    max_payload_bytes = forms.IntegerField(required=False, label="Payload cap (bytes)",
                                           widget=_number_input(min=1024),
                                           help_text="Larger request bodies are refused with 413.")
    rate_limit_rps = forms.FloatField(required=False, label="Rate limit (requests/second per key)",
                                      widget=_number_input(min="0.1", step="0.1"),
                                      help_text="Empty: no limit.")
    rate_limit_burst = forms.IntegerField(required=False, label="Rate limit burst", widget=_number_input(min=1),
                                          help_text="Requests allowed at once above the rate (needs a rate).")
    sampling_rate = forms.FloatField(required=False, label="Sampling rate",
                                     widget=_number_input(min=0, max=1, step="0.01"),
                                     help_text="Share of requests whose inputs and outputs are logged (0 to 1).")
    rollback_window_seconds = forms.IntegerField(required=False, label="Rollback window (seconds)",
                                                 widget=_number_input(min=0),
                                                 help_text="Blue-green: how long the previous version stays warm "
                                                           "for an instant rollback.")

    SETTINGS = ("description", "replicas", "cpu", "memory_mb", "timeout_seconds", "max_payload_bytes",
                "rate_limit_rps", "rate_limit_burst", "sampling_rate", "rollback_window_seconds")

    def settings_kwargs(self) -> dict:
        """The filled-in settings for the service; the rate limit is always passed (empty means "no limit")."""
        data = self.cleaned_data
        out = {k: data[k] for k in self.SETTINGS if data.get(k) not in (None, "")}
        out["description"] = data.get("description") or ""
        for key in ("rate_limit_rps", "rate_limit_burst"):
            out[key] = data.get(key)
        return out


class DeploymentCreateForm(_SettingsFields):
    name = forms.CharField(max_length=63, help_text="Lower-case letters, digits and '-'. It is in the gateway's "
                                                    "URLs: /v1/deployments/<name>/invocations.")
    environment = OpenChoiceField(coerce=int, empty_value=None)
    model = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Registered model",
                                   help_text="Narrows the versions below to one model.")
    model_version = OpenChoiceField(coerce=int, empty_value=None, label="Model version",
                                    help_text="Only ready versions (scanned, not blocked) of your teams' models "
                                              "are offered.")
    strategy = forms.ChoiceField(choices=STRATEGY_CHOICES, initial=Deployment.Strategy.BLUE_GREEN,
                                 widget=forms.RadioSelect, help_text="How later rollouts switch versions.")

    field_order = ("name", "environment", "model", "model_version", "strategy", "replicas", "cpu", "memory_mb",
                   "timeout_seconds", "max_payload_bytes", "rate_limit_rps", "rate_limit_burst", "sampling_rate",
                   "rollback_window_seconds", "description")

    def __init__(self, *args, environments=(), versions=(), may_deploy_to_production=False, **kwargs):
        super().__init__(*args, **kwargs)
        env_choices = [("", "Choose an environment")]
        for env in environments:
            label = env.name
            if env.is_production:
                label += " (production: platform admins only until approvals)" if not may_deploy_to_production \
                    else " (production)"
            env_choices.append((env.pk, label))
        self.fields["environment"].choices = env_choices
        models: dict[int, str] = {}
        groups: dict[str, list] = {}
        for v in versions:
            models[v.model_id] = v.model.name
            groups.setdefault(v.model.name, []).append((v.pk, f"{v.model.name} v{v.version}"))
        self.fields["model"].choices = [("", "Any")] + sorted(((pk, name) for pk, name in models.items()),
                                                              key=lambda c: c[1])
        self.fields["model_version"].choices = [("", "Choose a version")] + [
            (name, options) for name, options in sorted(groups.items())]
        # The model of each version, for the page's script that narrows the version list to the chosen model.
        self.version_models = {v.pk: v.model_id for v in versions}
        defaults = Deployment()
        for name in ("replicas", "cpu", "memory_mb", "timeout_seconds", "max_payload_bytes", "sampling_rate",
                     "rollback_window_seconds"):
            self.fields[name].initial = getattr(defaults, name)

    def clean(self):
        data = super().clean()
        model_id, version_id = data.get("model"), data.get("model_version")
        if model_id and version_id and version_id in self.version_models \
                and self.version_models[version_id] != model_id:
            self.add_error("model_version", "This version belongs to another model than the one chosen above.")
        return data


class DeploymentUpdateForm(_SettingsFields):
    """The settings page of a deployment: every field starts with its current value."""

    @classmethod
    def initial_from(cls, deployment: Deployment) -> dict:
        return {name: getattr(deployment, name) for name in cls.SETTINGS}

    def changes_from(self, deployment: Deployment) -> dict:
        """Only what differs from the deployment now, so that the timeline names what was edited."""
        changes = {}
        for key, value in self.settings_kwargs().items():
            current = getattr(deployment, key)
            if value is None and current is None:
                continue
            if value != current:
                changes[key] = value
        return changes


class RolloutForm(forms.Form):
    model_version = OpenChoiceField(coerce=int, empty_value=None, label="New version",
                                    help_text="Another ready version of the same model.")
    strategy = forms.ChoiceField(choices=STRATEGY_CHOICES, widget=forms.RadioSelect)

    def __init__(self, *args, versions=(), strategy=Deployment.Strategy.BLUE_GREEN, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_version"].choices = [("", "Choose a version")] + [
            (v.pk, f"v{v.version}" + (f": {v.description[:60]}" if v.description else "")) for v in versions]
        self.fields["strategy"].initial = strategy


class ReasonForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Recorded in the timeline and the audit trail.")


class DeploymentKeyForm(forms.Form):
    nonce = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4, required=False,
                            help_text="One per rendered form, so that a reload cannot create a second key.")
    name = forms.CharField(max_length=100, help_text="Who or what uses the key, e.g. 'checkout service'.")
    expires_at = forms.DateTimeField(required=False, label="Expires (optional)",
                                     widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                                format="%Y-%m-%dT%H:%M"),
                                     input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M",
                                                    "%Y-%m-%d"],
                                     help_text="Empty: the key works until it is revoked. Times are UTC.")


class EnvironmentForm(forms.Form):
    """Create or edit an environment (platform admins). The name is fixed once created."""

    name = forms.CharField(max_length=63, help_text="Lower-case letters, digits and '-', e.g. staging.")
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    backend = forms.ChoiceField(choices=Environment.Backend.choices)
    backend_settings = forms.CharField(required=False, label="Backend settings (JSON)",
                                       widget=forms.Textarea(attrs={"rows": 4, "class": "mono",
                                                                    "spellcheck": "false"}),
                                       help_text='A JSON object, e.g. {"namespace": "models"} for Kubernetes or '
                                                 '{"max_replicas": 4} for local. Empty: {}.')
    is_production = forms.BooleanField(required=False, label="Production",
                                       help_text="Deployments here only through an approved promotion (until the "
                                                 "approvals step lands, only platform admins may deploy here).")

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if editing:
            self.fields["name"].disabled = True
            self.fields["name"].help_text = "An environment's name cannot change."

    def clean_backend_settings(self):
        raw = (self.cleaned_data.get("backend_settings") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("Must be a JSON object ({...}), not a list or a single value.")
        return value


class DeploymentFilterForm(forms.Form):
    """The deployment list's search and filters; every field optional."""

    q = forms.CharField(required=False, max_length=128, label="Name or model contains")
    environment = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    status = forms.ChoiceField(choices=[("", "Any")] + list(Deployment.Status.choices), required=False)
    team = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    after = forms.CharField(required=False, max_length=128, widget=forms.HiddenInput)

    def __init__(self, *args, teams=(), environments=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "Any")] + [(t.pk, t.name) for t in teams]
        self.fields["environment"].choices = [("", "Any")] + [(e.pk, e.name) for e in environments]

