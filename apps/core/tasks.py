"""Celery tasks of the core app: a ping that proves a worker takes tasks from the broker and answers."""
from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, name="apps.core.tasks.ping")
def ping(self) -> str:
    """Answer "pong from <worker hostname>" so a caller sees which worker round-tripped the task."""
    return f"pong from {self.request.hostname}"
