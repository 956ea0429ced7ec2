"""Celery entry points of the registry: thin, they load by id and call services as the system actor."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from celery import shared_task
from django.core.cache import cache

from apps.core.actors import Actor
from apps.core.errors import ServiceError

log = logging.getLogger(__name__)
SYNC_REPORT_KEY = "registry:sync:last"


@shared_task(name="registry.run_artifact_scan", acks_late=True)
def run_artifact_scan(scan_id: int) -> str:
    """Download a version's artifacts from MLflow and scan them (bytes only, never loaded)."""
    from apps.registry import mlflow_adapter as mlf
    from apps.registry import services
    from apps.registry.scanning import scan_directory

    actor = Actor.system("artifact-scanner")
    scan = services.artifactscan_begin(actor=actor, scan_id=scan_id)
    if scan is None:
        return "skipped"
    version = scan.version
    workdir = Path(tempfile.mkdtemp(prefix="mp-scan-"))
    try:
        path = mlf.artifacts_download(version.model.name, version.version, workdir)
        result = scan_directory(path, flavor_hint=next(iter(version.flavors or {}), None))
    except ServiceError as exc:
        services.artifactscan_complete(actor=actor, scan_id=scan_id, error=exc.message)
        return "error"
    except Exception as exc:  # a scan that cannot finish must say so on the version page
        log.exception("scan %s failed", scan_id)
        services.artifactscan_complete(actor=actor, scan_id=scan_id, error=f"{type(exc).__name__}: {exc}")
        return "error"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    services.artifactscan_complete(actor=actor, scan_id=scan_id, result=result)
    return "blocked" if result.blocked else "passed"


@shared_task(name="registry.sync")
def sync_registry() -> dict:
    """Adopt versions created straight in MLflow (beat runs it every few seconds; webhooks run it at once)."""
    from apps.registry import services

    # One sync at a time: overlapping runs would race to adopt the same versions.
    if not cache.add("registry:sync:lock", 1, 120):
        return {"skipped": True}
    try:
        report = services.registry_sync(actor=Actor.system("registry-sync"))
    except ServiceError as exc:
        report = {"error": exc.message}
    finally:
        cache.delete("registry:sync:lock")
    cache.set(SYNC_REPORT_KEY, report, 24 * 3600)
    return report


@shared_task(name="registry.process_upload", acks_late=True)
def process_upload(upload_id: int) -> str:
    """Log an uploaded model to MLflow and register it for its uploader (modelupload_process)."""
    from apps.registry import services

    upload = services.modelupload_process(actor=Actor.system("upload-worker"), upload_id=upload_id)
    return "skipped" if upload is None else upload.status


@shared_task(name="registry.purge_uploads")
def purge_uploads() -> int:
    """Delete the stored files of uploads that failed more than MODELPLANE_UPLOAD_RETENTION_HOURS ago."""
    from datetime import timedelta

    from django.conf import settings

    from apps.registry import services

    return services.modelupload_files_purge(actor=Actor.system("upload-purge"),
                                            older_than=timedelta(hours=settings.MODELPLANE_UPLOAD_RETENTION_HOURS))


try:  # Build the scanner's scikit-learn allowlist once per worker process, not on the first scan (5-8 s).
    from celery.signals import worker_process_init

    @worker_process_init.connect
    def _warm_scanner(**_kwargs) -> None:
        from apps.registry import pickle_allowlist

        pickle_allowlist.callables_for(pickle_allowlist.families_for(set()))
except ImportError:  # pragma: no cover - celery is a dependency; this only guards odd environments
    pass
