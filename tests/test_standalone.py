"""``./dev standalone`` end to end: it starts every service, they answer, its data survives a restart, and
SIGTERM leaves no process behind. Also: a taken port stops it at once with a message naming the port.

These start real processes (PostgreSQL, Redis, MLflow, Celery, gunicorn) on free loopback ports in a temporary
data directory, with DATABASE_URL, REDIS_URL and MLFLOW_TRACKING_URI removed so standalone starts its own.
"""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from apps.core.management.commands.seed_demo import DEMO_PASSWORD

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 180
STOP_TIMEOUT = 60
SERVICES = ("postgres", "redis", "mlflow", "worker", "beat", "web", "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standalone_env() -> dict[str, str]:
    """Our environment without the settings that would point standalone (or its children) elsewhere."""
    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "MLFLOW_TRACKING_URI", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                 "MODELPLANE_DATA_DIR", "MODELPLANE_MLFLOW_UI_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)  # pytest-django set DJANGO_SETTINGS_MODULE to the test settings; standalone uses base
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def data_dir():
    # Not tmp_path: pytest's base directory is private to its user (0700), and when the suite runs as root
    # PostgreSQL runs as nobody, which must reach the data directory.
    path = Path(tempfile.mkdtemp(prefix="mp-standalone-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
    for output in path.parent.glob(f"{path.name}-run*.out"):
        output.unlink()


class Standalone:
    """One run of ``./dev standalone`` in its own session, output in a file, with helpers to check on it."""

    def __init__(self, data_dir: Path, ports: dict[str, int], run: int = 1):
        self.data_dir = data_dir
        self.ports = ports
        self.output_path = data_dir.parent / f"{data_dir.name}-run{run}.out"
        argv = [str(REPO / "dev"), "standalone", "--data-dir", str(data_dir),
                "--port", str(ports["web"]), "--pg-port", str(ports["postgres"]),
                "--redis-port", str(ports["redis"]), "--mlflow-port", str(ports["mlflow"]),
                "--gateway-port", str(ports.get("gateway") or free_port())]
        with open(self.output_path, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=standalone_env(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}/"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports['redis']}/0"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"standalone exited with {self.proc.returncode} before it was ready:\n{self.output}")
            if "Press Ctrl-C to stop." in self.output and http_status(self.base_url + "accounts/login/"):
                return
            time.sleep(1)
        self.stop()
        pytest.fail(f"standalone was not ready within {READY_TIMEOUT} s:\n{self.output}")

    def stop(self) -> float:
        """SIGTERM (as an init system or `kill` would send it); return how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            pytest.fail(f"standalone did not exit within {STOP_TIMEOUT} s of SIGTERM:\n{self.output}")
        return time.monotonic() - started


# --- process bookkeeping, independent of standalone's own -----------------------------------------------

def proc_table() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (ppid, pgid, sid, starttime) for every live, non-zombie process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes().decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2:].split()
        if fields[0] in ("Z", "X"):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    return table


def descendants(root: int) -> dict[int, int]:
    """pid -> starttime of ``root`` and everything below it."""
    table = proc_table()
    kids: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        kids.setdefault(ppid, []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found[pid] = table[pid][3]
        todo.extend(kids.get(pid, []))
    return found


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line or environment names ``text`` (the data directory)."""
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in Path(f"/proc/{entry}/{part}").read_bytes():
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{entry}: {cmd}")
                    break
            except OSError:
                continue
    return found


def assert_nothing_left(run: Standalone, tree: dict[int, int], groups: list[int]) -> None:
    table = proc_table()
    survivors = [pid for pid, start in tree.items() if pid in table and table[pid][3] == start]
    assert not survivors, f"processes outlived standalone: {survivors}"
    in_groups = [pid for pid, (_pp, pgid, sid, _st) in table.items() if pgid in groups or sid in groups]
    assert not in_groups, f"processes remain in standalone's children's groups/sessions: {in_groups}"
    mentioning = processes_mentioning(str(run.data_dir))
    assert not mentioning, "processes still reference the data directory:\n" + "\n".join(mentioning)
    assert not (run.data_dir / "run" / "pids").exists(), "run/pids should be removed on a clean stop"


# --- HTTP -------------------------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surface the redirect as an HTTPError so the test sees it


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200, url
        assert resp.headers.get_content_type() == "application/json", resp.headers
        return json.loads(resp.read())


def log_in(base_url: str, username: str, password: str) -> str:
    """Sign in through the login form as a browser would; return the page the redirect leads to."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect)
    login_url = base_url + "accounts/login/"
    with opener.open(login_url, timeout=15) as resp:
        assert resp.status == 200
    csrf = next((c.value for c in jar if c.name == "csrftoken"), None)
    assert csrf, "the login page set no csrftoken cookie"
    form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": csrf})
    request = urllib.request.Request(login_url, data=form.encode(), headers={"Referer": login_url})
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=30)
    assert redirect.value.code == 302, f"login answered {redirect.value.code}, not a redirect"
    target = urllib.parse.urljoin(login_url, redirect.value.headers["Location"])
    assert urllib.parse.urlsplit(target).path == "/", target
    with opener.open(target, timeout=15) as resp:
        assert resp.status == 200
        return resp.read().decode()


def celery_ping(redis_url: str) -> subprocess.CompletedProcess:
    env = standalone_env()
    env["REDIS_URL"] = redis_url
    return subprocess.run([str(REPO / ".venv" / "bin" / "python"), "manage.py", "celery_ping", "--timeout", "30"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=90, check=False)


# --- the tests --------------------------------------------------------------------------------------------

def test_standalone_serves_everything_survives_restart_and_stops_cleanly(data_dir):
    import redis

    ports = {name: free_port() for name in ("web", "postgres", "redis", "mlflow", "gateway")}
    experiment = f"standalone-test-{os.getpid()}"

    # First start, on an empty data directory.
    run = Standalone(data_dir, ports, run=1)
    run.wait_ready()
    out = run.output
    assert "creating the PostgreSQL cluster" in out
    assert run.base_url in out and run.mlflow_url in out
    assert f'password "{DEMO_PASSWORD}"' in out and "scientist" in out
    assert "MLflow webhook points at" in out, out  # MLflow tells us of new versions at once

    page = log_in(run.base_url, "scientist", DEMO_PASSWORD)
    assert "scientist" in page

    assert urllib.request.urlopen(run.mlflow_url + "/health", timeout=10).status == 200
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    assert gateway in out
    assert urllib.request.urlopen(gateway + "/v2/health/ready", timeout=10).status == 200  # read the routes
    found = get_json(run.mlflow_url + "/api/2.0/mlflow/experiments/search?max_results=1")
    assert "experiments" in found
    created = urllib.request.urlopen(urllib.request.Request(
        run.mlflow_url + "/api/2.0/mlflow/experiments/create", data=json.dumps({"name": experiment}).encode(),
        headers={"Content-Type": "application/json"}), timeout=10)
    assert created.status == 200

    pong = celery_ping(run.redis_url)
    assert pong.returncode == 0, pong.stdout + pong.stderr
    assert re.match(r"pong from \S+", pong.stdout.strip()), pong.stdout

    redis.Redis.from_url(run.redis_url).set("standalone-test:kept", "yes")

    pids = json.loads((data_dir / "run" / "pids").read_text())
    assert pids["standalone"] == run.proc.pid  # ./dev execs the command in place
    assert set(SERVICES) <= set(pids["children"]), pids
    tree = descendants(run.proc.pid)
    assert {pids["children"][s] for s in SERVICES} <= set(tree)
    seconds = run.stop()
    assert run.proc.returncode == 0, run.output
    assert "all services stopped" in run.output
    assert_nothing_left(run, tree, list(pids["children"].values()))
    print(f"first start stopped in {seconds:.1f} s")

    # Second start on the same directory: the same cluster, Redis data, MLflow experiments and demo logins.
    again = Standalone(data_dir, ports, run=2)
    again.wait_ready()
    assert "creating the PostgreSQL cluster" not in again.output
    assert "nothing to do" in (data_dir / "logs" / "seed_demo.log").read_text().rsplit("=====", 1)[-1]
    assert redis.Redis.from_url(again.redis_url).get("standalone-test:kept") == b"yes"
    by_name = get_json(again.mlflow_url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + experiment)
    assert by_name["experiment"]["name"] == experiment
    assert "teamadmin" in log_in(again.base_url, "teamadmin", DEMO_PASSWORD)

    pids = json.loads((data_dir / "run" / "pids").read_text())
    tree = descendants(again.proc.pid)
    again.stop()
    assert again.proc.returncode == 0, again.output
    assert_nothing_left(again, tree, list(pids["children"].values()))


def test_taken_web_port_fails_at_once_naming_the_port(data_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"web": port, "postgres": free_port(), "redis": free_port(), "mlflow": free_port()}
        run = Standalone(data_dir, ports)
        try:
            run.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            run.stop()
            pytest.fail(f"standalone kept running on a taken port:\n{run.output}")
    out = run.output
    assert run.proc.returncode != 0
    assert f"web: port {port} on 127.0.0.1 is already in use" in out, out
    assert "Traceback" not in out, out
    assert not (data_dir / "postgres").exists(), "nothing should start when a port is taken"
