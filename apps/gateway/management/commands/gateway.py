"""``manage.py gateway``: run the data-plane process (apps.gateway.app) on the gateway's own HTTP server
(apps.gateway.server, uvloop + httptools) or, with ``--server uvicorn`` / ``MODELPLANE_GATEWAY_SERVER=uvicorn``,
under uvicorn.

Django is set up for its settings only (manage.py does that); the gateway never opens a database connection.
One process serves on one port; run more gateway replicas behind a load balancer to scale (rate limits are per
process, see README "Gateway"). SIGTERM or Ctrl-C: the server stops accepting, finishes the requests in flight
(up to 10 s), then the gateway writes its buffered prediction records (for up to 2 s) and exits.
"""
from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = ("Run the inference gateway (MLflow scoring format and Open Inference Protocol v2) on --host:--port "
            "(default MODELPLANE_GATEWAY_HOST:MODELPLANE_GATEWAY_PORT).")
    # Django's checks would import every app's URLs and admin; the gateway needs none of it to start.
    requires_system_checks: ClassVar[list[str]] = []

    def add_arguments(self, parser):
        parser.add_argument("--host", default=None,
                            help=f"Address to listen on (default {settings.MODELPLANE_GATEWAY_HOST}).")
        parser.add_argument("--port", type=int, default=None,
                            help=f"Port to listen on (default {settings.MODELPLANE_GATEWAY_PORT}).")
        parser.add_argument("--server", choices=["native", "uvicorn"], default=None,
                            help=f"The HTTP server (default MODELPLANE_GATEWAY_SERVER: "
                                 f"{settings.MODELPLANE_GATEWAY_SERVER}).")
        parser.add_argument("--keep-alive", type=int, default=65,
                            help="Seconds an idle client connection is kept open (default 65: longer than the "
                                 "usual load balancer's idle timeout, so the balancer closes first); with the "
                                 "native server also the most a request head may take to arrive, and the "
                                 "longest pause in a request body (408 after it).")

    def handle(self, *args, **opts):
        from apps.gateway.app import Gateway
        from apps.gateway.config import GatewayConfig

        host = opts["host"] or settings.MODELPLANE_GATEWAY_HOST
        port = opts["port"] or settings.MODELPLANE_GATEWAY_PORT
        kind = (opts["server"] or settings.MODELPLANE_GATEWAY_SERVER).strip().lower()
        if kind not in ("native", "uvicorn"):
            raise CommandError(f"MODELPLANE_GATEWAY_SERVER / --server must be 'native' or 'uvicorn', not {kind!r}")
        app = Gateway(GatewayConfig.from_settings(settings))
        self.stdout.write(f"gateway listening on http://{host}:{port} ({kind} server; Redis "
                          f"{_redacted(app.config.redis_url)})")
        self.stdout.flush()
        if kind == "native":
            from apps.gateway.server import Server

            Server(app, host=host, port=port, keep_alive=opts["keep_alive"], graceful_seconds=10).run()
            return
        import uvicorn  # only when asked for: the native server's process never loads it

        config = uvicorn.Config(
            app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on", access_log=False,
            server_header=False, date_header=False, proxy_headers=False, timeout_keep_alive=opts["keep_alive"],
            backlog=2048,
            # Django's LOGGING already configured the root logger; uvicorn's own config would replace it.
            log_config=None, timeout_graceful_shutdown=10)
        uvicorn.Server(config).run()


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
