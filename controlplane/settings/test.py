"""Settings for the test suite: the real PostgreSQL and Redis (tests/conftest.py finds or starts them)."""
import os

from .base import *  # noqa: F401,F403
from .base import DATABASES, REST_FRAMEWORK, env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; production keeps PBKDF2
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/15")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "mptest",
    }
}
CELERY_RESULT_BACKEND = REDIS_URL
MODELPLANE_GATEWAY_REDIS_URL = REDIS_URL
# Each test session's tasks go to a queue of its own, on a Redis database apart from the cache's (tests/conftest.py
# names both; the Celery workers and beat that tests start inherit them from the environment): sessions running
# at once never take each other's tasks, and a test's cache.clear() (FLUSHDB) never drops a queued task.
CELERY_BROKER_URL = env("MODELPLANE_TEST_BROKER_URL", REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = env("MODELPLANE_TEST_CELERY_QUEUE", "celery")
# Throttles are exercised by their own tests with explicit rates; the suite must not trip them by accident.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"anon": "10000/min", "user": "100000/min"},
}
WHITENOISE_AUTOREFRESH = True

# One test database per run, so that two runs on one machine (developers, helpers, CI) never drop each other's.
DATABASES["default"]["TEST"] = {"NAME": f"test_modelplane_{os.getpid()}"}
