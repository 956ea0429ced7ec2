"""The local serving backend: MLflow scoring-server processes on loopback ports, driven through /proc and signals.

Each replica is ``mlflow models serve -m <model_uri> --env-manager local -h 127.0.0.1 -p <port> --workers 1``
in a session (and process group) of its own, so that it outlives the Celery worker that started it and can be
signalled as a whole (the CLI runs uvicorn as its child). Its stdout and stderr are appended to one log file per
replica, each start preceded by a banner line, so the output of every run stays readable on the deployment page.

A process is identified by its pid *and* its start time (``/proc/<pid>/stat`` field 22), so that a pid reused by
an unrelated process is never taken for a replica, nor signalled. Every replica process carries two environment
variables, ``MODELPLANE_REPLICA_ID`` and ``MODELPLANE_REPLICA_SCOPE`` (the replica directory, so that two
installations or two test runs on one machine never sweep each other's servers), by which a restarted worker finds
the servers its predecessor left running.

No ORM here: ``apps/deployments/replicas.py`` maps rows to specs and handles. Linux only (/proc).
"""
from __future__ import annotations

import http.client
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apps.deployments.backends.base import BackendError, ReplicaHandle, ReplicaObservation, ReplicaSpec

logger = logging.getLogger(__name__)

PROC = Path("/proc")
REPLICA_ID_VAR = "MODELPLANE_REPLICA_ID"
REPLICA_SCOPE_VAR = "MODELPLANE_REPLICA_SCOPE"
START_BANNER = "=== modelplane: replica "
LOG_ROTATE_BYTES = 8 * 1024 * 1024   # at a start, a log past this size is moved to <log>.1 (one generation kept)
# The model server needs no secret of the control plane: it gets an allow-list of the worker's environment,
# the MLflow variables (tracking URI, credentials, HTTP settings) and the artifact stores' credentials only.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")
INHERITED_ENV_PREFIXES = ("MLFLOW_", "AWS_", "AZURE_", "GOOGLE_APPLICATION_CREDENTIALS")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that we use."""

    pid: int
    state: str          # R, S, D, Z (zombie), T, ...
    ppid: int
    pgrp: int
    starttime: int      # clock ticks since boot: with the pid, a process's identity


def proc_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None if there is no such process."""
    try:
        data = (PROC / str(pid) / "stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    rest = data[data.rindex(b")") + 2:].split()
    return ProcStat(pid=pid, state=rest[0].decode(), ppid=int(rest[1]), pgrp=int(rest[2]),
                    starttime=int(rest[19]))


