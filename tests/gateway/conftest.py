"""Fixtures of the gateway's tests: one redis-server, one gateway and one fake upstream per session (the fault
tests start their own), and two real MLflow scoring servers when a test asks for them.

The gateway's Redis is a redis-server of our own, not the suite's shared one: other tests flush their Redis
database between tests (tests/conftest.py clears the cache), which would wipe the routing table under the
gateway's feet.
"""
from __future__ import annotations

import itertools

import pytest

from tests.gateway.support import FakeUpstream, GatewayProcess, MlflowModel, MlflowReplica, RedisServer

_names = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def gateway(redis_server):
    process = GatewayProcess(redis_server.url)
    yield process
    process.close()


@pytest.fixture(scope="session")
def upstream():
    process = FakeUpstream(["a", "b", "c", "d"])
    yield process
    process.close()


@pytest.fixture
def rc(redis_server):
    """A Redis client on the gateway's Redis."""
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def unique():
    """A deployment name of its own for each test."""
    return lambda prefix="dep": f"{prefix}-{next(_names)}"


@pytest.fixture(scope="session")
def mlflow_model(tmp_path_factory):
    return MlflowModel(tmp_path_factory.mktemp("mlflow-model"))


@pytest.fixture(scope="session")
def mlflow_replicas(mlflow_model):
    """Two real MLflow scoring servers of the same model (started together: ~15-30 s on this machine)."""
    replicas = [MlflowReplica(mlflow_model.path) for _ in range(2)]
    try:
        for replica in replicas:
            replica.wait_ready()
        yield replicas
    finally:
        for replica in replicas:
            replica.close()
