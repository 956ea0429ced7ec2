"""Settings shared by every environment. Everything that differs between machines comes from the environment.

Environment variables (all optional for a developer machine; production requires the ones marked *):

- ``DATABASE_URL``          PostgreSQL, e.g. ``postgresql://postgres@127.0.0.1:5432/modelplane``
- ``REDIS_URL``             Redis for the Celery broker, cache, routing table and streams
- ``MLFLOW_TRACKING_URI``   the MLflow tracking server and registry of record
- ``MODELPLANE_SECRET_KEY`` * Django's secret key
- ``MODELPLANE_DEBUG``      ``1`` to show debug pages (never in production)
- ``MODELPLANE_ALLOWED_HOSTS`` comma-separated host names
- ``MODELPLANE_DATA_DIR``   where standalone keeps its data (default ``./var``)
- ``MODELPLANE_SESSION_IDLE_SECONDS`` / ``MODELPLANE_SESSION_ABSOLUTE_SECONDS`` session timeouts
- ``MODELPLANE_LOGIN_FAILURE_LIMIT`` / ``MODELPLANE_LOGIN_COOLOFF_SECONDS`` login throttling
- ``MODELPLANE_TOKEN_MAX_DAYS`` the longest lifetime an API token may be given
"""
from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env(name)
    return int(value) if value is not None else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


