"""gRPC messages <-> internal types: raw and typed contents, parameters, metadata and config."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.codecs.v2.protobuf import (
    model_config_from_proto,
    model_config_to_proto,
    model_metadata_from_proto,
    model_metadata_to_proto,
    parameters_from_proto,
    parameters_to_proto,
    request_from_proto,
    request_to_proto,
    request_to_wire,
    response_from_proto,
    response_to_proto,
    server_metadata_to_proto,
)
from gateway.errors import BackendError, InvalidRequest
from gateway.proto import inference_pb2 as pb
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorMetadata,
)
from tests.unit.codecs import SAMPLES, assert_tensor
from tests.unit.codecs import sample_tensor as tensor

TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def typed_input(
    name: str, datatype: str, shape: list[int], values: list[Any]
) -> pb.ModelInferRequest.InferInputTensor:
    entry = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    getattr(entry.contents, TYPED_FIELDS[datatype]).extend(values)
    return entry


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_request_raw_round_trip(datatype: str) -> None:
    """Every datatype goes through request_to_proto (raw) -> wire bytes -> request_from_proto unchanged."""
    request = InferenceRequest("m", [tensor("x", datatype)], "3", "id-1")
    msg = request_to_proto(request)
    assert len(msg.raw_input_contents) == 1 and not msg.inputs[0].HasField("contents")
    decoded = request_from_proto(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "3", "id-1")
    assert_tensor(decoded.inputs[0], tensor("x", datatype))


@pytest.mark.parametrize("datatype", list(TYPED_FIELDS), ids=list(TYPED_FIELDS))
def test_request_typed_contents(datatype: str) -> None:
    """Every datatype with a typed field decodes from `contents` (small ints widened)."""
    sample = SAMPLES[datatype]
    msg = pb.ModelInferRequest(
        model_name="m", inputs=[typed_input("x", datatype, [2, 3], sample.ravel().tolist())]
    )
    assert_tensor(request_from_proto(msg).inputs[0], tensor("x", datatype))


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_response_raw_round_trip(datatype: str) -> None:
    """Every datatype goes through response_to_proto (always raw) -> response_from_proto unchanged."""
    response = InferenceResponse("m", [tensor("y", datatype)], "1", "r")
    msg = response_to_proto(response)
    assert len(msg.raw_output_contents) == 1
    decoded = response_from_proto(pb.ModelInferResponse.FromString(msg.SerializeToString()))
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "1", "r")
    assert_tensor(decoded.outputs[0], tensor("y", datatype))


@pytest.mark.parametrize("datatype", list(TYPED_FIELDS), ids=list(TYPED_FIELDS))
def test_response_typed_contents(datatype: str) -> None:
    """A backend answering with typed contents decodes too."""
    out = pb.ModelInferResponse.InferOutputTensor(name="y", datatype=datatype, shape=[2, 3])
    getattr(out.contents, TYPED_FIELDS[datatype]).extend(SAMPLES[datatype].ravel().tolist())
    decoded = response_from_proto(pb.ModelInferResponse(model_name="m", outputs=[out]))
    assert_tensor(decoded.outputs[0], tensor("y", datatype))


def test_request_fields_and_parameters_preserved() -> None:
    """Request, input and requested-output parameters and the requested outputs survive decoding."""
    msg = pb.ModelInferRequest(model_name="m", id="abc")
    parameters_to_proto({"priority": 2, "tag": "t"}, msg.parameters)
    entry = typed_input("x", "INT32", [1], [5])
    parameters_to_proto({"flag": True}, entry.parameters)
    msg.inputs.append(entry)
    out = msg.outputs.add(name="y")
    parameters_to_proto({"top_k": 3}, out.parameters)
    msg.outputs.add(name="z")
    request = request_from_proto(msg)
    assert request.parameters == {"priority": 2, "tag": "t"}
    assert request.inputs[0].parameters == {"flag": True}
    assert request.outputs == [RequestedOutput("y", {"top_k": 3}), RequestedOutput("z")]


def test_request_without_outputs() -> None:
    """No requested outputs means all outputs (None)."""
    assert request_from_proto(pb.ModelInferRequest(model_name="m")).outputs is None


@pytest.mark.parametrize(
    "value",
    [True, False, 0, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 1.5, -0.0, "", "s\u00e9"],
    ids=[
        "true",
        "false",
        "zero",
        "int64-min",
        "int64-max",
        "uint64-big",
        "uint64-max",
        "float",
        "neg-zero",
        "empty-str",
        "utf8-str",
    ],
)
def test_parameters_round_trip(value: Any) -> None:
    """Every scalar parameter survives parameters_to_proto -> wire -> parameters_from_proto with its type."""
    msg = pb.ModelInferRequest()
    parameters_to_proto({"k": value}, msg.parameters)
    back = parameters_from_proto(pb.ModelInferRequest.FromString(msg.SerializeToString()).parameters)
    assert back == {"k": value} and type(back["k"]) is type(value)


@pytest.mark.parametrize(
    "value", [2**64, -(2**63) - 1, None, [1]], ids=["too-big", "too-small", "none", "list"]
)
def test_parameters_to_proto_rejects(value: Any) -> None:
    """Values InferParameter cannot hold raise ValueError naming the key."""
    with pytest.raises(ValueError, match="parameter 'k'"):
        parameters_to_proto({"k": value}, pb.ModelInferRequest().parameters)


def test_parameters_unset_skipped() -> None:
    """An InferParameter with no value set is skipped."""
    msg = pb.ModelInferRequest()
    msg.parameters["empty"].CopyFrom(pb.InferParameter())
    assert parameters_from_proto(msg.parameters) == {}


def test_request_to_proto_strips_framing() -> None:
    """Backend requests drop the REST framing parameters (binary_data_output, raw_binary, binary_data)."""
    request = InferenceRequest(
        "m",
        [tensor("x", "INT8")],
        outputs=[RequestedOutput("y", {"binary_data": True, "top_k": 1})],
        parameters={"binary_data_output": True, "raw_binary": True, "priority": 1},
    )
    msg = request_to_proto(request)
    assert parameters_from_proto(msg.parameters) == {"priority": 1}
    assert parameters_from_proto(msg.outputs[0].parameters) == {"top_k": 1}


def test_response_to_proto_honours_request() -> None:
    """Given the request, only requested outputs are sent and the request id is echoed."""
    response = InferenceResponse("m", [tensor("a", "INT8"), tensor("b", "FP32")])
    request = InferenceRequest("m", [], id="q", outputs=[RequestedOutput("b")])
    msg = response_to_proto(response, request)
    assert [o.name for o in msg.outputs] == ["b"] and len(msg.raw_output_contents) == 1
    assert msg.id == "q"


def _raw_request(*entries: tuple[str, str, list[int]], raw: list[bytes]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape in entries:
        msg.inputs.add(name=name, datatype=datatype, shape=shape)
    msg.raw_input_contents.extend(raw)
    return msg


def _typed(datatype: str, shape: list[int], **contents: list[Any]) -> pb.ModelInferRequest:
    """A request whose one input `x` sets exactly the typed `contents` fields given."""
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="x", datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents)
    )
    return pb.ModelInferRequest(inputs=[tensor])


def _with_parameter(role: str, key: str) -> pb.ModelInferRequest:
    msg = _raw_request(("x", "INT32", [1]), raw=[b"\0" * 4])
    target = msg.inputs[0] if role == "input" else msg.outputs.add(name="y")
    parameters_to_proto({key: 1}, target.parameters)
    return msg


def _with_contents_and_raw() -> pb.ModelInferRequest:
    msg = _raw_request(("x", "INT32", [1]), raw=[b"\0" * 4])
    msg.inputs[0].contents.int_contents.append(1)
    return msg


def _dup_outputs() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    msg.outputs.add(name="y")
    msg.outputs.add(name="y")
    return msg


MALFORMED: list[tuple[str, pb.ModelInferRequest, str]] = [
    (
        "raw-count",
        _raw_request(("x", "INT32", [1]), ("y", "INT32", [1]), raw=[b"\0" * 4]),
        "raw_input_contents has 1 entries for 2 inputs",
    ),
    ("raw-and-contents", _with_contents_and_raw(), "input 'x': sets 'contents' although raw_input_contents"),
    (
        "raw-size",
        _raw_request(("x", "FP32", [2, 3]), raw=[b"\0" * 20]),
        r"input 'x': expected 24 bytes for shape \[2, 3\] of FP32, got 20",
    ),
    (
        "raw-bytes-malformed",
        _raw_request(("s", "BYTES", [1]), raw=[b"\x09\0\0\0ab"]),
        "input 's': BYTES element 0",
    ),
    ("missing-name", _raw_request(("", "INT32", [1]), raw=[b"\0" * 4]), r"inputs\[0\]: missing 'name'"),
    ("missing-datatype", _raw_request(("x", "", [1]), raw=[b"\0" * 4]), "input 'x': missing 'datatype'"),
    ("unknown-datatype", _raw_request(("x", "FP8", [1]), raw=[b"\0"]), "input 'x': unknown datatype 'FP8'"),
    ("negative-dim", _raw_request(("x", "INT32", [-1]), raw=[b""]), "input 'x': .*negative"),
    (
        "duplicate-input",
        _raw_request(("x", "INT8", [1]), ("x", "INT8", [1]), raw=[b"\0", b"\0"]),
        "input 'x' appears more than once",
    ),
    (
        "typed-count",
        pb.ModelInferRequest(inputs=[typed_input("x", "INT32", [2, 3], [1, 2])]),
        r"input 'x': expected 6 values in int_contents for shape \[2, 3\], got 2",
    ),
    (
        "typed-wrong-field",
        _typed("INT32", [1], fp32_contents=[1.0]),
        "input 'x': INT32 data goes in int_contents, not fp32_contents",
    ),
    (
        "typed-two-fields",
        _typed("INT32", [1], int_contents=[1], fp32_contents=[1.0]),
        r"input 'x': sets more than one typed contents field \(int_contents, fp32_contents\)",
    ),
    (
        "typed-other-field-on-empty",
        _typed("INT32", [0], fp64_contents=[1]),
        "input 'x': INT32 data goes in int_contents, not fp64_contents",
    ),
    (
        "input-shared-memory",
        _with_parameter("input", "shared_memory_region"),
        "input 'x': parameter 'shared_m",
    ),
    (
        "output-shared-memory",
        _with_parameter("output", "shared_memory_byte_size"),
        "requested output 'y': parameter 'shared_memory_byte_size' asks for the shared-memory extension",
    ),
    (
        "output-classification",
        _with_parameter("output", "classification"),
        "requested output 'y': parameter 'classification' asks for the classification extension",
    ),
    (
        "long-name-clipped",
        _raw_request(("x" * 100_000, "FP8", [1]), raw=[b"\0"]),
        r"^input 'x{256}\.\.\. \(100000 characters\)': unknown datatype 'FP8'$",
    ),
    (
        "no-data",
        pb.ModelInferRequest(
            inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT8", shape=[2])]
        ),
        "input 'x': expected 2 values",
    ),
    (
        "int8-range",
        pb.ModelInferRequest(inputs=[typed_input("x", "INT8", [2], [1, 200])]),
        "input 'x': a value in int_contents is out of range for INT8",
    ),
    (
        "uint16-range",
        pb.ModelInferRequest(inputs=[typed_input("x", "UINT16", [1], [70000])]),
        "out of range for UINT16",
    ),
    (
        "fp16-typed",
        _typed("FP16", [1], fp32_contents=[1.0]),
        "input 'x': FP16 data must be sent in raw_input_contents",
    ),
    (
        "bf16-typed",
        pb.ModelInferRequest(
            inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="BF16", shape=[1])]
        ),
        "input 'x': BF16 data must be sent in raw_input_contents",
    ),
    ("duplicate-output", _dup_outputs(), "requested output 'y' appears more than once"),
    (
        "raw-empty-huge-dims",
        _raw_request(("x", "INT32", [0, 2**62]), raw=[b""]),
        r"input 'x': shape \[0, 4611686018427387904\] cannot be represented",
    ),
    (
        "typed-too-many-dims",
        pb.ModelInferRequest(inputs=[typed_input("x", "INT32", [1] * 100, [1])]),
        "input 'x': .* cannot be represented",
    ),
    (
        "typed-bytes-empty-huge-dims",
        pb.ModelInferRequest(
            inputs=[pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[2**62, 0])]
        ),
        "input 's': .* cannot be represented",
    ),
]


@pytest.mark.parametrize(
    ("msg", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_request_rejects(msg: pb.ModelInferRequest, message: str) -> None:
    """Each malformed gRPC request is an InvalidRequest whose message names the input or field."""
    with pytest.raises(InvalidRequest, match=message):
        request_from_proto(msg)


def test_request_empty_contents_with_raw_allowed() -> None:
    """An empty `contents` message next to raw contents is not a conflict."""
    msg = _raw_request(("x", "INT32", [1]), raw=[b"\x05\0\0\0"])
    msg.inputs[0].contents.SetInParent()
    assert request_from_proto(msg).inputs[0].data.tolist() == [5]


def test_response_from_proto_rejects() -> None:
    """An inconsistent backend response is a BackendError naming the output."""
    msg = pb.ModelInferResponse(model_name="m")
    msg.outputs.add(name="y", datatype="FP32", shape=[2])
    msg.raw_output_contents.append(b"\0" * 4)
    with pytest.raises(BackendError, match="unreadable inference response: output 'y': expected 8 bytes"):
        response_from_proto(msg)
    msg.raw_output_contents.append(b"")
    with pytest.raises(BackendError, match="raw_output_contents has 2 entries for 1 outputs"):
        response_from_proto(msg)


def test_server_metadata_to_proto() -> None:
    """Server metadata maps to ServerMetadataResponse."""
    msg = server_metadata_to_proto(ServerMetadata("gw", "1.0", ["binary_tensor_data"]))
    assert (msg.name, msg.version, list(msg.extensions)) == ("gw", "1.0", ["binary_tensor_data"])


def test_model_metadata_round_trip() -> None:
    """Model metadata survives model_metadata_to_proto -> model_metadata_from_proto."""
    metadata = ModelMetadata(
        "m", "jax_xla", [TensorMetadata("x", "BF16", (-1, 4))], [TensorMetadata("y", "BYTES", (-1,))], ["1"]
    )
    assert model_metadata_from_proto(model_metadata_to_proto(metadata)) == metadata


def test_model_metadata_unknown_datatype() -> None:
    """A backend's metadata with an unknown datatype is a BackendError."""
    msg = pb.ModelMetadataResponse(
        name="m", inputs=[pb.ModelMetadataResponse.TensorMetadata(name="x", datatype="F")]
    )
    with pytest.raises(BackendError, match="input 'x': unknown datatype 'F'"):
        model_metadata_from_proto(msg)


