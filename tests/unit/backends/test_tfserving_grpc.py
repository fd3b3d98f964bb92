"""TFServingBackend over gRPC against an in-process server built on the OFFICIAL tensorflow-serving-api
stubs: the generated private protos are wire-identical, route options reach the ModelSpec, replies in
typed fields decode, and errors map at the one boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from gateway.backends.tfserving import TFServingBackend  # noqa: E402
from gateway.errors import BackendError, ErrorCode, GatewayError, InvalidRequest  # noqa: E402
from gateway.settings import TFServingBackendSettings, TFServingRouteOptions  # noqa: E402
from gateway.types import InferenceRequest, RequestedOutput, Tensor  # noqa: E402


class OfficialServer(
    prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer
):  # type: ignore[misc]
    """Model "double" (version 1, label "stable"): y = 2x, z = x + 1; answers in typed float_val, as
    TF Serving does by default. Records every ModelSpec it is sent."""

    def __init__(self) -> None:
        self.specs: list[Any] = []
        self.filters: list[list[str]] = []

    async def _known(self, spec: Any, context: Any) -> None:
        self.specs.append(spec)
        if spec.name != "double":
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )

    async def Predict(self, request: Any, context: Any) -> Any:
        await self._known(request.model_spec, context)
        self.filters.append(list(request.output_filter))
        x = tf.make_ndarray(request.inputs["x"])
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = "double"
        reply.model_spec.version.value = 1
        reply.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        for name, value in (("y", x * 2), ("z", x + 1)):
            if request.output_filter and name not in request.output_filter:
                continue
            proto = reply.outputs[name]
            proto.dtype = 1  # DT_FLOAT
            for size in value.shape:
                proto.tensor_shape.dim.add().size = size
            proto.float_val.extend(value.ravel().tolist())
        return reply

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:
        await self._known(request.model_spec, context)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        # "other" has only output z: metadata for it must differ from the default signature's.
        for signature, outputs in (("serving_default", ["y", "z"]), ("other", ["z"])):
            sig = signatures.signature_def[signature]
            sig.method_name = "tensorflow/serving/predict"
            for side, names in ((sig.inputs, ["x"]), (sig.outputs, outputs)):
                for name in names:
                    side[name].name = f"{name}:0"
                    side[name].dtype = 1
                    side[name].tensor_shape.dim.add().size = -1
                    side[name].tensor_shape.dim.add().size = 3
        reply = get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = "double"
        reply.model_spec.version.value = 1
        reply.metadata["signature_def"].Pack(signatures)
        return reply

    async def GetModelStatus(self, request: Any, context: Any) -> Any:
        if not request.model_spec.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        await self._known(request.model_spec, context)
        reply = get_model_status_pb2.GetModelStatusResponse()
        status = reply.model_version_status.add()
        status.version = 1
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return reply


@pytest.fixture
async def served() -> AsyncIterator[tuple[OfficialServer, TFServingBackend, str]]:
    server = grpc.aio.server()
    servicer = OfficialServer()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    backend = TFServingBackend(
        "tfs", TFServingBackendSettings(kind="tfserving", endpoints=[address], health_check_timeout_s=1.0)
    )
    try:
        yield servicer, backend, address
    finally:
        await backend.close()
        await server.stop(None)


def request(version: str = "", outputs: list[str] | None = None) -> InferenceRequest:
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    wanted = [RequestedOutput(n) for n in outputs] if outputs else None
    return InferenceRequest(
        "double", [Tensor("x", "FP32", x.shape, x)], model_version=version, outputs=wanted, id="r1"
    )


async def test_predict_round_trip_with_typed_reply(
    served: tuple[OfficialServer, TFServingBackend, str],
) -> None:
    """tensor_content out, float_val back: both decode; outputs by name, version from the reply."""
    _, backend, address = served
    response = await backend.infer(request(), address, 5.0)
    assert [t.name for t in response.outputs] == ["y", "z"]
    assert response.outputs[0].data.tolist() == [[2, 4, 6], [8, 10, 12]]
    assert (response.model_version, response.id) == ("1", "r1")


async def test_route_options_reach_the_model_spec(
    served: tuple[OfficialServer, TFServingBackend, str],
) -> None:
    """signature_name, version_label and outputs come from the route; a client's numeric version is sent
    as a number, a label-like one as a label."""
    servicer, backend, address = served
    options = TFServingRouteOptions(signature_name="other", version_label="stable", outputs=("z",))
    response = await backend.infer(request(version="stable"), address, 5.0, options=options)
    assert [t.name for t in response.outputs] == ["z"]
    spec = servicer.specs[-1]
    assert (spec.signature_name, spec.WhichOneof("version_choice"), spec.version_label) == (
        "other",
        "version_label",
        "stable",
    )
    assert servicer.filters[-1] == ["z"]
    await backend.infer(request(version="1", outputs=["y"]), address, 5.0)
    assert servicer.specs[-1].version.value == 1 and servicer.filters[-1] == ["y"]
    await backend.infer(request(version="canary"), address, 5.0)
    assert servicer.specs[-1].version_label == "canary"
    with pytest.raises(InvalidRequest, match="neither a TF Serving version nor a label"):
        await backend.infer(request(version="1.2"), address, 5.0)


async def test_metadata_readiness_and_health(served: tuple[OfficialServer, TFServingBackend, str]) -> None:
    """The route's signature becomes OIP metadata; GetModelStatus gives readiness; any answer is health."""
    _, backend, address = served
    metadata = await backend.model_metadata("double", "", address)
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", (-1, 3))]
    assert [t.name for t in metadata.outputs] == ["y", "z"]
    assert metadata.versions == ["1"]
    other = await backend.model_metadata(
        "double", "", address, options=TFServingRouteOptions(signature_name="other")
    )
    assert other.inputs == metadata.inputs and [t.name for t in other.outputs] == ["z"]
    with pytest.raises(BackendError, match="no signature 'nope'"):
        await backend.model_metadata(
            "double", "", address, options=TFServingRouteOptions(signature_name="nope")
        )
    assert await backend.model_ready("double", "", address) is True
    assert await backend.model_ready("double", "1", address) is True
    assert await backend.model_ready("double", "2", address) is False
    assert await backend.ready(address) is True
    assert (await backend.batching("double", "", address)).max_batch_size == 0


