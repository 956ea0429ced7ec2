"""Real processes for the gateway's tests (and its benchmark): a redis-server of our own, the gateway under
``manage.py gateway``, the fake upstream of ``fake_upstream.py`` and real MLflow scoring servers; plus helpers
to publish route documents the way the control plane does (HSET, then PUBLISH the name).

Every process runs in its own session on a free loopback port and is stopped by its process group.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from apps.gateway import contract

ROOT = Path(__file__).resolve().parent.parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            raise AssertionError(f"{what}: {proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            detail = f"\n{proc.log_tail()}" if proc is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s{detail}")
        time.sleep(interval)


def http_status(url: str, headers: dict | None = None, timeout: float = 2.0) -> int | None:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


class Proc:
    """A child process in its own session with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None, cwd: Path = ROOT):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log = Path(tempfile.mkstemp(prefix=f"mp-gw-{name}-", suffix=".log")[1])
        self.popen: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (e.g. `mlflow models serve` and the uvicorn it starts)."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=15)
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # anything the group left behind

    def stop(self) -> None:
        """SIGTERM and a little patience, then SIGKILL."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)


class RedisServer(Proc):
    """A redis-server of our own (no persistence), killable and restartable on the same port."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mp-gw-redis-"))
        super().__init__("redis", [str(VENV_BIN / "redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", str(self.dir)])
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def wait_ready(self) -> None:
        def pong():
            try:
                return self.client().ping()
            except Exception:  # noqa: BLE001
                return False

        wait_until(pong, 15, "redis-server answers", proc=self)

    def restart(self) -> None:
        self.start()
        self.wait_ready()

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.dir, ignore_errors=True)