@pytest.mark.parametrize("batching", [True, False], ids=["dynamic-batching", "no-batching"])
def test_model_config_round_trip(batching: bool) -> None:
    """Model config survives to_proto -> wire -> from_proto; BYTES is TYPE_STRING, batching only if set."""
    config = ModelConfig(
        "m",
        "onnxruntime_onnx",
        8,
        [TensorMetadata(dt.lower(), dt, (3,)) for dt in SAMPLES],
        [TensorMetadata("out", "BYTES", (1,))],
        backend="onnxruntime",
        max_queue_delay_microseconds=100 if batching else 0,
        preferred_batch_sizes=[4, 8] if batching else [],
    )
    msg = model_config_to_proto(config)
    assert msg.output[0].data_type == pb.TYPE_STRING
    assert msg.HasField("dynamic_batching") == batching
    wire = pb.ModelConfigResponse(config=msg).SerializeToString()
    assert model_config_from_proto(pb.ModelConfigResponse.FromString(wire)) == config
    assert model_config_from_proto(msg) == config


def test_model_config_type_invalid() -> None:
    """A config tensor with TYPE_INVALID is a BackendError naming it."""
    msg = pb.ModelConfig(name="m", input=[pb.ModelInput(name="x", data_type=pb.TYPE_INVALID)])
    with pytest.raises(BackendError, match="input 'x'"):
        model_config_from_proto(msg)


