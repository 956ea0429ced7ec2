"""``apps.core.embedded.start_for_tests``: the PostgreSQL and Redis the suite falls back to answer real round
trips, and ``stop()`` leaves no port open, no process and no directory behind."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.slow


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _processes_mentioning(text: str) -> list[str]:
    needle = text.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in Path(f"/proc/{entry}/{part}").read_bytes():
                    found.append(entry)
                    break
            except OSError:
                continue
    return found


def test_start_for_tests_serves_postgres_and_redis_and_stop_closes_them():
    import psycopg
    import redis

    from apps.core import embedded

    services = embedded.start_for_tests()
    try:
        db, cache = urlsplit(services.database_url), urlsplit(services.redis_url)
        assert (db.hostname, db.path) == ("127.0.0.1", "/modelplane")
        assert (cache.hostname, cache.path) == ("127.0.0.1", "/15")

        with psycopg.connect(services.database_url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            # pytest-django creates test_modelplane from this URL: the role must be able to create databases.
            assert conn.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
                                ).fetchone() == (True,)

        client = redis.Redis.from_url(services.redis_url, socket_timeout=5)
        assert client.set("embedded-test:key", "value")
        assert client.get("embedded-test:key") == b"value"
        client.close()
    finally:
        services.stop()

    assert not _answers(db.port), f"PostgreSQL still listens on {db.port}"
    assert not _answers(cache.port), f"Redis still listens on {cache.port}"
    assert not services.data_dir.exists()
    assert not _processes_mentioning(str(services.data_dir))
    services.stop()  # a second stop (the atexit hook's, say) is harmless
