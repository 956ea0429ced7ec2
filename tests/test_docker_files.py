"""Checks of docker/ (image, entrypoint, compose file, Kubernetes manifests) that need no Docker engine and
no Kubernetes cluster.

No image is built here. What is checked: the entrypoint really dispatches each role (run in its dry-run
mode, and with stub programs), really waits for PostgreSQL and Redis and really probes health; every
compose service and Kubernetes workload names a role the entrypoint handles; the files parse and refer to
things that exist (COPY sources, services, volumes, settings modules, ConfigMaps, Secrets, ports); the
manifests match the Kubernetes API's model classes. Where a `docker compose`, `kubectl` or `shellcheck`
client is installed, it checks the files too; where it is not, that test is skipped and says so.

None of these tests touches Django or its test database.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from functools import cache
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = DOCKER / "k8s"

IMAGE_ENTRYPOINT = "/app/docker/entrypoint.sh"  # where the Dockerfile puts the script
IMAGE_NAME = "modelplane"
APP_SERVICES = {"web", "migrate", "worker", "beat", "gateway", "mlflow"}
REQUIRED_SERVICES = APP_SERVICES | {"postgres", "redis"}
DEPLOYMENTS = {"web", "worker", "beat", "gateway", "mlflow"}
# What each role's container listens on, as the entrypoint starts it by default.
ROLE_PORTS = {"web": 8000, "gateway": 8080, "mlflow": 5000}


# --------------------------------------------------------------------------------------------------------
# Running the entrypoint


def entrypoint_env(tmp_dir: Path, **overrides: str) -> dict[str, str]:
    """A clean environment: this interpreter's bin directory first on PATH (python, gunicorn, celery,
    mlflow), nothing from the caller's DATABASE_URL and friends."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")]),
        "HOME": str(tmp_dir),
        "LANG": "C.UTF-8",
        "MODELPLANE_RUN_DIR": str(tmp_dir),
        "MODELPLANE_DATA_DIR": str(tmp_dir / "data"),
        "MODELPLANE_ENTRYPOINT_DRY_RUN": "1",
        "MODELPLANE_WAIT_TIMEOUT": "0",
    }
    env.update(overrides)
    return env