def test_raw_output_bytes_view_is_untouched() -> None:
    """Decoded raw numeric outputs are the wire values exactly (no dtype drift)."""
    data = np.array([1.0, np.nan, -np.inf], dtype=np.float32)
    msg = response_to_proto(InferenceResponse("m", [Tensor("y", "FP32", (3,), data)]))
    assert response_from_proto(msg).outputs[0].data.tobytes() == data.tobytes()


def _client_message(**parameters: Any) -> pb.ModelInferRequest:
    msg = _raw_request(("x", "FP32", [2]), raw=[np.array([1, 2], dtype=np.float32).tobytes()])
    msg.model_name, msg.id = "client-name", "r1"
    parameters_to_proto(parameters, msg.parameters)
    return msg


def test_forwarding_reuses_the_clients_message_under_the_backend_name() -> None:
    """A decoded gRPC request re-encodes as the client's own message with only the model name changed,
    and the client's message is left as it came."""
    msg = _client_message(priority=3)
    request = request_from_proto(msg)
    request.model_name = "backend-name"
    forwarded = pb.ModelInferRequest.FromString(request_to_wire(request))
    expected = pb.ModelInferRequest()
    expected.CopyFrom(msg)
    expected.model_name = "backend-name"
    assert forwarded == expected
    assert msg.model_name == "client-name"


