"""The gateway's Prometheus metrics, in a registry of its own, served at ``GET /metrics``.

Label children are cached in dicts: prometheus-client's ``labels()`` takes a lock and builds a tuple on every
call, which the hot path can do without.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

UNKNOWN = "(unknown)"


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self):
        # The *_created series double the output and nothing here reads them (the gateway owns its process).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("modelplane_gateway_requests", "Prediction and metadata requests by deployment "
                                "and HTTP status (deployment '(unknown)': no such deployment)",
                                ["deployment", "status"], registry=r)
        self.upstream_seconds = Histogram(
            "modelplane_gateway_upstream_seconds", "Time from sending to a model server to its full answer",
            ["deployment", "variant"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.upstream_failures = Counter("modelplane_gateway_upstream_failures",
                                         "Failed attempts to reach a model server, by kind (connect: refused "
                                         "or unreachable; disconnect: closed before answering; timeout)",
                                         ["deployment", "kind"], registry=r)
        self.retries = Counter("modelplane_gateway_upstream_retries",
                               "Requests sent again to another replica after a connection failure",
                               ["deployment"], registry=r)
        self.records_sent = Counter("modelplane_gateway_records_sent",
                                    "Prediction records written to the Redis stream", registry=r)
        self.records_dropped = Counter("modelplane_gateway_records_dropped",
                                       "Prediction records dropped because the buffer was full while Redis was "
                                       "away (oldest first)", registry=r)
        self.records_buffered = Gauge("modelplane_gateway_records_buffered",
                                      "Prediction records waiting to be written to Redis", registry=r)
        self.table_age = Gauge("modelplane_gateway_routing_table_age_seconds",
                               "Seconds since the routing table was last read whole from Redis (grows while "
                               "Redis is away; -1 before the first read)", registry=r)
        self.routes = Gauge("modelplane_gateway_routes", "Deployments in the routing table", registry=r)
        self.redis_up = Gauge("modelplane_gateway_redis_up",
                              "1 while the routing-table subscription to Redis is connected", registry=r)
        self._requests: dict[tuple[str, int], object] = {}
        self._upstream: dict[tuple[str, str], object] = {}

    def count(self, deployment: str, status: int) -> None:
        child = self._requests.get((deployment, status))
        if child is None:
            child = self._requests[(deployment, status)] = self.requests.labels(deployment, str(status))
        child.inc()

    def upstream(self, deployment: str, variant: str, seconds: float) -> None:
        child = self._upstream.get((deployment, variant))
        if child is None:
            child = self._upstream[(deployment, variant)] = self.upstream_seconds.labels(deployment, variant)
        child.observe(seconds)

    def watch(self, table, sink) -> None:
        """Gauges read at scrape time from the routing table and the record buffer."""
        self.table_age.set_function(lambda: time.time() - table.loaded_at if table.loaded else -1.0)
        self.routes.set_function(lambda: len(table.routes))
        self.records_buffered.set_function(lambda: len(sink.buffer))
