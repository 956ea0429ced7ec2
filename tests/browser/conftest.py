"""Browser tests: Debian's Chromium, driven by Playwright, against the real web server.

The session starts gunicorn (``controlplane.wsgi``, production-like ``controlplane.settings.base`` with
``MODELPLANE_DEBUG=0``) as a subprocess on a free loopback port, against a PostgreSQL database of its own
(``modelplane_e2e_<random>`` on the server that ``DATABASE_URL`` names), migrated and filled by ``seed_demo``.
The database is dropped at the end. A real MLflow tracking server (``tests/mlflow_server.py``) starts beside it,
and the web server's ``MLFLOW_TRACKING_URI`` points at it. Nothing here uses pytest-django's database fixtures: the server owns its
database, and the tests see it only through HTTP, as a user would.

Set ``MODELPLANE_E2E_SHOTS=/some/dir`` to save a screenshot of every page the tests call ``shot()`` on, and
``MODELPLANE_CHROMIUM`` to use a Chromium other than ``/usr/bin/chromium``.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.mlflow_server import MlflowServer

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MODELPLANE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync", "--disable-quic",
]
# A user in both demo teams, for the team switcher (seed_demo puts every demo user in one team only).
BRIDGE_USER = "bridge"
SERVER_START_TIMEOUT = 30


# --------------------------------------------------------------------------------------------------- server


def _venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else str(ROOT / ".venv" / "bin" / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_db_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin_connection(database_url: str):
    """An autocommit connection to the server's maintenance database (CREATE/DROP DATABASE)."""
    import psycopg

    last_error: Exception | None = None
    for name in ("postgres", urlsplit(database_url).path.lstrip("/") or "postgres"):
        try:
            url = _with_db_name(database_url, name).replace("postgresql+psycopg", "postgresql")
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            last_error = exc
    raise RuntimeError(f"cannot reach PostgreSQL at {urlsplit(database_url).netloc}: {last_error}")


# Run in one ``manage.py shell`` (one Django start-up instead of three) while gunicorn boots.
# seed_demo hashes a password per user at full PBKDF2 cost (about 0.7 s each on a CI machine); here the demo
# passwords get a cheap iteration count instead, which the server upgrades to the full count at each user's
# first sign-in, exactly as it does for any hash from an older Django.
_SETUP_SCRIPT = f"""
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
PBKDF2PasswordHasher.iterations = 1000
call_command("seed_demo")
from apps.accounts.models import Team
from apps.accounts.services import membership_add, user_create
from apps.core.actors import Actor
from apps.core.management.commands.seed_demo import DEMO_PASSWORD
from apps.core.permissions import DATA_SCIENTIST, VIEWER
actor = Actor.system("browser-tests")
user = user_create(actor=actor, username="{BRIDGE_USER}", password=DEMO_PASSWORD, display_name="Bea Bridge")
membership_add(actor=actor, team_id=Team.objects.get(slug="fraud").pk, user_id=user.pk, role=VIEWER)
membership_add(actor=actor, team_id=Team.objects.get(slug="recs").pk, user_id=user.pk, role=DATA_SCIENTIST)
"""


