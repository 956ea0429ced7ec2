"""The real ``manage.py ingest_predictions`` process against the test database: records the gateway appends
arrive in the prediction log and the rollups, dead consumers' entries are claimed, and SIGTERM ends it cleanly
(exit 0, everything it read acknowledged)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from apps.monitoring import ingest
from apps.monitoring.models import PredictionRecord, PredictionRollup
from tests.monitoring.records import record, xadd

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgresql://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def wait_for(what: str, check, proc, log_path: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the ingest worker exited ({proc.returncode}) before {what}:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}")


def test_ingest_worker_process_ingests_and_stops_cleanly_on_sigterm(redis_client, stream, clean_log, tmp_path):
    # Entries a dead consumer read but never acknowledged: the worker claims them at start.
    xadd(redis_client, stream, [record(request_id=f"orphan-{i}") for i in range(3)])
    ingest.ensure_group(redis_client, stream, "ingest")
    redis_client.xreadgroup("ingest", "dead-worker", {stream: ">"}, count=10)

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test", "DATABASE_URL": database_url(),
           "REDIS_URL": settings.REDIS_URL, "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "ingest.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "ingest_predictions", "--stream", stream,
             "--group", "ingest", "--block-ms", "200", "--claim-idle-seconds", "0"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("the orphans were claimed", lambda: PredictionRecord.objects.filter(
            request_id__startswith="orphan-").count() == 3, proc, log_path)

        docs = [record(request_id=f"live-{i}", sampled=i % 2 == 0) for i in range(40)]
        xadd(redis_client, stream, docs[:20])
        time.sleep(0.3)
        xadd(redis_client, stream, docs[20:])
        wait_for("the live records arrived", lambda: PredictionRecord.objects.filter(
            request_id__startswith="live-").count() == 20, proc, log_path)
        wait_for("the rollups counted everything",
                 lambda: sum(PredictionRollup.objects.values_list("count", flat=True)) == 43, proc, log_path)

        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log_path.read_text()
    assert "SIGTERM received" in output and "stopped cleanly" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert redis_client.xpending(stream, "ingest")["pending"] == 0
    assert redis_client.xlen(stream) == 0
