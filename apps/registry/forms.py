"""Registry forms: they check the shape of what a person typed; the services decide whether it may happen."""
from __future__ import annotations

import re

from django import forms
from django.conf import settings

from apps.registry.models import ModelCard, RiskTier

TAG_LINE_RE = re.compile(r"^\s*([^=\s][^=]*?)\s*=\s*(.*?)\s*$")


def parse_key_values(text: str, *, numbers: bool = False) -> dict:
    """``key=value`` per line (blank lines ignored) into a dict; raises ValidationError naming the line."""
    out: dict = {}
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        match = TAG_LINE_RE.match(line)
        if match is None:
            raise forms.ValidationError(f"Line {number}: write key=value.")
        key, value = match.groups()
        if numbers:
            try:
                value = float(value)
            except ValueError:
                raise forms.ValidationError(f"Line {number}: {value!r} is not a number.") from None
        out[key] = value
    return out


def format_key_values(data: dict | None) -> str:
    return "\n".join(f"{k}={v}" for k, v in (data or {}).items())


RISK_CHOICES = [("", "(keep / default: medium)")] + list(RiskTier.choices)


class _RegisterBase(forms.Form):
    """What both ways of registering ask: the model's name, its team (for a new model), tier, description, tags."""

    model_name = forms.CharField(max_length=128, label="Model name",
                                 help_text="An existing model of your team gets a new version; a new name creates "
                                           "the model.")
    team = forms.TypedChoiceField(coerce=int, required=False, empty_value=None,
                                  help_text="The team that owns a new model. For an existing model, leave it or "
                                            "pick the model's own team.")
    risk_tier = forms.ChoiceField(choices=RISK_CHOICES, required=False, label="Risk tier (new model)",
                                  help_text="Decides which model card fields are required.")
    description = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}),
                                  help_text="What changed in this version.")
    tags = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "placeholder": "use=batch"}),
                           help_text="Version tags, one key=value per line.")

    def __init__(self, *args, teams=(), current_team_id=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "(the existing model's team)")] + [(t.pk, t.name) for t in teams]
        if current_team_id and not self.is_bound:
            self.initial.setdefault("team", current_team_id)

    def clean_tags(self):
        return parse_key_values(self.cleaned_data.get("tags", ""))

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        return {"model_name": data["model_name"], "team_id": data.get("team"), "risk_tier": data.get("risk_tier") or None,
                "description": data.get("description", ""), "tags": data.get("tags") or {}}


class RegisterFromRunForm(_RegisterBase):
    run_id = forms.CharField(max_length=32, min_length=32, label="MLflow run id",
                             help_text="32 hexadecimal characters, from the run's page in MLflow.")
    artifact_path = forms.CharField(max_length=500, initial="model", label="Artifact path",
                                    help_text="Where the run logged the model, e.g. 'model'.")

    field_order = ("model_name", "team", "run_id", "artifact_path", "risk_tier", "description", "tags")

    def clean_run_id(self):
        value = self.cleaned_data["run_id"].strip().lower()
        if not re.fullmatch(r"[0-9a-f]{32}", value):
            raise forms.ValidationError("An MLflow run id is 32 lower-case hexadecimal characters.")
        return value


class UploadForm(_RegisterBase):
    # The file comes last: the streaming parser reads fields in order, so when it stops a too-large file the
    # other fields are already read and can be shown again with the error.
    file = forms.FileField(label="Model file", allow_empty_file=True,
                           help_text="An MLflow model directory as .zip (what mlflow.<flavor>.save_model writes), or "
                                     "a scikit-learn model as .pkl, .pickle or .skops. It is scanned, never loaded.")

    field_order = ("model_name", "team", "risk_tier", "description", "tags", "file")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit = settings.MODELPLANE_UPLOAD_MAX_BYTES
        self.fields["file"].widget.attrs.update({"accept": ".zip,.pkl,.pickle,.skops", "data-max-bytes": limit})
        self.fields["file"].help_text += f" At most {limit / 1024 / 1024:.0f} MB."


class ModelUpdateForm(forms.Form):
    risk_tier = forms.ChoiceField(choices=RiskTier.choices, label="Risk tier")
    description = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 4}))
    tags = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="One key=value per line; mirrored to MLflow.")

    def clean_tags(self):
        return parse_key_values(self.cleaned_data.get("tags", ""))