class Server:
    """The running web server: its base URL, its log (quoted when it fails to start), its environment and the
    MLflow tracking server it uses."""

    def __init__(self, base_url: str, log_path: Path, env: dict | None = None, mlflow_uri: str = ""):
        self.base_url = base_url
        self.log_path = log_path
        self.env = env or {}
        self.mlflow_uri = mlflow_uri

    def manage_shell(self, code: str, timeout: float = 120) -> str:
        """Run Python in ``manage.py shell`` against the server's database and MLflow (what a worker would do)."""
        done = subprocess.run([_venv_bin("python"), "manage.py", "shell", "-c", code], check=False, cwd=ROOT,
                              env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py shell failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    base_database_url = os.environ.get("DATABASE_URL")
    if not base_database_url:
        pytest.fail("DATABASE_URL is not set (tests/conftest.py sets it when PostgreSQL answers)")
    db_name = f"modelplane_e2e_{secrets.token_hex(4)}"
    with _admin_connection(base_database_url) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    workdir = tmp_path_factory.mktemp("e2e")
    log_path = workdir / "gunicorn.log"
    port = _free_port()
    # A real MLflow of the session's own (the registry pages talk to it), started first: it is the slowest.
    mlflow = MlflowServer(base_database_url, workdir / "mlflow").start()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings.base",
        "DATABASE_URL": _with_db_name(base_database_url, db_name),
        "MODELPLANE_DEBUG": "0",
        "MODELPLANE_DATA_DIR": str(workdir / "var"),
        "MODELPLANE_ALLOWED_HOSTS": "127.0.0.1,localhost",
        # The tests sign in many times from one address; the API throttles are tested elsewhere.
        "MODELPLANE_API_ANON_RATE": "10000/min",
        "MODELPLANE_API_USER_RATE": "100000/min",
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": mlflow.uri,
        "MODELPLANE_MLFLOW_UI_URL": mlflow.uri,
    }
    base_url = f"http://127.0.0.1:{port}"
    srv = Server(base_url, log_path, env=env, mlflow_uri=mlflow.uri)
    setup = process = None
    try:
        setup = subprocess.Popen([_venv_bin("python"), "manage.py", "shell", "-c", _SETUP_SCRIPT], cwd=ROOT,
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with open(log_path, "w") as log:  # gunicorn keeps its own copy of the descriptor
            process = subprocess.Popen(
                [_venv_bin("gunicorn"), "controlplane.wsgi:application", "--bind", f"127.0.0.1:{port}",
                 "--workers", "2", "--preload", "--timeout", "60",
                 # No control socket: the default path is shared by every gunicorn on the machine.
                 "--no-control-socket", "--access-logfile", "-", "--error-logfile", "-"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        setup_output, _ = setup.communicate(timeout=180)
        if setup.returncode != 0:
            raise RuntimeError(f"migrate / seed_demo failed:\n{setup_output}")
        mlflow.wait()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{srv.log_tail()}")
            try:
                with urllib.request.urlopen(base_url + "/accounts/login/", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in {SERVER_START_TIMEOUT}s:\n{srv.log_tail()}")
            time.sleep(0.2)
        yield srv
    finally:
        if setup is not None and setup.poll() is None:
            setup.kill()
            setup.wait(timeout=5)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # gunicorn's own session: the arbiter and its workers
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        with _admin_connection(base_database_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        mlflow.stop()


@pytest.fixture(scope="session")
def demo_password() -> str:
    from apps.core.management.commands.seed_demo import DEMO_PASSWORD

    return DEMO_PASSWORD


# --------------------------------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def browser():
    """Chromium through Playwright's sync API, one launch per module (about a second): while Playwright runs it
    holds an event loop on the main thread, so it must not outlive the browser tests (later tests call
    asyncio.run, which refuses to run inside a running loop)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM} (apt-get install chromium, or set MODELPLANE_CHROMIUM); "
                    "to run without the browser tests: pytest -m 'not browser'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_context(browser, server):
    """Open a fresh browser context (own cookies), optionally signed in; all are closed after the test."""
    contexts = []

    def make(*, storage_state=None, viewport=None):
        kwargs = {"base_url": server.base_url, "viewport": viewport or {"width": 1280, "height": 860}}
        if storage_state is not None:
            kwargs["storage_state"] = storage_state
        ctx = browser.new_context(**kwargs)
        ctx.set_default_timeout(10_000)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(new_context):
    """A fresh, signed-out page."""
    return new_context().new_page()


def _login(page, username: str, password: str) -> None:
    if "/accounts/login/" not in page.url:
        page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


@pytest.fixture
def login(demo_password):
    """``login(page, "risk")`` signs in through the form, as a person would, and waits to leave the form.

    A page already on the sign-in form (say, sent there with ``?next=``) is signed in right there.
    """
    return lambda page, username, password=demo_password: _login(page, username, password)


_states: dict[str, dict] = {}


@pytest.fixture
def signed_in(new_context, demo_password):
    """``signed_in("risk")`` gives a page signed in as that demo user.

    Each user signs in through the form once per session; later tests reuse the cookies in a fresh context.
    A test that signs out must use the ``login`` fixture on its own page instead, or it would end the shared
    session.
    """

    def make(username: str, **context_kwargs):
        if username in _states:
            return new_context(storage_state=_states[username], **context_kwargs).new_page()
        page = new_context(**context_kwargs).new_page()
        _login(page, username, demo_password)
        _states[username] = page.context.storage_state()
        return page

    return make


SHOTS = os.environ.get("MODELPLANE_E2E_SHOTS")


@pytest.fixture
def shot():
    """``shot(page, "name")`` saves a screenshot when MODELPLANE_E2E_SHOTS names a directory (to look at)."""

    def take(page, name: str, *, full_page: bool = True) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=full_page)

    return take
