"""Celery entry points of monitoring: thin, they call services as the system actor."""
from __future__ import annotations

from celery import shared_task
from django.core.cache import cache

from apps.core.actors import Actor


@shared_task(name="monitoring.maintain_prediction_log")
def maintain_prediction_log() -> dict:
    """Hourly (beat): partitions ahead, drop partitions past retention, prune rollups and the ingest ledger."""
    from apps.monitoring import services

    # One run at a time: a slow DETACH must not pile up runs behind it.
    if not cache.add("monitoring:maintain:lock", 1, 1800):
        return {"skipped": True}
    try:
        return services.predictionlog_maintain(actor=Actor.system("prediction-log-retention"))
    finally:
        cache.delete("monitoring:maintain:lock")
