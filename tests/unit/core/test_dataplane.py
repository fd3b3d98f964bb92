"""DataPlane behaviour over a fake backend: routing, renaming, deadlines, failures and retries, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from gateway.core.cluster import Cluster
from gateway.core.dataplane import DataPlane
from gateway.core.routing import Route, Router
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
)
from gateway.metrics import GatewayMetrics
from gateway.settings import TFServingRouteOptions
from gateway.types import InferenceRequest, InferenceResponse, RequestContext
from tests.unit.core.fakes import FakeBackend, fp32_request
from tests.unit.core.planes import StepClock, histogram_count, make_plane, requests_total


async def test_infer_renames_model_toward_backend_and_back() -> None:
    """The backend sees `backend_model`; the client gets its own model name back."""
    plane, _, backend, _ = make_plane()
    request = fp32_request("cnn", rows=2)
    response = await plane.infer(request, RequestContext("grpc"))
    assert response.model_name == "cnn"
    assert request.model_name == "cnn"  # the caller's request is restored
    assert ("infer", "double", "", "a:1") in backend.calls
    assert response.outputs[0].data.tolist() == [[0, 2, 4], [6, 8, 10]]


async def test_infer_records_metrics_once_on_success() -> None:
    """One success moves requests_total{code=OK} and every duration histogram by exactly one."""
    plane, _, _, metrics = make_plane()
    context = RequestContext("grpc")
    await plane.infer(fp32_request("cnn"), context)
    assert requests_total(metrics) == 1
    labels = {"model": "cnn", "backend": "jax", "framework": "jax", "protocol": "grpc"}
    assert histogram_count(metrics, "gateway_request_duration_seconds", **labels) == 1
    assert histogram_count(metrics, "gateway_overhead_duration_seconds", **labels) == 1
    backend_labels = {"model": "cnn", "backend": "jax", "framework": "jax"}
    assert histogram_count(metrics, "gateway_backend_duration_seconds", **backend_labels) == 1
    assert metrics.registry.get_sample_value("gateway_requests_in_flight", {"protocol": "grpc"}) == 0
    assert (context.model_label, context.version_label, context.framework_label) == ("cnn", "", "jax")


async def test_unknown_model_is_not_found_with_unknown_label() -> None:
    """An unrouted model raises ModelNotFound and is counted under model="_unknown", never its name."""
    plane, _, backend, metrics = make_plane()
    context = RequestContext("rest")
    with pytest.raises(ModelNotFound):
        await plane.infer(fp32_request("scanner-probe-123"), context)
    assert (context.model_label, context.framework_label) == ("_unknown", "")
    unknown = {"model": "_unknown", "backend": "", "framework": "", "protocol": "rest", "code": "NOT_FOUND"}
    assert requests_total(metrics, **unknown) == 1
    plane.observe_transfer(context, 100, 0)
    assert (
        metrics.registry.get_sample_value(
            "gateway_request_bytes_total", {"model": "_unknown", "framework": "", "protocol": "rest"}
        )
        == 100
    )
    assert not backend.calls


async def test_rejected_request_is_counted_under_bounded_labels() -> None:
    """A listener's refusal counts under the route's labels; an unrouted name counts as "_unknown"."""
    plane, _, backend, metrics = make_plane()
    routed, unrouted = RequestContext("rest"), RequestContext("grpc")
    plane.observe_rejected("cnn", routed, InvalidRequest("bad tensor"))
    plane.observe_rejected("scanner-probe", unrouted, InvalidRequest("bad tensor"))
    assert requests_total(metrics, protocol="rest", code="INVALID_ARGUMENT") == 1
    unknown = {"model": "_unknown", "backend": "", "framework": "", "protocol": "grpc"}
    assert requests_total(metrics, **unknown, code="INVALID_ARGUMENT") == 1
    assert (routed.framework_label, unrouted.framework_label) == ("jax", "")
    assert not backend.calls


async def test_one_model_on_two_frameworks_is_labelled_by_framework() -> None:
    """Versions of one model routed to backends of two frameworks count under one model label and each
    backend's framework label: what the framework comparison aggregates by (model, framework)."""
    metrics = GatewayMetrics()
    clusters = {
        "jax": Cluster("jax", FakeBackend(), ("a:1",), metrics=metrics, framework="jax"),
        "tfs": Cluster("tfs", FakeBackend(), ("b:1",), metrics=metrics, framework="tensorflow"),
    }
    for cluster in clusters.values():
        await cluster.check_health()
    routes = (Route("cnn", "", "jax", "double"), Route("cnn", "tf", "tfs", "double"))
    plane = DataPlane(Router(routes), clusters, metrics)
    for version in ("", "tf", "tf"):
        context = RequestContext("grpc")
        await plane.infer(fp32_request("cnn", version=version), context)
        plane.observe_transfer(context, 10, 1)
    assert requests_total(metrics) == 1
    assert requests_total(metrics, version="tf", backend="tfs", framework="tensorflow") == 2
    tf = {"model": "cnn", "backend": "tfs", "framework": "tensorflow"}
    assert histogram_count(metrics, "gateway_backend_duration_seconds", **tf) == 2
    get = metrics.registry.get_sample_value
    assert (
        get("gateway_request_bytes_total", {"model": "cnn", "framework": "tensorflow", "protocol": "grpc"})
        == 20
    )
    assert get("gateway_backend_up", {"backend": "tfs", "framework": "tensorflow", "endpoint": "b:1"}) == 1


