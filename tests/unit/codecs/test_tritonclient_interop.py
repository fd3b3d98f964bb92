"""Cross-checks with tritonclient 2.73: its bodies and messages decode with our codecs, and ours with it."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import _utils as triton_grpc_utils
from tritonclient.grpc import model_config_pb2, service_pb2

from gateway.codecs.v2.protobuf import (
    model_config_to_proto,
    model_metadata_to_proto,
    request_from_proto,
    request_to_proto,
    response_to_proto,
)
from gateway.codecs.v2.rest import decode_infer_request, encode_infer_response
from gateway.proto import inference_pb2 as pb
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    RequestedOutput,
    Tensor,
    TensorMetadata,
)
from tests.unit.codecs import JSON_DATATYPES, SAMPLES

DATATYPES = list(SAMPLES)


def client_array(datatype: str) -> np.ndarray:
    """The sample as tritonclient wants it (BF16 as ml_dtypes.bfloat16)."""
    sample = SAMPLES[datatype]
    return sample.view(ml_dtypes.bfloat16) if datatype == "BF16" else sample


def wire_bytes(array: np.ndarray, datatype: str) -> Any:
    """A comparable form of tensor data: the raw bytes, or the element list for BYTES."""
    if datatype == "BYTES":
        return [item if isinstance(item, bytes) else str(item).encode() for item in array.ravel()]
    if datatype == "BF16":
        array = array.view(np.uint16)
    return array.astype(SAMPLES[datatype].dtype).tobytes()


def our_tensor(name: str, datatype: str) -> Tensor:
    sample = SAMPLES[datatype]
    return Tensor(name, datatype, sample.shape, sample)


# --- HTTP ----------------------------------------------------------------------------------------


def test_tritonclient_http_helpers_exist() -> None:
    """The installed tritonclient offers the body helpers these tests rely on."""
    assert callable(triton_http.InferenceServerClient.generate_request_body)
    assert callable(triton_http.InferenceServerClient.parse_response_body)


@pytest.mark.parametrize(
    ("datatype", "binary"),
    [(t, True) for t in DATATYPES] + [(t, False) for t in JSON_DATATYPES],
    ids=[f"{t}-binary" for t in DATATYPES] + [f"{t}-json" for t in JSON_DATATYPES],
)
def test_tritonclient_http_request_decodes(datatype: str, binary: bool) -> None:
    """A body from tritonclient.http generate_request_body decodes with decode_infer_request."""
    infer_input = triton_http.InferInput("x", [2, 3], datatype)
    infer_input.set_data_from_numpy(client_array(datatype), binary_data=binary)
    outputs = [triton_http.InferRequestedOutput("y", binary_data=True)]
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [infer_input], outputs=outputs, request_id="tc-1"
    )
    request = decode_infer_request(body, header_length, "m")
    assert request.id == "tc-1"
    assert request.outputs == [RequestedOutput("y", {"binary_data": True})]
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 3))
    assert wire_bytes(tensor.data, datatype) == wire_bytes(SAMPLES[datatype], datatype)


def test_tritonclient_http_mixed_request() -> None:
    """A tritonclient body mixing JSON and binary inputs decodes in order."""
    inputs = []
    for name, datatype, binary in [("a", "FP32", True), ("b", "BYTES", False), ("c", "BF16", True)]:
        infer_input = triton_http.InferInput(name, [2, 3], datatype)
        infer_input.set_data_from_numpy(client_array(datatype), binary_data=binary)
        inputs.append(infer_input)
    body, header_length = triton_http.InferenceServerClient.generate_request_body(inputs)
    request = decode_infer_request(body, header_length, "m")
    for tensor in request.inputs:
        assert wire_bytes(tensor.data, tensor.datatype) == wire_bytes(
            SAMPLES[tensor.datatype], tensor.datatype
        )


@pytest.mark.parametrize(
    ("datatype", "binary"),
    [(t, True) for t in DATATYPES] + [(t, False) for t in JSON_DATATYPES],
    ids=[f"{t}-binary" for t in DATATYPES] + [f"{t}-json" for t in JSON_DATATYPES],
)
def test_response_parses_with_tritonclient_http(datatype: str, binary: bool) -> None:
    """Our REST response parses with tritonclient.http parse_response_body, in binary and JSON."""
    request = InferenceRequest("m", [], id="r9", outputs=[RequestedOutput("y", {"binary_data": binary})])
    body, header_length = encode_infer_response(
        InferenceResponse("m", [our_tensor("y", datatype)], "1"), request
    )
    result = triton_http.InferenceServerClient.parse_response_body(body, header_length=header_length)
    assert result.get_response()["id"] == "r9"
    array = result.as_numpy("y")
    assert array.shape == (2, 3)
    assert wire_bytes(array, datatype) == wire_bytes(SAMPLES[datatype], datatype)


# --- gRPC ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DATATYPES, ids=DATATYPES)
def test_tritonclient_grpc_request_decodes(datatype: str) -> None:
    """A ModelInferRequest built by tritonclient.grpc decodes with request_from_proto."""
    infer_input = triton_grpc.InferInput("x", [2, 3], datatype)
    infer_input.set_data_from_numpy(client_array(datatype))
    outputs = [triton_grpc.InferRequestedOutput("y")]
    theirs = triton_grpc_utils._get_inference_request(
        "m", [infer_input], "2", "g-1", outputs, 0, False, False, 0, None, {"custom": 7}
    )
    request = request_from_proto(pb.ModelInferRequest.FromString(theirs.SerializeToString()))
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "g-1")
    assert request.parameters == {"custom": 7}
    assert [o.name for o in request.outputs or []] == ["y"]
    tensor = request.inputs[0]
    assert wire_bytes(tensor.data, datatype) == wire_bytes(SAMPLES[datatype], datatype)


@pytest.mark.parametrize("datatype", DATATYPES, ids=DATATYPES)
def test_our_grpc_messages_decode_with_triton_stubs(datatype: str) -> None:
    """Our request and response bytes parse with Triton's service_pb2, and InferResult reads the outputs."""
    request = InferenceRequest("m", [our_tensor("x", datatype)], "1", "id", parameters={"priority": 3})
    theirs = service_pb2.ModelInferRequest.FromString(request_to_proto(request).SerializeToString())
    assert (theirs.model_name, theirs.inputs[0].datatype, list(theirs.inputs[0].shape)) == (
        "m",
        datatype,
        [2, 3],
    )
    assert theirs.parameters["priority"].int64_param == 3
    response = InferenceResponse("m", [our_tensor("y", datatype)], "1", "id")
    result = triton_grpc.InferResult(
        service_pb2.ModelInferResponse.FromString(response_to_proto(response).SerializeToString())
    )
    assert wire_bytes(result.as_numpy("y"), datatype) == wire_bytes(SAMPLES[datatype], datatype)