class GatewayProcess(Proc):
    """``manage.py gateway`` on a free port, pointed at a Redis."""

    def __init__(self, redis_url: str, *, port: int | None = None, wait_ready: bool = True,
                 args: tuple[str, ...] = (), **settings: str):
        self.port = port or free_port()
        env = dict(os.environ)
        env.update(DJANGO_SETTINGS_MODULE="controlplane.settings.test", REDIS_URL=redis_url,
                   MODELPLANE_GATEWAY_REDIS_URL=redis_url, PYTHONUNBUFFERED="1",
                   MODELPLANE_GATEWAY_EJECT_SECONDS="3")
        env.update(settings)
        super().__init__("gateway", [sys.executable, str(ROOT / "manage.py"), "gateway", "--port", str(self.port),
                                     *args],
                         env)
        wait_until(lambda: http_status(self.url + "/v2/health/live") == 200, 60, "gateway is live", proc=self)
        if wait_ready:
            wait_until(lambda: http_status(self.url + "/v2/health/ready") == 200, 30, "gateway is ready",
                       proc=self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the gateway's /metrics (0.0 when absent)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series == name or series == f"{name}{{{wanted}}}":
                return float(value)
        return 0.0


def key_for(name: str) -> str:
    return f"mpk_test_{name}-secret"


def route_doc(name: str, variants: list[dict], *, generation: int = 1, **overrides) -> dict:
    """A route document as the control plane writes it, with one key: key_for(name)."""
    doc = {
        "name": name, "deployment_id": abs(hash(name)) % 100_000, "team": "fraud", "environment": "test",
        "generation": generation, "status": "running", "serving": True,
        "keys": [{"id": 1, "hash": contract.deployment_key_hash(key_for(name))}],
        "rate_limit": None, "max_payload_bytes": 1_048_576, "timeout_seconds": 10.0, "sampling_rate": 1.0,
        "variants": variants,
    }
    doc.update(overrides)
    return doc


def variant(name: str, urls: list[str], *, weight: int = 100, version: int = 1, signature=None,
            ready: bool = True) -> dict:
    return {"name": name, "model_name": "model", "model_version": version, "weight": weight,
            "signature": signature,
            "replicas": [{"id": f"{name}-{i}", "url": url, "ready": ready} for i, url in enumerate(urls)]}


def publish(redis_client, doc: dict | None, name: str | None = None, *, key: str = contract.ROUTES_KEY,
            channel: str = contract.ROUTES_CHANNEL) -> None:
    """Write (or, with doc None, delete) a route and announce it, as the control plane does."""
    name = name or doc["name"]
    if doc is None:
        redis_client.hdel(key, name)
    else:
        redis_client.hset(key, name, json.dumps(doc))
    redis_client.publish(channel, name)


class MlflowModel:
    """A small scikit-learn model saved in MLflow's format with a column signature: ``amount`` (double),
    ``age`` (long), both required, and ``note`` (string, optional; the model drops it)."""

    COLUMNS = ("amount", "age")

    def __init__(self, directory: Path):
        import mlflow.sklearn
        import numpy as np
        import pandas as pd
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        rng = np.random.default_rng(7)
        frame = pd.DataFrame({"amount": rng.normal(100, 30, 400), "age": rng.integers(18, 90, 400)})
        labels = (frame["amount"] > 110).astype(int)
        model = Pipeline([("columns", ColumnTransformer([("keep", "passthrough", ["amount", "age"])],
                                                        remainder="drop")),
                          ("classify", LogisticRegression(max_iter=500))]).fit(frame, labels)
        signature = ModelSignature(
            inputs=Schema([ColSpec("double", "amount"), ColSpec("long", "age"),
                           ColSpec("string", "note", required=False)]),
            outputs=Schema([ColSpec("long")]))
        self.path = directory / "model"
        mlflow.sklearn.save_model(model, str(self.path), signature=signature, input_example=frame.head(3))
        self.signature = signature.to_dict()  # the route carries it parsed: inputs/outputs as lists
        self.signature = {part: json.loads(value) if isinstance(value, str) else value
                          for part, value in self.signature.items()}


class MlflowReplica(Proc):
    """``mlflow models serve -m <dir> --env-manager local --workers 1`` on a free port."""

    def __init__(self, model_path: Path, port: int | None = None):
        self.port = port or free_port()
        env = dict(os.environ)
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        super().__init__("mlflow-serve", [str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(model_path),
                                          "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port),
                                          "--workers", "1"], env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        wait_until(lambda: http_status(self.url + "/ping") == 200, timeout, "MLflow scoring server answers /ping",
                   interval=0.5, proc=self)


class FakeUpstream(Proc):
    """fake_upstream.py answering on one port per replica name: ``self.urls[name]``."""

    def __init__(self, names: list[str]):
        self.urls = {name: f"http://127.0.0.1:{free_port()}" for name in names}
        argv = [sys.executable, str(Path(__file__).with_name("fake_upstream.py"))]
        for name, url in self.urls.items():
            argv += ["--listen", f"{url.rsplit(':', 1)[1]}:{name}"]
        super().__init__("fake-upstream", argv)
        for url in self.urls.values():
            wait_until(lambda url=url: http_status(url + "/ping") == 200, 30, "fake upstream answers", proc=self)


class Answer:
    """One HTTP answer: status, headers (lower-case names), raw body and its JSON."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Answer {self.status} {self.body[:300]!r}>"


def call(url: str, path: str, body=None, *, method: str | None = None, headers: dict | None = None,
         key: str | None = None, chunked: bool = False, timeout: float = 30) -> Answer:
    """One request with http.client: ``body`` may be a dict (sent as JSON), bytes, or None. Without an
    explicit Content-Type none is sent (as OIP clients often do)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    sent_headers = dict(headers or {})
    if key is not None:
        sent_headers["Authorization"] = f"Bearer {key}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    try:
        if chunked:
            pieces = [body[i:i + 4096] for i in range(0, len(body), 4096)]
            connection.request(method or "POST", path, body=iter(pieces), headers=sent_headers,
                               encode_chunked=True)
        else:
            connection.request(method or ("POST" if body is not None else "GET"), path, body=body,
                               headers=sent_headers)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