def test_forwarding_drops_rest_framing_parameters() -> None:
    """A message carrying REST framing parameters is re-encoded without them (they are not forwarded)."""
    request = request_from_proto(_client_message(binary_data_output=True, priority=3))
    forwarded = pb.ModelInferRequest.FromString(request_to_wire(request))
    assert set(forwarded.parameters) == {"priority"}
    assert forwarded.raw_input_contents[0] == np.array([1, 2], dtype=np.float32).tobytes()


def test_a_backends_response_is_answered_as_is_under_the_clients_name() -> None:
    """The response message a backend sent is reused for the client (no re-encoding) with the names
    changed; when the client asked for fewer outputs than it holds, a filtered message is built."""
    y = np.array([2, 4], dtype=np.float32)
    z = np.array([1], dtype=np.float32)
    backend_msg = response_to_proto(
        InferenceResponse("backend-name", [Tensor("y", "FP32", (2,), y), Tensor("z", "FP32", (1,), z)], "1")
    )
    response = response_from_proto(pb.ModelInferResponse.FromString(backend_msg.SerializeToString()))
    response.model_name = "client-name"
    source = response.wire
    answer = response_to_proto(response, InferenceRequest("client-name", [], id="r1"))
    assert answer is source
    assert (answer.model_name, answer.id, [o.name for o in answer.outputs]) == (
        "client-name",
        "r1",
        ["y", "z"],
    )
    only_y = InferenceRequest("client-name", [], outputs=[RequestedOutput("y")])
    filtered = response_to_proto(response, only_y)
    assert filtered is not source and [o.name for o in filtered.outputs] == ["y"]
    assert filtered.raw_output_contents[0] == y.tobytes()