async def test_upstream_errors_are_mapped(served: tuple[OfficialServer, TFServingBackend, str]) -> None:
    """NOT_FOUND passes with its code; an unreachable endpoint is not ready."""
    _, backend, address = served
    with pytest.raises(GatewayError) as caught:
        await backend.infer(InferenceRequest("nope", request().inputs), address, 5.0)
    assert caught.value.code is ErrorCode.NOT_FOUND
    dead = TFServingBackend(
        "tfs",
        TFServingBackendSettings(kind="tfserving", endpoints=["127.0.0.1:1"], health_check_timeout_s=1.0),
    )
    try:
        assert await dead.ready("127.0.0.1:1") is False
    finally:
        await dead.close()


def test_private_protos_match_the_official_descriptors() -> None:
    """Every generated file is the official one field for field; only its name and imports moved."""
    import importlib

    from google.protobuf import descriptor_pb2

    from gateway.proto.tfserving import POOL

    for module in (
        "predict_pb2",
        "get_model_metadata_pb2",
        "get_model_status_pb2",
        "model_service_pb2",
        "prediction_service_pb2",
    ):
        official = importlib.import_module(f"tensorflow_serving.apis.{module}").DESCRIPTOR
        ours = importlib.import_module(f"gateway.proto.tfserving.tensorflow_serving.apis.{module}").DESCRIPTOR
        assert POOL.FindFileByName(ours.name) is ours  # registered in the private pool
        theirs_proto, ours_proto = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
        official.CopyToProto(theirs_proto)
        ours.CopyToProto(ours_proto)
        ours_proto.name = theirs_proto.name
        ours_proto.dependency[:] = [d.removeprefix("gateway/proto/tfserving/") for d in ours_proto.dependency]
        assert ours_proto == theirs_proto, module