async def test_backend_not_found_is_answered_in_the_clients_terms() -> None:
    """A backend's NOT_FOUND naming its own model ("double") reaches the client as its name ("cnn")."""
    upstream = GatewayError("model 'double' version '7' is not served", code=ErrorCode.NOT_FOUND)
    plane, _, _, _ = make_plane(FakeBackend(fail_with=upstream, metadata_error=upstream))
    plane._validate = False  # reach infer itself
    with pytest.raises(ModelNotFound) as info:
        await plane.infer(fp32_request("cnn", version="7"), RequestContext("grpc"))
    assert info.value.message == "model 'cnn' version '7' not found"
    with pytest.raises(ModelNotFound) as info:
        await plane.model_metadata("cnn", "7")
    assert "double" not in info.value.message


async def test_version_label_is_the_configured_route_version() -> None:
    """A pinned route labels with its version; an any-version route labels "" whatever the client asked."""
    routes = (Route("cnn", "", "jax", "double"), Route("cnn", "2", "jax", "double"))
    plane, _, backend, metrics = make_plane(routes=routes)
    await plane.infer(fp32_request("cnn", version="2"), RequestContext("grpc"))
    await plane.infer(fp32_request("cnn", version="7"), RequestContext("grpc"))
    assert requests_total(metrics, version="2") == 1
    assert requests_total(metrics, version="") == 1
    assert [c[2] for c in backend.calls if c[0] == "infer"] == ["2", "7"]  # versions forwarded as asked


async def test_backend_timeout_becomes_deadline_exceeded() -> None:
    """A backend slower than the backend's timeout_s fails with DEADLINE_EXCEEDED, and is counted so."""
    plane, _, _, metrics = make_plane(FakeBackend(delay_s=5.0), timeout_s=0.05)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert time.monotonic() - started < 1.0
    assert requests_total(metrics, code="DEADLINE_EXCEEDED") == 1
    assert metrics.registry.get_sample_value("gateway_requests_in_flight", {"protocol": "grpc"}) == 0


async def test_client_deadline_shorter_than_backend_timeout_wins() -> None:
    """The earlier of the client's deadline and the backend timeout bounds the call, and is passed on."""
    plane, _, backend, _ = make_plane(FakeBackend(), timeout_s=30.0, metadata_ttl_s=30.0)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))  # warm the metadata cache
    backend.delay_s = 5.0
    context = RequestContext("grpc", deadline=time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceeded):
        await plane.infer(fp32_request("cnn"), context)
    assert backend.timeouts[-1] <= 0.05


async def test_expired_client_deadline_fails_without_calling_backend() -> None:
    """A deadline already past is DEADLINE_EXCEEDED before any backend call."""
    plane, _, backend, _ = make_plane()
    with pytest.raises(DeadlineExceeded):
        await plane.infer(fp32_request("cnn"), RequestContext("grpc", deadline=time.monotonic() - 1))
    assert not backend.calls


