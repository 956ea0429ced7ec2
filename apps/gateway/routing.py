"""The gateway's routing table in memory: route documents (apps.gateway.contract) compiled for the hot path,
the weighted pick of a variant and the least-outstanding pick of a replica.

A route is rebuilt whole when its document changes; what a replica has learnt at run time (requests in flight,
a passive ejection after a refused connection) lives in a :class:`ReplicaState` keyed by the replica's URL,
which survives such rebuilds, so a publish in the middle of a load neither forgets the in-flight counts nor
readmits a replica that just refused connections.
"""
from __future__ import annotations

import bisect
import logging
import random
import time
from typing import Any

from yarl import URL

from .signature import Signature

log = logging.getLogger("apps.gateway")


class ReplicaState:
    """Run-time facts about one model-server address, shared by every route that names it."""

    __slots__ = ("ejected_until", "inflight", "invocations", "picks", "url")

    def __init__(self, url: str):
        self.url = url
        # Built once: aiohttp takes a yarl URL as is, where a string would be parsed on every request.
        self.invocations = URL(url.rstrip("/") + "/invocations", encoded=False)
        self.inflight = 0
        self.ejected_until = 0.0
        self.picks = 0


class Replica:
    """One replica of a variant, as the route document names it."""

    __slots__ = ("id", "ready", "state")

    def __init__(self, replica_id: str, state: ReplicaState, ready: bool):
        self.id = replica_id
        self.state = state
        self.ready = ready


class Variant:
    """One variant of a deployment: a model version, its share of the traffic and its replicas."""

    __slots__ = (
        "_turn",
        "model_name",
        "model_version",
        "name",
        "replicas",
        "signature",
        "signature_doc",
        "weight",
    )

    def __init__(self, doc: dict, states: ReplicaStates):
        self.name = str(doc["name"])
        self.model_name = doc.get("model_name")
        self.model_version = doc.get("model_version")
        self.weight = int(doc.get("weight") or 0)
        self.signature_doc = doc.get("signature")
        self.signature = Signature.parse(self.signature_doc)
        self.replicas = [Replica(str(r.get("id")), states.get(str(r["url"])), bool(r.get("ready")))
                         for r in doc.get("replicas") or [] if r.get("ready")]
        self._turn = 0

    def pick(self, now: float, exclude: ReplicaState | None = None) -> Replica | None:
        """The ready, not ejected replica with the fewest requests in flight; ties go round by turns."""
        replicas = self.replicas
        count = len(replicas)
        if count == 1:
            only = replicas[0]
            state = only.state
            return only if state is not exclude and state.ejected_until <= now else None
        best = None
        best_load = None
        self._turn = turn = (self._turn + 1) % count if count else 0
        for offset in range(count):
            replica = replicas[(turn + offset) % count]
            state = replica.state
            if state is exclude or state.ejected_until > now:
                continue
            if best_load is None or state.inflight < best_load:
                best, best_load = replica, state.inflight
        return best

    def next_available(self, now: float) -> float | None:
        """Seconds until an ejected replica of this variant is tried again (None: it has no replica)."""
        if not self.replicas:
            return None
        return max(0.0, min(r.state.ejected_until for r in self.replicas) - now)


