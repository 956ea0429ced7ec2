"""The gateway's Prometheus metrics, in a registry of its own, served at ``GET /metrics``.

The two series every request touches (requests by deployment and status, upstream latency) are plain dicts and
lists on the hot path, turned into Prometheus families only when scraped (a custom collector): a prometheus-client
child's ``inc()`` / ``observe()`` takes a lock and runs a dozen Python calls on every request. The gateway is one
thread, and the scrape runs on that thread too. The rest are prometheus-client's own.
"""
from __future__ import annotations

import bisect
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

UNKNOWN = "(unknown)"
UPSTREAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self):
        # The *_created series double the output and nothing here reads them (the gateway owns its process).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests: dict[tuple[str, int], int] = {}
        # (deployment, variant) -> [count per bucket (the last: +Inf), sum of seconds]
        self._upstream: dict[tuple[str, str], list] = {}
        r.register(_HotCollector(self))
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

    def count(self, deployment: str, status: int) -> None:
        key = (deployment, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1

    def upstream(self, deployment: str, variant: str, seconds: float) -> None:
        series = self._upstream.get((deployment, variant))
        if series is None:
            series = self._upstream[(deployment, variant)] = [[0] * (len(UPSTREAM_BUCKETS) + 1), 0.0]
        series[0][bisect.bisect_left(UPSTREAM_BUCKETS, seconds)] += 1  # le: the first bound >= seconds
        series[1] += seconds

    def watch(self, table, sink) -> None:
        """Gauges read at scrape time from the routing table and the record buffer."""
        self.table_age.set_function(lambda: time.time() - table.loaded_at if table.loaded else -1.0)
        self.routes.set_function(lambda: len(table.routes))
        self.records_buffered.set_function(lambda: len(sink.buffer))


class _HotCollector(Collector):
    """The hot-path series of a Metrics, as Prometheus families at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self):
        requests = CounterMetricFamily("modelplane_gateway_requests",
                                       "Prediction and metadata requests by deployment and HTTP status "
                                       "(deployment '(unknown)': no such deployment)",
                                       labels=["deployment", "status"])
        for (deployment, status), count in list(self.metrics._requests.items()):
            requests.add_metric([deployment, str(status)], count)
        yield requests
        upstream = HistogramMetricFamily("modelplane_gateway_upstream_seconds",
                                         "Time from sending to a model server to its full answer",
                                         labels=["deployment", "variant"])
        bounds = [*(repr(float(b)) for b in UPSTREAM_BUCKETS), "+Inf"]
        for (deployment, variant), (counts, total) in list(self.metrics._upstream.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            upstream.add_metric([deployment, variant], cumulative, total)
        yield upstream
