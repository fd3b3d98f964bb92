"""The DataPlane and model metadata over a fake backend: validation against it, its cache (shared fetches,
TTL, serving stale while refreshing), metadata and config answers, model and server readiness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.core.cluster import Cluster
from gateway.core.dataplane import DataPlane
from gateway.core.routing import Route, Router
from gateway.errors import (
    BackendError,
    InvalidRequest,
    ModelNotFound,
    Unimplemented,
)
from gateway.metrics import GatewayMetrics
from gateway.types import Batching, RequestContext
from tests.unit.core.fakes import FakeBackend, fp32_request
from tests.unit.core.planes import StepClock, make_plane, requests_total


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
    plane, _, _, metrics = make_plane(backend, clock=clock)
    return plane, clock, metrics


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
