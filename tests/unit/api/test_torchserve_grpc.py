"""TorchServe's gRPC inference API on the gRPC listener (`start_grpc_server(torchserve=True)`), called
over a real channel with the generated messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
from gateway.api.serving import bind_socket
from gateway.codecs.torchserve import payload
from gateway.proto.torchserve import inference_pb2 as pb
from tests.unit.api.test_torchserve_rest import BODY, SIGNATURE, TorchServer

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
PREDICTIONS = f"/{SERVICE}/Predictions"
PING = f"/{SERVICE}/Ping"


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, TorchServer]]:
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    fake = TorchServer()
    listener = await start_grpc_server(fake, "127.0.0.1", port, reuse_port=True, torchserve=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, fake
    finally:
        await stop_grpc_server(listener, 0)
        held.close()


async def _call(
    channel: grpc.aio.Channel, method: str, request: bytes, metadata: tuple[tuple[str, str], ...] = ()
) -> bytes:
    reply: bytes = await channel.unary_unary(method)(request, timeout=5, metadata=metadata)
    return reply


def _predictions(model: str = "m", version: str = "", **inputs: bytes) -> bytes:
    """A PredictionsRequest's bytes with `inputs` as its input map."""
    message = pb.PredictionsRequest(model_name=model, model_version=version, input=inputs)
    return message.SerializeToString()


@pytest.mark.parametrize("key", ["data", "body"])
async def test_predictions_answer_the_response_payload(
    served: tuple[grpc.aio.Channel, TorchServer], key: str
) -> None:
    """The payload under any one key is answered with the response payload, the version passed on, a
    bearer key accepted and ignored, and the call counted once with its wire sizes."""
    channel, fake = served
    request = pb.PredictionsRequest(model_name="m", model_version="2", input={key: BODY}).SerializeToString()
    metadata = (("authorization", "Bearer some-torchserve-key"),)
    data = await _call(channel, PREDICTIONS, request, metadata)
    [y] = payload.decode_response(pb.PredictionResponse.FromString(data).prediction)
    assert (y.name, y.shape) == ("y", (4,))
    assert [r.model_version for r in fake.requests] == ["2"]
    assert fake.rejected == [] and fake.transfers == [(len(request), len(data))]


async def test_metadata_query_answers_the_signature(served: tuple[grpc.aio.Channel, TorchServer]) -> None:
    """A metadata query's prediction is the signature's JSON; nothing is run or counted."""
    channel, fake = served
    data = await _call(channel, PREDICTIONS, _predictions(data=payload.encode_metadata_request()))
    assert json.loads(pb.PredictionResponse.FromString(data).prediction) == SIGNATURE
    assert fake.requests == [] and fake.rejected == [] and fake.transfers == []


@pytest.mark.parametrize(
    ("request_bytes", "code", "details", "rejected"),
    [
        (b"\x0a\x05ab", grpc.StatusCode.INVALID_ARGUMENT, "not a valid PredictionsRequest", ""),
        (_predictions(), grpc.StatusCode.INVALID_ARGUMENT, "exactly one input, the payload", "m"),
        (_predictions(a=BODY, b=BODY), grpc.StatusCode.INVALID_ARGUMENT, "got 2", "m"),
        (_predictions(data=b"junk"), grpc.StatusCode.INVALID_ARGUMENT, "request payload", "m"),
    ],
    ids=["unparsable", "no-input", "two-inputs", "bad-payload"],
)
async def test_refused_predictions_are_counted_once(
    served: tuple[grpc.aio.Channel, TorchServer],
    request_bytes: bytes,
    code: grpc.StatusCode,
    details: str,
    rejected: str,
) -> None:
    """A call refused before inference gets its status in our words and is counted once."""
    channel, fake = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, PREDICTIONS, request_bytes)
    assert info.value.code() == code and details in (info.value.details() or "")
    assert fake.rejected == [(rejected, "torchserve_grpc", code.name)]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("fail", "model", "code"),
    [(False, "nope", grpc.StatusCode.NOT_FOUND), (True, "m", grpc.StatusCode.UNAVAILABLE)],
    ids=["unknown-model", "backend-failure"],
)
async def test_errors_map_through_the_one_table(
    served: tuple[grpc.aio.Channel, TorchServer], fail: bool, model: str, code: grpc.StatusCode
) -> None:
    """An unknown model is NOT_FOUND; a backend's unreadable answer UNAVAILABLE (both as TorchServe's)."""
    channel, fake = served
    fake.fail = fail
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, PREDICTIONS, _predictions(model, data=BODY))
    assert info.value.code() == code


@pytest.mark.parametrize(("healthy", "word"), [(True, "Healthy"), (False, "Unhealthy")])
async def test_ping(served: tuple[grpc.aio.Channel, TorchServer], healthy: bool, word: str) -> None:
    """Ping answers OK with TorchServe's health JSON, Healthy while the server is ready."""
    channel, fake = served
    fake.healthy = healthy
    reply = pb.TorchServeHealthResponse.FromString(await _call(channel, PING, b""))
    assert json.loads(reply.health) == {"status": word}


async def test_stream_predictions_answers_one_message_then_ends(
    served: tuple[grpc.aio.Channel, TorchServer],
) -> None:
    """StreamPredictions streams the Predictions answer as its one message and ends, counted once."""
    channel, fake = served
    request = _predictions(data=BODY)
    replies = [r async for r in channel.unary_stream(f"/{SERVICE}/StreamPredictions")(request, timeout=5)]
    assert len(replies) == 1
    [y] = payload.decode_response(pb.PredictionResponse.FromString(replies[0]).prediction)
    assert (y.name, y.shape) == ("y", (4,))
    assert len(fake.requests) == 1 and fake.transfers == [(len(request), len(replies[0]))]


async def test_stream_predictions_errors_end_the_call_with_their_status(
    served: tuple[grpc.aio.Channel, TorchServer],
) -> None:
    """A refused or failed StreamPredictions ends with the status Predictions would have had, counted."""
    channel, fake = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in channel.unary_stream(f"/{SERVICE}/StreamPredictions")(_predictions(), timeout=5):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.rejected == [("m", "torchserve_grpc", "INVALID_ARGUMENT")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        stream = channel.unary_stream(f"/{SERVICE}/StreamPredictions")(
            _predictions("nope", data=BODY), timeout=5
        )
        async for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_sequence_streams_are_unimplemented(served: tuple[grpc.aio.Channel, TorchServer]) -> None:
    """StreamPredictions2 (sequence batching) is UNIMPLEMENTED, naming what to use instead."""
    channel, _ = served
    call = channel.stream_stream(f"/{SERVICE}/StreamPredictions2")(iter([_predictions(data=BODY)]), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "use Predictions or StreamPredictions" in (info.value.details() or "")


async def test_reflection_and_health_list_the_service(served: tuple[grpc.aio.Channel, TorchServer]) -> None:
    """Server reflection lists and resolves TorchServe's service; health reports it SERVING."""
    channel, _ = served
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ]
    answers = [answer async for answer in stub.ServerReflectionInfo(iter(asks))]
    assert SERVICE in {s.name for s in answers[0].list_services_response.service}
    assert answers[1].file_descriptor_response.file_descriptor_proto
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
