"""PostgreSQL advisory locks for work that must not run twice at once but cannot sit in one transaction
(reconcile passes that start processes and wait on HTTP)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def advisory_lock_try(namespace: int, key: int) -> Iterator[bool]:
    """A session-level advisory lock on (namespace, key): yields whether it was acquired (never waits)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])
