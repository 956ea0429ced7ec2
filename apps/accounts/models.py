"""Users, teams, memberships (roles per team) and API tokens."""
from __future__ import annotations

import hashlib
import hmac
import secrets

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from apps.core.models import TimeStampedModel
from apps.core.permissions import ROLE_CHOICES

slug_validator = RegexValidator(r"^[a-z0-9]+(?:-[a-z0-9]+)*$",
                                "Use lower-case letters, digits and single hyphens (e.g. fraud-models).")


class User(AbstractUser):
    """A person who signs in. Platform admins manage teams, users, environments, backends and prices."""

    is_platform_admin = models.BooleanField(default=False, help_text="Manages the platform itself.")
    display_name = models.CharField(max_length=150, blank=True)

    snapshot_exclude = ("password",)

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.display_name or self.username

    def snapshot(self) -> dict:
        return {
            "id": self.pk, "username": self.username, "email": self.email, "display_name": self.display_name,
            "is_active": self.is_active, "is_platform_admin": self.is_platform_admin,
        }


class Team(TimeStampedModel):
    """A group that owns models, deployments and budgets; every scoped object belongs to one team."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    description = models.TextField(blank=True, max_length=2000)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_team_id(self) -> int:
        return self.pk


class Membership(TimeStampedModel):
    """One role a user holds in one team. A user may hold several roles in a team (one row each)."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=32, choices=ROLE_CHOICES)

    class Meta:
        ordering = ["team__name", "user__username", "role"]
        constraints = [
            models.UniqueConstraint(fields=["user", "team", "role"], name="membership_unique_role"),
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} in {self.team}"


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, expires_at__gt=now)


class ApiToken(TimeStampedModel):
    """A bearer token for the API and scripts. The secret is shown once; only its SHA-256 is stored.

    Format: ``mp_<prefix>_<secret>``: the 8-character prefix is visible in lists and finds the row, the
    secret is 32 random bytes (256 bits). SHA-256 (not a slow password hash) is right for a random secret of
    that size and keeps every API call cheap.
    """

    SCOPE_CHOICES = [("read", "read"), ("write", "write")]

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()
    snapshot_exclude = ("key_hash", "last_used_at", "last_used_ip")

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="apitoken_unique_name_per_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "active"

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @staticmethod
    def generate() -> tuple[str, str, str]:
        """A new (full token, prefix, hash)."""
        prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        full = f"mp_{prefix}_{secret}"
        return full, prefix, ApiToken.hash_secret(full)

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.key_hash, self.hash_secret(presented))
