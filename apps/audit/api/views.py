from apps.audit.api.serializers import AuditEventSerializer
from apps.audit.filters import AuditEventFilter
from apps.audit.selectors import auditevent_list
from apps.core.api.views import ReadOnlyApiViewSet


class AuditEventViewSet(ReadOnlyApiViewSet):
    """The audit trail, newest first; filter by actor, verb, target, team and time range."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    ordering = "-seq"
    lookup_field = "seq"
    lookup_value_regex = r"\d+"

    def scoped_queryset(self):
        return auditevent_list(actor=self.actor)