async def test_backend_down_is_unavailable() -> None:
    """An unreachable backend gives UNAVAILABLE; its only endpoint is left to the health checks."""
    plane, cluster, _, metrics = make_plane(FakeBackend(down={"a:1"}))
    request = fp32_request("cnn")
    with pytest.raises(GatewayError) as info:
        await plane.infer(request, RequestContext("grpc"))
    assert info.value.code is ErrorCode.UNAVAILABLE
    assert cluster.endpoints[0].healthy  # the last healthy endpoint is never ejected
    assert any(e.healthy for e in cluster.endpoints)
    assert requests_total(metrics, code="UNAVAILABLE") == 1
    assert request.model_name == "cnn"


async def test_unreachable_endpoint_is_ejected_and_the_call_retried_elsewhere() -> None:
    """A call to an unreachable endpoint ejects it and is retried once on another, so the client succeeds."""
    backend = FakeBackend(down={"a:1"})
    plane, cluster, _, metrics = make_plane(backend, endpoints=("a:1", "b:2"))
    plane._validate = False  # reach infer itself
    cluster.endpoints[1].in_flight = 1  # with two endpoints p2c draws both: a:1, less loaded, goes first
    response = await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert response.outputs[0].data.tolist() == [[0, 2, 4]]
    assert [e.healthy for e in cluster.endpoints] == [False, True]
    assert [e.in_flight for e in cluster.endpoints] == [0, 1]  # both attempts released their count
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert [c[3] for c in backend.calls if c[0] == "infer"] == ["a:1", "b:2", "b:2"]
    assert requests_total(metrics) == 2


async def test_every_endpoint_unreachable_is_unavailable_after_one_retry() -> None:
    """With every endpoint down the request fails UNAVAILABLE after two attempts, never more."""
    backend = FakeBackend(down={"a:1", "b:2", "c:3"})
    plane, _, _, metrics = make_plane(backend, endpoints=("a:1", "b:2", "c:3"))
    plane._validate = False
    with pytest.raises(BackendUnavailable):
        await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    attempts = [c[3] for c in backend.calls if c[0] == "infer"]
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert requests_total(metrics, code="UNAVAILABLE") == 1


async def test_an_overloaded_endpoint_passes_the_call_to_another_without_ejection() -> None:
    """A replica shedding load (RESOURCE_EXHAUSTED) is not ejected; the call succeeds on another one."""
    backend = FakeBackend(overloaded={"a:1"})
    plane, cluster, _, metrics = make_plane(backend, endpoints=("a:1", "b:2"))
    plane._validate = False
    cluster.endpoints[1].in_flight = 1  # p2c sends the first attempt to a:1
    response = await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert response.outputs[0].data.tolist() == [[0, 2, 4]]
    assert [c[3] for c in backend.calls if c[0] == "infer"] == ["a:1", "b:2"]
    assert [e.healthy for e in cluster.endpoints] == [True, True]
    assert requests_total(metrics) == 1


async def test_every_endpoint_overloaded_is_resource_exhausted_after_one_retry() -> None:
    backend = FakeBackend(overloaded={"a:1", "b:2", "c:3"})
    plane, cluster, _, metrics = make_plane(backend, endpoints=("a:1", "b:2", "c:3"))
    plane._validate = False
    with pytest.raises(GatewayError) as info:
        await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert len([c for c in backend.calls if c[0] == "infer"]) == 2
    assert all(e.healthy for e in cluster.endpoints)
    assert requests_total(metrics, code="RESOURCE_EXHAUSTED") == 1


async def test_backend_error_is_counted_with_its_code() -> None:
    """A backend failure passes through unchanged and is counted under its ErrorCode name."""
    plane, _, _, metrics = make_plane(FakeBackend(fail_with=BackendError("backend 'jax' failed")))
    with pytest.raises(BackendError):
        await plane.infer(fp32_request("cnn"), RequestContext("rest"))
    assert requests_total(metrics, protocol="rest", code="BAD_GATEWAY") == 1


