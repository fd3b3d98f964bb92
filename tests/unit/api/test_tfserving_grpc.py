"""TF Serving's gRPC services on the gRPC listener (`start_grpc_server(tfserving=True)`), called over a
real channel."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.api.grpc import tfserving as tfserving_api
from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
from gateway.api.serving import bind_socket
from gateway.codecs.tfserving.tensor_proto import tensor_from_proto, tensor_to_proto
from gateway.proto.tfserving.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)
from gateway.types import Tensor
from tests.unit.api.test_tfserving_rest import TFServer

PREDICTION = "/tensorflow.serving.PredictionService/"
MODEL = "/tensorflow.serving.ModelService/"


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, TFServer]]:
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    fake = TFServer()
    listener = await start_grpc_server(fake, "127.0.0.1", port, reuse_port=True, tfserving=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, fake
    finally:
        await stop_grpc_server(listener, 0)
        held.close()


async def _call(channel: grpc.aio.Channel, method: str, request: bytes) -> bytes:
    reply: bytes = await channel.unary_unary(method)(request, timeout=5)
    return reply


def _predict(model: str = "m", signature: str = "") -> bytes:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    message.model_spec.signature_name = signature
    x = np.arange(2, dtype=np.float32)
    tensor_to_proto(Tensor("x", "FP32", x.shape, x), message.inputs["x"])
    return message.SerializeToString()


async def test_predict_replies_with_typed_fields(served: tuple[grpc.aio.Channel, TFServer]) -> None:
    """Predict answers typed float_val (TF Serving's default), names the signature, counts its sizes."""
    channel, fake = served
    request = _predict(signature="serving_default")
    data = await _call(channel, PREDICTION + "Predict", request)
    reply = predict_pb2.PredictResponse.FromString(data)
    assert list(reply.outputs["y"].float_val) == [0.0] * 4 and not reply.outputs["y"].tensor_content
    assert tensor_from_proto("y", reply.outputs["y"]).shape == (4,)
    assert (reply.model_spec.name, reply.model_spec.signature_name) == ("m", "serving_default")
    assert fake.transfers == [(len(request), len(data))]


@pytest.mark.parametrize(
    ("request_bytes", "code", "details", "rejected"),
    [
        (b"\x0a\x05ab", grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid PredictRequest", ""),
        (_predict(signature="other"), grpc.StatusCode.FAILED_PRECONDITION, 'key "other" not found', "m"),
        (_predict(model=""), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec", ""),
    ],
    ids=["unparsable", "unknown-signature", "no-model"],
)
async def test_refused_predict_is_counted_once(
    served: tuple[grpc.aio.Channel, TFServer],
    request_bytes: bytes,
    code: grpc.StatusCode,
    details: str,
    rejected: str,
) -> None:
    """A Predict refused before inference gets its status in our words and is counted once."""
    channel, fake = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, PREDICTION + "Predict", request_bytes)
    assert info.value.code() == code and details in (info.value.details() or "")
    assert fake.rejected == [(rejected, "tfserving_grpc", code.name)]


async def test_unexpected_failure_before_inference_is_counted_once(
    served: tuple[grpc.aio.Channel, TFServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no code expects while decoding is INTERNAL, in opaque words, and counted once."""
    channel, fake = served

    def broken(message: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(tfserving_api, "request_from_predict", broken)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, PREDICTION + "Predict", _predict())
    assert info.value.code() == grpc.StatusCode.INTERNAL and info.value.details() == "internal error"
    assert fake.rejected == [("m", "tfserving_grpc", "INTERNAL")]


async def test_answer_that_cannot_be_written_is_internal(served: tuple[grpc.aio.Channel, TFServer]) -> None:
    """A server's answer no TensorProto can hold (a BYTES element that is a number) is the gateway's
    INTERNAL error, not the client's INVALID_ARGUMENT; no outputs at all is a plain answer."""
    channel, fake = served
    fake.answer = [Tensor("y", "BYTES", (1,), np.array([7], dtype=object))]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, PREDICTION + "Predict", _predict())
    assert info.value.code() == grpc.StatusCode.INTERNAL and info.value.details() == "internal error"
    fake.answer = []
    reply = predict_pb2.PredictResponse.FromString(await _call(channel, PREDICTION + "Predict", _predict()))
    assert not reply.outputs and reply.model_spec.name == "m"


async def test_unknown_model_is_not_found(served: tuple[grpc.aio.Channel, TFServer]) -> None:
    """Predict, GetModelMetadata and GetModelStatus of an unknown model are NOT_FOUND."""
    channel, _ = served
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata.model_spec.name = "nope"
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    calls = [
        (PREDICTION + "Predict", _predict("nope")),
        (PREDICTION + "GetModelMetadata", metadata.SerializeToString()),
        (MODEL + "GetModelStatus", status.SerializeToString()),
    ]
    for method, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _call(channel, method, request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, method


async def test_metadata_needs_signature_def_field(served: tuple[grpc.aio.Channel, TFServer]) -> None:
    """GetModelMetadata asks for `signature_def` (else INVALID_ARGUMENT, as TF Serving) and gets it."""
    channel, _ = served
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "m"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, PREDICTION + "GetModelMetadata", request.SerializeToString())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request.metadata_field.append("signature_def")
    reply = get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        await _call(channel, PREDICTION + "GetModelMetadata", request.SerializeToString())
    )
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signatures)
    assert list(signatures.signature_def["serving_default"].inputs) == ["x"]


async def test_status_by_label(served: tuple[grpc.aio.Channel, TFServer]) -> None:
    """GetModelStatus takes a version label, asks the server about that label, reports it AVAILABLE."""
    channel, fake = served
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    request.model_spec.version_label = "stable"
    reply = get_model_status_pb2.GetModelStatusResponse.FromString(
        await _call(channel, MODEL + "GetModelStatus", request.SerializeToString())
    )
    assert [s.state for s in reply.model_version_status] == [
        get_model_status_pb2.ModelVersionStatus.AVAILABLE
    ]
    assert fake.asked == [("m", "stable"), ("m", "stable")]  # readiness, then the versions it lists


@pytest.mark.parametrize(
    "method",
    [
        PREDICTION + "Classify",
        PREDICTION + "Regress",
        PREDICTION + "MultiInference",
        MODEL + "HandleReloadConfigRequest",
    ],
)
async def test_other_methods_are_unimplemented(
    served: tuple[grpc.aio.Channel, TFServer], method: str
) -> None:
    """The tf.Example methods and config reloads are UNIMPLEMENTED, with a pointer to Predict."""
    channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(channel, method, b"")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "use Predict" in (info.value.details() or "")


async def test_reflection_and_health_list_the_services(served: tuple[grpc.aio.Channel, TFServer]) -> None:
    """Server reflection lists both TF Serving services (and resolves them); health reports them."""
    channel, _ = served
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tensorflow.serving.PredictionService"),
    ]
    answers = [answer async for answer in stub.ServerReflectionInfo(iter(asks))]
    listed = {s.name for s in answers[0].list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= listed
    assert answers[1].file_descriptor_response.file_descriptor_proto
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="tensorflow.serving.ModelService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
