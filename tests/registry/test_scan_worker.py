"""The artifact scan end to end: a real Celery worker (tests/registry/conftest.py) takes the task queued on
commit, downloads the version from the real MLflow server, scans it and decides the version (ready, or blocked
with findings)."""
from __future__ import annotations

import time

import pytest

from apps.registry import services
from apps.registry.models import ModelVersion

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _wait_for_status(version_id: int, statuses: set[str], timeout: float = 180) -> ModelVersion:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = ModelVersion.objects.get(pk=version_id)
        if version.status in statuses:
            return version
        time.sleep(0.5)
    pytest.fail(f"version {version_id} stayed {ModelVersion.objects.get(pk=version_id).status}")


def test_worker_scans_a_clean_version_and_blocks_a_hostile_one(celery_worker, make_user, teams, actor_for,
                                                              logged_run, unique, tmp_path):
    scientist = actor_for(make_user("sci", team=teams[0], roles=("data_scientist",)))
    clean = services.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-clean",
                                                    run_id=logged_run, team_id=teams[0].pk)
    evil_file = tmp_path / "evil.pkl"
    marker = tmp_path / "pwned"
    # Protocol 0, written by hand: posix.system("touch <marker>"). Never loaded by anything here.
    evil_file.write_bytes(b"cposix\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    evil = services.modelversion_register_from_upload(actor=scientist, model_name=f"{unique}-evil",
                                                      upload_path=evil_file, filename="evil.pkl",
                                                      team_id=teams[0].pk)

    clean = _wait_for_status(clean.pk, {"ready", "blocked"})
    assert clean.status == "ready", list(clean.scans.get().findings.values("severity", "code", "message"))
    scan = clean.scans.get()
    assert scan.status == "passed" and scan.files_scanned > 0 and "modelscan" in scan.scanners

    evil = _wait_for_status(evil.pk, {"ready", "blocked"})
    assert evil.status == "blocked"
    finding = evil.scans.get().findings.filter(severity="critical").first()
    assert finding is not None and "system" in finding.message
    assert not marker.exists()
