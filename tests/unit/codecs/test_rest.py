"""REST inference bodies: JSON, the binary tensor data extension and raw binary requests."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from gateway.codecs.v2.rest import (
    decode_infer_request,
    decode_infer_response,
    encode_infer_request,
    encode_infer_response,
)
from gateway.errors import BackendError, InvalidRequest
from gateway.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor
from tests.unit.codecs import JSON_DATATYPES, SAMPLES, TESTDATA, assert_tensor
from tests.unit.codecs import sample_tensor as tensor

FP32_2X3 = np.arange(6, dtype=np.float32).reshape(2, 3)


def frame(doc: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    """A body as a binary-extension client sends it: JSON header, then the blobs."""
    header = orjson.dumps(doc)
    return header + b"".join(blobs), len(header)


def request_of(*tensors: Tensor, **kwargs: Any) -> InferenceRequest:
    return InferenceRequest("m", list(tensors), **kwargs)


def parse(body: bytes, header_length: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(body[:header_length] if header_length else body)
    return doc


# --- server side: requests ---------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_request_binary_round_trip(datatype: str) -> None:
    """Every datatype goes through encode_infer_request(binary) -> decode_infer_request unchanged."""
    body, header_length = encode_infer_request(request_of(tensor("x", datatype)))
    assert header_length is not None
    decoded = decode_infer_request(body, header_length, "m", "2")
    assert (decoded.model_name, decoded.model_version) == ("m", "2")
    assert_tensor(decoded.inputs[0], tensor("x", datatype))
    assert decoded.inputs[0].parameters == {}  # binary_data_size is framing, not kept


@pytest.mark.parametrize("datatype", JSON_DATATYPES, ids=JSON_DATATYPES)
def test_request_json_round_trip(datatype: str) -> None:
    """Every JSON datatype goes through encode_infer_request(binary=False) -> decode, as pure JSON."""
    body, header_length = encode_infer_request(request_of(tensor("x", datatype)), binary=False)
    assert header_length is None
    assert "data" in parse(body, None)["inputs"][0]
    assert_tensor(decode_infer_request(body, None, "m").inputs[0], tensor("x", datatype))


def test_request_sample_file() -> None:
    """The JSON sample request (nested and flat data, every field) decodes with all fields preserved."""
    body = (TESTDATA / "infer_request.json").read_bytes()
    request = decode_infer_request(body, None, "simple")
    assert request.id == "req-42"
    assert request.parameters == {"priority": 1, "tag": "sample", "binary_data_output": False}
    assert [(t.name, t.datatype, t.shape) for t in request.inputs] == [
        ("INPUT0", "INT32", (2, 2)),
        ("INPUT1", "BYTES", (3,)),
        ("INPUT2", "BOOL", (1, 2)),
    ]
    assert request.inputs[0].data.tolist() == [[1, 2], [3, 4]]
    assert request.inputs[1].data.tolist() == [b"", b"caf\xc3\xa9", b"x"]
    assert request.inputs[0].parameters == {"note": "nested"}
    assert request.outputs == [
        RequestedOutput("OUTPUT0", {"binary_data": True}),
        RequestedOutput("OUTPUT1", {}),
    ]


def test_request_mixed_json_and_binary() -> None:
    """JSON inputs and binary inputs mix; blobs are taken in the order of the binary inputs."""
    fp16 = np.array([1.5, -2.0], dtype=np.float16)
    body, header_length = frame(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
                {"name": "b", "datatype": "INT64", "shape": [2], "data": [7, 8]},
                {"name": "c", "datatype": "FP16", "shape": [2], "parameters": {"binary_data_size": 4}},
            ]
        },
        FP32_2X3.tobytes(),
        fp16.tobytes(),
    )
    a, b, c = decode_infer_request(body, header_length, "m").inputs
    assert a.data.tolist() == FP32_2X3.tolist()
    assert b.data.tolist() == [7, 8]
    assert c.data.tolist() == [1.5, -2.0]


def test_request_binary_inputs_are_views() -> None:
    """Binary numeric inputs share memory with the body (no copy on the hot path)."""
    body, header_length = encode_infer_request(request_of(Tensor("x", "FP32", (2, 3), FP32_2X3)))
    decoded = decode_infer_request(body, header_length, "m")
    assert np.shares_memory(decoded.inputs[0].data, np.frombuffer(body, dtype=np.uint8))


def test_request_header_length_whole_body() -> None:
    """A header length equal to the body length is a JSON-only body."""
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]})
    assert decode_infer_request(body, len(body), "m").inputs[0].data.tolist() == [1]


def _input(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": list(range(6))}
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not _DROP}


_DROP = object()
_BIN = {"binary_data_size": 24}


def _json(doc: Any) -> tuple[bytes, int | None]:
    return orjson.dumps(doc), None


MALFORMED_REQUESTS: list[tuple[str, tuple[bytes, int | None], str]] = [
    ("invalid-json", (b'{"inputs": [', None), "request body is not valid JSON"),
    ("empty-body", (b"", None), "not valid JSON"),
    ("not-object", _json([1, 2]), "request body must be a JSON object"),
    ("no-inputs", _json({"id": "a"}), "request has no 'inputs'"),
    ("inputs-not-array", _json({"inputs": {"x": 1}}), "'inputs' must be an array"),
    ("input-not-object", _json({"inputs": [3]}), r"inputs\[0\] must be an object"),
    ("missing-name", _json({"inputs": [_input(name=_DROP)]}), r"inputs\[0\]: missing 'name'"),
    ("name-not-string", _json({"inputs": [_input(name=5)]}), r"inputs\[0\]: missing 'name' \(a string\)"),
    ("missing-shape", _json({"inputs": [_input(shape=_DROP)]}), "input 'x': missing 'shape'"),
    ("missing-datatype", _json({"inputs": [_input(datatype=_DROP)]}), "input 'x': missing 'datatype'"),
    (
        "datatype-not-string",
        _json({"inputs": [_input(datatype=32)]}),
        "input 'x': 'datatype' must be a string",
    ),
    (
        "unknown-datatype",
        _json({"inputs": [_input(datatype="FLOAT")]}),
        "input 'x': unknown datatype 'FLOAT'",
    ),
    ("shape-not-array", _json({"inputs": [_input(shape=6)]}), "input 'x': 'shape' must be a list"),
    ("shape-float", _json({"inputs": [_input(shape=[2.0, 3])]}), "input 'x': .*non-integer"),
    ("shape-bool", _json({"inputs": [_input(shape=[True, 6])]}), "input 'x': .*non-integer"),
    ("shape-negative", _json({"inputs": [_input(shape=[-2, 3])]}), "input 'x': .*negative"),
    ("shape-int64-overflow", _json({"inputs": [_input(shape=[2**63, 1])]}), "input 'x': .*beyond int64"),
    (
        "shape-uint64-overflow",
        (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[18446744073709551616],"data":[]}]}', None),
        "input 'x': .*non-integer",
    ),
    ("data-count", _json({"inputs": [_input(data=[1, 2, 3])]}), "input 'x': expected 6 elements"),
    ("data-type", _json({"inputs": [_input(data=["a"] * 6)]}), "input 'x': FP32 data must be numbers"),
    (
        "data-bool-in-fp32",
        _json({"inputs": [_input(data=[1.5, True, 0, 1, 2, 3])]}),
        "input 'x': FP32 data .*true/false",
    ),
    (
        "data-bool-nested-in-int",
        _json({"inputs": [_input(datatype="INT32", data=[[1, 2, 3], [4, 5, False]])]}),
        "input 'x': INT32 data must be numbers, not true/false",
    ),
    ("data-null", _json({"inputs": [_input(data=None)]}), "input 'x': 'data' must be an array, got null"),
    ("bf16-json", _json({"inputs": [_input(datatype="BF16")]}), "input 'x': BF16 cannot be sent as JSON"),
    (
        "both-data-and-binary",
        (*frame({"inputs": [_input(parameters=_BIN)]}, b"\0" * 24),),
        "input 'x': has both 'data' and binary_data_size",
    ),
    (
        "neither-data-nor-binary",
        _json({"inputs": [_input(data=_DROP)]}),
        "input 'x': has neither 'data' nor binary_data_size",
    ),
    ("duplicate-input", _json({"inputs": [_input(), _input()]}), "input 'x' appears more than once"),
    (
        "binary-without-header",
        _json({"inputs": [_input(data=_DROP, parameters=_BIN)]}),
        "input 'x': binary_data_size is set but the request has no Inference-Header-Content-Length",
    ),
    (
        "binary-beyond-body",
        frame({"inputs": [_input(data=_DROP, parameters=_BIN)]}, b"\0" * 20),
        "input 'x': binary_data_size 24 exceeds the 20 bytes",
    ),
    (
        "binary-vs-shape",
        frame({"inputs": [_input(data=_DROP, parameters={"binary_data_size": 20})]}, b"\0" * 20),
        r"input 'x': expected 24 bytes for shape \[2, 3\] of FP32, got 20",
    ),
    (
        "binary-trailing",
        frame({"inputs": [_input(data=_DROP, parameters=_BIN)]}, b"\0" * 30),
        "request body has 6 bytes of binary data beyond",
    ),
    (
        "binary-size-negative",
        frame({"inputs": [_input(data=_DROP, parameters={"binary_data_size": -1})]}),
        "input 'x': binary_data_size must be a non-negative integer",
    ),
    (
        "binary-size-string",
        frame({"inputs": [_input(data=_DROP, parameters={"binary_data_size": "24"})]}),
        "input 'x': binary_data_size must be a non-negative integer",
    ),
    (
        "binary-size-bool",
        frame({"inputs": [_input(data=_DROP, parameters={"binary_data_size": True})]}),
        "input 'x': binary_data_size must be a non-negative integer",
    ),
    (
        "binary-bytes-malformed",
        frame(
            {
                "inputs": [
                    {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 9}}
                ]
            },
            b"\x05\0\0\0abcde",
        ),
        "input 's': BYTES data holds 1 elements, shape \\[2\\] needs 2",
    ),
    (
        "header-beyond-body",
        (b'{"inputs": []}', 100),
        "Inference-Header-Content-Length 100 exceeds the body length 14",
    ),
    ("header-negative", (b'{"inputs": []}', -1), "Inference-Header-Content-Length must not be negative"),
    ("header-cuts-json", (b'{"inputs": []}', 5), "request body is not valid JSON"),
    ("id-not-string", _json({"id": 5, "inputs": []}), "request 'id' must be a string"),
    (
        "parameters-not-object",
        _json({"parameters": [1], "inputs": []}),
        "request: 'parameters' must be an object",
    ),
    (
        "parameter-not-scalar",
        _json({"parameters": {"p": [1]}, "inputs": []}),
        "request: parameter 'p' must be a string, number or boolean",
    ),
    ("parameter-null", _json({"parameters": {"p": None}, "inputs": []}), "request: parameter 'p'"),
    (
        "input-parameters-not-object",
        _json({"inputs": [_input(parameters=3)]}),
        "input 'x': 'parameters' must be an object",
    ),
    ("outputs-not-array", _json({"inputs": [], "outputs": {"y": 1}}), "request 'outputs' must be an array"),
    (
        "output-without-name",
        _json({"inputs": [], "outputs": [{"parameters": {}}]}),
        r"outputs\[0\]: must be an object with a 'name'",
    ),
    (
        "duplicate-output",
        _json({"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}),
        "requested output 'y' appears more than once",
    ),
    *[
        (
            f"binary-data-output-{value!r}",
            _json({"parameters": {"binary_data_output": value}, "inputs": []}),
            "request: parameter 'binary_data_output' must be a boolean",
        )
        for value in ("true", "yes", 1)
    ],
    *[
        (
            f"binary-data-{value!r}",
            _json({"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": value}}]}),
            "requested output 'y': parameter 'binary_data' must be a boolean",
        )
        for value in ("true", 1)
    ],
    *[
        (
            f"{role}-{key}",
            _json(
                {"inputs": [_input(parameters={key: 1})]}
                if role == "input"
                else {"inputs": [], "outputs": [{"name": "y", "parameters": {key: 1}}]}
            ),
            f"{'input' if role == 'input' else 'requested output'} '[xy]': parameter '{key}' asks for the",
        )
        for role, key in (
            ("input", "shared_memory_region"),
            ("input", "shared_memory_offset"),
            ("output", "shared_memory_byte_size"),
            ("output", "classification"),
        )
    ],
    (
        "long-output-name-clipped",
        _json({"inputs": [], "outputs": [{"name": "y" * 100_000}, {"name": "y" * 100_000}]}),
        r"^requested output 'y{256}\.\.\. \(100000 characters\)' appears more than once$",
    ),
    (
        "output-parameter-not-scalar",
        _json({"inputs": [], "outputs": [{"name": "y", "parameters": {"b": {}}}]}),
        "requested output 'y': parameter 'b'",
    ),
]


@pytest.mark.parametrize(
    ("payload", "message"),
    [case[1:] for case in MALFORMED_REQUESTS],
    ids=[case[0] for case in MALFORMED_REQUESTS],
)
def test_request_rejects(payload: tuple[bytes, int | None], message: str) -> None:
    """Each malformed request is an InvalidRequest whose message names the offending field or input."""
    body, header_length = payload
    with pytest.raises(InvalidRequest, match=message):
        decode_infer_request(body, header_length, "m")


# --- server side: responses -------------------------------------------------------------------


def _response(*names_types: tuple[str, str], **kwargs: Any) -> InferenceResponse:
    return InferenceResponse("m", [tensor(n, t) for n, t in names_types], **kwargs)


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_response_round_trip(datatype: str, binary: bool) -> None:
    """Every datatype goes through encode_infer_response -> decode_infer_response in JSON and in binary."""
    request = request_of(parameters={"binary_data_output": binary})
    body, header_length = encode_infer_response(_response(("y", datatype)), request)
    forced_binary = binary or datatype == "BF16"
    assert (header_length is not None) == forced_binary
    (out,) = decode_infer_response(body, header_length).outputs
    assert_tensor(out, tensor("y", datatype))


@pytest.mark.parametrize(
    ("request_parameters", "outputs", "binary_names"),
    [
        ({}, None, set()),
        ({"binary_data_output": True}, None, {"a", "b", "c"}),
        (
            {},
            [RequestedOutput("a", {"binary_data": True}), RequestedOutput("b"), RequestedOutput("c")],
            {"a"},
        ),
        (
            {"binary_data_output": True},
            [RequestedOutput("a", {"binary_data": False}), RequestedOutput("b"), RequestedOutput("c")],
            {"b", "c"},
        ),
        ({"binary_data_output": False}, [RequestedOutput("c", {"binary_data": True})], {"c"}),
        ({"binary_data_output": "true"}, None, set()),
    ],
    ids=[
        "json-default",
        "binary_data_output",
        "per-output-binary",
        "per-output-overrides",
        "only-requested",
        "non-bool-flag-ignored",
    ],
)
def test_response_binary_flags(
    request_parameters: dict[str, Any], outputs: list[RequestedOutput] | None, binary_names: set[str]
) -> None:
    """binary_data / binary_data_output choose binary outputs; requested outputs alone are sent."""
    request = request_of(outputs=outputs, parameters=request_parameters)
    response = _response(("a", "FP32"), ("b", "INT8"), ("c", "BYTES"))
    body, header_length = encode_infer_response(response, request)
    doc = parse(body, header_length)
    sent = [o["name"] for o in doc["outputs"]]
    assert sent == ([o.name for o in outputs] if outputs else ["a", "b", "c"])
    assert {
        o["name"] for o in doc["outputs"] if "binary_data_size" in o.get("parameters", {})
    } == binary_names
    assert (header_length is None) == (not binary_names)
    decoded = decode_infer_response(body, header_length)
    for out in decoded.outputs:
        assert_tensor(out, tensor(out.name, out.datatype))


def test_response_binary_layout() -> None:
    """Binary outputs carry binary_data_size and no data, and their blobs follow the header in order."""
    request = request_of(parameters={"binary_data_output": True})
    body, header_length = encode_infer_response(_response(("a", "FP32"), ("b", "INT8")), request)
    assert header_length is not None
    doc = parse(body, header_length)
    a, b = doc["outputs"]
    assert a == {"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}
    assert b["parameters"] == {"binary_data_size": 6}
    assert body[header_length:] == SAMPLES["FP32"].tobytes() + SAMPLES["INT8"].tobytes()


def test_response_json_is_flat() -> None:
    """JSON output data is a flat row-major array."""
    body, header_length = encode_infer_response(_response(("a", "INT32")), request_of())
    assert header_length is None
    assert parse(body, None)["outputs"][0]["data"] == SAMPLES["INT32"].ravel().tolist()


@pytest.mark.parametrize(
    ("response_kwargs", "request_id", "expected"),
    [
        ({"id": "", "model_version": ""}, "abc", {"model_name": "m", "id": "abc"}),
        ({"id": "", "model_version": "3"}, "", {"model_name": "m", "model_version": "3", "id": ""}),
        (
            {"id": "r", "parameters": {"k": 1}},
            "other",
            {"model_name": "m", "id": "r", "parameters": {"k": 1}},
        ),
    ],
    ids=["echo-request-id", "empty-id-kept", "response-id-and-parameters"],
)
def test_response_header_fields(
    response_kwargs: dict[str, Any], request_id: str, expected: dict[str, Any]
) -> None:
    """The response echoes the id ("" allowed), omits an empty model_version and carries parameters."""
    body, _ = encode_infer_response(InferenceResponse("m", [], **response_kwargs), request_of(id=request_id))
    doc = parse(body, None)
    assert {k: v for k, v in doc.items() if k != "outputs"} == expected


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        (Tensor("y", "BF16", (2,), np.array([0x3F80, 0x4000], dtype=np.uint16)), "bf16"),
        (Tensor("y", "BYTES", (1,), np.array([b"\xff\xfe"], dtype=object)), "non-utf8"),
    ],
    ids=["bf16", "non-utf8-bytes"],
)
def test_response_forces_binary(out: Tensor, reason: str) -> None:
    """Outputs JSON cannot carry (BF16, non-UTF-8 BYTES) go binary even to a JSON client."""
    body, header_length = encode_infer_response(InferenceResponse("m", [out]), request_of())
    assert header_length is not None, reason
    assert_tensor(decode_infer_response(body, header_length).outputs[0], out)


def test_response_tensor_parameters_kept() -> None:
    """Per-output parameters travel next to binary_data_size."""
    out = Tensor("y", "INT8", (1,), np.array([1], dtype=np.int8), {"note": "x"})
    body, header_length = encode_infer_response(
        InferenceResponse("m", [out]), request_of(parameters={"binary_data_output": True})
    )
    assert parse(body, header_length)["outputs"][0]["parameters"] == {"note": "x", "binary_data_size": 1}


# --- client side -------------------------------------------------------------------------------


def test_client_request_framing_parameters() -> None:
    """encode_infer_request replaces the client's framing flags with its own choice and keeps the rest."""
    request = request_of(
        tensor("x", "INT8"),
        id="r1",
        outputs=[RequestedOutput("y", {"binary_data": False, "top_k": 3}), RequestedOutput("z")],
        parameters={"raw_binary": True, "binary_data_output": False, "priority": 2},
    )
    body, header_length = encode_infer_request(request, binary=True)
    doc = parse(body, header_length)
    assert doc["id"] == "r1"
    assert doc["parameters"] == {"priority": 2, "binary_data_output": True}
    assert doc["outputs"] == [{"name": "y", "parameters": {"top_k": 3}}, {"name": "z"}]
    json_body, json_header = encode_infer_request(request, binary=False)
    assert json_header is None
    assert parse(json_body, None)["parameters"] == {"priority": 2}


