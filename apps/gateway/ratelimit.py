"""Per-key rate limiting in the gateway: a token bucket per deployment key, in this process's memory.

Each gateway process keeps its own buckets, so N gateway replicas behind a load balancer allow up to N times a
route's ``requests_per_second`` (and burst) in all; the README says so. No Redis round trip on the hot path.
"""
from __future__ import annotations


class RateLimiter:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``; a request takes one."""

    def __init__(self, max_keys: int = 100_000):
        self.buckets: dict[object, list[float]] = {}
        self.max_keys = max_keys

    def take(self, key: object, rate: float, burst: float, now: float) -> float:
        """0.0 when the request may go; otherwise the seconds until a token will be there."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                # Unbounded keys (console tokens of many deployments over days) must not grow memory forever;
                # a fresh bucket is full, so forgetting them all only ever lets a little more through.
                self.buckets.clear()
            self.buckets[key] = [burst - 1.0, now]
            return 0.0
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / rate if rate > 0 else 60.0
