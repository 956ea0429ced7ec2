"""The serving-backend interface: what the reconciler asks of a backend, in the domain's words.

A backend starts a replica (one model server) from a :class:`ReplicaSpec`, observes it (alive? healthy? why did
it exit?), stops it (idempotently), reads its output and sweeps orphans: replicas it finds running that the
control plane does not know. Backends hold no ORM code: ``apps/deployments/replicas.py`` turns ``Replica``
rows into specs and handles and writes what the backend saw back into the rows.

Implementations: ``local.LocalBackend`` (MLflow scoring-server processes on loopback ports) and
``kubernetes.KubernetesBackend`` (KServe ``InferenceService`` objects).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ReplicaSpec:
    """What to serve, for one replica: the model, its limits and where it belongs (for names and labels)."""

    replica_id: int
    model_uri: str                      # models:/<name>/<version>, or a local path / file:// URI
    artifact_uri: str = ""              # where MLflow stores the artifacts (KServe's storageUri: s3://, gs://)
    deployment_name: str = ""
    variant_name: str = ""
    index: int = 0
    timeout_seconds: float = 60.0       # per request, enforced by the model server
    cpu: float = 1.0                    # cores per replica (Kubernetes requests/limits)
    memory_mb: int = 1024
    replicas: int = 1                   # Kubernetes: pods behind the variant's InferenceService
    env: dict[str, str] = field(default_factory=dict)   # extra environment for the server


@dataclass(frozen=True)
class ReplicaHandle:
    """How to find a started replica again, also from another process: what ``Replica`` rows store.

    For local processes ``pid`` together with ``process_started`` (the start time in clock ticks since boot)
    identifies the process; a pid alone can be reused by an unrelated process after the server exits.
    """

    replica_id: int
    host: str = "127.0.0.1"
    port: int | None = None
    pid: int | None = None
    process_started: int | None = None
    log_path: str = ""
    name: str = ""                      # the backend's resource name (Kubernetes: the InferenceService)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}" if self.port else ""

    def with_(self, **changes) -> ReplicaHandle:
        return replace(self, **changes)


@dataclass(frozen=True)
class ReplicaObservation:
    """What the backend saw of a replica just now.

    ``alive``: the process (or resource) exists and is the one the handle names. ``healthy``: it answers its
    health check. When not alive, ``exit_code`` (if the backend could learn it) and ``exit_reason`` say why, and
    ``port_in_use`` says the server died because its port was taken (start it again on another port).
    """

    alive: bool
    healthy: bool = False
    exit_code: int | None = None
    exit_reason: str = ""
    port_in_use: bool = False


class BackendError(Exception):
    """A backend could not do what was asked (the message says why, in words fit for a timeline event)."""


@runtime_checkable
class ServingBackend(Protocol):
    """The operations the replica reconciler (apps/deployments/replicas.py) drives."""

    kind: str

    def replica_start(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Start a replica and return at once (it becomes healthy later). Raises BackendError."""
        ...

    def replica_observe(self, handle: ReplicaHandle, *, check_health: bool = True) -> ReplicaObservation:
        """Is the replica alive and healthy? Never raises for a replica that is gone: it reports it."""
        ...

    def replica_stop(self, handle: ReplicaHandle, *, grace_seconds: float | None = None) -> bool:
        """Stop the replica, gracefully first. Idempotent; True if something was stopped."""
        ...

    def replica_log_tail(self, handle: ReplicaHandle, *, max_bytes: int = 65536) -> str:
        """The end of the replica's output, decoded safely ('' when there is none)."""
        ...

    def orphans_sweep(self, *, owned: Callable[[int, ReplicaHandle], bool]) -> list[ReplicaHandle]:
        """Stop every replica this backend finds running for which ``owned(replica_id, handle)`` is False.

        ``owned`` is asked per replica found, so that the caller can look each one up at that moment (a replica
        being started by another worker is not an orphan). Returns the handles of those stopped.
        """
        ...
