"""Building a DataPlane over the fake backend, a hand-moved clock, and reading the metrics it records:
shared by the DataPlane's tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.core.cluster import Cluster
from gateway.core.dataplane import DataPlane
from gateway.core.routing import Route, Router
from gateway.metrics import GatewayMetrics
from tests.unit.core.fakes import FakeBackend


def make_plane(
    backend: FakeBackend | None = None,
    *,
    routes: tuple[Route, ...] = (Route("cnn", "", "jax", "double"),),
    endpoints: tuple[str, ...] = ("a:1",),
    timeout_s: float = 30.0,
    metadata_ttl_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[DataPlane, Cluster, FakeBackend, GatewayMetrics]:
    """A DataPlane over one cluster "jax" of `backend` (its endpoints healthy), routing `routes`."""
    backend = backend or FakeBackend()
    metrics = GatewayMetrics()
    cluster = Cluster(
        "jax",
        backend,
        endpoints,
        timeout_s=timeout_s,
        metadata_ttl_s=metadata_ttl_s,
        metrics=metrics,
        framework="jax",
    )
    for endpoint in cluster.endpoints:
        endpoint.healthy = True
    return DataPlane(Router(routes), {"jax": cluster}, metrics, clock=clock), cluster, backend, metrics


def requests_total(metrics: GatewayMetrics, **labels: str) -> float:
    full = {
        "model": "cnn",
        "version": "",
        "backend": "jax",
        "framework": "jax",
        "protocol": "grpc",
        "code": "OK",
        **labels,
    }
    return metrics.registry.get_sample_value("gateway_requests_total", full) or 0.0


def histogram_count(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(f"{name}_count", labels) or 0.0


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
