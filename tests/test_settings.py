"""Production settings are safe: `check --deploy` is clean, and they refuse to start without a secret key."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MODELPLANE_SECRET_KEY"}
    env.update({"DJANGO_SETTINGS_MODULE": "controlplane.settings.production", **env_extra})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_check_deploy_is_clean_at_warning_level():
    result = _manage("check", "--deploy", "--fail-level", "WARNING",
                     env_extra={"MODELPLANE_SECRET_KEY": secrets.token_urlsafe(60)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check", env_extra={})
    assert result.returncode != 0
    assert "MODELPLANE_SECRET_KEY" in result.stderr


def test_healthz_reports_database_and_redis(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_answers_503_naming_redis_when_it_is_down(client, db, settings):
    # Django's setting_changed signal rebuilds the cache handlers; nothing listens on port 1.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "ok" and body["redis"].startswith("error")
