from rest_framework import serializers

from apps.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = ["seq", "occurred_at", "actor_id", "actor_name", "actor_kind", "token_id", "verb", "target_type",
                  "target_id", "target_repr", "team_id", "before", "after", "reason", "request_id", "source_ip",
                  "prev_hash", "hash"]
