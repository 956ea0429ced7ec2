"""The reconcile loop driven by a real Celery worker: a deployment created through the service is started by the
task queued on commit; the worker is then killed with SIGKILL and a new one started, which adopts the running
model server (same pid, no second process) instead of orphaning it; stopping the deployment leaves no process.
"""
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

from apps.core.actors import Actor
from apps.deployments import services
from apps.deployments.models import Deployment, Replica
from apps.registry import services as registry
from apps.registry.models import ModelVersion
from apps.registry.tasks import run_artifact_scan

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, env: dict, log_path: Path, name: str):
        self.log_path = log_path
        self.log = log_path.open("a")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "controlplane", "worker", "--concurrency", "1",
             "--pool", "prefork", "-l", "info", "-n", f"{name}-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the worker's main process and its pool (what an OOM kill or a crashed host does); the model
        servers it started run in their own sessions and must survive."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.fixture
def worker_env(mlflow_uri, tmp_path):
    db = connection.settings_dict
    database_url = (f"postgresql://{db['USER']}{':' + db['PASSWORD'] if db.get('PASSWORD') else ''}"
                    f"@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}")
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test", "DATABASE_URL": database_url,
            "REDIS_URL": settings.REDIS_URL, "MLFLOW_TRACKING_URI": mlflow_uri,
            "MODELPLANE_REPLICA_DIR": str(tmp_path / "replicas"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(predicate, what: str, timeout: float = 180.0, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def test_worker_starts_adopts_after_sigkill_and_stops(worker_env, make_user, teams, logged_run, unique, tmp_path,
                                                      settings):
    settings.MODELPLANE_REPLICA_DIR = worker_env["MODELPLANE_REPLICA_DIR"]
    team = teams[0]
    scientist = Actor.for_user(make_user("sci", team=team, roles=("data_scientist",)))
    engineer = Actor.for_user(make_user("eng", team=team, roles=("ml_engineer",)))
    dev = services.environment_create(actor=Actor.system("tests"), name=f"dev-{unique}")
    version = registry.modelversion_register_from_run(actor=scientist, model_name=f"{unique}-w", run_id=logged_run,
                                                      team_id=team.pk)
    run_artifact_scan(version.scans.latest("created_at").pk)   # the scan is another test's business
    assert ModelVersion.objects.get(pk=version.pk).status == "ready"

    first = Worker(worker_env, tmp_path / "worker1.log", "deploy-a")
    second = None
    deployment = services.deployment_create(actor=engineer, name=f"{unique}-w", environment_id=dev.pk,
                                            model_version_id=version.pk, replicas=1)
    try:
        _wait(lambda: Deployment.objects.get(pk=deployment.pk).status == "running", "running",
              log=first.log_path)
        replica = Replica.objects.get(variant__deployment=deployment)
        pid, port = replica.pid, replica.port
        assert _alive(pid)

        first.kill()
        assert _alive(pid), "the model server died with the worker"
        second = Worker(worker_env, tmp_path / "worker2.log", "deploy-b")
        _wait(lambda: "replicas adopted" in (tmp_path / "worker2.log").read_text(), "adoption on worker start",
              timeout=90, log=tmp_path / "worker2.log")
        # A reconcile pass by the new worker keeps the same process: adopted, not restarted.
        services.deployment_update(actor=engineer, deployment_id=deployment.pk, sampling_rate=0.5)
        time.sleep(5)
        replica.refresh_from_db()
        assert (replica.pid, replica.port, replica.status, replica.restart_count) == (pid, port, "ready", 0)
        marked = [p for p in os.listdir("/proc") if p.isdigit() and _alive(int(p))
                  and f"MODELPLANE_REPLICA_ID={replica.pk}".encode() in _environ(int(p))]
        # One replica's processes only (mlflow's CLI and the uvicorn it runs), all in the adopted one's session.
        assert str(pid) in marked and {_session(int(p)) for p in marked} == {_session(pid)}

        services.deployment_stop(actor=engineer, deployment_id=deployment.pk)
        _wait(lambda: Deployment.objects.get(pk=deployment.pk).status == "stopped", "stopped",
              log=tmp_path / "worker2.log")
        assert not _alive(pid)
    finally:
        if second is not None:
            second.stop()
        if first.proc.poll() is None:
            first.stop()
        for r in Replica.objects.filter(variant__deployment=deployment).exclude(pid=None):
            if _alive(r.pid):
                os.kill(r.pid, signal.SIGKILL)


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _session(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
