"""Production settings: safe defaults; `manage.py check --deploy --fail-level WARNING` is clean with them."""
import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import env, env_bool, env_int

DEBUG = False
SECRET_KEY = env("MODELPLANE_SECRET_KEY")
if not SECRET_KEY or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("MODELPLANE_SECRET_KEY must be set to a random string of at least 50 characters")

WHITENOISE_USE_FINDERS = False
WHITENOISE_AUTOREFRESH = False

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("MODELPLANE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("MODELPLANE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

os.environ.setdefault("MODELPLANE_LOG_LEVEL", "INFO")