def test_model_metadata_and_config_decode_with_triton_stubs() -> None:
    """Our ModelMetadataResponse and ModelConfig parse with Triton's stubs field for field."""
    metadata = ModelMetadata("m", "jax_xla", [TensorMetadata("x", "FP32", (-1, 4))], [], ["1"])
    meta = service_pb2.ModelMetadataResponse.FromString(model_metadata_to_proto(metadata).SerializeToString())
    assert (meta.name, list(meta.versions), meta.platform) == ("m", ["1"], "jax_xla")
    assert (meta.inputs[0].name, meta.inputs[0].datatype, list(meta.inputs[0].shape)) == (
        "x",
        "FP32",
        [-1, 4],
    )
    config = ModelConfig(
        "m",
        "jax_xla",
        16,
        [TensorMetadata("x", "BF16", (4,))],
        [TensorMetadata("y", "BYTES", (1,))],
        backend="jax",
        max_queue_delay_microseconds=500,
        preferred_batch_sizes=[8],
    )
    wire = pb.ModelConfigResponse(config=model_config_to_proto(config)).SerializeToString()
    theirs = service_pb2.ModelConfigResponse.FromString(wire).config
    assert isinstance(theirs, model_config_pb2.ModelConfig)
    assert (theirs.name, theirs.platform, theirs.backend, theirs.max_batch_size) == (
        "m",
        "jax_xla",
        "jax",
        16,
    )
    assert model_config_pb2.DataType.Name(theirs.input[0].data_type) == "TYPE_BF16"
    assert model_config_pb2.DataType.Name(theirs.output[0].data_type) == "TYPE_STRING"
    assert list(theirs.input[0].dims) == [4]
    assert theirs.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(theirs.dynamic_batching.preferred_batch_size) == [8]
