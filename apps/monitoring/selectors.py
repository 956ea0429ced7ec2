"""Reads of the prediction log and its rollups for a deployment's page and API.

Team scoping is the caller's job: these take a ``deployment_id`` that the caller already resolved through a
team-scoped selector of ``apps.deployments`` (another team's deployment is a 404 there, before any of this
runs). They never accept an id straight from a request.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from django.utils import timezone

from apps.monitoring.models import LATENCY_BUCKETS_MS, PredictionRecord, PredictionRollup

MAX_PREDICTION_LIST = 500


def histogram_quantile(histogram: list[int], q: float, *, max_ms: float | None = None) -> float | None:
    """Estimate the ``q`` quantile (0..1) of latencies from a LATENCY_BUCKETS_MS histogram.

    Linear interpolation inside the bucket that holds the rank (Prometheus' histogram_quantile does the
    same): exact at bucket bounds, off by at most the bucket's width inside one. The open last bucket is
    bounded by the observed maximum, and no estimate exceeds it. None for an empty histogram.
    """
    total = sum(histogram)
    if total == 0:
        return None
    rank = q * total
    cumulative = 0
    for i, n in enumerate(histogram):
        if n and cumulative + n >= rank:
            lower = LATENCY_BUCKETS_MS[i - 1] if i > 0 else 0.0
            if i < len(LATENCY_BUCKETS_MS):
                upper = LATENCY_BUCKETS_MS[i]
            else:
                upper = max_ms if max_ms is not None and max_ms > lower else lower
            value = lower + (upper - lower) * ((rank - cumulative) / n)
            return min(value, max_ms) if max_ms is not None else value
        cumulative += n
    return max_ms


@dataclass(frozen=True)
class RollupPoint:
    """One minute of one variant (or of all variants): what the deployment page charts."""

    minute: dt.datetime
    count: int
    sampled: int
    errors: int
    client_errors: int
    rps: float           # requests per second over the minute
    error_rate: float    # errors / count
    mean_ms: float
    max_ms: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    histogram: tuple[int, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def _point(minute, count, sampled, errors, client_errors, lat_sum, lat_max, histogram) -> RollupPoint:
    hist = list(histogram)
    return RollupPoint(
        minute=minute, count=count, sampled=sampled, errors=errors, client_errors=client_errors,
        rps=count / 60.0, error_rate=(errors / count) if count else 0.0,
        mean_ms=(lat_sum / count) if count else 0.0, max_ms=lat_max,
        p50_ms=histogram_quantile(hist, 0.50, max_ms=lat_max),
        p95_ms=histogram_quantile(hist, 0.95, max_ms=lat_max),
        p99_ms=histogram_quantile(hist, 0.99, max_ms=lat_max),
        histogram=tuple(hist),
    )


def _rollups(deployment_id: int, since: dt.datetime, until: dt.datetime | None, variant: str | None):
    qs = PredictionRollup.objects.filter(deployment_id=deployment_id,
                                         minute__gte=since.replace(second=0, microsecond=0),
                                         minute__lt=until or timezone.now())
    if variant is not None:
        qs = qs.filter(variant=variant)
    return qs.order_by("variant", "minute").values_list(
        "variant", "minute", "count", "sampled", "errors", "client_errors", "latency_sum_ms", "latency_max_ms",
        "latency_histogram")


def rollup_series(*, deployment_id: int, since: dt.datetime, until: dt.datetime | None = None,
                  variant: str | None = None) -> dict[str, list[RollupPoint]]:
    """Per-minute points of a deployment from ``since`` to ``until`` (default now), one series per variant
    ("" for requests no variant answered), oldest first. Minutes without requests have no point.

    The caller scopes: ``deployment_id`` must come from a deployment it resolved through a team-scoped
    selector.
    """
    series: dict[str, list[RollupPoint]] = {}
    for name, minute, *numbers in _rollups(deployment_id, since, until, variant):
        series.setdefault(name, []).append(_point(minute, *numbers))
    return series


def rollup_series_total(*, deployment_id: int, since: dt.datetime,
                        until: dt.datetime | None = None) -> list[RollupPoint]:
    """Per-minute points of a deployment summed over its variants (histograms added bucket by bucket).

    Scoped by the caller, as rollup_series."""
    minutes: dict[dt.datetime, list] = {}
    for _name, minute, count, sampled, errors, client_errors, lat_sum, lat_max, hist in _rollups(
            deployment_id, since, until, None):
        m = minutes.get(minute)
        if m is None:
            minutes[minute] = [count, sampled, errors, client_errors, lat_sum, lat_max, list(hist)]
            continue
        m[0] += count
        m[1] += sampled
        m[2] += errors
        m[3] += client_errors
        m[4] += lat_sum
        m[5] = max(m[5], lat_max)
        m[6] = [a + b for a, b in zip(m[6], hist, strict=True)]
    return [_point(minute, *minutes[minute]) for minute in sorted(minutes)]


def prediction_list(*, deployment_id: int, limit: int = 50,
                    before: dt.datetime | None = None) -> list[PredictionRecord]:
    """The newest logged predictions of a deployment, newest first; ``before`` pages back (records strictly
    older than that time). ``limit`` is capped at MAX_PREDICTION_LIST.

    The caller scopes: ``deployment_id`` must come from a deployment it resolved through a team-scoped
    selector.
    """
    limit = max(1, min(int(limit), MAX_PREDICTION_LIST))
    qs = PredictionRecord.objects.filter(deployment_id=deployment_id)
    if before is not None:
        qs = qs.filter(ts__lt=before)
    return list(qs.order_by("-ts", "-request_id")[:limit])