class Route:
    """A deployment's route document, compiled: keys as a set, weights as a cumulative table."""

    def __init__(self, doc: dict, states: ReplicaStates):
        self.doc = doc
        self.name = str(doc["name"])
        self.deployment_id = doc.get("deployment_id")
        self.team = doc.get("team")
        self.generation = int(doc.get("generation") or 0)
        self.serving = bool(doc.get("serving"))
        self.keys: dict[str, Any] = {k["hash"]: k.get("id") for k in doc.get("keys") or [] if k.get("hash")}
        rate = doc.get("rate_limit") or None
        self.rate: tuple[float, float] | None = None
        if rate and rate.get("requests_per_second"):
            per_second = float(rate["requests_per_second"])
            self.rate = (per_second, float(rate.get("burst") or max(1.0, per_second)))
        self.max_payload_bytes = int(doc.get("max_payload_bytes") or 1_048_576)
        self.timeout_seconds = float(doc.get("timeout_seconds") or 10.0)
        self.sampling_rate = min(1.0, max(0.0, float(doc.get("sampling_rate", 1.0) or 0.0)))
        self.variants = [Variant(v, states) for v in doc.get("variants") or []]
        self.weighted = [v for v in self.variants if v.weight > 0]
        self._cumulative = []
        total = 0
        for variant in self.weighted:
            total += variant.weight
            self._cumulative.append(total)
        self._total = total
        # The variant whose signature describes the deployment (metadata): the heaviest, the first on a tie.
        self.primary = max(self.weighted or self.variants, key=lambda v: v.weight) if self.variants else None

    def pick_variant(self) -> Variant | None:
        """A variant drawn at random by weight (None when no variant has weight)."""
        if not self._total:
            return None
        if len(self.weighted) == 1:
            return self.weighted[0]
        return self.weighted[bisect.bisect_right(self._cumulative, random.random() * self._total)]

    def variant_for_version(self, version: str) -> Variant | None:
        """The variant serving model version ``version`` (OIP's /versions/{v} paths), weighted first."""
        for variant in sorted(self.variants, key=lambda v: -v.weight):
            if str(variant.model_version) == version:
                return variant
        return None

    def ready(self, now: float) -> bool:
        """Serving, with at least one weighted variant that has a replica to send to."""
        return self.serving and any(
            replica.state.ejected_until <= now for v in self.weighted for replica in v.replicas)

    def retry_after(self, now: float) -> int:
        """Seconds a client should wait before trying again: until the first ejected replica is retried."""
        waits = [w for v in self.weighted if (w := v.next_available(now)) is not None]
        return max(1, int(min(waits) + 0.999)) if waits else 5


class ReplicaStates:
    """ReplicaState by URL; states no route names any more are forgotten on the next full reload."""

    def __init__(self):
        self.by_url: dict[str, ReplicaState] = {}

    def get(self, url: str) -> ReplicaState:
        state = self.by_url.get(url)
        if state is None:
            state = self.by_url[url] = ReplicaState(url)
        return state

    def prune(self, routes: dict[str, Route]) -> None:
        named = {r.state.url for route in routes.values() for v in route.variants for r in v.replicas}
        for url in list(self.by_url):
            if url not in named and not self.by_url[url].inflight:
                del self.by_url[url]


class RouteTable:
    """Every deployment's route, by name; replaced route by route as the control plane publishes."""

    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.states = ReplicaStates()
        self.loaded = False  # a whole table has been read from Redis at least once
        self.loaded_at = 0.0  # time.time() of the last full read

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)

    def compile(self, name: str, raw: bytes | str | None) -> Route | None | bool:
        """A route from its stored document: a Route, None (deleted), or False (unreadable: keep the old)."""
        if raw is None:
            return None
        import orjson

        try:
            doc = orjson.loads(raw)
            if doc.get("name") != name:
                raise ValueError(f"the document names {doc.get('name')!r}")
            return Route(doc, self.states)
        except Exception as exc:  # noqa: BLE001 - a bad document must not take the gateway down
            log.error("route %r: unreadable route document, keeping the previous one: %r", name, exc)
            return False

    def apply(self, name: str, raw: bytes | str | None) -> str:
        """Apply one stored document (None: the field is gone). Returns what happened, for logs and tests."""
        route = self.compile(name, raw)
        if route is False:
            return "unreadable"
        current = self.routes.get(name)
        if route is None:
            if current is None:
                return "absent"
            del self.routes[name]
            return "removed"
        if current is not None and current.deployment_id == route.deployment_id \
                and route.generation < current.generation:
            return "stale"  # an older document than the one we hold (generations only grow)
        self.routes[name] = route
        return "applied"

    def replace_all(self, stored: dict[str, bytes]) -> dict[str, int]:
        """Apply a full read of the routes hash: every stored route, and drop the routes no longer stored.

        An empty hash while we hold routes is taken for a Redis that lost its data (restarted without
        persistence), not for every deployment deleted at once: the table is kept until the control plane
        publishes again. Deletions still apply one by one when published.
        """
        outcome = {"applied": 0, "removed": 0, "stale": 0, "unreadable": 0, "kept": 0}
        if not stored and self.routes:
            outcome["kept"] = len(self.routes)
        else:
            for name, raw in stored.items():
                result = self.apply(name, raw)
                if result in outcome:
                    outcome[result] += 1
            for name in [n for n in self.routes if n not in stored]:
                del self.routes[name]
                outcome["removed"] += 1
        self.states.prune(self.routes)
        self.loaded = True
        self.loaded_at = time.time()
        return outcome
