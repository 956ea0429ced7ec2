"""Serving backends: where replicas actually run (local processes, Kubernetes/KServe). See ``base.py``."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from apps.deployments.backends.base import ServingBackend
    from apps.deployments.models import Environment


def backend_for(environment: Environment) -> ServingBackend:
    """The backend that serves an environment, configured from settings and the environment's backend_settings."""
    if environment.backend == "kubernetes":
        from apps.deployments.backends.kubernetes import KubernetesBackend

        return KubernetesBackend.from_environment(environment)
    from apps.deployments.backends.local import LocalBackend

    return LocalBackend.from_settings()
