"""Idempotency-Key on multipart requests: honoured without reading the (possibly huge) body into memory."""
import pytest
from rest_framework.test import APIClient

from apps.accounts.models import Team

pytestmark = pytest.mark.django_db


def test_multipart_post_with_a_key_is_done_once_and_replayed(make_user):
    admin = make_user("root", platform_admin=True)
    client = APIClient()
    client.force_authenticate(admin)
    body = {"name": "Vision", "slug": "vision"}
    first = client.post("/api/v1/teams/", body, format="multipart", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post("/api/v1/teams/", body, format="multipart", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201 and second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert Team.objects.filter(slug="vision").count() == 1