def _forwarded(msg: pb.ModelInferRequest) -> pb.ModelInferRequest:
    request = request_from_proto(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    return pb.ModelInferRequest.FromString(request_to_wire(request))


def test_forwarding_normalises_bool_bytes() -> None:
    """A BOOL byte other than 0/1 reaches the backend as 1, as decoding made it, not verbatim."""
    forwarded = _forwarded(_raw_request(("b", "BOOL", [2]), raw=[b"\x02\x01"]))
    assert forwarded.raw_input_contents[0] == b"\x01\x01"


def test_forwarding_sends_raw_contents_only() -> None:
    """Typed contents from a client, or an empty `contents` beside raw ones, reach the backend as raw
    contents alone."""
    typed = _forwarded(pb.ModelInferRequest(model_name="m", inputs=[typed_input("x", "INT32", [2], [1, 2])]))
    assert not typed.inputs[0].HasField("contents")
    assert typed.raw_input_contents[0] == np.array([1, 2], dtype=np.int32).tobytes()
    empty = _raw_request(("x", "INT32", [1]), raw=[b"\x05\0\0\0"])
    empty.inputs[0].contents.SetInParent()
    assert not _forwarded(empty).inputs[0].HasField("contents")


def test_forwarding_drops_what_decoding_skipped() -> None:
    """A parameter with no value (skipped when decoding) and fields this protocol build does not know are
    not forwarded."""
    msg = _client_message(priority=3)
    msg.inputs[0].parameters["shared_memory_region"].SetInParent()  # a key with no value set
    unknown = msg.SerializeToString() + b"\xa0\x06\x01"  # field 100, varint 1
    forwarded = _forwarded(pb.ModelInferRequest.FromString(unknown))
    assert "shared_memory_region" not in forwarded.inputs[0].parameters
    assert b"\xa0\x06\x01" not in forwarded.SerializeToString()


def test_a_backend_answer_is_re_encoded_where_decoding_changed_it() -> None:
    """A backend's BOOL bytes other than 0/1 reach the client as decoding normalised them, and an output
    parameter with no value (skipped when decoding) is not passed on: the message is not reused as is."""
    msg = pb.ModelInferResponse(model_name="backend-name")
    msg.outputs.add(name="b", datatype="BOOL", shape=[2])
    msg.outputs.add(name="y", datatype="FP32", shape=[1]).parameters["note"].SetInParent()
    msg.raw_output_contents.extend([b"\x02\x00", np.array([1], dtype=np.float32).tobytes()])
    response = response_from_proto(pb.ModelInferResponse.FromString(msg.SerializeToString()))
    answer = response_to_proto(response, InferenceRequest("m", []))
    assert answer.raw_output_contents[0] == b"\x01\x00"
    assert "note" not in answer.outputs[1].parameters


def test_a_typed_backend_answer_is_re_encoded_raw() -> None:
    """A backend answering in typed contents (MLServer, KServe) is answered to the client in raw
    contents, which standard clients read, not passed on as it came."""
    typed = pb.ModelInferResponse(model_name="backend-name")
    typed.outputs.add(name="y", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, 2.0])
    response = response_from_proto(pb.ModelInferResponse.FromString(typed.SerializeToString()))
    answer = response_to_proto(response, InferenceRequest("m", []))
    assert answer is not response.wire
    assert not answer.outputs[0].HasField("contents")
    assert answer.raw_output_contents[0] == np.array([1, 2], dtype=np.float32).tobytes()
