"""LocalBackend with real MLflow scoring-server processes (no database, no mocks).

One server is started per module and shared (each takes 10-30 s to load here); beside it, at the same time, a
server that cannot load its model and one whose port is taken. Every process started under the module's replica
directory is killed at teardown, whatever happened.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from apps.deployments.backends.base import ReplicaSpec, ServingBackend
from apps.deployments.backends.local import (
    REPLICA_ID_VAR,
    REPLICA_SCOPE_VAR,
    START_BANNER,
    LocalBackend,
    proc_environ,
    proc_pids,
    proc_stat,
)
from tests.deployments.conftest import (
    EXPECTED_PREDICTIONS,
    SCORING_ROWS,
    kill_replica_processes,
    process_running,
)

pytestmark = pytest.mark.slow


def _wait_for(predicate, what: str, timeout: float = 150.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def _marked(replica_id: int, scope: str) -> list[int]:
    return [pid for pid in proc_pids() if process_running(pid)
            and proc_environ(pid).get(REPLICA_ID_VAR) == str(replica_id)
            and proc_environ(pid).get(REPLICA_SCOPE_VAR) == scope]


@pytest.fixture(scope="module")
def servers(tmp_path_factory, sklearn_model_dir):
    root = tmp_path_factory.mktemp("local-backend")
    backend = LocalBackend(root=root, stop_grace_seconds=10)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        good = backend.replica_start(ReplicaSpec(replica_id=1, model_uri=str(sklearn_model_dir), timeout_seconds=5))
        missing = backend.replica_start(ReplicaSpec(replica_id=2, model_uri=str(root / "no-such-model")))
        taken = backend.replica_start(ReplicaSpec(replica_id=3, model_uri=str(sklearn_model_dir)),
                                      port=blocker.getsockname()[1])
        _wait_for(lambda: backend.replica_observe(good).healthy, "the model server to answer /ping")
        yield backend, good, missing, taken
    finally:
        blocker.close()
        kill_replica_processes(root)


def test_the_backend_has_the_interface(servers):
    backend, *_ = servers
    assert isinstance(backend, ServingBackend)


def test_started_server_answers_predictions_and_carries_its_markers(servers):
    backend, good, *_ = servers
    observed = backend.replica_observe(good)
    assert observed.alive and observed.healthy
    assert good.process_started == proc_stat(good.pid).starttime
    request = urllib.request.Request(f"{good.url}/invocations", data=json.dumps(SCORING_ROWS).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["predictions"] == EXPECTED_PREDICTIONS
    # Its own session and process group (it outlives the worker), the CLI and its uvicorn child both marked.
    assert os.getsid(good.pid) == good.pid
    marked = _marked(1, backend.scope)
    assert good.pid in marked and len(marked) == 2
    assert all(proc_stat(pid).pgrp == good.pid for pid in marked)
    env = proc_environ(good.pid)
    assert env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == "5"
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    # Secrets of the control plane are not handed to model code.
    assert "DATABASE_URL" not in env and "MODELPLANE_SECRET_KEY" not in env


def test_log_tail_shows_the_servers_startup_lines(servers):
    backend, good, *_ = servers
    tail = backend.replica_log_tail(good)
    assert START_BANNER in tail and "Uvicorn running on http://127.0.0.1:" in tail
    short = backend.replica_log_tail(good, max_bytes=40)
    assert 0 < len(short.encode()) <= 40 and tail.endswith(short)
    # Never a file outside the replica directory, whatever the handle says.
    assert backend.replica_log_tail(good.with_(log_path="/etc/passwd")) == ""


def test_a_server_that_cannot_load_its_model_is_seen_dead_with_its_exit_code_and_reason(servers):
    backend, _, missing, _ = servers
    observed = _wait_for(lambda: (o := backend.replica_observe(missing)).alive is False and o, "the failed server")
    assert observed.exit_code not in (None, 0) and observed.exit_reason.startswith("exited with code")
    assert "no-such-model" in backend.output_since_start(missing) and not observed.port_in_use
    assert proc_stat(missing.pid) is None     # reaped, not left as a zombie


def test_a_server_whose_port_is_taken_reports_it(servers):
    backend, _, _, taken = servers
    observed = _wait_for(lambda: (o := backend.replica_observe(taken)).alive is False and o, "the port clash")
    assert observed.port_in_use, backend.output_since_start(taken)


def test_pid_reuse_guard_a_wrong_start_time_is_neither_alive_nor_killed(servers):
    backend, good, *_ = servers
    impostor = good.with_(process_started=good.process_started - 1)
    assert not backend.is_alive(impostor) and not backend.replica_observe(impostor).alive
    assert backend.replica_stop(impostor, grace_seconds=1) is False
    assert process_running(good.pid) and backend.replica_observe(good).healthy


def test_orphan_sweep_stops_marked_processes_nobody_owns_and_spares_the_rest(servers):
    backend, good, *_ = servers

    def marked_sleeper(replica_id: int, scope: str) -> subprocess.Popen:
        return subprocess.Popen(["sleep", "300"], start_new_session=True,
                                env={"PATH": os.environ["PATH"], REPLICA_ID_VAR: str(replica_id),
                                     REPLICA_SCOPE_VAR: scope})

    orphan = marked_sleeper(77, backend.scope)
    stranger = marked_sleeper(78, backend.scope + "-another-installation")
    try:
        asked = []

        def owned(replica_id, handle):
            asked.append(replica_id)
            return replica_id == 1 and (handle.pid, handle.process_started) == (good.pid, good.process_started)

        swept = backend.orphans_sweep(owned=owned)
        assert [h.pid for h in swept] == [orphan.pid]
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert sorted(asked) == [1, 77]            # the other installation's process is not even considered
        assert stranger.poll() is None and backend.replica_observe(good).healthy
    finally:
        for proc in (orphan, stranger):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_stop_leaves_no_process_and_is_idempotent(servers):
    backend, good, *_ = servers
    assert backend.replica_stop(good) is True
    assert _marked(1, backend.scope) == [] and proc_stat(good.pid) is None
    observed = backend.replica_observe(good)
    assert not observed.alive and observed.exit_code is not None   # our child: reaped, its code known
    assert backend.replica_stop(good) is False


def test_a_start_that_cannot_run_the_cli_is_a_backend_error_written_to_the_log(tmp_path):
    from apps.deployments.backends.base import BackendError

    backend = LocalBackend(root=tmp_path, bin_dir=tmp_path / "no-venv")
    with pytest.raises(BackendError, match="Could not start the model server"):
        backend.replica_start(ReplicaSpec(replica_id=9, model_uri="/nowhere"))
    assert "could not start" in backend.log_path_for(9).read_text()
