"""A real MLflow tracking server for tests: PostgreSQL backend store (a database of its own), artifacts in a folder.

Used by the registry tests (``tests/registry/conftest.py``) and by the browser tests, whose web server is pointed at
it (``tests/browser/conftest.py``). It takes ~10-20 s to start here, so each test session starts one at most.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

# A Fernet key for the test server's stored webhook secrets (tests only; production sets its own).
WEBHOOK_TEST_KEY = "q2pjucoKXDG_v77hrAX93r9LKzer39VzjPucXX231_8="
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_parts(database_url: str) -> tuple[str, str, str, int]:
    parts = urlsplit(database_url)
    return parts.username or "postgres", parts.password or "", parts.hostname or "127.0.0.1", parts.port or 5432


def _admin_connection(database_url: str):
    user, password, host, port = _server_parts(database_url)
    return psycopg.connect(host=host, port=port, user=user, password=password or None, dbname="postgres",
                           autocommit=True, connect_timeout=5)


class MlflowServer:
    """``mlflow server`` on a fresh database of the PostgreSQL server that a URL names (its database part is
    ignored). ``start()`` returns at once with ``uri`` known, so callers can start other things meanwhile;
    ``wait()`` blocks until it answers; ``stop()`` ends it and drops the database."""

    def __init__(self, database_url: str, root: Path):
        self.database_url = database_url
        self.root = root
        self.dbname = f"mlflow_test_{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "mlflow.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        with _admin_connection(self.database_url) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        user, password, host, port_pg = _server_parts(self.database_url)
        store = (f"postgresql+psycopg://{quote(user)}{':' + quote(password) if password else ''}"
                 f"@{host}:{port_pg}/{self.dbname}")
        self.root.mkdir(parents=True, exist_ok=True)
        # Webhooks to loopback http targets (Modelplane's receiver in tests), with a fixed encryption key so
        # that stored webhook secrets stay readable.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
               "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": WEBHOOK_TEST_KEY,
               "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", store, "--artifacts-destination",
                 str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait(self, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self.uri
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("MLflow did not start: " + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with _admin_connection(self.database_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


@contextlib.contextmanager
def running_mlflow(database_url: str, root: Path) -> Iterator[str]:
    """Start an :class:`MlflowServer`, yield its URL once it answers, stop it at the end."""
    server = MlflowServer(database_url, root)
    try:
        server.start()
        yield server.wait()
    finally:
        server.stop()
