#!/usr/bin/env bash
# Modelplane's container entrypoint: one image, one role per container.
#
#   entrypoint.sh TARGET [EXTRA ARGS...]
#
# Targets (extra arguments are passed on to the program):
#   web          gunicorn serving controlplane.wsgi:application on :${MODELPLANE_WEB_PORT:-8000}.
#                It runs `manage.py migrate` first only when MODELPLANE_MIGRATE_ON_START=1. That is off by
#                default because several web replicas starting together would race each other's
#                migrations; run the one-shot `migrate` target (compose service / Kubernetes Job) instead.
#   migrate      manage.py migrate --noinput, then exit.
#   worker       celery -A controlplane worker.
#   beat         celery -A controlplane beat (keep exactly one), schedule file in MODELPLANE_DATA_DIR.
#   gateway      manage.py gateway, the data-plane process, on :${MODELPLANE_GATEWAY_PORT:-8080}.
#   mlflow       the MLflow tracking server and registry on :${MODELPLANE_MLFLOW_PORT:-5000}, its backend
#                store in PostgreSQL (MLFLOW_BACKEND_STORE_URI) and artifacts in
#                MLFLOW_ARTIFACTS_DESTINATION (default /data/mlflow-artifacts).
#   manage ARGS  manage.py ARGS, e.g. `manage createsuperuser`.
#   healthcheck [ROLE]
#                exit 0 when this container's role answers (the Dockerfile's HEALTHCHECK runs this).
#   help         this text.
#
# Before starting, a target waits until the services it needs answer: PostgreSQL (DATABASE_URL, or
# MLFLOW_BACKEND_STORE_URI for mlflow) and Redis (REDIS_URL). It tries once a second and gives up after
# MODELPLANE_WAIT_TIMEOUT seconds (default 60; 0 skips the wait). MODELPLANE_WAIT_FOR overrides what to
# wait for: a comma-separated list of `postgres`, `redis`, or `none`.
#
# MODELPLANE_ENTRYPOINT_DRY_RUN=1 waits as usual but prints the commands instead of running them.
set -euo pipefail

APP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$APP_DIR"
export PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}"

DATA_DIR="${MODELPLANE_DATA_DIR:-/data}"
RUN_DIR="${MODELPLANE_RUN_DIR:-/tmp}"
ROLE_FILE="$RUN_DIR/modelplane-role"
DRY_RUN="${MODELPLANE_ENTRYPOINT_DRY_RUN:-0}"

log() { printf '[entrypoint] %s\n' "$*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# Run a command that must finish before the main process starts (a migration, for instance).
run() {
    if [[ "$DRY_RUN" == "1" ]]; then
        printf 'run:'; printf ' %q' "$@"; printf '\n'
        return 0
    fi
    "$@"
}

# Replace this shell with the container's main process, so that process receives the container's signals.
launch() {
    if [[ "$DRY_RUN" == "1" ]]; then
        printf 'exec:'; printf ' %q' "$@"; printf '\n'
        exit 0
    fi
    printf '%s\n' "$ROLE" >"$ROLE_FILE" 2>/dev/null || log "could not record the role in $ROLE_FILE"
    exec "$@"
}

# One connection attempt each; the error goes to stderr as one line, never with a traceback or password.
PG_PING='
import re, sys
from urllib.parse import urlsplit
import psycopg
url = re.sub(r"^(postgres(?:ql)?)\+\w+://", r"\1://", sys.argv[1])  # SQLAlchemy form: drop the driver
try:
    psycopg.connect(url, connect_timeout=3).close()
except Exception as exc:
    lines = str(exc).strip().splitlines() or [repr(exc)]
    password = urlsplit(url).password
    sys.exit(f"{type(exc).__name__}: " + (lines[0].replace(password, "***") if password else lines[0]))
'
REDIS_PING='
import sys
import redis
try:
    redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3, socket_timeout=3).ping()
except Exception as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
'

# wait_for NAME PYTHON_CHECK URL: retry once a second until the check passes or the timeout runs out.
wait_for() {
    local name="$1" check="$2" url="$3"
    local timeout="${MODELPLANE_WAIT_TIMEOUT:-60}"
    if [[ ! "$timeout" =~ ^[0-9]+$ ]]; then
        log "MODELPLANE_WAIT_TIMEOUT must be a whole number of seconds, not '$timeout'"
        return 2
    fi
    if [[ "$timeout" == "0" ]]; then
        return 0
    fi
    local deadline=$((SECONDS + timeout)) error="" announced=0
    while true; do
        if error="$(python -c "$check" "$url" 2>&1)"; then
            log "$name is answering"
            return 0
        fi
        # SECONDS counts whole seconds: strictly past the deadline means at least `timeout` have gone by.
        if ((SECONDS > deadline)); then
            log "gave up waiting for $name after ${timeout}s: $error"
            return 1
        fi
        if ((announced == 0)); then
            log "waiting up to ${timeout}s for $name ($error)"
            announced=1
        fi
        sleep 1
    done
}