async def test_unexpected_exception_is_logged_and_opaque(caplog: pytest.LogCaptureFixture) -> None:
    """An unknown exception becomes INTERNAL "internal error"; its text is only in the log."""
    plane, _, _, metrics = make_plane(FakeBackend(fail_with=RuntimeError("secret detail")))
    with caplog.at_level(logging.ERROR), pytest.raises(GatewayError) as info:
        await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert info.value.code is ErrorCode.INTERNAL
    assert info.value.message == "internal error"
    assert "secret detail" in caplog.text
    assert requests_total(metrics, code="INTERNAL") == 1


@pytest.mark.parametrize(("deadline_in_s", "code"), [(10.0, "DEADLINE_EXCEEDED"), (None, "CANCELLED")])
async def test_cancelled_call_is_counted_as_deadline_or_cancelled(
    deadline_in_s: float | None, code: str
) -> None:
    """gRPC cancels the handler when the call's deadline passes: counted DEADLINE_EXCEEDED, not CANCELLED.
    A call cancelled before its deadline (or without one) is a client that went away."""
    clock = StepClock()
    plane, _, _, metrics = make_plane(FakeBackend(delay_s=60.0), clock=clock)
    deadline = None if deadline_in_s is None else clock.now + deadline_in_s
    call = asyncio.ensure_future(plane.infer(fp32_request("cnn"), RequestContext("grpc", deadline=deadline)))
    await asyncio.sleep(0.01)  # the call is waiting on the backend
    clock.now += 10.0  # the deadline, if any, has come: gRPC's timer cancels the handler
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert requests_total(metrics, code=code) == 1


async def test_a_retry_past_the_deadline_is_not_sent() -> None:
    """When the first endpoint failed after the deadline passed, the retry is DEADLINE_EXCEEDED at once
    (naming the backend, not the backend's model name) and no second call goes out."""
    now = [1000.0]

    class SlowlyDown(FakeBackend):
        async def infer(
            self, request: InferenceRequest, endpoint: str, timeout_s: float, **kwargs: Any
        ) -> InferenceResponse:
            now[0] += 10.0  # the attempt used more than the whole deadline, then failed
            return await super().infer(request, endpoint, timeout_s, **kwargs)

    backend = SlowlyDown(down={"a:1"})
    metrics = GatewayMetrics()
    cluster = Cluster("jax", backend, ("a:1", "b:2"), timeout_s=5.0, metrics=metrics, framework="jax")
    for endpoint in cluster.endpoints:
        endpoint.healthy = True
    cluster.endpoints[1].in_flight = 1  # p2c tries a:1 first
    plane = DataPlane(
        Router((Route("cnn", "", "jax", "double"),)), {"jax": cluster}, metrics, validate_requests=False,
        clock=lambda: now[0],
    )  # fmt: skip
    with pytest.raises(DeadlineExceeded, match="the deadline passed before backend 'jax' answered"):
        await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert [c[3] for c in backend.calls if c[0] == "infer"] == ["a:1"]
    assert requests_total(metrics, code="DEADLINE_EXCEEDED") == 1


async def test_each_route_hands_its_options_to_the_backend() -> None:
    """Two routes to one backend model differ only by their options: each call carries its route's."""
    stable = TFServingRouteOptions(version_label="stable")
    canary = TFServingRouteOptions(version_label="canary")
    routes = (
        Route("cnn", "stable", "jax", "double", stable),
        Route("cnn", "canary", "jax", "double", canary),
    )
    plane, _, backend, _ = make_plane(routes=routes)
    await plane.infer(fp32_request("cnn", version="canary"), RequestContext("grpc"))
    await plane.infer(fp32_request("cnn", version="stable"), RequestContext("grpc"))
    assert backend.options == [canary, stable]


def test_a_refusal_is_counted_under_the_route_its_version_picks() -> None:
    """A refused request for version "tfserving" is the tfserving route's (backend and framework), not the
    any-version route's: the framework comparison's error ratios depend on it."""
    routes = (Route("cnn", "", "jax", "double"), Route("cnn", "tfserving", "jax", "double"))
    plane, _, _, metrics = make_plane(routes=routes)
    context = RequestContext("grpc")
    plane.observe_rejected("cnn", context, InvalidRequest("bad"), "tfserving")
    assert context.version_label == "tfserving"
    assert requests_total(metrics, version="tfserving", code="INVALID_ARGUMENT") == 1
    assert requests_total(metrics, version="", code="INVALID_ARGUMENT") == 0
