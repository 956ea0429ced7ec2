"""Filters for the audit trail, shared by the page and the API."""
import django_filters

from apps.audit.models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_name", lookup_expr="iexact", label="Actor (username)")
    actor_id = django_filters.NumberFilter(field_name="actor_id")
    verb = django_filters.CharFilter(field_name="verb", lookup_expr="istartswith",
                                     label="Verb (e.g. token. or token.created)")
    target_type = django_filters.CharFilter(field_name="target_type", lookup_expr="iexact")
    target_id = django_filters.CharFilter(field_name="target_id")
    team = django_filters.NumberFilter(field_name="team_id", label="Team id")
    request_id = django_filters.CharFilter(field_name="request_id")
    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte",
                                             label="Since (ISO 8601)")
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt",
                                             label="Until (ISO 8601)")

    class Meta:
        model = AuditEvent
        fields: list[str] = []
