"""V2Backend over gRPC against a real in-process grpc.aio server: calls and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from gateway.backends.v2 import V2Backend
from gateway.codecs.v2.protobuf import response_to_proto
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    PayloadTooLarge,
    Unimplemented,
)
from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc
from gateway.settings import V2BackendSettings
from gateway.types import InferenceRequest, InferenceResponse, Tensor
from tests.unit.backends.fake_server import FakeModelServicer


def settings(*endpoints: str) -> V2BackendSettings:
    return V2BackendSettings(
        kind="v2", protocol="grpc", endpoints=list(endpoints), health_check_timeout_s=0.5
    )


def request(model: str = "double") -> InferenceRequest:
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    return InferenceRequest(model, [Tensor("x", "FP32", x.shape, x)], id="req-1")


@pytest.fixture
async def backend(fake_server: tuple[FakeModelServicer, str]) -> AsyncIterator[tuple[V2Backend, str]]:
    _, address = fake_server
    client = V2Backend("jax", settings(address))
    try:
        yield client, address
    finally:
        await client.close()


async def test_infer_round_trip(backend: tuple[V2Backend, str]) -> None:
    """A request is encoded, sent over the persistent channel, and the response decoded."""
    client, address = backend
    response = await client.infer(request(), address, 5.0)
    assert response.model_name == "double"
    assert response.id == "req-1"
    assert response.outputs[0].data.tolist() == [[2, 4, 6], [8, 10, 12]]


async def test_metadata_config_and_readiness(backend: tuple[V2Backend, str]) -> None:
    """Metadata, batching (from the config), model and server readiness are read from the backend."""
    client, address = backend
    metadata = await client.model_metadata("double", "", address)
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", (-1, 3))]
    batching = await client.batching("double", "", address)
    assert batching.max_batch_size == 8
    assert await client.model_ready("double", "", address) is True
    assert await client.model_ready("other", "", address) is False
    assert await client.ready(address) is True


async def test_nothing_listening_is_unavailable_naming_backend(dead_address: str) -> None:
    """Connection refused maps to BackendUnavailable that names the backend and leaks no transport detail."""
    client = V2Backend("jax", settings(dead_address))
    try:
        with pytest.raises(BackendUnavailable) as info:
            await client.infer(request(), dead_address, 2.0)
        assert info.value.message == "backend 'jax' unavailable"
        assert info.value.code is ErrorCode.UNAVAILABLE
        assert await client.ready(dead_address) is False
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("model", "code", "message"),
    [
        ("invalid", ErrorCode.INVALID_ARGUMENT, "input 'x' must have 3 columns"),
        ("missing", ErrorCode.NOT_FOUND, "model 'missing' not found"),
        ("unavailable", ErrorCode.UNAVAILABLE, "backend 'jax' unavailable"),
        ("crash", ErrorCode.BAD_GATEWAY, "backend 'jax' failed (INTERNAL)"),
        ("garbage", ErrorCode.BAD_GATEWAY, "backend 'jax': unreadable inference response"),
    ],
)
async def test_upstream_errors_are_mapped(
    backend: tuple[V2Backend, str], model: str, code: ErrorCode, message: str
) -> None:
    """Refusals keep code and upstream message; internal failures become BackendError without details."""
    client, address = backend
    with pytest.raises(GatewayError) as info:
        await client.infer(request(model), address, 5.0)
    assert info.value.code is code
    assert info.value.message.startswith(message)
    assert "secret" not in info.value.message and "10.1.2.3" not in info.value.message


async def test_upstream_deadline_is_deadline_exceeded(backend: tuple[V2Backend, str]) -> None:
    """The timeout is sent as the gRPC deadline; expiry maps to DeadlineExceeded."""
    client, address = backend
    with pytest.raises(DeadlineExceeded, match="backend 'jax'"):
        await client.infer(request("slow"), address, 0.05)


async def test_unimplemented_keeps_its_class(backend: tuple[V2Backend, str]) -> None:
    """UNIMPLEMENTED upstream becomes Unimplemented, which the DataPlane recognises."""
    client, address = backend
    with pytest.raises(Unimplemented):
        await client.batching("other", "", address)


async def test_not_ready_server_probe_is_false(
    backend: tuple[V2Backend, str], fake_server: tuple[FakeModelServicer, str]
) -> None:
    """A server answering ready=false fails the probe."""
    client, address = backend
    fake_server[0].ready = False
    assert await client.ready(address) is False


async def test_one_channel_per_endpoint_reused(backend: tuple[V2Backend, str]) -> None:
    """Calls reuse the channel created at start: no per-request connection setup."""
    client, address = backend
    transport = client._transport
    channels = dict(transport._channels)  # type: ignore[attr-defined]
    for _ in range(3):
        await client.infer(request(), address, 5.0)
    assert transport._channels == channels  # type: ignore[attr-defined]
    assert list(channels) == [address]


class _BigAnswers(FakeModelServicer):
    """Answers every inference with 4096 FP32 values, whatever it was sent."""

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        y = np.zeros(4096, dtype=np.float32)
        return response_to_proto(InferenceResponse(request.model_name, [Tensor("y", "FP32", y.shape, y)]))


@pytest.mark.parametrize(
    ("limit", "server_limit", "rows", "error", "message"),
    [
        (1024, None, 2, BackendError, "backend 'jax' answered with a message over max_message_bytes"),
        (1024, None, 200, PayloadTooLarge, "request too large for backend 'jax'"),
        (1 << 20, 1024, 200, PayloadTooLarge, "request too large for backend 'jax'"),
    ],
    ids=["answer-over-our-limit", "request-over-our-limit", "request-over-backend-limit"],
)
async def test_message_size_limits_are_not_quota_errors(
    limit: int, server_limit: int | None, rows: int, error: type[GatewayError], message: str
) -> None:
    """gRPC's message size refusals become 502 (answer too big) or 413 (request too big), never 429."""
    options = [] if server_limit is None else [("grpc.max_receive_message_length", server_limit)]
    server = grpc.aio.server(options=options)
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_BigAnswers(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    client = V2Backend("jax", settings(address).model_copy(update={"max_message_bytes": limit}))
    try:
        x = np.zeros((rows, 3), dtype=np.float32)
        with pytest.raises(error) as info:
            await client.infer(InferenceRequest("big", [Tensor("x", "FP32", x.shape, x)]), address, 5.0)
        assert info.value.message == message
    finally:
        await client.close()
        await server.stop(None)


async def test_long_upstream_details_pass_as_the_real_error_clipped(backend: tuple[V2Backend, str]) -> None:
    """Details past gRPC's default 8 KiB metadata limit arrive as the backend's own refusal (not the
    channel's RESOURCE_EXHAUSTED, which would read as "overloaded"), bounded in length."""
    client, address = backend
    with pytest.raises(GatewayError) as info:
        await client.infer(request("verbose"), address, 5.0)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert info.value.message.startswith("input 'x': vvv") and len(info.value.message) < 4200


async def test_details_past_the_metadata_limit_are_a_backend_error(backend: tuple[V2Backend, str]) -> None:
    """Details even the raised limit refuses are the backend's fault (502), not load to shed (429)."""
    client, address = backend
    with pytest.raises(BackendError, match="status details over the metadata limit"):
        await client.infer(request("flood"), address, 5.0)
