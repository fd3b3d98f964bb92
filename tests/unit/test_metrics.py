"""The two per-request recorders export the same metrics: what a worker writes is what one process shows."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
from gateway.metrics.specs import IN_FLIGHT, PER_REQUEST, REQUEST_BYTES, RESPONSE_BYTES


def _record(metrics: GatewayMetrics) -> None:
    gauge = metrics.in_flight_gauge("grpc")
    gauge.inc()
    gauge.inc()
    gauge.dec()
    metrics.in_flight_gauge("rest")
    for total_s, backend_s, protocol in [
        (0.0012, 0.0009, "grpc"),
        (0.0001, 0.00005, "grpc"),  # on bucket bounds: `le` includes them
        (31.0, 30.5, "rest"),  # past every bound: +Inf only
        (0.002, 0.0025, "grpc"),  # the backend took longer than the whole (clock skew): overhead 0
    ]:
        metrics.observe_request(
            model="cnn",
            version="",
            backend="jax",
            framework="jax",
            protocol=protocol,
            code="OK",
            total_s=total_s,
            backend_s=backend_s,
        )
    metrics.observe_request(
        model="_unknown",
        version="",
        backend="",
        framework="",
        protocol="rest",
        code="NOT_FOUND",
        total_s=0.0003,
        backend_s=None,
    )
    metrics.observe_rejected(
        model="cnn", version="", backend="jax", framework="jax", protocol="grpc", code="INVALID_ARGUMENT"
    )
    metrics.observe_transfer(model="cnn", framework="jax", protocol="grpc", bytes_in=6300, bytes_out=120)
    metrics.observe_transfer(model="cnn", framework="jax", protocol="grpc", bytes_in=6300, bytes_out=0)
    metrics.observe_transfer(model="_unknown", framework="", protocol="rest", bytes_in=0, bytes_out=40)
    metrics.set_backend_up("jax", "a:1", True, framework="jax")


def _exposition(metrics: GatewayMetrics) -> list[str]:
    text = generate_latest(metrics.registry).decode()
    # prometheus_client's own objects add `_created` timestamps; no rule or dashboard reads them.
    return sorted(line for line in text.splitlines() if "_created" not in line)


def test_local_recorder_exports_what_prometheus_client_would() -> None:
    """The same requests recorded in plain Python (one process) and through prometheus_client's objects
    (workers' multiprocess files) give the same exposition, line for line."""
    local, shared = GatewayMetrics(multiprocess=False), GatewayMetrics(multiprocess=True)
    _record(local)
    _record(shared)
    assert _exposition(local) == _exposition(shared)


@pytest.mark.parametrize("multiprocess", [False, True])
def test_values_read_back(multiprocess: bool) -> None:
    """Counts, bucket placement and sums as recorded, in either recorder."""
    metrics = GatewayMetrics(multiprocess=multiprocess)
    _record(metrics)
    get = metrics.registry.get_sample_value
    upstream = {"model": "cnn", "backend": "jax", "framework": "jax"}
    labels = {**upstream, "protocol": "grpc"}
    assert get("gateway_requests_total", {**labels, "version": "", "code": "OK"}) == 3
    assert get("gateway_requests_total", {**labels, "version": "", "code": "INVALID_ARGUMENT"}) == 1
    unrouted = {"model": "_unknown", "version": "", "backend": "", "framework": "", "protocol": "rest"}
    assert get("gateway_requests_total", {**unrouted, "code": "NOT_FOUND"}) == 1
    assert get("gateway_request_duration_seconds_bucket", {**labels, "le": "0.0001"}) == 1
    assert get("gateway_request_duration_seconds_count", labels) == 3
    assert get("gateway_backend_duration_seconds_count", upstream) == 4
    assert get("gateway_backend_duration_seconds_bucket", {**upstream, "le": str(LATENCY_BUCKETS[-1])}) == 3
    assert get("gateway_overhead_duration_seconds_sum", labels) == pytest.approx(0.0003 + 0.00005)
    assert get("gateway_requests_in_flight", {"protocol": "grpc"}) == 1
    assert (
        get("gateway_request_bytes_total", {"model": "cnn", "framework": "jax", "protocol": "grpc"}) == 12600
    )
    assert (
        get("gateway_response_bytes_total", {"model": "_unknown", "framework": "", "protocol": "rest"}) == 40
    )
    assert get("gateway_backend_up", {"backend": "jax", "framework": "jax", "endpoint": "a:1"}) == 1


def test_every_backend_label_comes_with_the_framework() -> None:
    """A per-request metric labelled by backend is labelled by its framework too (and gateway_backend_up,
    read back above), so frameworks can be compared; the in-flight gauge is by protocol only (counted
    before the route, and so the backend, is known)."""
    for spec in PER_REQUEST:
        assert ("backend" in spec.labels) <= ("framework" in spec.labels), spec.name
    assert all("framework" in spec.labels for spec in (REQUEST_BYTES, RESPONSE_BYTES))
    assert IN_FLIGHT.labels == ("protocol",)