def test_client_request_json_sends_bf16_binary() -> None:
    """With binary=False, BF16 inputs still travel binary (JSON cannot carry them)."""
    body, header_length = encode_infer_request(
        request_of(tensor("x", "BF16"), tensor("y", "INT8")), binary=False
    )
    assert header_length is not None
    x, y = decode_infer_request(body, header_length, "m").inputs
    assert_tensor(x, tensor("x", "BF16"))
    assert_tensor(y, tensor("y", "INT8"))
    assert "binary_data_size" not in parse(body, header_length)["inputs"][1].get("parameters", {})


def test_client_response_fields() -> None:
    """decode_infer_response keeps model name, version, id and parameters."""
    body = orjson.dumps(
        {
            "model_name": "m",
            "model_version": "4",
            "id": "q",
            "parameters": {"a": True},
            "outputs": [{"name": "y", "datatype": "FP64", "shape": [1], "data": [2.5]}],
        }
    )
    response = decode_infer_response(body, None)
    assert (response.model_name, response.model_version, response.id, response.parameters) == (
        "m",
        "4",
        "q",
        {"a": True},
    )
    assert response.outputs[0].data.tolist() == [2.5]


MALFORMED_RESPONSES: list[tuple[str, tuple[bytes, int | None], str]] = [
    ("invalid-json", (b"<html>", None), "response body is not valid JSON"),
    ("not-object", _json([]), "response body must be a JSON object"),
    ("no-outputs", _json({"model_name": "m"}), "response has no 'outputs'"),
    ("error-body", _json({"error": "boom"}), "response has no 'outputs'"),
    ("name-not-string", _json({"model_name": 3, "outputs": []}), "response 'model_name' must be a string"),
    (
        "count",
        _json({"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1]}]}),
        "output 'y': expected 2 elements",
    ),
    (
        "binary-short",
        frame(
            {
                "outputs": [
                    {"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}
                ]
            },
            b"\0" * 4,
        ),
        "output 'y': binary_data_size 8 exceeds",
    ),
    ("header-beyond-body", (b"{}", 10), "Inference-Header-Content-Length 10 exceeds the body length 2"),
]


@pytest.mark.parametrize(
    ("payload", "message"),
    [case[1:] for case in MALFORMED_RESPONSES],
    ids=[case[0] for case in MALFORMED_RESPONSES],
)
def test_client_response_rejects(payload: tuple[bytes, int | None], message: str) -> None:
    """An unreadable backend response is a BackendError naming what is wrong."""
    with pytest.raises(BackendError, match=f"unreadable inference response: {message}"):
        decode_infer_response(*payload)
