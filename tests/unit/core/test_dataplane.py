"""DataPlane behaviour over a fake backend: routing, renaming, deadlines, failures, metrics."""

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
    Unimplemented,
)
from gateway.metrics import GatewayMetrics
from gateway.settings import TFServingRouteOptions
from gateway.types import Batching, InferenceRequest, InferenceResponse, RequestContext
from tests.unit.core.fakes import FakeBackend, fp32_request


def make_plane(
    backend: FakeBackend | None = None,
    *,
    routes: tuple[Route, ...] = (Route("cnn", "", "jax", "double"),),
    endpoints: tuple[str, ...] = ("a:1",),
    timeout_s: float = 30.0,
    metadata_ttl_s: float = 30.0,
) -> tuple[DataPlane, Cluster, FakeBackend, GatewayMetrics]:
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
    return DataPlane(Router(routes), {"jax": cluster}, metrics), cluster, backend, metrics


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


async def test_invalid_request_is_refused_before_the_backend() -> None:
    """A request that does not fit the metadata is INVALID_ARGUMENT and never reaches infer."""
    plane, _, backend, metrics = make_plane()
    with pytest.raises(InvalidRequest, match="input 'z'"):
        await plane.infer(fp32_request("cnn", name="z"), RequestContext("grpc"))
    assert [c[0] for c in backend.calls] == ["metadata"]
    assert requests_total(metrics, code="INVALID_ARGUMENT") == 1


async def test_metadata_is_cached_and_fetched_once_for_concurrent_requests() -> None:
    """Concurrent requests share one metadata fetch, and later ones reuse it within the TTL."""
    plane, _, backend, _ = make_plane(FakeBackend(delay_s=0.01))
    await asyncio.gather(*(plane.infer(fp32_request("cnn"), RequestContext("grpc")) for _ in range(5)))
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert [c[0] for c in backend.calls].count("metadata") == 1


async def test_metadata_ttl_zero_refetches() -> None:
    """With metadata_ttl_s 0 every request fetches fresh metadata."""
    plane, _, backend, _ = make_plane(metadata_ttl_s=0)
    for _ in range(2):
        await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert [c[0] for c in backend.calls].count("metadata") == 2


async def test_metadata_cache_does_not_grow_with_client_versions() -> None:
    """Versions named by clients (which the cache keys on) cannot grow the metadata cache without bound."""
    plane, _, backend, _ = make_plane(FakeBackend(metadata_error=Unimplemented("no metadata")))
    for i in range(1500):
        await plane.infer(fp32_request("cnn", version=f"v{i}"), RequestContext("grpc"))
    assert len(plane._metadata_cache) <= 1024
    await plane.infer(fp32_request("cnn", version="v1499"), RequestContext("grpc"))
    assert [c[0] for c in backend.calls].count("metadata") == 1500  # the newest entries still serve


async def test_backend_without_metadata_skips_validation() -> None:
    """A backend answering UNIMPLEMENTED for metadata still serves inference, unvalidated."""
    plane, _, _, _ = make_plane(FakeBackend(metadata_error=Unimplemented("no metadata")))
    response = await plane.infer(fp32_request("cnn", name="anything"), RequestContext("grpc"))
    assert response.model_name == "cnn"
    with pytest.raises(Unimplemented):
        await plane.model_metadata("cnn")


async def test_model_metadata_and_config_use_the_client_name() -> None:
    """Metadata and config come back under the client-facing model name."""
    plane, _, backend, _ = make_plane()
    assert (await plane.model_metadata("cnn")).name == "cnn"
    assert (await plane.model_config("cnn")).name == "cnn"
    assert ("batching", "double", "", "a:1") in backend.calls


async def test_model_ready_true_false_and_not_found() -> None:
    """model_ready: True when the backend says so, False when unreachable, ModelNotFound when unrouted."""
    plane, _, backend, _ = make_plane()
    assert await plane.model_ready("cnn") is True
    backend.down.add("a:1")
    assert await plane.model_ready("cnn") is False
    with pytest.raises(ModelNotFound):
        await plane.model_ready("nope")


async def test_model_ready_of_a_version_the_backend_does_not_know_is_not_found() -> None:
    """A routed model whose backend answers NOT_FOUND for the version is ModelNotFound in the client's
    terms (404, as the backend itself answers), not "not ready" (503)."""
    plane, _, _, _ = make_plane()
    with pytest.raises(ModelNotFound, match="model 'cnn' version '404' not found"):
        await plane.model_ready("cnn", "404")


