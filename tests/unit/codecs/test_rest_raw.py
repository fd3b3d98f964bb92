"""Raw binary REST requests (`Inference-Header-Content-Length: 0`) and how the server completes them."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from gateway.codecs.v2.rest import complete_raw_request, decode_infer_request, encode_infer_response
from gateway.errors import InvalidRequest
from gateway.types import InferenceRequest, InferenceResponse, TensorMetadata
from tests.unit.codecs import sample_tensor as tensor

FP32_2X3 = np.arange(6, dtype=np.float32).reshape(2, 3)


def request_of(*tensors: Any, **kwargs: Any) -> InferenceRequest:
    return InferenceRequest("m", list(tensors), **kwargs)


def parse(body: bytes, header_length: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(body[:header_length] if header_length else body)
    return doc


def test_raw_request_decodes_to_placeholder() -> None:
    """Header length 0 gives one nameless uint8 input holding the body, flagged raw and binary-out."""
    request = decode_infer_request(b"\x01\x02\x03", 0, "m", "1")
    (raw,) = request.inputs
    assert (raw.name, raw.datatype, raw.shape) == ("", "", ())
    assert raw.data.dtype == np.uint8 and raw.data.tobytes() == b"\x01\x02\x03"
    assert request.parameters == {"raw_binary": True, "binary_data_output": True}
    assert (request.model_name, request.model_version) == ("m", "1")


@pytest.mark.parametrize(
    ("meta_shape", "datatype", "body", "shape"),
    [
        ((-1, 3), "FP32", FP32_2X3[0].tobytes(), (1, 3)),
        ((2, 3), "FP32", FP32_2X3.tobytes(), (2, 3)),
        ((-1, -1), "FP32", FP32_2X3.tobytes(), (1, 6)),
        ((-1, 2, -1), "INT16", b"\0" * 12, (1, 2, 3)),
        ((-1,), "BYTES", b"\xff\xd8 any file", (1,)),
        ((-1, -1), "BYTES", b"", (1, 1)),
        ((-1, 4), "UINT8", b"abcd", (1, 4)),
    ],
    ids=[
        "batch-dim",
        "fixed-shape",
        "infer-variable-dim",
        "infer-middle-dim",
        "bytes-one-element",
        "bytes-empty",
        "uint8",
    ],
)
def test_complete_raw_request(
    meta_shape: tuple[int, ...], datatype: str, body: bytes, shape: tuple[int, ...]
) -> None:
    """A raw request becomes a batch-1 tensor of the model's single input; BYTES: the body is one element."""
    raw = decode_infer_request(body, 0, "m")
    request = complete_raw_request(raw, TensorMetadata("in", datatype, meta_shape))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("in", datatype, shape)
    if datatype == "BYTES":
        assert tensor.data.ravel().tolist() == [body]
    else:
        assert tensor.data.tobytes() == body
    assert request.parameters == {"binary_data_output": True}


def test_complete_raw_request_accepts_input_list() -> None:
    """complete_raw_request also takes the model's list of inputs when it holds exactly one."""
    raw = decode_infer_request(b"\0" * 4, 0, "m")
    assert complete_raw_request(raw, [TensorMetadata("in", "INT32", (-1,))]).inputs[0].shape == (1,)


@pytest.mark.parametrize(
    ("metas", "body", "message"),
    [
        (
            [TensorMetadata("a", "FP32", (-1,)), TensorMetadata("b", "FP32", (-1,))],
            b"\0" * 4,
            "raw binary request needs a single-input model; model 'm' has 2 inputs",
        ),
        ([], b"", "has 0 inputs"),
        (
            [TensorMetadata("in", "FP32", (-1, 3))],
            b"\0" * 8,
            r"input 'in': expected 12 bytes for shape \[1, 3\]",
        ),
        ([TensorMetadata("in", "FP32", (2, 2))], b"\0" * 8, "input 'in': expected 16 bytes"),
        ([TensorMetadata("in", "FP32", (-1, -1, -1))], b"\0" * 8, "input 'in': cannot infer shape"),
        (
            [TensorMetadata("in", "FP32", (-1, 3, -1))],
            b"\0" * 8,
            "input 'in': a raw binary body of 8 bytes does not fit",
        ),
        ([TensorMetadata("in", "FP32", (-1, 0, -1))], b"", "does not fit"),
        (
            [TensorMetadata("in", "BYTES", (-1, 2))],
            b"ab",
            "input 'in': a raw binary body is one BYTES element",
        ),
        ([TensorMetadata("in", "FP9", (-1, -1))], b"", "input 'in': unknown datatype 'FP9'"),
    ],
    ids=[
        "two-inputs",
        "no-inputs",
        "batch-size-mismatch",
        "fixed-size-mismatch",
        "ambiguous-shape",
        "indivisible",
        "zero-dim",
        "bytes-needs-more",
        "unknown-datatype",
    ],
)
def test_complete_raw_request_rejects(metas: list[TensorMetadata], body: bytes, message: str) -> None:
    """Raw requests that do not fit the model's single input are InvalidRequest naming the input."""
    with pytest.raises(InvalidRequest, match=message):
        complete_raw_request(decode_infer_request(body, 0, "m"), metas)


def test_complete_raw_request_leaves_other_requests() -> None:
    """A request that is not raw passes through complete_raw_request untouched."""
    request = request_of(tensor("x", "FP32"))
    assert complete_raw_request(request, TensorMetadata("x", "FP32", (-1, 3))) is request


def test_raw_request_gets_binary_response() -> None:
    """The response to a raw request carries every output as binary."""
    raw = decode_infer_request(FP32_2X3.tobytes(), 0, "m")
    request = complete_raw_request(raw, TensorMetadata("in", "FP32", (2, 3)))
    response = InferenceResponse("m", [tensor("y", "INT32"), tensor("z", "BYTES")])
    body, header_length = encode_infer_response(response, request)
    assert header_length is not None
    assert all("data" not in o for o in parse(body, header_length)["outputs"])