# wait_for_services DEFAULT_LIST [POSTGRES_URL]: the target's needs, unless MODELPLANE_WAIT_FOR overrides.
wait_for_services() {
    local wanted="${MODELPLANE_WAIT_FOR:-$1}"
    local pg_url="${2:-${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/modelplane}}"
    local service
    IFS=',' read -r -a services <<<"$wanted"
    for service in "${services[@]}"; do
        service="${service//[[:space:]]/}"
        case "$service" in
            postgres) wait_for PostgreSQL "$PG_PING" "$pg_url" ;;
            redis) wait_for Redis "$REDIS_PING" "${REDIS_URL:-redis://127.0.0.1:6379/0}" ;;
            none | "") ;;
            *)
                log "MODELPLANE_WAIT_FOR names an unknown service '$service' (use postgres, redis or none)"
                return 2
                ;;
        esac
    done
}

# healthcheck ROLE: exit 0 when the role's process answers on this container.
healthcheck() {
    local role="${1:-}"
    if [[ -z "$role" ]]; then
        role="$(cat "$ROLE_FILE" 2>/dev/null || true)"
    fi
    case "$role" in
        web)
            # Through the same checks a browser's request meets: an allowed Host and, since production
            # redirects plain HTTP, the proxy's X-Forwarded-Proto. Any answer below 500 means Django is up.
            python - "${MODELPLANE_WEB_PORT:-8000}" "${MODELPLANE_HEALTHCHECK_PATH:-/}" <<'PY'
import http.client, os, sys
port, path = int(sys.argv[1]), sys.argv[2]
hosts = [h.strip() for h in os.environ.get("MODELPLANE_ALLOWED_HOSTS", "localhost").split(",") if h.strip()]
host = (hosts[0] if hosts else "localhost").lstrip(".")
host = "localhost" if host in ("", "*") else host
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
conn.request("GET", path, headers={"Host": host, "X-Forwarded-Proto": "https"})
status = conn.getresponse().status
sys.exit(0 if status < 500 else f"web answered {status}")
PY
            ;;
        mlflow)
            python - "${MODELPLANE_MLFLOW_PORT:-5000}" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=10) as response:
    sys.exit(0 if response.status == 200 else f"mlflow answered {response.status}")
PY
            ;;
        gateway)
            python - "${MODELPLANE_GATEWAY_PORT:-8080}" <<'PY'
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
PY
            ;;
        worker)
            run celery -A controlplane inspect ping --timeout 10 --destination "celery@${HOSTNAME}"
            ;;
        beat | migrate | manage)
            # No port to ask: the container lives exactly as long as its process.
            return 0
            ;;
        *)
            log "healthcheck: unknown role '$role'"
            return 1
            ;;
    esac
}

ROLE="${1:-web}"
if (($# > 0)); then
    shift
fi

case "$ROLE" in
    web)
        wait_for_services postgres,redis
        if [[ "${MODELPLANE_MIGRATE_ON_START:-0}" == "1" ]]; then
            run python manage.py migrate --noinput
        fi
        launch gunicorn controlplane.wsgi:application \
            --bind "0.0.0.0:${MODELPLANE_WEB_PORT:-8000}" \
            --workers "${WEB_CONCURRENCY:-2}" \
            --timeout "${MODELPLANE_WEB_TIMEOUT:-60}" \
            --worker-tmp-dir /dev/shm \
            --preload \
            --no-control-socket \
            --access-logfile - \
            "$@"
        ;;
    migrate)
        wait_for_services postgres
        launch python manage.py migrate --noinput "$@"
        ;;
    worker)
        wait_for_services postgres,redis
        launch celery -A controlplane worker \
            --loglevel "${MODELPLANE_LOG_LEVEL:-INFO}" \
            --concurrency "${MODELPLANE_WORKER_CONCURRENCY:-2}" \
            "$@"
        ;;
    beat)
        wait_for_services postgres,redis
        if [[ "$DRY_RUN" != "1" ]]; then
            mkdir -p "$DATA_DIR"
        fi
        launch celery -A controlplane beat \
            --loglevel "${MODELPLANE_LOG_LEVEL:-INFO}" \
            --schedule "$DATA_DIR/celerybeat-schedule" \
            "$@"
        ;;
    gateway)
        # No ORM on the hot path: the gateway needs Redis (routing table, prediction stream) only.
        wait_for_services redis
        launch python manage.py gateway --host 0.0.0.0 --port "${MODELPLANE_GATEWAY_PORT:-8080}" "$@"
        ;;
    mlflow)
        if [[ -z "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
            log "mlflow needs MLFLOW_BACKEND_STORE_URI, e.g. postgresql+psycopg://user:password@postgres:5432/mlflow"
            exit 2
        fi
        wait_for_services postgres "$MLFLOW_BACKEND_STORE_URI"
        # Modelplane's workers run the jobs; the tracking server must not start a job runner of its own.
        export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
        # MLflow 3 refuses Host headers it does not know (DNS-rebinding protection); the default list
        # covers the compose/Kubernetes service name `mlflow` and loopback.
        launch mlflow server \
            --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
            --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$DATA_DIR/mlflow-artifacts}" \
            --host 0.0.0.0 \
            --port "${MODELPLANE_MLFLOW_PORT:-5000}" \
            --workers "${MLFLOW_WORKERS:-2}" \
            --allowed-hosts "${MODELPLANE_MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
            "$@"
        ;;
    manage)
        if (($# == 0)); then
            log "manage needs a command, e.g. 'manage createsuperuser'"
            exit 64
        fi
        wait_for_services postgres
        launch python manage.py "$@"
        ;;
    healthcheck)
        healthcheck "${1:-}"
        ;;
    help | -h | --help)
        usage
        ;;
    *)
        log "unknown target '$ROLE'"
        usage >&2
        exit 64
        ;;
esac
