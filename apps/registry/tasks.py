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
    except Exception as exc:  # noqa: BLE001 - a scan that cannot finish must say so on the version page
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


try:  # Build the scanner's scikit-learn allowlist once per worker process, not on the first scan (5-8 s).
    from celery.signals import worker_process_init

    @worker_process_init.connect
    def _warm_scanner(**_kwargs) -> None:
        from apps.registry import pickle_allowlist

        pickle_allowlist.callables_for(pickle_allowlist.families_for(set()))
except ImportError:  # pragma: no cover - celery is a dependency; this only guards odd environments
    pass