DEBUG = env_bool("MODELPLANE_DEBUG", False)
# A development key only; production.py refuses to start without MODELPLANE_SECRET_KEY.
SECRET_KEY = env("MODELPLANE_SECRET_KEY", "django-insecure-modelplane-development-key-change-me-0123456789")
ALLOWED_HOSTS = env_list("MODELPLANE_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("MODELPLANE_CSRF_TRUSTED_ORIGINS")

DATA_DIR = Path(env("MODELPLANE_DATA_DIR", str(BASE_DIR / "var"))).resolve()

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "apps.core",
    "apps.accounts",
    "apps.audit",
    "apps.registry",
    "apps.deployments",
    "apps.gateway",
    "apps.monitoring",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.RequestIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After MessageMiddleware: it tells the user why they were signed out.
    "apps.core.middleware.SessionTimeoutMiddleware",
    "apps.core.api.idempotency.IdempotencyMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.core.context_processors.shell",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/modelplane"),
        conn_max_age=env_int("MODELPLANE_DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
MLFLOW_TRACKING_URI = env("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
# The address a browser uses to reach the MLflow UI (deep links); defaults to the tracking URI.
MLFLOW_UI_URL = env("MODELPLANE_MLFLOW_UI_URL", MLFLOW_TRACKING_URI)
# MLflow's client retries seven times with exponential backoff by default (minutes); a user should learn in
# seconds that MLflow is down. These are read by MLflow at call time.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", env("MODELPLANE_MLFLOW_MAX_RETRIES", "2"))
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", env("MODELPLANE_MLFLOW_TIMEOUT_SECONDS", "60"))

# Registry.
# Aliases that mean production: they move only through an approved promotion.
MODELPLANE_PRODUCTION_ALIASES = env_list("MODELPLANE_PRODUCTION_ALIASES", "champion,production")
MODELPLANE_UPLOAD_MAX_BYTES = env_int("MODELPLANE_UPLOAD_MAX_BYTES", 500 * 1024 * 1024)
MODELPLANE_UPLOAD_EXPERIMENT = env("MODELPLANE_UPLOAD_EXPERIMENT", "modelplane-uploads")
# Where uploaded model files wait for the worker that logs them to MLflow: the web and the workers must both
# see it (one machine, or a shared volume). A failed upload's file is kept this long for a retry.
MODELPLANE_UPLOAD_DIR = Path(env("MODELPLANE_UPLOAD_DIR", str(DATA_DIR / "uploads")))
MODELPLANE_UPLOAD_RETENTION_HOURS = env_int("MODELPLANE_UPLOAD_RETENTION_HOURS", 7 * 24)
# The registered-model tag by which a model created straight in MLflow names its owner team (a team slug).
MODELPLANE_TEAM_TAG = "modelplane.team"
MODELPLANE_SYNC_INTERVAL_SECONDS = env_int("MODELPLANE_SYNC_INTERVAL_SECONDS", 15)
# Shared secret for MLflow's webhooks (HMAC); empty: webhooks are not registered and sync polls only.
MODELPLANE_MLFLOW_WEBHOOK_SECRET = env("MODELPLANE_MLFLOW_WEBHOOK_SECRET", "")
# MLflow's webhook calls per address (its own throttle, not the anonymous rate): a burst of registrations and
# alias moves must get through.
MODELPLANE_MLFLOW_WEBHOOK_RATE = env("MODELPLANE_MLFLOW_WEBHOOK_RATE", "600/min")
# Uploaded files larger than this are streamed to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# Prediction log (apps/monitoring): daily partitions older than this many days are dropped (hourly beat task).
MODELPLANE_PREDICTION_RETENTION_DAYS = env_int("MODELPLANE_PREDICTION_RETENTION_DAYS", 30)
MODELPLANE_ROLLUP_RETENTION_DAYS = env_int("MODELPLANE_ROLLUP_RETENTION_DAYS", 400)
MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS = env_int("MODELPLANE_PREDICTION_PARTITIONS_AHEAD_DAYS", 3)
# Stream entries the ingest worker reads (and writes in one transaction) at a time.
MODELPLANE_INGEST_BATCH_SIZE = env_int("MODELPLANE_INGEST_BATCH_SIZE", 5000)

# Gateway (`manage.py gateway`, apps/gateway): the data-plane process. README "Gateway" describes each.
MODELPLANE_GATEWAY_HOST = env("MODELPLANE_GATEWAY_HOST", "127.0.0.1")
MODELPLANE_GATEWAY_PORT = env_int("MODELPLANE_GATEWAY_PORT", 8100)
# Where prediction clients (and the dashboard's "try it" box) reach the gateway.
MODELPLANE_GATEWAY_URL = env("MODELPLANE_GATEWAY_URL", f"http://127.0.0.1:{MODELPLANE_GATEWAY_PORT}")
# The gateway's address as clients see it (behind a load balancer), shown on the deployment pages; empty: the above.
MODELPLANE_GATEWAY_PUBLIC_URL = env("MODELPLANE_GATEWAY_PUBLIC_URL", "")
MODELPLANE_GATEWAY_REDIS_URL = env("MODELPLANE_GATEWAY_REDIS_URL", REDIS_URL)
# Empty: derived from SECRET_KEY (apps.gateway.contract.console_secret); set it when web and gateway differ.
MODELPLANE_GATEWAY_CONSOLE_SECRET = env("MODELPLANE_GATEWAY_CONSOLE_SECRET", "")
# Origins allowed to call the gateway from a browser (CORS), e.g. the dashboard's; empty: none.
MODELPLANE_GATEWAY_CORS_ORIGINS = env_list("MODELPLANE_GATEWAY_CORS_ORIGINS")
# The Redis names of apps.gateway.contract; change them only together with the control plane (tests do).
MODELPLANE_GATEWAY_ROUTES_KEY = env("MODELPLANE_GATEWAY_ROUTES_KEY", "modelplane:routes")
MODELPLANE_GATEWAY_ROUTES_CHANNEL = env("MODELPLANE_GATEWAY_ROUTES_CHANNEL", "modelplane:routes:changed")
MODELPLANE_GATEWAY_PREDICTIONS_STREAM = env("MODELPLANE_GATEWAY_PREDICTIONS_STREAM", "modelplane:predictions")
MODELPLANE_GATEWAY_FULL_RELOAD_SECONDS = float(env("MODELPLANE_GATEWAY_FULL_RELOAD_SECONDS", "30"))
# Prediction records held in memory while Redis is away; past this the oldest are dropped (and counted).
MODELPLANE_GATEWAY_RECORD_BUFFER = env_int("MODELPLANE_GATEWAY_RECORD_BUFFER", 100_000)
# A replica that refused a connection gets no traffic for this long (passive ejection).
MODELPLANE_GATEWAY_EJECT_SECONDS = float(env("MODELPLANE_GATEWAY_EJECT_SECONDS", "5"))
# Upstream connections kept by one gateway process, in all and per replica.
MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS = env_int("MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS", 512)
MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS_PER_REPLICA = env_int("MODELPLANE_GATEWAY_UPSTREAM_CONNECTIONS_PER_REPLICA",
                                                              128)
# The gateway's client to the model servers: "native" (apps/gateway/upstream.py: HTTP/1.1 on asyncio protocols
# and httptools, a keep-alive pool per replica bounded by the setting above; ~2x aiohttp's throughput here) or
# "aiohttp" (the previous client; it also honours UPSTREAM_CONNECTIONS). benchmarks/README.md "gateway.py".
MODELPLANE_GATEWAY_UPSTREAM_CLIENT = env("MODELPLANE_GATEWAY_UPSTREAM_CLIENT", "native")
# The gateway's HTTP server: "native" (apps/gateway/server.py: the ASGI subset the gateway uses on httptools,
# one write per response; 1.26x uvicorn's requests/s at 0.78x its CPU a request, measured 2026-12-06) or
# "uvicorn" (the previous server). benchmarks/README.md "gateway.py".
MODELPLANE_GATEWAY_SERVER = env("MODELPLANE_GATEWAY_SERVER", "native")

# Local serving backend (apps/deployments/backends/local.py, replicas.py): model-server logs live here; the
# path also scopes the orphan sweep (servers started under another replica dir are never touched).
MODELPLANE_REPLICA_DIR = Path(env("MODELPLANE_REPLICA_DIR", str(DATA_DIR / "replicas"))).resolve()
# A replica that has not answered /ping this long after its start counts as crashed (model servers take
# 10-30 s to load here under load).
MODELPLANE_REPLICA_START_TIMEOUT_SECONDS = float(env("MODELPLANE_REPLICA_START_TIMEOUT_SECONDS", "120"))
MODELPLANE_REPLICA_STOP_GRACE_SECONDS = float(env("MODELPLANE_REPLICA_STOP_GRACE_SECONDS", "10"))
# Crash restarts wait base x 2^(n-1) seconds after the n-th crash in a row, at most max.
MODELPLANE_REPLICA_BACKOFF_BASE_SECONDS = float(env("MODELPLANE_REPLICA_BACKOFF_BASE_SECONDS", "2"))
MODELPLANE_REPLICA_BACKOFF_MAX_SECONDS = float(env("MODELPLANE_REPLICA_BACKOFF_MAX_SECONDS", "300"))

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "mp",
    }
}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Argon2 (memory-hard, ~0.2 s here) first; PBKDF2 still verifies older hashes, which are upgraded at sign-in.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "core:home"
LOGOUT_REDIRECT_URL = "accounts:login"

# Sessions: an idle timeout (renewed on every request) and an absolute one (from login, never renewed).
SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_IDLE_SECONDS = env_int("MODELPLANE_SESSION_IDLE_SECONDS", 30 * 60)
SESSION_ABSOLUTE_SECONDS = env_int("MODELPLANE_SESSION_ABSOLUTE_SECONDS", 12 * 60 * 60)
SESSION_COOKIE_AGE = SESSION_IDLE_SECONDS
SESSION_SAVE_EVERY_REQUEST = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

# Login throttling (django-axes): lock a username from one address after N failures for a cool-off period.
AXES_FAILURE_LIMIT = env_int("MODELPLANE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("MODELPLANE_LOGIN_COOLOFF_SECONDS", 15 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_VERBOSE = False

API_TOKEN_MAX_DAYS = env_int("MODELPLANE_TOKEN_MAX_DAYS", 365)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env("MODELPLANE_STATIC_ROOT", str(DATA_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# In development whitenoise serves straight from the finders, so collectstatic is not needed.
WHITENOISE_USE_FINDERS = True
# STATIC_ROOT only exists after collectstatic (production); in development the finders serve everything.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")
WHITENOISE_AUTOREFRESH = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.core.api.permissions.IsAuthenticatedWithTokenScope"],
    "DEFAULT_PAGINATION_CLASS": "apps.core.api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("MODELPLANE_API_ANON_RATE", "60/min"),
        "user": env("MODELPLANE_API_USER_RATE", "1200/min"),
    },
    "DATETIME_FORMAT": "iso-8601",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Modelplane API",
    "DESCRIPTION": "The REST API of Modelplane, an MLOps control plane. Authenticate with "
    "`Authorization: Bearer <token>` (create a token on the Tokens page or at /api/v1/tokens/).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a field named "status"; each choice set gets its own component name.
    "ENUM_NAME_OVERRIDES": {
        "ModelVersionStatusEnum": "apps.registry.models.ModelVersion.Status",
        "ArtifactScanStatusEnum": "apps.registry.models.ArtifactScan.Status",
        "ModelUploadStatusEnum": "apps.registry.models.ModelUpload.Status",
        "DeploymentStatusEnum": "apps.deployments.models.Deployment.Status",
        "ReplicaStatusEnum": "apps.deployments.models.Replica.Status",
        "VariantRoleEnum": "apps.deployments.models.Variant.Role",
        "MembershipRoleEnum": "apps.core.permissions.ROLE_CHOICES",
    },
}

CELERY_BROKER_URL = env("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 30 * 60
CELERY_RESULT_EXPIRES = 24 * 60 * 60
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict = {
    "registry-sync": {"task": "registry.sync", "schedule": float(MODELPLANE_SYNC_INTERVAL_SECONDS)},
    "registry-purge-uploads": {"task": "registry.purge_uploads", "schedule": 3600.0},
    # Prediction log partitions ahead, retention of the log, its rollups and the ingest ledger.
    "monitoring-maintain-prediction-log": {"task": "monitoring.maintain_prediction_log", "schedule": 3600.0},
    # Crash restarts, health, rollback windows and missed routes converge within this interval.
    "deployments-reconcile": {"task": "deployments.reconcile_all",
                              "schedule": float(env_int("MODELPLANE_RECONCILE_INTERVAL_SECONDS", 5)),
                              "options": {"expires": float(env_int("MODELPLANE_RECONCILE_INTERVAL_SECONDS", 5))}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("MODELPLANE_LOG_LEVEL", "INFO")},
    "loggers": {"axes": {"level": "WARNING"}},
}

STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "apps.core.staticfinders.InstalledPackageFinder",
]
