"""Filters of the registry's API lists. They check and document the query parameters; for models the
filtering itself is the selector's (``registeredmodel_filter``), so the models page and the API agree."""
import django_filters
from django import forms

from apps.registry import selectors
from apps.registry.models import ModelVersion, RegisteredModel, RiskTier


class IdFilter(django_filters.NumberFilter):
    """A whole-number id (NumberFilter takes decimals, and 3.5 would quietly become 3)."""

    field_class = forms.IntegerField


class StrictBooleanField(forms.NullBooleanField):
    """true/false/1/0 or nothing; anything else is an error (Django's select widget would read it as nothing)."""

    widget = forms.TextInput
    VALUES = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def to_python(self, value):
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return value
        try:
            return self.VALUES[str(value).lower()]
        except KeyError:
            raise forms.ValidationError("Write true or false.", code="invalid") from None


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class RegisteredModelFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(max_length=128, label="Name contains (case-insensitive)")
    tag = django_filters.CharFilter(max_length=500, label="Tag: a key (the tag is present) or key=value")
    team = IdFilter(label="Team id")
    alias = django_filters.CharFilter(max_length=64, label="Holds this alias now (e.g. staging)")
    risk_tier = django_filters.ChoiceFilter(choices=RiskTier.choices, label="Risk tier")
    status = django_filters.ChoiceFilter(choices=ModelVersion.Status.choices,
                                         label="Has at least one version in this status")
    archived = StrictBooleanFilter(label="true: archived models only; false: active ones only")

    class Meta:
        model = RegisteredModel
        fields: list[str] = []

    def filter_queryset(self, queryset):
        return selectors.registeredmodel_filter(queryset, self.form.cleaned_data)


class ModelVersionFilter(django_filters.FilterSet):
    # A plain number, not a choice of models: another team's model id filters to nothing rather than
    # telling "no such model" apart from "not yours".
    model = IdFilter(field_name="model_id", label="Registered model id")
    status = django_filters.ChoiceFilter(choices=ModelVersion.Status.choices)

    class Meta:
        model = ModelVersion
        fields: list[str] = []
