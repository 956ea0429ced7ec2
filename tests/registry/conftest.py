"""Registry test fixtures. The real MLflow server and its fixtures (mlflow_server, mlflow_uri, unique,
logged_run) live in tests/conftest.py, shared with the serving tests: one server per test session; model names
carry a per-test prefix, so tests never see each other's MLflow objects even though MLflow is not rolled back
between tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _upload_dir(settings, tmp_path_factory):
    """Uploads wait in a folder of the test's own, never in the checkout's var/."""
    settings.MODELPLANE_UPLOAD_DIR = tmp_path_factory.mktemp("uploads")
    return settings.MODELPLANE_UPLOAD_DIR


@pytest.fixture
def celery_process(mlflow_uri, settings, tmp_path_factory):
    """Start real Celery processes (``celery_process("worker")``, ``celery_process("beat", extra_env)``) against
    the test database, Redis, MLflow and upload folder, and return once it is ready. Each must still be alive at
    the end; then it is stopped.
    Tests that use it need ``django_db(transaction=True)``: the processes see only committed rows."""
    from django.db import connection

    db = connection.settings_dict
    database_url = (f"postgresql://{db['USER']}{':' + db['PASSWORD'] if db.get('PASSWORD') else ''}"
                    f"@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}")
    started: list[tuple[subprocess.Popen, Path, object]] = []

    def start(kind: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        folder = tmp_path_factory.mktemp(kind)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test", "DATABASE_URL": database_url,
               "REDIS_URL": settings.REDIS_URL, "MLFLOW_TRACKING_URI": mlflow_uri,
               "MODELPLANE_UPLOAD_DIR": str(settings.MODELPLANE_UPLOAD_DIR),
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **(extra_env or {})}
        if kind == "worker":
            args = ["worker", "--concurrency", "1", "--pool", "prefork",
                    "-n", f"test-{os.getpid()}-{uuid.uuid4().hex[:6]}@%h"]
        else:  # beat keeps its schedule file in the test's folder, not in the checkout
            args = ["beat", "-s", str(folder / "schedule")]
        log_path = folder / f"{kind}.log"
        log = log_path.open("w")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "celery"), "-A", "controlplane", *args,
                                 "-l", "info"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        started.append((proc, log_path, log))
        # Until the process is ready, a queued task waits in Redis, where another test session's cache.clear()
        # (FLUSHDB of the shared test database) may drop it: so tasks are queued only once it listens.
        ready = " ready." if kind == "worker" else "beat: Starting..."
        deadline = time.monotonic() + 120
        while ready not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, f"{kind} exited: " + log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{kind} not ready in 120 s: " + log_path.read_text()[-3000:]
            time.sleep(0.2)
        return proc

    yield start
    died = []
    for proc, log_path, log in started:
        if proc.poll() is not None:
            died.append(f"{log_path.name} exited with {proc.returncode}: " + log_path.read_text()[-3000:])
            continue
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for _, _, log in started:
        log.close()
    assert not died, died


@pytest.fixture
def celery_worker(celery_process):
    """One real Celery worker (concurrency 1), as production runs the tasks."""
    return celery_process("worker")
