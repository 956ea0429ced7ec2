"""``manage.py ingest_predictions``: the long-running prediction-log ingest worker.

Reads the gateway's prediction stream as a member of its consumer group and writes batches to PostgreSQL
(``apps.monitoring.ingest``). Run one or several (each is its own consumer; entries are shared out by Redis).
SIGTERM or Ctrl-C ends it cleanly: the batch in hand is written and acknowledged, then it exits 0.
"""
from __future__ import annotations

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.gateway import contract
from apps.monitoring import ingest

log = logging.getLogger("apps.monitoring.ingest")


class Command(BaseCommand):
    help = ("Ingest prediction records from the Redis stream into PostgreSQL (partitioned log + per-minute "
            "rollups) until SIGTERM or Ctrl-C.")

    def add_arguments(self, parser):
        # The stream the gateway writes to (its setting, where set), else the contract's name.
        stream = getattr(settings, "MODELPLANE_GATEWAY_PREDICTIONS_STREAM", "") or contract.PREDICTIONS_STREAM
        parser.add_argument("--stream", default=stream,
                            help=f"Redis stream to read (default {stream}, as the gateway writes).")
        parser.add_argument("--group", default=contract.PREDICTIONS_GROUP,
                            help=f"Consumer group (default {contract.PREDICTIONS_GROUP}).")
        parser.add_argument("--consumer", default=None, help="Consumer name (default host-pid).")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="Entries per read and per transaction (default MODELPLANE_INGEST_BATCH_SIZE).")
        parser.add_argument("--block-ms", type=int, default=1000, help="How long one read waits (ms).")
        parser.add_argument("--claim-idle-seconds", type=float, default=ingest.CLAIM_IDLE_MS / 1000,
                            help="Claim entries other consumers left pending this long (default 60).")

    def handle(self, *args, **opts):
        stop = threading.Event()

        def on_signal(signum, frame):
            if stop.is_set():
                return
            log.info("%s received: finishing the current batch and stopping", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        consumer = opts["consumer"] or ingest.consumer_name()
        log.info("ingesting %s (group %s) as %s", opts["stream"], opts["group"], consumer)
        run = ingest.ingest_run(stream=opts["stream"], group=opts["group"], consumer=consumer, stop_event=stop,
                                batch_size=opts["batch_size"], block_ms=opts["block_ms"],
                                claim_idle_ms=int(opts["claim_idle_seconds"] * 1000))
        log.info("stopped cleanly after %d batches in %.1f s: %s", run.batches, run.seconds, run.as_dict())
