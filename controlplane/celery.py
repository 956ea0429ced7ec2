"""The Celery application: worker and beat run every slow or external piece of work."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.base")

app = Celery("modelplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
