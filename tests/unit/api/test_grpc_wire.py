"""The gRPC listener on bytes that are not the message a method expects, and the wire sizes it counts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
from gateway.api.serving import bind_socket
from gateway.codecs.v2.protobuf import request_to_proto
from gateway.errors import InvalidRequest
from gateway.proto import inference_pb2 as pb
from gateway.types import InferenceRequest, InferenceResponse, RequestContext, Tensor
from tests.unit.api.fakes import FakeServer

METHODS = {
    "ServerLive": "ServerLiveRequest",
    "ServerReady": "ServerReadyRequest",
    "ModelReady": "ModelReadyRequest",
    "ServerMetadata": "ServerMetadataRequest",
    "ModelMetadata": "ModelMetadataRequest",
    "ModelInfer": "ModelInferRequest",
    "ModelConfig": "ModelConfigRequest",
}
# Bytes no request message parses from: a truncated length-delimited field, a length past the end, an
# invalid wire type (7), and invalid UTF-8 in field 1 (a `string` in every request that has fields; the
# empty requests keep it as an unknown field, which is valid).
UNPARSABLE = {
    "truncated": b"\x0a\x05ab",
    "length-past-end": b"\x0a\xff\xff\xff\xff\x0f",
    "bad-wire-type": b"\x0f\x01",
    "invalid-utf8": b"\x0a\x02\xff\xfe",
}


def _valid_request(request_id: str = "") -> bytes:
    x = np.arange(4, dtype=np.float32)
    return request_to_proto(
        InferenceRequest("m", [Tensor("x", "FP32", x.shape, x)], id=request_id)
    ).SerializeToString()


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, FakeServer]]:
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    fake = FakeServer()
    listener = await start_grpc_server(fake, "127.0.0.1", port, reuse_port=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, fake
    finally:
        await stop_grpc_server(listener, 0)
        held.close()


def _raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    return channel.unary_unary(f"/inference.GRPCInferenceService/{method}")


EMPTY_REQUESTS = ("ServerLive", "ServerReady", "ServerMetadata")
CASES = [
    (method, payload)
    for method in METHODS
    for payload in UNPARSABLE
    if not (payload == "invalid-utf8" and method in EMPTY_REQUESTS)
]


@pytest.mark.parametrize(("method", "payload"), CASES)
async def test_unparsable_request_is_invalid_argument_in_our_words(
    served: tuple[grpc.aio.Channel, FakeServer], method: str, payload: str
) -> None:
    """Bytes that are not the method's request message: INVALID_ARGUMENT naming the message type, no
    Python class, for every method."""
    channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _raw(channel, method)(UNPARSABLE[payload], timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == f"request is not a valid {METHODS[method]}"


async def test_unparsable_infer_request_is_counted_as_rejected(
    served: tuple[grpc.aio.Channel, FakeServer],
) -> None:
    """An unparsable ModelInfer is counted like any refusal (no model name to give it), and never served."""
    channel, fake = served
    with pytest.raises(grpc.aio.AioRpcError):
        await _raw(channel, "ModelInfer")(UNPARSABLE["invalid-utf8"], timeout=5)
    assert fake.rejected == [("", "grpc", "INVALID_ARGUMENT")]
    assert not fake.called.is_set()


async def test_unparsable_stream_message_is_answered_and_the_stream_goes_on(
    served: tuple[grpc.aio.Channel, FakeServer],
) -> None:
    """On ModelStreamInfer a message that does not parse gets an error_message answer; the valid messages
    around it are still answered and the stream ends OK."""
    channel, fake = served
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")(timeout=5)
    for message in (_valid_request("a"), UNPARSABLE["truncated"], _valid_request("b")):
        await call.write(message)
    await call.done_writing()
    replies = [pb.ModelStreamInferResponse.FromString(raw) async for raw in call]
    assert await call.code() == grpc.StatusCode.OK
    errors = [r.error_message for r in replies if r.error_message]
    assert errors == ["request is not a valid ModelInferRequest"]
    assert sorted(r.infer_response.id for r in replies if not r.error_message) == ["a", "b"]
    assert fake.rejected == [("", "grpc", "INVALID_ARGUMENT")]


async def test_byte_counters_get_the_wire_sizes(served: tuple[grpc.aio.Channel, FakeServer]) -> None:
    """The sizes reported for a unary call are those of the message received and the one sent."""
    channel, fake = served
    request = _valid_request("sized")
    reply = await _raw(channel, "ModelInfer")(request, timeout=5)
    assert pb.ModelInferResponse.FromString(reply).id == "sized"
    assert fake.transfers == [(len(request), len(reply))]


@pytest.mark.parametrize("char", ["x", "é", "\N{GRINNING FACE}"])
async def test_status_details_are_bounded_in_encoded_bytes(char: str) -> None:
    """An error message of 5000 characters, ASCII or not, arrives as the real error with details of at
    most 2 KiB of UTF-8, not as RESOURCE_EXHAUSTED from the client's metadata limit (gRPC percent-encodes
    every non-ASCII byte of the details)."""

    class Refusing(FakeServer):
        async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
            raise InvalidRequest(f"input '{char * 5000}' is refused")

    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    listener = await start_grpc_server(Refusing(), "127.0.0.1", port, reuse_port=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _raw(channel, "ModelInfer")(_valid_request(), timeout=5)
    finally:
        await stop_grpc_server(listener, 0)
        held.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert details.startswith("input '" + char) and len(details.encode()) <= 2048 + 64