async def test_server_readiness_is_serving_not_backend_health() -> None:
    """The gateway is ready while it serves (listeners up, not shutting down), whatever its backends'
    health: one backend down leaves the others' models ready, and each model's readiness is its own."""
    up, down = FakeBackend(), FakeBackend(down={"b:1"})
    metrics = GatewayMetrics()
    clusters = {
        "jax": Cluster("jax", up, ("a:1",), metrics=metrics),
        "tfs": Cluster("tfs", down, ("b:1",), metrics=metrics),
    }
    for cluster in clusters.values():
        await cluster.check_health()
    routes = (Route("cnn", "", "jax", "double"), Route("mlp", "", "tfs", "double"))
    plane = DataPlane(Router(routes), clusters, metrics)
    assert await plane.ready() is False  # listeners not up yet
    plane.start_serving()
    assert await plane.ready() is True and await plane.live() is True
    assert await plane.model_ready("cnn") is True
    assert await plane.model_ready("mlp") is False
    assert (await plane.infer(fp32_request("cnn"), RequestContext("grpc"))).outputs[0].data.tolist() == [
        [0, 2, 4]
    ]
    plane.stop_serving()
    assert await plane.ready() is False  # draining


async def test_server_metadata_names_the_gateway_and_extensions() -> None:
    """Server metadata advertises the gateway and the binary and model-configuration extensions."""
    plane, _, _, _ = make_plane()
    metadata = await plane.server_metadata()
    assert metadata.name == "serving-gateway"
    assert metadata.version
    assert metadata.extensions == ["binary_tensor_data", "model_configuration"]


class StepClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("deadline_in_s", "code"), [(10.0, "DEADLINE_EXCEEDED"), (None, "CANCELLED")])
async def test_cancelled_call_is_counted_as_deadline_or_cancelled(
    deadline_in_s: float | None, code: str
) -> None:
    """gRPC cancels the handler when the call's deadline passes: counted DEADLINE_EXCEEDED, not CANCELLED.
    A call cancelled before its deadline (or without one) is a client that went away."""
    clock = StepClock()
    backend = FakeBackend(delay_s=60.0)
    metrics = GatewayMetrics()
    cluster = Cluster(
        "jax", backend, ("a:1",), timeout_s=30.0, metadata_ttl_s=30.0, metrics=metrics, framework="jax"
    )
    cluster.endpoints[0].healthy = True
    plane = DataPlane(Router((Route("cnn", "", "jax", "double"),)), {"jax": cluster}, metrics, clock=clock)
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


async def test_a_backend_that_needs_metadata_gets_it_even_without_validation() -> None:
    """TF Serving's REST answers carry no datatypes: its backend decodes with the cached metadata."""
    backend = FakeBackend(needs_metadata=True)
    metrics = GatewayMetrics()
    cluster = Cluster("jax", backend, ("a:1",), timeout_s=5.0, metrics=metrics, framework="jax")
    cluster.endpoints[0].healthy = True
    plane = DataPlane(
        Router((Route("cnn", "", "jax", "double"),)), {"jax": cluster}, metrics, validate_requests=False
    )
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert [m.name if m else None for m in backend.metadata_given] == ["cnn", "cnn"]
    assert [c[0] for c in backend.calls].count("metadata") == 1  # fetched once, from the one cache


async def test_model_config_is_derived_from_metadata_and_batching() -> None:
    """The backend says only how it batches; the Triton-style config drops the batch dimension then."""
    plane, _, backend, _ = make_plane()
    backend.batches = Batching(8, (4, 8), 500)
    config = await plane.model_config("cnn")
    assert (config.name, config.max_batch_size, config.preferred_batch_sizes) == ("cnn", 8, [4, 8])
    assert config.max_queue_delay_microseconds == 500
    assert [t.shape for t in config.inputs] == [(3,)]


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