def proc_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with ({} if unreadable or gone)."""
    try:
        data = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    result = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            result[key.decode(errors="replace")] = value.decode(errors="replace")
    return result


def proc_pids() -> Iterator[int]:
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def describe_exit(code: int | None) -> str:
    if code is None:
        return ""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


# Processes started by *this* Python process: kept so that they can be reaped (their exit code read) instead of
# lingering as zombies, and so that Python's own subprocess clean-up never reaps them before we read the code.
_children: dict[int, tuple[subprocess.Popen, int]] = {}
_exit_codes: dict[tuple[int, int], int] = {}
_children_lock = threading.Lock()


def _reap_children() -> None:
    with _children_lock:
        for pid, (proc, starttime) in list(_children.items()):
            code = proc.poll()
            if code is not None:
                del _children[pid]
                _exit_codes[(pid, starttime)] = code
                if len(_exit_codes) > 1000:
                    _exit_codes.pop(next(iter(_exit_codes)))


def _exit_code(pid: int, starttime: int | None) -> int | None:
    with _children_lock:
        return _exit_codes.get((pid, starttime)) if starttime is not None else None


def _child_exit_code(pid: int, starttime: int | None, wait_seconds: float = 2.0) -> int | None:
    """The exit code of a process that this Python process started and that has died (None for another's).

    A killed multi-threaded process shows as a zombie before it can be reaped (its other threads are still being
    torn down), so a dead child is polled for a moment rather than once.
    """
    deadline = time.monotonic() + wait_seconds
    while True:
        _reap_children()
        code = _exit_code(pid, starttime)
        with _children_lock:
            ours = pid in _children
        if code is not None or not ours or time.monotonic() >= deadline:
            return code
        time.sleep(0.05)


class LocalBackend:
    """Replicas as MLflow scoring-server processes on this machine (see the module docstring)."""

    kind = "local"

    def __init__(self, *, root: str | Path, tracking_uri: str = "", host: str = "127.0.0.1",
                 stop_grace_seconds: float = 10.0, health_timeout_seconds: float = 2.0,
                 scope: str | None = None, bin_dir: str | Path | None = None):
        self.root = Path(root).resolve()
        self.tracking_uri = tracking_uri
        self.host = host
        self.stop_grace_seconds = stop_grace_seconds
        self.health_timeout_seconds = health_timeout_seconds
        self.scope = scope or str(self.root)
        # `mlflow models serve` runs `uvicorn` found on PATH: the virtualenv's bin directory goes first.
        self.bin_dir = Path(bin_dir) if bin_dir else Path(sys.executable).parent

    @classmethod
    def from_settings(cls) -> LocalBackend:
        """The backend as settings configure it. Its scope names the replica directory *and* the database, so
        that two installations (or two test runs, each with its own database) never sweep each other's
        servers even when they share a directory."""
        from django.conf import settings
        from django.db import connection

        root = Path(settings.MODELPLANE_REPLICA_DIR).resolve()
        return cls(root=root, tracking_uri=settings.MLFLOW_TRACKING_URI,
                   stop_grace_seconds=float(settings.MODELPLANE_REPLICA_STOP_GRACE_SECONDS),
                   scope=f"{root}|{connection.settings_dict.get('NAME')}")

    # -- start ---------------------------------------------------------------------------------------------

    def log_path_for(self, replica_id: int) -> Path:
        return self.root / "logs" / f"replica-{replica_id}.log"

    def replica_env(self, spec: ReplicaSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k in INHERITED_ENV or k.startswith(INHERITED_ENV_PREFIXES)}
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH") or "/usr/local/bin:/usr/bin:/bin"])
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        # MLflow reads it as an integer number of seconds.
        env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(max(1, math.ceil(spec.timeout_seconds)))
        # Health checks every few seconds would otherwise fill the log with access lines (uvicorn reads
        # UVICORN_* for its command-line options).
        env["UVICORN_ACCESS_LOG"] = "false"
        env["PYTHONUNBUFFERED"] = "1"
        env.update(spec.env)
        env[REPLICA_ID_VAR] = str(spec.replica_id)
        env[REPLICA_SCOPE_VAR] = self.scope
        return env

    def replica_start(self, spec: ReplicaSpec, *, port: int | None = None) -> ReplicaHandle:
        """Start the server and return at once; it answers /ping once the model is loaded (10-30 s here)."""
        port = port or free_port(self.host)
        log_path = self.log_path_for(spec.replica_id)
        command = [str(self.bin_dir / "mlflow"), "models", "serve", "-m", spec.model_uri,
                   "--env-manager", "local", "-h", self.host, "-p", str(port), "--workers", "1"]
        _reap_children()
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
                log_path.replace(log_path.with_name(log_path.name + ".1"))
            with open(log_path, "ab") as log:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                log.write(f"\n{START_BANNER}{spec.replica_id} starting {spec.model_uri} on {self.host}:{port} "
                          f"at {stamp} ===\n".encode())
                log.flush()
                try:
                    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=self.replica_env(spec), cwd=self.root,
                                            start_new_session=True, close_fds=True)
                except OSError as exc:
                    log.write(f"could not start: {exc}\n".encode())
                    raise
        except OSError as exc:
            raise BackendError(f"Could not start the model server: {exc}") from exc
        stat = proc_stat(proc.pid)
        # Popen returns after the exec succeeded, so the process exists (as a zombie at worst, being our child).
        starttime = stat.starttime if stat else 0
        with _children_lock:
            _children[proc.pid] = (proc, starttime)
        logger.info("replica %s: started pid %s on port %s (%s)", spec.replica_id, proc.pid, port, spec.model_uri)
        return ReplicaHandle(replica_id=spec.replica_id, host=self.host, port=port, pid=proc.pid,
                             process_started=starttime, log_path=str(log_path),
                             name=f"replica-{spec.replica_id}")

    # -- observe -------------------------------------------------------------------------------------------

    def is_alive(self, handle: ReplicaHandle) -> bool:
        """The handle's process exists, is not a zombie, and is the same process (start time matches)."""
        if handle.pid is None or handle.process_started is None:
            return False
        _reap_children()
        stat = proc_stat(handle.pid)
        return stat is not None and stat.starttime == handle.process_started and stat.state != "Z"

    def ping(self, handle: ReplicaHandle) -> bool:
        """GET /ping answers 200 within the health timeout."""
        if not handle.port:
            return False
        conn = http.client.HTTPConnection(handle.host or self.host, handle.port,
                                          timeout=self.health_timeout_seconds)
        try:
            conn.request("GET", "/ping")
            response = conn.getresponse()
            response.read()
            return response.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def replica_observe(self, handle: ReplicaHandle, *, check_health: bool = True) -> ReplicaObservation:
        if self.is_alive(handle):
            return ReplicaObservation(alive=True, healthy=check_health and self.ping(handle))
        if handle.pid is None:
            return ReplicaObservation(alive=False, exit_reason="not started")
        code = _child_exit_code(handle.pid, handle.process_started)
        output = self.output_since_start(handle)
        last_line = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        reason = describe_exit(code) or "exited (exit code unknown: another worker process started it)"
        if last_line:
            reason = f"{reason}: {last_line}"
        return ReplicaObservation(alive=False, exit_code=code, exit_reason=reason,
                                  port_in_use="address already in use" in output.lower())

    # -- stop ----------------------------------------------------------------------------------------------

    def _is_replica_process(self, stat: ProcStat, handle: ReplicaHandle) -> bool:
        """A process of this replica: the handle's own (pid and start time match) or a member of its process
        group that carries this replica's markers (the uvicorn child, say, after the CLI died alone)."""
        if stat.state == "Z":
            return False
        if stat.pid == handle.pid:
            return stat.starttime == handle.process_started
        if stat.pgrp != handle.pid:
            return False
        env = proc_environ(stat.pid)
        return env.get(REPLICA_ID_VAR) == str(handle.replica_id) and env.get(REPLICA_SCOPE_VAR) == self.scope

    def _replica_processes(self, handle: ReplicaHandle) -> list[ProcStat]:
        leader = proc_stat(handle.pid)
        if leader is not None and leader.state != "Z" and leader.starttime != handle.process_started:
            # The pid now names another process. Linux reuses no pid while a process group of that id has
            # members, so the group id is the new process's too: nothing in it is ours.
            return []
        found = []
        for pid in proc_pids():
            stat = proc_stat(pid)
            if stat is not None and (stat.pid == handle.pid or stat.pgrp == handle.pid) \
                    and self._is_replica_process(stat, handle):
                found.append(stat)
        return found

    @staticmethod
    def _still_there(stat: ProcStat) -> bool:
        now = proc_stat(stat.pid)
        return now is not None and now.starttime == stat.starttime and now.state != "Z"

    def _signal(self, targets: list[ProcStat], sig: signal.Signals) -> None:
        for stat in targets:
            # Re-checked right before the signal: never signal a process that merely inherited the pid.
            if self._still_there(stat):
                try:
                    os.kill(stat.pid, sig)
                except ProcessLookupError:
                    pass

    def _wait_gone(self, targets: list[ProcStat], seconds: float) -> list[ProcStat]:
        deadline = time.monotonic() + seconds
        while True:
            _reap_children()
            remaining = [stat for stat in targets if self._still_there(stat)]
            if not remaining or time.monotonic() >= deadline:
                return remaining
            time.sleep(0.1)

    def replica_stop(self, handle: ReplicaHandle, *, grace_seconds: float | None = None) -> bool:
        """SIGTERM the replica's processes, SIGKILL what is left after the grace period. Idempotent.

        Signals go to each verified process rather than to the process group as a whole, so that a group id
        whose members are all gone (and could be reused) is never signalled.
        """
        if handle.pid is None:
            return False
        _reap_children()
        targets = self._replica_processes(handle)
        if not targets:
            return False
        grace = self.stop_grace_seconds if grace_seconds is None else grace_seconds
        self._signal(targets, signal.SIGTERM)
        remaining = self._wait_gone(targets, grace)
        if remaining:
            logger.warning("replica %s: still running %.0f s after SIGTERM, sending SIGKILL", handle.replica_id,
                           grace)
            self._signal(remaining, signal.SIGKILL)
            remaining = self._wait_gone(remaining, 5.0)
        if remaining:
            raise BackendError(f"Processes {[s.pid for s in remaining]} survived SIGKILL")
        logger.info("replica %s: stopped pid %s", handle.replica_id, handle.pid)
        return True

    # -- orphans -------------------------------------------------------------------------------------------

    def replica_processes_found(self) -> list[ReplicaHandle]:
        """One handle per running replica process group of this scope (its leader's pid and start time)."""
        groups: dict[int, tuple[int, ProcStat | None, list[ProcStat]]] = {}
        for pid in proc_pids():
            env = proc_environ(pid)
            if env.get(REPLICA_SCOPE_VAR) != self.scope or not env.get(REPLICA_ID_VAR, "").isdigit():
                continue
            stat = proc_stat(pid)
            if stat is None or stat.state == "Z":
                continue
            replica_id, leader, members = groups.get(stat.pgrp, (int(env[REPLICA_ID_VAR]), None, []))
            members.append(stat)
            groups[stat.pgrp] = (replica_id, stat if stat.pid == stat.pgrp else leader, members)
        return [ReplicaHandle(replica_id=replica_id, host=self.host, pid=pgrp,
                              process_started=leader.starttime if leader else None,
                              log_path=str(self.log_path_for(replica_id)), name=f"replica-{replica_id}")
                for pgrp, (replica_id, leader, _members) in sorted(groups.items())]

    def orphans_sweep(self, *, owned: Callable[[int, ReplicaHandle], bool]) -> list[ReplicaHandle]:
        stopped = []
        for handle in self.replica_processes_found():
            if owned(handle.replica_id, handle):
                continue
            logger.warning("replica %s: orphan process group %s, stopping it", handle.replica_id, handle.pid)
            if self.replica_stop(handle):
                stopped.append(handle)
        return stopped

    # -- output --------------------------------------------------------------------------------------------

    def _log_file(self, handle: ReplicaHandle) -> Path | None:
        if not handle.log_path:
            return None
        path = Path(handle.log_path).resolve()
        # Only our own logs: a path from elsewhere is never read.
        return path if path.is_relative_to(self.root) else None

    def replica_log_tail(self, handle: ReplicaHandle, *, max_bytes: int = 65536) -> str:
        path = self._log_file(handle)
        if path is None:
            return ""
        try:
            with open(path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - max_bytes)
                f.seek(start)
                data = f.read(max_bytes)
        except OSError:
            return ""
        if start > 0:
            # Begin at a whole line where the window holds one (a cut multi-byte character would be replaced).
            newline = data.find(b"\n")
            if 0 <= newline < len(data) - 1:
                data = data[newline + 1:]
        return data.decode("utf-8", errors="replace")

    def output_since_start(self, handle: ReplicaHandle, *, max_bytes: int = 65536) -> str:
        """The output of the replica's latest run (after its start banner)."""
        tail = self.replica_log_tail(handle, max_bytes=max_bytes)
        index = tail.rfind(START_BANNER)
        if index < 0:
            return tail
        newline = tail.find("\n", index)
        return tail[newline + 1:] if newline >= 0 else ""