def run_entrypoint(
    *args: str, tmp_dir: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args],
        env=entrypoint_env(tmp_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def lines_with(prefix: str, output: str) -> list[list[str]]:
    return [shlex.split(line[len(prefix) :]) for line in output.splitlines() if line.startswith(prefix)]


DISPATCH_ENV = {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://mlflow@127.0.0.1:1/mlflow"}


@cache
def dispatch(*args: str) -> tuple[int, tuple[str, ...] | None]:
    """Run the entrypoint in dry-run mode; return its exit code and the command it would exec."""
    tmp_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    result = run_entrypoint(*args, tmp_dir=tmp_dir, **DISPATCH_ENV)
    execs = lines_with("exec: ", result.stdout)
    return result.returncode, (tuple(execs[-1]) if execs else None)


def assert_handled_target(args: list[str], where: str) -> None:
    assert args, f"{where}: no arguments for the entrypoint"
    returncode, command = dispatch(*args)
    assert returncode == 0 and command, (
        f"{where}: the entrypoint does not handle {args!r} (exit {returncode})"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def module_file(dotted: str) -> Path:
    return ROOT.joinpath(*dotted.split(".")).with_suffix(".py")


# --------------------------------------------------------------------------------------------------------
# The entrypoint script


def test_entrypoint_is_an_executable_bash_script_that_parses():
    assert ENTRYPOINT.is_file()
    mode = ENTRYPOINT.stat().st_mode
    assert mode & stat.S_IXUSR and mode & stat.S_IXOTH, "entrypoint.sh must be executable by everyone"
    assert ENTRYPOINT.read_text().startswith("#!/usr/bin/env bash\n")
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_entrypoint_is_committed_executable_if_tracked():
    listed = subprocess.run(
        ["git", "ls-files", "-s", "--", str(ENTRYPOINT.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0 or not listed.stdout.strip():
        pytest.skip("docker/entrypoint.sh is not in git's index yet")
    assert listed.stdout.split()[0] == "100755", "git would check the entrypoint out without its exec bit"


def test_entrypoint_passes_shellcheck_where_installed():
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed on this machine")
    result = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("args", "expected_prefix", "expected_options"),
    [
        (["web"], ["gunicorn", "controlplane.wsgi:application"], {"--bind": "0.0.0.0:8000"}),
        (["migrate"], ["python", "manage.py", "migrate", "--noinput"], {}),
        (["worker"], ["celery", "-A", "controlplane", "worker"], {}),
        (["beat"], ["celery", "-A", "controlplane", "beat"], {}),
        (["gateway"], ["python", "manage.py", "gateway"], {"--host": "0.0.0.0", "--port": "8080"}),
        (
            ["mlflow"],
            ["mlflow", "server"],
            {
                "--backend-store-uri": DISPATCH_ENV["MLFLOW_BACKEND_STORE_URI"],
                "--artifacts-destination": "/data/mlflow-artifacts",
                "--host": "0.0.0.0",
                "--port": "5000",
            },
        ),
        (["manage", "check", "--deploy"], ["python", "manage.py", "check", "--deploy"], {}),
    ],
)
def test_entrypoint_dispatches_each_role(tmp_path, args, expected_prefix, expected_options):
    result = run_entrypoint(*args, tmp_dir=tmp_path, MODELPLANE_DATA_DIR="/data", **DISPATCH_ENV)
    assert result.returncode == 0, result.stderr
    (command,) = lines_with("exec: ", result.stdout)
    assert command[: len(expected_prefix)] == expected_prefix
    for option, value in expected_options.items():
        assert option in command, f"{option} missing from {command}"
        assert command[command.index(option) + 1] == value


def test_entrypoint_passes_extra_arguments_on(tmp_path):
    result = run_entrypoint("worker", "-Q", "scans,reconcile", tmp_dir=tmp_path)
    (command,) = lines_with("exec: ", result.stdout)
    assert command[-2:] == ["-Q", "scans,reconcile"]


def test_beat_keeps_its_schedule_in_the_data_dir(tmp_path):
    result = run_entrypoint("beat", tmp_dir=tmp_path, MODELPLANE_DATA_DIR="/srv/modelplane")
    (command,) = lines_with("exec: ", result.stdout)
    # The image's working directory belongs to root: the default ./celerybeat-schedule could not be written.
    assert command[command.index("--schedule") + 1] == "/srv/modelplane/celerybeat-schedule"


def test_mlflow_gets_host_checking_configured(tmp_path):
    result = run_entrypoint("mlflow", tmp_dir=tmp_path, **DISPATCH_ENV)
    (command,) = lines_with("exec: ", result.stdout)
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert "mlflow:5000" in allowed or "mlflow:*" in allowed, "other containers reach MLflow as mlflow:5000"


def test_mlflow_refuses_to_start_without_a_backend_store(tmp_path):
    result = run_entrypoint("mlflow", tmp_dir=tmp_path)
    assert result.returncode != 0
    assert "MLFLOW_BACKEND_STORE_URI" in result.stderr
    assert not lines_with("exec: ", result.stdout)


def test_entrypoint_refuses_unknown_targets(tmp_path):
    result = run_entrypoint("serve-everything", tmp_dir=tmp_path)
    assert result.returncode == 64
    assert "unknown target" in result.stderr
    assert not lines_with("exec: ", result.stdout)


def test_manage_needs_a_command(tmp_path):
    result = run_entrypoint("manage", tmp_dir=tmp_path)
    assert result.returncode == 64
    assert not lines_with("exec: ", result.stdout)


def test_web_migrates_first_only_when_asked(tmp_path):
    plain = run_entrypoint("web", tmp_dir=tmp_path)
    assert plain.returncode == 0
    assert not lines_with("run: ", plain.stdout)

    asked = run_entrypoint("web", tmp_dir=tmp_path, MODELPLANE_MIGRATE_ON_START="1")
    assert asked.returncode == 0
    assert lines_with("run: ", asked.stdout) == [["python", "manage.py", "migrate", "--noinput"]]
    steps = [line.split(":")[0] for line in asked.stdout.splitlines()]
    assert steps == ["run", "exec"], "the migration must run before gunicorn starts"


def test_entrypoint_execs_the_program_and_records_the_role(tmp_path):
    """Without dry-run the entrypoint really execs: a stub `mlflow` on PATH reports what it was given."""
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    stub = stub_bin / "mlflow"
    stub.write_text(
        "#!/bin/sh\n"
        'printf "job-execution=%s\\n" "$MLFLOW_SERVER_ENABLE_JOB_EXECUTION"\n'
        'printf "arg=%s\\n" "$@"\n'
    )
    stub.chmod(0o755)
    env = entrypoint_env(tmp_path, MODELPLANE_ENTRYPOINT_DRY_RUN="0", **DISPATCH_ENV)
    env["PATH"] = f"{stub_bin}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "mlflow"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "job-execution=false" in result.stdout.splitlines()
    assert "arg=server" in result.stdout.splitlines()
    assert (tmp_path / "modelplane-role").read_text().strip() == "mlflow"


def test_wsgi_and_celery_targets_exist():
    wsgi = ROOT / "controlplane" / "wsgi.py"
    assert re.search(r"^application\s*=", wsgi.read_text(), re.MULTILINE), "controlplane.wsgi:application"
    celery_app = ROOT / "controlplane" / "celery.py"
    assert re.search(r"^app\s*=\s*Celery\(", celery_app.read_text(), re.MULTILINE), "celery -A controlplane"


def test_gateway_command_takes_the_options_the_entrypoint_gives_it():
    assert (ROOT / "apps" / "gateway" / "management" / "commands" / "gateway.py").is_file()
    returncode, command = dispatch("gateway")
    assert returncode == 0 and command[:3] == ("python", "manage.py", "gateway")
    # The real command parses what the entrypoint passes (no Redis or database needed for --help).
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "controlplane.settings.test"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "gateway", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in command[3:]:
        if option.startswith("--"):
            assert option in result.stdout, f"manage.py gateway has no {option}"


def test_gateway_runs_by_default_with_http_probes():
    compose = yaml.safe_load(COMPOSE.read_text())
    gateway = compose["services"]["gateway"]
    assert "profiles" not in gateway, "a plain `up` starts the gateway"
    assert gateway["command"] == ["gateway"]
    deployment = k8s_objects("Deployment")["gateway"]
    assert deployment["spec"]["replicas"] >= 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


# --------------------------------------------------------------------------------------------------------
# Waiting for PostgreSQL and Redis


def test_wait_gives_up_on_an_unreachable_postgres_without_leaking_the_password(tmp_path):
    port = free_port()
    started = time.monotonic()
    result = run_entrypoint(
        "migrate",
        tmp_dir=tmp_path,
        MODELPLANE_WAIT_TIMEOUT="2",
        DATABASE_URL=f"postgresql://modelplane:hunter2secret@127.0.0.1:{port}/modelplane",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert not lines_with("exec: ", result.stdout), "it must not start migrate against a missing database"
    assert "gave up waiting for PostgreSQL after 2s" in result.stderr
    # The reason is psycopg's own, not a bug in the check (a NameError would also 'fail to connect').
    assert "OperationalError" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2secret" not in result.stderr
    assert 2 <= elapsed < 30


def test_wait_gives_up_on_an_unreachable_redis(tmp_path):
    result = run_entrypoint(
        "gateway",
        tmp_dir=tmp_path,
        MODELPLANE_WAIT_TIMEOUT="1",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    assert result.returncode == 1
    assert "gave up waiting for Redis" in result.stderr
    assert "ConnectionError" in result.stderr
    assert not lines_with("exec: ", result.stdout)


def test_wait_can_be_switched_off(tmp_path):
    dead = f"postgresql://x@127.0.0.1:{free_port()}/x"
    result = run_entrypoint(
        "migrate",
        tmp_dir=tmp_path,
        MODELPLANE_WAIT_TIMEOUT="30",
        MODELPLANE_WAIT_FOR="none",
        DATABASE_URL=dead,
    )
    assert result.returncode == 0
    assert lines_with("exec: ", result.stdout)


def test_wait_refuses_a_timeout_that_is_not_a_number(tmp_path):
    result = run_entrypoint("migrate", tmp_dir=tmp_path, MODELPLANE_WAIT_TIMEOUT="soon")
    assert result.returncode == 2
    assert "MODELPLANE_WAIT_TIMEOUT" in result.stderr


def test_mlflow_waits_for_its_own_database_in_sqlalchemy_form(tmp_path):
    result = run_entrypoint(
        "mlflow",
        tmp_dir=tmp_path,
        MODELPLANE_WAIT_TIMEOUT="1",
        MLFLOW_BACKEND_STORE_URI=f"postgresql+psycopg://u:pw@127.0.0.1:{free_port()}/mlflow",
    )
    assert result.returncode == 1
    # The driver suffix was stripped for psycopg: a connection error, not a URI syntax error.
    assert "OperationalError: connection failed" in result.stderr


def test_wait_passes_when_postgres_and_redis_answer(tmp_path):
    psycopg = pytest.importorskip("psycopg")
    redis = pytest.importorskip("redis")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    configured = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    # The configured database may not exist yet (the suite creates test_<name>); its server's
    # maintenance database does.
    candidates = [configured, urlsplit(configured)._replace(path="/postgres").geturl()]
    database_url = None
    for candidate in candidates:
        try:
            psycopg.connect(candidate, connect_timeout=3).close()
        except psycopg.Error:
            pass
        else:
            database_url = candidate
            break
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - nothing to wait for here
        pytest.skip(f"no Redis to wait for on this machine: {exc}")
    if database_url is None:
        pytest.skip("no PostgreSQL to wait for on this machine")
    result = run_entrypoint(
        "worker",
        tmp_dir=tmp_path,
        MODELPLANE_WAIT_TIMEOUT="20",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
    )
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL is answering" in result.stderr
    assert "Redis is answering" in result.stderr
    assert lines_with("exec: ", result.stdout)


# --------------------------------------------------------------------------------------------------------
# Health checks


class _Recorder(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self):
        type(self).seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    handler = type("Handler", (_Recorder,), {"status": 200, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_web_healthcheck_sends_an_allowed_host_and_the_proxy_header(tmp_path, http_server):
    handler, port = http_server
    handler.status = 302  # production redirects an anonymous visitor to the login page: alive
    result = run_entrypoint(
        "healthcheck",
        "web",
        tmp_dir=tmp_path,
        MODELPLANE_WEB_PORT=str(port),
        MODELPLANE_ALLOWED_HOSTS=".example.com,other.example.org",
    )
    assert result.returncode == 0, result.stderr
    assert handler.seen[-1]["host"] == "example.com"
    assert handler.seen[-1]["x-forwarded-proto"] == "https"

    handler.status = 500
    failed = run_entrypoint("healthcheck", "web", tmp_dir=tmp_path, MODELPLANE_WEB_PORT=str(port))
    assert failed.returncode != 0


def test_web_healthcheck_fails_when_nothing_listens(tmp_path):
    result = run_entrypoint("healthcheck", "web", tmp_dir=tmp_path, MODELPLANE_WEB_PORT=str(free_port()))
    assert result.returncode != 0


def test_mlflow_healthcheck_asks_the_health_endpoint(tmp_path, http_server):
    handler, port = http_server
    result = run_entrypoint("healthcheck", "mlflow", tmp_dir=tmp_path, MODELPLANE_MLFLOW_PORT=str(port))
    assert result.returncode == 0, result.stderr
    assert handler.seen[-1]["path"] == "/health"
    handler.status = 503
    assert run_entrypoint(
        "healthcheck", "mlflow", tmp_dir=tmp_path, MODELPLANE_MLFLOW_PORT=str(port)
    ).returncode


def test_healthcheck_without_a_role_uses_the_recorded_one(tmp_path):
    (tmp_path / "modelplane-role").write_text("gateway\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert (
            run_entrypoint("healthcheck", tmp_dir=tmp_path, MODELPLANE_GATEWAY_PORT=str(port)).returncode == 0
        )
    assert run_entrypoint("healthcheck", tmp_dir=tmp_path, MODELPLANE_GATEWAY_PORT=str(port)).returncode != 0


def test_worker_healthcheck_pings_this_worker(tmp_path):
    result = run_entrypoint("healthcheck", "worker", tmp_dir=tmp_path)
    (command,) = lines_with("run: ", result.stdout)
    assert command[:5] == ["celery", "-A", "controlplane", "inspect", "ping"]
    assert command[command.index("--destination") + 1] == f"celery@{socket.gethostname()}"


def test_healthcheck_refuses_an_unknown_role(tmp_path):
    assert run_entrypoint("healthcheck", "nonsense", tmp_dir=tmp_path).returncode != 0
    assert run_entrypoint("healthcheck", tmp_dir=tmp_path).returncode != 0  # no role recorded


# --------------------------------------------------------------------------------------------------------
# compose.yaml


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def our_services(compose: dict) -> dict[str, dict]:
    return {
        name: service
        for name, service in compose["services"].items()
        if (service.get("build") or {}).get("dockerfile") == "docker/Dockerfile"
    }


def test_compose_has_every_service(compose):
    assert REQUIRED_SERVICES <= set(compose["services"])
    assert set(our_services(compose)) == APP_SERVICES


def test_compose_builds_from_the_repository_with_our_dockerfile(compose):
    for name, service in our_services(compose).items():
        context = (COMPOSE.parent / service["build"]["context"]).resolve()
        assert context == ROOT, f"{name} builds from {context}"
        assert (context / service["build"]["dockerfile"]) == DOCKERFILE


def test_compose_commands_are_entrypoint_targets(compose):
    for name, service in our_services(compose).items():
        assert "entrypoint" not in service or service["entrypoint"] == [IMAGE_ENTRYPOINT], name
        command = service.get("command")
        assert isinstance(command, list), f"{name}: give command as a list"
        assert_handled_target(command, f"compose service {name}")
        assert command[0] == name, f"service {name} runs role {command[0]}"


def test_compose_healthchecks_probe_the_role_the_service_runs(compose):
    for name, service in compose["services"].items():
        healthcheck = service.get("healthcheck")
        assert healthcheck, f"{name} has no healthcheck"
        if healthcheck.get("disable"):
            assert name == "migrate", f"only the one-shot migrate may go without a healthcheck, not {name}"
            continue
        test = healthcheck["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name
        if IMAGE_ENTRYPOINT in test:
            assert test[1:] == [IMAGE_ENTRYPOINT, "healthcheck", service["command"][0]], name


def test_compose_depends_on_names_existing_services(compose):
    services = compose["services"]
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for dependency, spec in items:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert dependency != name
            condition = (spec or {}).get("condition", "service_started")
            assert condition in conditions, f"{name} -> {dependency}: {condition}"
            if condition == "service_healthy":
                healthcheck = services[dependency].get("healthcheck") or {}
                assert healthcheck and not healthcheck.get("disable"), (
                    f"{dependency} has no healthcheck to wait on"
                )


def test_web_and_worker_wait_for_the_one_shot_migration(compose):
    services = compose["services"]
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["restart"] == "no", "a one-shot service restarted forever would re-run forever"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_volumes_are_declared_and_used(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"


def test_compose_environment_comes_from_one_anchor(compose):
    services = compose["services"]
    shared = [services[name]["environment"] for name in ("web", "migrate", "worker", "beat", "gateway")]
    assert all(env is shared[0] for env in shared), "the control plane's services share the x- anchor"
    assert any(key.startswith("x-") and value is shared[0] for key, value in compose.items())
    assert module_file(shared[0]["DJANGO_SETTINGS_MODULE"]).is_file()
    assert shared[0]["DJANGO_SETTINGS_MODULE"] == "controlplane.settings.production"


def test_compose_secrets_are_required_and_come_from_the_env_file(compose):
    text = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"MODELPLANE_SECRET_KEY", "POSTGRES_PASSWORD"} <= required
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    for name in ("MODELPLANE_SECRET_KEY", "POSTGRES_PASSWORD"):
        assert "CHANGE-ME" in example[name], f"{name} in .env.example must be an obvious placeholder"
    assert len(example["MODELPLANE_SECRET_KEY"]) >= 50, "production settings refuse a key under 50 characters"
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "git must ignore docker/.env"


def test_compose_postgres_and_mlflow_database(compose):
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:18"
    mounts = dict(volume.split(":")[:2][::-1] for volume in postgres["volumes"])
    assert "/var/lib/postgresql" in mounts, "postgres:18 keeps data under /var/lib/postgresql/18/docker"
    init_dir = COMPOSE.parent / mounts["/docker-entrypoint-initdb.d"]
    init_sql = " ".join(path.read_text() for path in init_dir.iterdir() if path.suffix in (".sql", ".sh"))
    mlflow_env = services["mlflow"]["environment"]
    backend = urlsplit(mlflow_env["MLFLOW_BACKEND_STORE_URI"].replace("${", "").replace("}", ""))
    assert backend.scheme == "postgresql+psycopg"
    database = backend.path.lstrip("/")
    assert re.search(rf"CREATE DATABASE\s+{database}\b", init_sql, re.IGNORECASE), "init creates MLflow's db"
    assert mlflow_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert services["redis"]["image"] == "redis:7"


def test_compose_published_ports_reach_the_roles(compose):
    for name, port in ROLE_PORTS.items():
        published = compose["services"][name]["ports"]
        assert any(str(spec).endswith(f":{port}") for spec in published), f"{name} must publish :{port}"


def compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        plugin = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if plugin.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        version = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if version.returncode == 0 and re.search(r"v?2\.", version.stdout):
            return [standalone]
    return None


def test_docker_compose_accepts_the_file():
    client = compose_client()
    if not client:
        pytest.skip("no Docker Compose v2 client (`docker compose` or `docker-compose`) is installed")
    result = subprocess.run(
        [*client, "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    missing_env = subprocess.run(
        [*client, "-f", str(COMPOSE), "--env-file", os.devnull, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing_env.returncode != 0
    # Compose names the first required variable it meets, in no fixed order.
    assert "MODELPLANE_SECRET_KEY" in missing_env.stderr or "POSTGRES_PASSWORD" in missing_env.stderr


# --------------------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_instructions() -> list[tuple[str, str]]:
    logical, buffer = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        if buffer and line.lstrip().startswith("#"):
            continue
        logical.append(buffer + line)
        buffer = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def dockerignored(relative: str) -> bool:
    """Docker's rule: a pattern excludes the path it matches and everything under it; `!` re-includes."""

    def to_regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        pattern = pattern.strip("/")
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + "(?:/.*)?")

    excluded = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        if to_regex(pattern.lstrip("!")).fullmatch(relative.strip("/")):
            excluded = not negated
    return excluded


def test_dockerfile_is_multi_stage_on_python_311_slim():
    instructions = dockerfile_instructions()
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args.setdefault(name, value)
        if keyword == "FROM":
            break
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
        for keyword, rest in instructions
        if keyword == "FROM"
    ]
    assert len(bases) >= 2
    assert set(bases) == {"python:3.11-slim"}


def test_dockerfile_installs_the_lock_with_uv_from_pypi():
    runs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert re.search(r"pip install \"?uv==", runs), "uv comes from PyPI, pinned"
    assert re.search(r"uv sync --frozen --no-dev\b", runs)
    envs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "ENV")
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in envs
    copies = [rest for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert any("uv.lock" in rest.split() for rest in copies)
    assert any("--from=build" in rest and "/app/.venv" in rest for rest in copies)


def test_dockerfile_copy_sources_exist_and_reach_the_build_context():
    sources = []
    for keyword, rest in dockerfile_instructions():
        if keyword not in ("COPY", "ADD"):
            continue
        words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(word.startswith("--from") for word in words):
            continue
        words = [word for word in words if not word.startswith("--")]
        sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source), f"COPY {source}: .dockerignore keeps it out of the build context"


def test_dockerignore_keeps_secrets_and_local_state_out():
    for path in (".git", ".venv", ".env", "docker/.env", "var", "apps/core/__pycache__"):
        assert dockerignored(path), f".dockerignore lets {path} into the build context"


def test_dockerfile_runs_as_a_non_root_user():
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the runtime stage must switch user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    last_user = max(i for i, (keyword, _) in enumerate(final_stage()) if keyword == "USER")
    assert all(keyword != "RUN" for keyword, _ in final_stage()[last_user:]), (
        "nothing runs as root after USER"
    )


def test_dockerfile_collects_static_with_production_settings_and_a_throwaway_key():
    stage = final_stage()
    envs = " ".join(rest for keyword, rest in stage if keyword == "ENV")
    settings = re.search(r"DJANGO_SETTINGS_MODULE=(\S+)", envs).group(1)
    assert settings == "controlplane.settings.production"
    assert module_file(settings).is_file()
    assert "MODELPLANE_SECRET_KEY" not in envs, "no secret key may be baked into the image's environment"
    (collect,) = [rest for keyword, rest in stage if keyword == "RUN" and "collectstatic" in rest]
    key = re.search(r'MODELPLANE_SECRET_KEY="([^"]+)"', collect).group(1)
    assert len(key) >= 50, "controlplane.settings.production refuses a key shorter than 50 characters"
    assert "--noinput" in collect


def test_dockerfile_entrypoint_healthcheck_and_default_role():
    stage = final_stage()
    copies = [shlex.split(rest) for keyword, rest in stage if keyword == "COPY"]
    assert any(words[-2:] == ["docker/entrypoint.sh", "docker/entrypoint.sh"] for words in copies)
    workdir = [rest for keyword, rest in stage if keyword == "WORKDIR"][-1]
    assert f"{workdir}/docker/entrypoint.sh" == IMAGE_ENTRYPOINT
    (entrypoint,) = [json.loads(rest) for keyword, rest in stage if keyword == "ENTRYPOINT"]
    assert entrypoint == [IMAGE_ENTRYPOINT]
    (cmd,) = [json.loads(rest) for keyword, rest in stage if keyword == "CMD"]
    assert_handled_target(cmd, "Dockerfile CMD")
    (healthcheck,) = [rest for keyword, rest in stage if keyword == "HEALTHCHECK"]
    probe = json.loads(healthcheck.split("CMD", 1)[1].strip())
    assert probe == [IMAGE_ENTRYPOINT, "healthcheck"]


def test_hadolint_accepts_the_dockerfile_where_installed():
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed on this machine")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


# --------------------------------------------------------------------------------------------------------
# Kubernetes manifests


def k8s_documents() -> list[tuple[Path, dict]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                documents.append((path, document))
    return documents


def k8s_objects(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


_PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def k8s_build(value, type_name: str, where: str):
    """Turn YAML into the official client's model objects, refusing unknown fields and wrong types.
    The model constructors refuse missing required fields themselves."""
    import kubernetes.client

    if value is None:
        return None
    if match := re.fullmatch(r"(?:List|list)\[(.+)\]", type_name):
        assert isinstance(value, list), f"{where}: expected a list"
        return [k8s_build(item, match.group(1), f"{where}[{i}]") for i, item in enumerate(value)]
    if match := re.fullmatch(r"(?:Dict\[|dict\()(\w+), (.+)[\])]", type_name):
        assert isinstance(value, dict), f"{where}: expected a mapping"
        return {key: k8s_build(item, match.group(2), f"{where}.{key}") for key, item in value.items()}
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        assert isinstance(value, expected) and not (type_name != "bool" and isinstance(value, bool)), (
            f"{where}: expected {type_name}, got {value!r}"
        )
        return value
    if type_name in ("object", "datetime", "date"):
        return value
    model = getattr(kubernetes.client, type_name)
    assert isinstance(value, dict), f"{where}: expected a {type_name} mapping"
    fields = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
    unknown = set(value) - set(fields)
    assert not unknown, f"{where}: {type_name} has no field(s) {sorted(unknown)}"
    kwargs = {
        fields[key]: k8s_build(item, model.openapi_types[fields[key]], f"{where}.{key}")
        for key, item in value.items()
    }
    try:
        return model(**kwargs)
    except ValueError as exc:
        pytest.fail(f"{where}: {exc}")


def test_every_manifest_parses_and_matches_the_kubernetes_models():
    pytest.importorskip("kubernetes")
    documents = k8s_documents()
    assert documents
    for path, document in documents:
        where = f"{path.name}:{document.get('kind')}/{(document.get('metadata') or {}).get('name')}"
        assert document.get("apiVersion") and document.get("kind"), where
        assert document["metadata"]["name"], where
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "modelplane", where
        version = document["apiVersion"].split("/")[-1].capitalize()
        k8s_build(document, f"{version}{document['kind']}", where)


def test_the_model_check_catches_mistakes():
    """The structural check above would catch a misspelt field, a wrong type and a missing field."""
    pytest.importorskip("kubernetes")
    deployment = k8s_objects("Deployment")["web"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for broken in (
        {**container, "imagePullPolicyy": "Always"},
        {**container, "ports": "8000"},
        {key: value for key, value in container.items() if key != "name"},
    ):
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            k8s_build(broken, "V1Container", "broken")


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    manifests = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(resources) == manifests
    assert [image["name"] for image in kustomization["images"]] == [IMAGE_NAME]


def pod_specs() -> dict[str, dict]:
    specs = {
        f"Deployment/{name}": doc["spec"]["template"]["spec"]
        for name, doc in k8s_objects("Deployment").items()
    }
    specs.update({f"Job/{name}": doc["spec"]["template"]["spec"] for name, doc in k8s_objects("Job").items()})
    return specs


def test_deployments_exist_and_run_entrypoint_roles_from_our_image():
    deployments = k8s_objects("Deployment")
    assert DEPLOYMENTS <= set(deployments)
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{name}: the selector does not select its own pods"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].rsplit(":", 1)[0] == IMAGE_NAME, name
        assert "command" not in container, f"{name}: keep the image's entrypoint, pass the role as args"
        assert_handled_target(container["args"], f"Deployment {name}")
        assert container["args"][0] == name, f"Deployment {name} runs role {container['args'][0]}"


def test_migrate_job_runs_the_migrate_role_once():
    (job,) = k8s_objects("Job").values()
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    (container,) = spec["containers"]
    assert container["image"].rsplit(":", 1)[0] == IMAGE_NAME
    assert container["args"] == ["migrate"]
    assert_handled_target(container["args"], "migrate Job")


def test_pods_run_as_the_image_user_and_read_the_config_and_secret():
    configmaps = k8s_objects("ConfigMap")
    secret_example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    dockerfile_user = [rest for keyword, rest in final_stage() if keyword == "USER"][-1].split(":")[0]
    for where, spec in pod_specs().items():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert str(spec["securityContext"]["runAsUser"]) == dockerfile_user, where
        for container in spec["containers"]:
            for source in container["envFrom"]:
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps, where
                if "secretRef" in source:
                    assert source["secretRef"]["name"] == secret_example["metadata"]["name"], where
            for probe_name in ("livenessProbe", "readinessProbe"):
                command = ((container.get(probe_name) or {}).get("exec") or {}).get("command")
                if command:
                    assert command == [IMAGE_ENTRYPOINT, "healthcheck", container["args"][0]], where


def test_config_and_secret_carry_what_the_entrypoint_needs():
    (config,) = k8s_objects("ConfigMap").values()
    settings = config["data"]["DJANGO_SETTINGS_MODULE"]
    assert settings == "controlplane.settings.production" and module_file(settings).is_file()
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    needed = {"MODELPLANE_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "MLFLOW_BACKEND_STORE_URI"}
    assert needed <= set(secret["stringData"])
    assert urlsplit(secret["stringData"]["MLFLOW_BACKEND_STORE_URI"]).scheme == "postgresql+psycopg"
    assert config["data"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    allowed = config["data"]["MODELPLANE_MLFLOW_ALLOWED_HOSTS"].split(",")
    service_host = urlsplit(config["data"]["MLFLOW_TRACKING_URI"]).netloc
    assert service_host in allowed, "MLflow would refuse the Host header the other pods send"


def test_services_select_pods_and_target_their_ports():
    deployments = k8s_objects("Deployment")
    services = k8s_objects("Service")
    assert {"web", "mlflow", "gateway"} <= set(services)
    for name, service in services.items():
        selector = service["spec"]["selector"]
        targets = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} Deployments"
        (container,) = targets[0]["spec"]["template"]["spec"]["containers"]
        ports = {p.get("name") for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (
                f"Service {name} targets {port['targetPort']}, not a container port"
            )
        role = container["args"][0]
        assert {p["containerPort"] for p in container["ports"]} == {ROLE_PORTS[role]}, name


def test_beat_never_runs_twice():
    beat = k8s_objects("Deployment")["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"


def test_kubectl_kustomize_builds_the_manifests_where_installed():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed on this machine")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kinds.count("Deployment") == len(DEPLOYMENTS) and "Job" in kinds