class AliasForm(forms.Form):
    alias = forms.CharField(max_length=64, help_text="e.g. staging, candidate, shadow. Production aliases ("
                            + ", ".join(settings.MODELPLANE_PRODUCTION_ALIASES)
                            + ") move only through an approved promotion.")
    version = forms.TypedChoiceField(coerce=int, help_text="Only ready versions take an alias.")

    def __init__(self, *args, versions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["version"].choices = [(v.version, f"v{v.version}") for v in versions]


class AliasRemoveForm(forms.Form):
    alias = forms.CharField(max_length=64)


class ModelCardForm(forms.Form):
    intended_use = forms.CharField(required=False, max_length=10000, widget=forms.Textarea(attrs={"rows": 4}),
                                   help_text="Markdown. What the model is for, and for whom.")
    out_of_scope_use = forms.CharField(required=False, max_length=10000, label="Out-of-scope use",
                                       widget=forms.Textarea(attrs={"rows": 3}), help_text="Markdown.")
    training_data = forms.CharField(required=False, max_length=10000, widget=forms.Textarea(attrs={"rows": 3}),
                                    help_text="Markdown. Filled from the run's training datasets at registration.")
    evaluation_data = forms.CharField(required=False, max_length=10000, widget=forms.Textarea(attrs={"rows": 3}),
                                      help_text="Markdown.")
    metrics = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}),
                              help_text="Evaluation metrics, one name=number per line (pulled from the run).")
    limitations = forms.CharField(required=False, max_length=10000, widget=forms.Textarea(attrs={"rows": 3}),
                                  help_text="Markdown.")
    ethical_considerations = forms.CharField(required=False, max_length=10000,
                                             widget=forms.Textarea(attrs={"rows": 3}), help_text="Markdown.")
    owners = forms.CharField(required=False, max_length=500)
    contact = forms.CharField(required=False, max_length=300, help_text="Who answers questions about the model.")

    def clean_metrics(self):
        return parse_key_values(self.cleaned_data.get("metrics", ""), numbers=True)

    @classmethod
    def initial_from(cls, card: ModelCard | None) -> dict:
        if card is None:
            return {}
        initial = {f: getattr(card, f) for f in ModelCard.TEXT_FIELDS}
        initial["metrics"] = format_key_values(card.metrics)
        return initial

    def changes_from(self, card: ModelCard | None) -> dict:
        """Only the fields that differ from the current card, so that a revision records what was edited."""
        changes = {}
        for name, value in self.cleaned_data.items():
            current = getattr(card, name) if card is not None else ("" if name != "metrics" else {})
            if value != current:
                changes[name] = value
        return changes


class ScanOverrideForm(forms.Form):
    justification = forms.CharField(min_length=20, max_length=5000, widget=forms.Textarea(attrs={"rows": 3}),
                                    help_text="At least 20 characters: why is this finding acceptable? It is "
                                              "recorded in the audit trail.")


class ArchiveForm(forms.Form):
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))


class ModelFilterForm(forms.Form):
    """The model list's search and filters; every field optional."""

    STATUS_CHOICES = (("", "Any"), ("pending_scan", "Pending scan"), ("ready", "Ready"), ("blocked", "Blocked"),
                      ("archived", "Archived"))

    q = forms.CharField(required=False, max_length=128, label="Name contains")
    tag = forms.CharField(required=False, max_length=300, help_text="key or key=value")
    team = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    alias = forms.CharField(required=False, max_length=64)
    risk_tier = forms.ChoiceField(choices=[("", "Any")] + list(RiskTier.choices), required=False,
                                  label="Risk tier")
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False, label="Has a version that is")
    after = forms.CharField(required=False, max_length=128, widget=forms.HiddenInput)

    def __init__(self, *args, teams=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].choices = [("", "Any")] + [(t.pk, t.name) for t in teams]

    def clean_tag(self):
        tag = self.cleaned_data.get("tag", "").strip()
        key = tag.partition("=")[0].strip()
        if tag and (not key or not re.fullmatch(r"[A-Za-z0-9_.\-/ ]{1,250}", key)):
            raise forms.ValidationError("A tag key of letters, digits, '_', '.', '-', '/' or spaces; "
                                        "optionally =value.")
        return tag