class GatedMetadata(FakeBackend):
    """Metadata answers wait for `gate` (a refresh stuck behind a busy model's queue)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked = 0

    async def model_metadata(self, name: str, version: str, endpoint: str, **kwargs: Any) -> Any:
        self.asked += 1
        await self.gate.wait()
        return await super().model_metadata(name, version, endpoint, **kwargs)


def _stale_plane(backend: FakeBackend) -> tuple[DataPlane, StepClock, GatewayMetrics]:
    clock = StepClock()
    metrics = GatewayMetrics()
    cluster = Cluster(
        "jax", backend, ("a:1",), timeout_s=30.0, metadata_ttl_s=30.0, metrics=metrics, framework="jax"
    )
    cluster.endpoints[0].healthy = True
    return (
        DataPlane(Router((Route("cnn", "", "jax", "double"),)), {"jax": cluster}, metrics, clock=clock),
        clock,
        metrics,
    )


def _metadata_calls(backend: FakeBackend) -> int:
    return [c[0] for c in backend.calls].count("metadata")


async def test_expired_metadata_serves_while_one_refresh_runs_in_the_background() -> None:
    """Past the TTL, requests are validated with the cached metadata and answered at once while a single
    refresh waits (as behind a busy TorchServe model's queue); when it lands, the entry is fresh again."""
    backend = GatedMetadata()
    plane, clock, _ = _stale_plane(backend)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    clock.now += 31.0
    backend.gate.clear()
    for _ in range(3):
        answer = await asyncio.wait_for(plane.infer(fp32_request("cnn"), RequestContext("grpc")), 1.0)
        assert answer.model_name == "cnn"
    with pytest.raises(InvalidRequest):  # the stale metadata still validates
        await asyncio.wait_for(plane.infer(fp32_request("cnn", name="z"), RequestContext("grpc")), 1.0)
    assert (await asyncio.wait_for(plane.model_metadata("cnn"), 1.0)).name == "cnn"
    assert backend.asked == 2  # the first fetch and one refresh, however many asked meanwhile
    backend.gate.set()
    await asyncio.sleep(0.01)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    assert backend.asked == 2  # refreshed: fresh again, nothing more fetched


async def test_a_failed_refresh_keeps_the_stale_metadata_and_retries_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refresh that fails keeps the cached metadata serving, logs once, and is tried again only after
    the retry interval, not on every request."""
    backend = FakeBackend()
    plane, clock, metrics = _stale_plane(backend)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    clock.now += 31.0
    backend.metadata_error = BackendError("backend 'fake' failed")
    with caplog.at_level(logging.WARNING, logger="gateway.core.dataplane"):
        for _ in range(3):
            await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
            await asyncio.sleep(0.01)
    assert _metadata_calls(backend) == 2
    assert sum("refreshing the metadata of model 'cnn' failed" in r.message for r in caplog.records) == 1
    assert requests_total(metrics, code="OK") == 4
    clock.now += 6.0  # past the retry interval
    backend.metadata_error = None
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    await asyncio.sleep(0.01)
    assert _metadata_calls(backend) == 3


async def test_a_refresh_that_finds_the_model_gone_drops_the_entry() -> None:
    """When the backend no longer has the model, the stale entry is dropped: the next request fetches
    (and meets the backend's NOT_FOUND) instead of being validated against metadata of a model now gone."""
    backend = FakeBackend()
    plane, clock, _ = _stale_plane(backend)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    clock.now += 31.0
    backend.metadata_error = ModelNotFound("double")
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))  # served stale; the refresh runs
    await asyncio.sleep(0.01)
    with pytest.raises(ModelNotFound):
        await plane.model_metadata("cnn")


async def test_stale_metadata_serves_for_a_bounded_time_only() -> None:
    """While refreshes keep failing, the stale metadata serves for at most five minutes past its TTL;
    then requests wait for a fetch again and get its error, and no entry is revived by a failure."""
    backend = FakeBackend()
    plane, clock, _ = _stale_plane(backend)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    backend.metadata_error = BackendError("backend 'fake' failed")
    clock.now += 31.0
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))  # stale; the refresh fails
    await asyncio.sleep(0.01)
    clock.now += 299.0  # 330 s after the fetch: past the TTL and five minutes of staleness
    for _ in range(2):
        with pytest.raises(BackendError):
            await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
        await asyncio.sleep(0.01)


async def test_without_a_cache_a_failed_fetch_claims_no_stale_metadata(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With metadata_ttl_s 0 a failed fetch is the request's error, and the log does not say cached
    metadata serves (none does)."""
    plane, _, backend, _ = make_plane(metadata_ttl_s=0)
    await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
    backend.metadata_error = BackendError("backend 'fake' failed")
    with caplog.at_level(logging.WARNING, logger="gateway.core.dataplane"):
        with pytest.raises(BackendError):
            await plane.infer(fp32_request("cnn"), RequestContext("grpc"))
        await asyncio.sleep(0.01)
    assert not any("cached metadata serves" in r.message for r in caplog.records)
