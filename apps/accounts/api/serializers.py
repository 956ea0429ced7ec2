from django.conf import settings
from rest_framework import serializers

from apps.accounts.models import ApiToken, Membership, Team, User
from apps.core.permissions import ROLE_CHOICES


class TeamSerializer(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["id", "name", "slug", "description", "created_at", "updated_at"]


class TeamCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    slug = serializers.SlugField(max_length=50)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class TeamUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    description = serializers.CharField(max_length=2000, required=False, allow_blank=True)


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "display_name", "email", "is_platform_admin", "is_active"]


class UserCreateSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, write_only=True, style={"input_type": "password"})
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    display_name = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    is_platform_admin = serializers.BooleanField(required=False, default=False)


class MembershipSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", read_only=True)
    team_name = serializers.CharField(source="team.name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "team", "team_name", "user", "username", "role", "created_at"]


class MembershipCreateSerializer(serializers.Serializer):
    team = serializers.IntegerField(min_value=1, help_text="Team id.")
    user = serializers.IntegerField(min_value=1, help_text="User id.")
    role = serializers.ChoiceField(choices=ROLE_CHOICES)


class ApiTokenSerializer(serializers.ModelSerializer):
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scopes", "status", "created_at", "expires_at", "revoked_at",
                  "last_used_at"]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret. Shown only in this response.")

    class Meta(ApiTokenSerializer.Meta):
        fields = ApiTokenSerializer.Meta.fields + ["token"]


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=["read", "write"]), min_length=1,
                                   max_length=2, default=["read"])
    expires_in_days = serializers.IntegerField(min_value=1, max_value=settings.API_TOKEN_MAX_DAYS, default=90)


class MembershipSummarySerializer(serializers.Serializer):
    team = serializers.IntegerField()
    team_name = serializers.CharField()
    team_slug = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    display_name = serializers.CharField()
    email = serializers.CharField()
    is_platform_admin = serializers.BooleanField()
    auth = serializers.CharField(help_text="session or token")
    token_scopes = serializers.ListField(child=serializers.CharField(), allow_null=True)
    teams = MembershipSummarySerializer(many=True)
