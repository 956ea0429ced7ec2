"""The KServe backend: manifests validated against KServe's own CRD schema (as an API server validates them) and
the official client's requests sent over HTTP to a loopback server standing in for the Kubernetes API server.
No cluster runs here: KServe's own behaviour (scheduling, readiness, traffic) is not exercised.
"""
from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import jsonschema
import pytest
import yaml

from apps.deployments.backends.base import BackendError, ReplicaSpec, ServingBackend
from apps.deployments.backends.kubernetes import (
    KubernetesBackend,
    cpu_quantity,
    inferenceservice_build,
    inferenceservice_name,
)

# An unchanged, gzipped copy of KServe's InferenceService CRD (kserve/kserve at commit
# aaac4e294dae2c7b1aa1886447793f3aa1c30912, config/crd/full/; Apache-2.0), kept in the repository so that a clean
# clone tests against it wherever it runs (tests/deployments/data/README.md).
CRD = Path(__file__).resolve().parent / "data" / "serving.kserve.io_inferenceservices.yaml.gz"
BASE = "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices"


@pytest.fixture(scope="module")
def isvc_schema():
    crd = yaml.load(gzip.decompress(CRD.read_bytes()), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")
    # OpenAPI v3.0 schemas are a JSON Schema draft-4 dialect; the x-kubernetes-* keywords are annotations here.
    return jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])


def _spec(**kw) -> ReplicaSpec:
    defaults = {"replica_id": 7, "model_uri": "models:/fraud/3", "artifact_uri": "s3://models/1/abc/artifacts/model",
                "deployment_name": "fraud-api", "variant_name": "v2", "cpu": 0.5, "memory_mb": 1536, "replicas": 2,
                "timeout_seconds": 7.5}
    return ReplicaSpec(**{**defaults, **kw})


def test_manifest_is_valid_against_the_crd_schema(isvc_schema):
    backend = KubernetesBackend(namespace="models")
    manifest = backend.manifest(_spec())
    isvc_schema.validate(manifest)
    predictor = manifest["spec"]["predictor"]
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1" and manifest["kind"] == "InferenceService"
    assert manifest["metadata"] == {"name": "fraud-api-v2", "namespace": "models",
                                    "labels": {"app.kubernetes.io/managed-by": "modelplane",
                                               "modelplane.io/replica-id": "7"}}
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"}
    assert predictor["model"]["storageUri"] == "s3://models/1/abc/artifacts/model"
    assert predictor["model"]["resources"]["limits"] == {"cpu": "500m", "memory": "1536Mi"}
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["timeout"]) == (2, 2, 8)
    canary = inferenceservice_build(name="x", namespace="models", storage_uri="gs://b/m", cpu=2, memory_mb=512,
                                    replicas=1, canary_traffic_percent=10)
    isvc_schema.validate(canary)
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10


def test_the_schema_check_has_teeth(isvc_schema):
    bad = inferenceservice_build(name="x", namespace="m", storage_uri="s3://b/m", cpu=1, memory_mb=512, replicas=1)
    bad["spec"]["predictor"]["model"]["modelFormat"] = {"version": "2"}          # name is required
    with pytest.raises(jsonschema.ValidationError):
        isvc_schema.validate(bad)
    bad = inferenceservice_build(name="x", namespace="m", storage_uri="s3://b/m", cpu=1, memory_mb=512, replicas=1)
    bad["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        isvc_schema.validate(bad)


def test_names_quantities_and_storage_the_cluster_cannot_read():
    assert inferenceservice_name("a" * 63, "candidate") != inferenceservice_name("a" * 63, "candidatf")
    assert len(inferenceservice_name("a" * 63, "candidate")) <= 45
    assert (cpu_quantity(0.25), cpu_quantity(1), cpu_quantity(1.5)) == ("250m", "1", "1500m")
    with pytest.raises(BackendError, match="KServe cannot download"):
        KubernetesBackend(namespace="models").manifest(_spec(artifact_uri="mlflow-artifacts:/1/abc"))


class FakeApiServer:
    """A loopback HTTP server that answers like the API server for one namespace's InferenceServices."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict | None]] = []
        self.objects: dict[str, dict] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.requests.append((self.command, self.path, body))
                path = self.path.split("?")[0]
                name = path[len(BASE) + 1:] if path.startswith(BASE + "/") else ""
                if self.command == "POST":
                    if body["metadata"]["name"] in outer.objects:
                        return self._answer(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
                    outer.objects[body["metadata"]["name"]] = body
                    return self._answer(201, body)
                if self.command == "GET" and not name:
                    return self._answer(200, {"items": list(outer.objects.values())})
                if name not in outer.objects:
                    return self._answer(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                if self.command == "PATCH":
                    outer.objects[name]["spec"] = body["spec"]
                    return self._answer(200, outer.objects[name])
                if self.command == "DELETE":
                    return self._answer(200, outer.objects.pop(name))
                return self._answer(200, outer.objects[name])

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_server():
    server = FakeApiServer()
    yield server
    server.close()


def test_client_creates_patches_observes_deletes_and_sweeps(api_server, isvc_schema):
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = api_server.url
    backend = KubernetesBackend(namespace="models", api_client=client.ApiClient(configuration))
    assert isinstance(backend, ServingBackend)

    handle = backend.replica_start(_spec())
    method, path, body = api_server.requests[-1]
    assert (method, path) == ("POST", BASE) and body == backend.manifest(_spec())
    isvc_schema.validate(body)
    assert handle.name == "fraud-api-v2" and handle.host == "fraud-api-v2-predictor.models.svc.cluster.local"

    backend.replica_start(_spec(replicas=3))                         # exists: patched to the new spec
    assert [r[0] for r in api_server.requests[-2:]] == ["POST", "PATCH"]
    assert api_server.objects["fraud-api-v2"]["spec"]["predictor"]["minReplicas"] == 3

    assert backend.replica_observe(handle).alive and not backend.replica_observe(handle).healthy
    api_server.objects["fraud-api-v2"]["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    assert backend.replica_observe(handle).healthy

    backend.replica_start(_spec(replica_id=8, variant_name="v3"))
    swept = backend.orphans_sweep(owned=lambda replica_id, h: replica_id == 7)
    assert [h.name for h in swept] == ["fraud-api-v3"] and set(api_server.objects) == {"fraud-api-v2"}
    listing = next(r for r in api_server.requests if r[0] == "GET" and "labelSelector" in r[1])
    assert "labelSelector=app.kubernetes.io/managed-by=modelplane" in unquote(listing[1])

    assert backend.replica_stop(handle) is True and backend.replica_stop(handle) is False
    assert backend.replica_observe(handle).alive is False
