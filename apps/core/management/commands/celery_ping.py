"""``manage.py celery_ping``: send ``apps.core.tasks.ping`` through the broker and wait for a worker's answer.

Exit 0 and print the answer when a worker round-trips the task; exit 1 with a message naming the broker when
none answers in time. standalone uses it to know the worker is ready; operators use it to check a deployment.
"""
from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def _redacted(url: str) -> str:
    """The URL without its password, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Command(BaseCommand):
    help = "Round-trip the ping task through the Celery broker and a worker."
    requires_system_checks: ClassVar[list[str]] = []

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=30.0,
                            help="Seconds to wait for a worker's answer (default 30).")

    def handle(self, *args, timeout: float, **options):
        from celery.exceptions import TimeoutError as CeleryTimeout
        from kombu.exceptions import OperationalError

        from apps.core.tasks import ping

        broker = _redacted(settings.CELERY_BROKER_URL)
        try:
            result = ping.delay()
            answer = result.get(timeout=timeout)
        except CeleryTimeout as exc:
            raise CommandError(f"No Celery worker answered the ping within {timeout:g} s (broker {broker}). "
                               "Is a worker running against this broker?") from exc
        except OperationalError as exc:
            raise CommandError(f"Cannot reach the Celery broker at {broker}: {exc}") from exc
        self.stdout.write(str(answer))
