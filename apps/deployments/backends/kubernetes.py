"""The Kubernetes backend: one KServe ``InferenceService`` (serving.kserve.io/v1beta1) per variant.

What is real here: the manifest (:func:`inferenceservice_build`), which the tests validate against KServe's own
CRD schema (``shared/reference/kserve``) as an API server would, and the calls the official ``kubernetes``
client makes (CustomObjectsApi create / patch / get / delete / list), which the tests send to a loopback HTTP
server standing in for the API server. **Not exercised against a live cluster here**: no Kubernetes API server
or KServe controller runs on these machines, so scheduling, readiness and traffic splitting by KServe are
untested.

Mapping: a variant is an InferenceService named ``<deployment>-<variant>``; its ``predictor`` serves the
version's MLflow artifacts (``modelFormat: mlflow``, KServe's MLServer runtime, Open Inference Protocol v2) from
``storageUri``, the version's MLflow source (s3://, gs://, ...: KServe's storage initializer cannot read
``models:/`` or ``mlflow-artifacts:/``), with min = max replicas = the variant's replicas and the deployment's
CPU and memory as requests and limits. ``canaryTrafficPercent`` is set for a canary rollout (later steps).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from apps.deployments.backends.base import BackendError, ReplicaHandle, ReplicaObservation, ReplicaSpec

if TYPE_CHECKING:  # pragma: no cover
    from apps.deployments.models import Environment

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelplane"}
REPLICA_LABEL = "modelplane.io/replica-id"
# Schemes KServe's storage initializer downloads from.
STORAGE_SCHEMES = ("s3://", "gs://", "https://", "http://", "pvc://", "hdfs://", "webhdfs://", "oci://",
                   "hf://", "abfs://", "az://")
# Knative derives host names from "<name>-predictor-<namespace>"; KServe advises names well under 63.
MAX_NAME = 45


def inferenceservice_name(deployment_name: str, variant_name: str) -> str:
    """``<deployment>-<variant>``, shortened with a stable hash when too long (names are DNS labels)."""
    name = f"{deployment_name}-{variant_name}".lower()
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME - 9].rstrip('-')}-{digest}"


def cpu_quantity(cores: float | Decimal) -> str:
    """Cores as a Kubernetes quantity, in millicores (0.5 -> "500m", 2 -> "2")."""
    millis = math.ceil(float(cores) * 1000)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def inferenceservice_build(*, name: str, namespace: str, storage_uri: str, cpu: float | Decimal, memory_mb: int,
                           replicas: int, timeout_seconds: float | None = None,
                           canary_traffic_percent: int | None = None,
                           labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The InferenceService object for one variant, as the API server expects it."""
    resources = {"cpu": cpu_quantity(cpu), "memory": f"{int(memory_mb)}Mi"}
    predictor: dict[str, Any] = {
        "minReplicas": int(replicas),
        "maxReplicas": int(replicas),
        "model": {
            "modelFormat": {"name": "mlflow"},
            "protocolVersion": "v2",
            "storageUri": storage_uri,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
        },
    }
    if timeout_seconds:
        predictor["timeout"] = max(1, math.ceil(timeout_seconds))
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = int(canary_traffic_percent)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, **(labels or {})}},
        "spec": {"predictor": predictor},
    }


class KubernetesBackend:
    """Variants as KServe InferenceServices through the official client (see the module docstring: not
    exercised against a live cluster here)."""

    kind = "kubernetes"

    def __init__(self, *, namespace: str = "default", api_client: Any = None):
        self.namespace = namespace
        self._api_client = api_client

    @classmethod
    def from_environment(cls, environment: Environment) -> KubernetesBackend:
        """Namespace from the environment's backend_settings; credentials from the in-cluster service account
        or the kubeconfig (``kubeconfig`` / ``context`` settings), as kubectl finds them."""
        settings = environment.backend_settings or {}
        return cls(namespace=settings.get("namespace", "default"),
                   api_client=_load_client(settings.get("kubeconfig"), settings.get("context")))

    @property
    def api(self):
        from kubernetes import client

        return client.CustomObjectsApi(self._api_client)

    def manifest(self, spec: ReplicaSpec) -> dict[str, Any]:
        if not spec.artifact_uri.startswith(STORAGE_SCHEMES):
            raise BackendError(f"KServe cannot download {spec.artifact_uri or 'this model'!r}: the MLflow "
                               "artifact store must be one KServe reads (s3://, gs://, https://, pvc://, ...).")
        return inferenceservice_build(
            name=inferenceservice_name(spec.deployment_name, spec.variant_name), namespace=self.namespace,
            storage_uri=spec.artifact_uri, cpu=spec.cpu, memory_mb=spec.memory_mb, replicas=spec.replicas,
            timeout_seconds=spec.timeout_seconds, labels={REPLICA_LABEL: str(spec.replica_id)})

    def _handle(self, replica_id: int, name: str) -> ReplicaHandle:
        return ReplicaHandle(replica_id=replica_id, host=f"{name}-predictor.{self.namespace}.svc.cluster.local",
                             port=80, name=name)

    def replica_start(self, spec: ReplicaSpec) -> ReplicaHandle:
        """Create the InferenceService, or patch it to this spec if it exists (idempotent)."""
        from kubernetes.client.exceptions import ApiException

        body = self.manifest(spec)
        name = body["metadata"]["name"]
        try:
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status != 409:
                raise BackendError(f"Kubernetes refused the InferenceService {name}: {exc.status} {exc.reason}") \
                    from exc
            self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name,
                                                    {"metadata": {"labels": body["metadata"]["labels"]},
                                                     "spec": body["spec"]})
        return self._handle(spec.replica_id, name)

    def replica_observe(self, handle: ReplicaHandle, *, check_health: bool = True) -> ReplicaObservation:
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, handle.name)
        except ApiException as exc:
            if exc.status == 404:
                return ReplicaObservation(alive=False, exit_reason="the InferenceService is gone")
            return ReplicaObservation(alive=True, healthy=False,
                                      exit_reason=f"Kubernetes API: {exc.status} {exc.reason}")
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), {})
        return ReplicaObservation(alive=True, healthy=ready.get("status") == "True",
                                  exit_reason=ready.get("message", ""))

    def replica_stop(self, handle: ReplicaHandle, *, grace_seconds: float | None = None) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, handle.name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise BackendError(f"Could not delete the InferenceService {handle.name}: {exc.status}") from exc
        return True

    def replica_log_tail(self, handle: ReplicaHandle, *, max_bytes: int = 65536) -> str:
        """Pod logs are read with ``kubectl logs`` (the control plane does not stream them)."""
        return ""

    def orphans_sweep(self, *, owned: Callable[[int, ReplicaHandle], bool]) -> list[ReplicaHandle]:
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        listing = self.api.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                         label_selector=selector)
        stopped = []
        for item in listing.get("items", []):
            labels = item.get("metadata", {}).get("labels", {})
            replica_id = labels.get(REPLICA_LABEL, "")
            handle = self._handle(int(replica_id) if replica_id.isdigit() else 0, item["metadata"]["name"])
            if replica_id.isdigit() and owned(handle.replica_id, handle):
                continue
            if self.replica_stop(handle):
                stopped.append(handle)
        return stopped


def _load_client(kubeconfig: str | None, context: str | None):
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        pass
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as exc:
        raise BackendError(f"No Kubernetes credentials: {exc}") from exc
