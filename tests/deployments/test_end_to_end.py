"""Serving end to end, every part real: a version registered from an MLflow run on the session's MLflow server and
scanned, a deployment whose replicas are real MLflow scoring servers started by the reconcile loop, the gateway
as its own process reading routes from Redis, predictions with a deployment key, a blue-green rollout and a
rollback under steady load (failed requests counted and asserted zero), and a stop that leaves no process.

The reconcile passes run in the test's process (what a Celery worker would run); tests/deployments/
test_worker.py covers the same loop driven by a real worker.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis
import requests

from apps.core.actors import Actor
from apps.deployments import services
from apps.deployments.models import Deployment, Replica
from apps.deployments.reconcile import deployment_reconcile
from apps.registry import services as registry
from apps.registry.models import ModelVersion
from apps.registry.tasks import run_artifact_scan
from tests.mlflow_server import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ROWS = {"dataframe_split": {"columns": ["amount", "age"], "data": [[12.0, 30.0], [95.0, 61.0]]}}


def _reconcile_until(deployment_id: int, predicate, timeout: float = 180.0) -> Deployment:
    deadline = time.monotonic() + timeout
    while True:
        deployment_reconcile(deployment_id=deployment_id)
        deployment = Deployment.objects.get(pk=deployment_id)
        if predicate(deployment):
            return deployment
        if time.monotonic() > deadline:
            events = "\n".join(f"{e.kind}: {e.message}" for e in deployment.events.all()[:15])
            raise AssertionError(f"timed out in status {deployment.status}: {deployment.status_message}\n{events}")
        time.sleep(0.5)


@pytest.fixture
def gateway(settings, tmp_path):
    """``manage.py gateway`` as its own process, on routes of this test only."""
    key = f"test:e2e-routes:{uuid.uuid4().hex[:8]}"
    settings.MODELPLANE_GATEWAY_ROUTES_KEY = key
    settings.MODELPLANE_GATEWAY_ROUTES_CHANNEL = key + ":changed"
    port = free_port()
    settings.MODELPLANE_GATEWAY_URL = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test", "REDIS_URL": settings.REDIS_URL,
           "MODELPLANE_GATEWAY_ROUTES_KEY": key, "MODELPLANE_GATEWAY_ROUTES_CHANNEL": key + ":changed",
           "MODELPLANE_GATEWAY_PREDICTIONS_STREAM": f"test:e2e-predictions:{uuid.uuid4().hex[:8]}"}
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([sys.executable, "manage.py", "gateway", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError((tmp_path / "gateway.log").read_text()[-3000:])
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    redis.Redis.from_url(settings.REDIS_URL).delete(key, env["MODELPLANE_GATEWAY_PREDICTIONS_STREAM"])


class Load:
    """Steady scoring traffic through the gateway from a background thread (aiohttp, 4 concurrent clients)."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self.ok, self.failed, self.versions = 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, session):
        while not self._stop.is_set():
            try:
                async with session.post(self.url, json=ROWS, headers={"Authorization": f"Bearer {self.key}"}) as r:
                    body = await r.read()
                    if r.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append((r.status, body[:200]))
            except aiohttp.ClientError as exc:
                self.failed.append(("client", repr(exc)))

    async def _run(self):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._client(session) for _ in range(4)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)


def _running(pid: int) -> bool:
    """A live process (a zombie waiting to be reaped is not one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pids(deployment: Deployment) -> list[int]:
    return [r.pid for r in Replica.objects.filter(variant__deployment=deployment) if r.pid]


def test_register_deploy_predict_blue_green_rollback_stop(make_user, teams, mlflow_uri, logged_run, unique, gateway):
    team = teams[0]
    scientist = Actor.for_user(make_user("sci", team=team, roles=("data_scientist",)))
    engineer = Actor.for_user(make_user("eng", team=team, roles=("ml_engineer",)))
    root = Actor.for_user(make_user("root", platform_admin=True))
    dev = services.environment_create(actor=root, name=f"dev-{unique}")
    name = f"{unique}-fraud"
    versions = []
    for _ in range(2):
        version = registry.modelversion_register_from_run(actor=scientist, model_name=name, run_id=logged_run,
                                                          team_id=team.pk)
        run_artifact_scan(version.scans.latest("created_at").pk)
        version.refresh_from_db()
        assert version.status == ModelVersion.Status.READY, version.status_message
        versions.append(version)

    deployment = services.deployment_create(actor=engineer, name=f"{unique}-api", environment_id=dev.pk,
                                            model_version_id=versions[0].pk, replicas=2,
                                            rollback_window_seconds=600)
    _, key = services.deploymentkey_create(actor=engineer, deployment_id=deployment.pk, name="e2e")
    try:
        deployment = _reconcile_until(deployment.pk, lambda d: d.status == "running")
        assert len(set(_pids(deployment))) == 2

        invocations = f"{gateway}/v1/deployments/{deployment.name}/invocations"
        deadline = time.monotonic() + 10   # the gateway applies the published route within moments
        while True:
            r = requests.post(invocations, json=ROWS, headers={"Authorization": f"Bearer {key}"}, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert len(r.json()["predictions"]) == 2
        assert requests.post(invocations, json=ROWS, headers={"Authorization": "Bearer mpk_bad_key"},
                             timeout=10).status_code == 401
        r = requests.post(f"{gateway}/v2/models/{deployment.name}/infer", headers={"X-Modelplane-Key": key},
                          data=b'{"inputs": [{"name": "amount", "shape": [1], "datatype": "FP64", "data": [50.0]},'
                               b' {"name": "age", "shape": [1], "datatype": "FP64", "data": [40.0]}]}', timeout=10)
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"][0] == 1, r.text

        # Blue-green to v2 under steady load: green starts, is smoke-tested, takes all traffic at once.
        with Load(invocations, key) as load:
            time.sleep(1)
            services.deployment_rollout_start(actor=engineer, deployment_id=deployment.pk,
                                              model_version_id=versions[1].pk)
            deployment = _reconcile_until(
                deployment.pk, lambda d: d.status == "running" and d.variants.filter(role="live").get().name == "v2")
            time.sleep(2)
        assert load.failed == [] and load.ok > 50, (load.ok, load.failed[:5])
        assert deployment.variants.get(name="v1").role == "standby"
        standby_pids = [r.pid for r in Replica.objects.filter(variant__name="v1", variant__deployment=deployment)]
        assert standby_pids and all(_running(pid) for pid in standby_pids)   # blue kept warm

        # Rollback within the window: back to the warm v1 at once, still under load.
        with Load(invocations, key) as load:
            time.sleep(1)
            services.deployment_rollback(actor=engineer, deployment_id=deployment.pk, reason="e2e")
            deployment = _reconcile_until(deployment.pk, lambda d: d.status == "running")
            time.sleep(2)
        assert load.failed == [] and load.ok > 20, (load.ok, load.failed[:5])
        assert deployment.variants.get(role="live").name == "v1"
    finally:
        all_pids = _pids(Deployment.objects.get(pk=deployment.pk))
        if Deployment.objects.get(pk=deployment.pk).status not in ("stopping", "stopped"):
            services.deployment_stop(actor=engineer, deployment_id=deployment.pk)
        _reconcile_until(deployment.pk, lambda d: d.status == "stopped", timeout=60)
    assert all_pids and not [pid for pid in all_pids if _running(pid)]
    r = requests.post(invocations, json=ROWS, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 503 and r.headers.get("Retry-After")
