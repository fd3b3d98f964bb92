"""Cluster health checks and their metric."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.cluster import Cluster
from gateway.metrics import GatewayMetrics
from tests.unit.core.fakes import FakeBackend


def up(metrics: GatewayMetrics, endpoint: str) -> float | None:
    labels = {"backend": "jax", "framework": "jax", "endpoint": endpoint}
    return metrics.registry.get_sample_value("gateway_backend_up", labels)


async def test_check_health_marks_endpoints_and_records_backend_up() -> None:
    """A probe round marks ready endpoints up, the others down, and sets gateway_backend_up under the
    cluster's backend and framework labels."""
    metrics = GatewayMetrics()
    backend = FakeBackend(down={"b:2"}, unready={"c:3"})
    cluster = Cluster("jax", backend, ["a:1", "b:2", "c:3"], metrics=metrics, framework="jax")
    assert not any(e.healthy for e in cluster.endpoints)  # down until probed
    await cluster.check_health()
    assert [e.healthy for e in cluster.endpoints] == [True, False, False]
    assert [up(metrics, e) for e in ("a:1", "b:2", "c:3")] == [1.0, 0.0, 0.0]
    assert any(e.healthy for e in cluster.endpoints)


async def test_slow_probe_marks_down() -> None:
    """A probe slower than health_check_timeout_s counts as failed."""

    class Slow(FakeBackend):
        async def ready(self, endpoint: str) -> bool:
            await asyncio.sleep(5)
            return True

    cluster = Cluster("jax", Slow(), ["a:1"], health_check_timeout_s=0.01)
    cluster.endpoints[0].healthy = True
    await cluster.check_health()
    assert not cluster.endpoints[0].healthy


async def test_periodic_checks_bring_an_endpoint_back() -> None:
    """The health loop re-probes every interval, so a recovered endpoint returns to rotation."""
    backend = FakeBackend(down={"a:1"})
    cluster = Cluster("jax", backend, ["a:1"], health_check_interval_s=0.01)
    task = asyncio.create_task(cluster.run_health_checks())
    try:
        await asyncio.sleep(0.03)
        assert not any(e.healthy for e in cluster.endpoints)
        backend.down.clear()
        await asyncio.sleep(0.05)
        assert any(e.healthy for e in cluster.endpoints)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_cluster_needs_endpoints() -> None:
    """A cluster without endpoints is refused."""
    with pytest.raises(ValueError):
        Cluster("jax", FakeBackend(), [])
