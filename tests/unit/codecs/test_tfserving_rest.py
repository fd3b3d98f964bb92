"""TF Serving's REST JSON: predict bodies both ways, typed by OIP metadata, and the JSON of its protos."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.codecs.tfserving.front import status_response
from gateway.codecs.tfserving.rest import (
    check_row_format,
    decode_predict_request,
    decode_predict_response,
    encode_predict_request,
    encode_predict_response,
    error_body,
    error_message,
    proto_body,
)
from gateway.errors import BackendError, InvalidRequest
from gateway.types import InferenceRequest, Tensor, TensorMetadata
from tests.unit.codecs import SAMPLES, assert_tensor
from tests.unit.codecs import sample_tensor as tensor

X = TensorMetadata("x", "FP32", (-1, 2))
IDS = TensorMetadata("ids", "INT64", (-1,))
WORDS = TensorMetadata("words", "BYTES", (-1,))


def meta_of(t: Tensor) -> TensorMetadata:
    return TensorMetadata(t.name, t.datatype, (-1, *t.shape[1:]))


# --- round trips through both directions ------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_backend_request_round_trips_through_front_decoder(datatype: str) -> None:
    """Every datatype (BYTES as b64, BF16 as its float values) survives encode_predict_request ->
    decode_predict_request unchanged, in columnar format."""
    sent = tensor("x", datatype)
    body = encode_predict_request(InferenceRequest("m", [sent]), "serving_default")
    signature, [got], row_format = decode_predict_request(body, [meta_of(sent)])
    assert (signature, row_format) == ("serving_default", False)
    assert_tensor(got, sent)


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_front_response_round_trips_through_backend_decoder(datatype: str) -> None:
    """Every datatype survives encode_predict_response(columnar) -> decode_predict_response."""
    sent = tensor("y", datatype)
    [got] = decode_predict_response(encode_predict_response([sent], False), [meta_of(sent)], None)
    assert_tensor(got, sent)


# --- requests from TF Serving clients ---------------------------------------------------------------

REQUESTS: list[tuple[str, Any, list[TensorMetadata], bool, dict[str, tuple[tuple[int, ...], list[Any]]]]] = [
    (
        "row-single-input",
        {"instances": [[1, 2], [3, 4.5]]},
        [X],
        True,
        {"x": ((2, 2), [[1.0, 2.0], [3.0, 4.5]])},
    ),
    (
        "row-objects",
        {"instances": [{"x": [1, 2], "ids": 7}, {"x": [3, 4], "ids": 8}]},
        [X, IDS],
        True,
        {"x": ((2, 2), [[1.0, 2.0], [3.0, 4.0]]), "ids": ((2,), [7, 8])},
    ),
    (
        "row-object-single-input",
        {"instances": [{"ids": 1}, {"ids": 2}]},
        [IDS],
        True,
        {"ids": ((2,), [1, 2])},
    ),
    (
        "columnar-object",
        {"inputs": {"x": [[1, 2]], "ids": [5, 6, 7]}},
        [X, IDS],
        False,
        {"x": ((1, 2), [[1.0, 2.0]]), "ids": ((3,), [5, 6, 7])},
    ),
    ("columnar-bare-value", {"inputs": [[1, 2]]}, [X], False, {"x": ((1, 2), [[1.0, 2.0]])}),
    ("columnar-scalar", {"inputs": 3}, [IDS], False, {"ids": ((), 3)}),
    ("columnar-empty-takes-metadata-dims", {"inputs": []}, [X], False, {"x": ((0, 2), [])}),
    (
        "bytes-strings-and-b64",
        {"instances": ["hé", {"b64": "AP8="}, {"b64": "AP8"}]},
        [WORDS],
        True,
        {"words": ((3,), ["hé".encode(), b"\x00\xff", b"\x00\xff"])},
    ),
    ("bytes-scalar-b64", {"inputs": {"b64": "YQ=="}}, [WORDS], False, {"words": ((), b"a")}),
    ("signature-named", {"signature_name": "", "inputs": [1]}, [IDS], False, {"ids": ((1,), [1])}),
]


@pytest.mark.parametrize(
    ("doc", "metas", "row_format", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_decode_predict_request(
    doc: Any,
    metas: list[TensorMetadata],
    row_format: bool,
    expected: dict[str, tuple[tuple[int, ...], list[Any]]],
) -> None:
    """Row and columnar bodies become tensors typed by the metadata, shaped by the JSON nesting."""
    _, tensors, got_row_format = decode_predict_request(orjson.dumps(doc), metas)
    assert got_row_format is row_format
    by_name = {t.name: t for t in tensors}
    assert list(by_name) == [m.name for m in metas]
    for meta in metas:
        got = by_name[meta.name]
        assert got.datatype == meta.datatype
        assert (got.shape, got.data.tolist()) == expected[meta.name]


def test_nan_and_infinity_tokens_are_read() -> None:
    """TF Serving's NaN / Infinity / -Infinity tokens (which orjson refuses) decode into FP32 values."""
    _, [got], _ = decode_predict_request(b'{"instances": [[NaN, Infinity], [-Infinity, 1]]}', [X])
    values = got.data.ravel().tolist()
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, 1.0]


ERRORS: list[tuple[str, bytes, list[TensorMetadata], str]] = [
    ("not-json", b"{", [X], "JSON Parse error"),
    ("not-an-object", b"[1]", [X], "must be a JSON object"),
    ("both-formats", b'{"instances": [1], "inputs": [1]}', [IDS], "NOT both"),
    ("neither-format", b'{"signature_name": "x"}', [IDS], "neither 'instances'"),
    ("signature-not-string", b'{"signature_name": 1, "inputs": [1]}', [IDS], "'signature_name' must be"),
    ("instances-not-list", b'{"instances": 1}', [IDS], "'instances' must be a list"),
    ("instances-empty", b'{"instances": []}', [IDS], "empty"),
    ("plain-rows-several-inputs", b'{"instances": [[1, 2]]}', [X, IDS], "send one object per instance"),
    ("row-keys-differ", b'{"instances": [{"x": [1, 2], "ids": 1}, {"x": [1, 2]}]}', [X, IDS], "instances[1]"),
    ("rows-mixed", b'{"instances": [{"ids": 1}, 2]}', [IDS], "instances[1] is not an object"),
    ("plain-columns-several-inputs", b'{"inputs": [1]}', [X, IDS], "send an object keyed by input name"),
    ("named-input-missing", b'{"inputs": {"x": [[1, 2]]}}', [X, IDS], "has no input 'ids'"),
    (
        "named-input-extra",
        b'{"inputs": {"x": [[1, 2]], "ids": [1], "other": 1, "' + b"n" * 300 + b'": 2}}',
        [X, IDS],
        "'inputs' names inputs the model does not have: other, " + "n" * 64 + "... (300 characters)",
    ),
    ("bytes-unpaired-surrogate", b'{"inputs": ["a", "\\ud800"]}', [WORDS], "input 'words': a string holds"),
    (
        "signature-unpaired-surrogate",
        b'{"signature_name": "\\udfff", "inputs": [1]}',
        [IDS],
        "'signature_name'",
    ),
    ("float-into-int", b'{"inputs": [1.5]}', [IDS], "input 'ids'"),
    ("integral-float-into-int", b'{"inputs": [2.0]}', [IDS], "input 'ids'"),
    ("bool-into-number", b'{"inputs": [true]}', [IDS], "input 'ids'"),
    ("number-into-bool", b'{"inputs": [1]}', [TensorMetadata("b", "BOOL", (-1,))], "input 'b'"),
    ("string-into-number", b'{"inputs": ["1"]}', [IDS], "input 'ids'"),
    ("out-of-range", b'{"inputs": [300]}', [TensorMetadata("u", "UINT8", (-1,))], "out of range"),
    ("ragged", b'{"inputs": [[1, 2], [3]]}', [X], "input 'x'"),
    ("ragged-bytes", b'{"inputs": [["a"], "b"]}', [WORDS], "ragged"),
    ("bad-base64", b'{"inputs": [{"b64": "!!"}]}', [WORDS], "not valid base64"),
    ("number-into-bytes", b'{"inputs": [1]}', [WORDS], "BYTES values must be strings"),
    ("bytes-nested-too-deeply", b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}", [WORDS], "input 'words'"),
    ("numbers-nested-too-deeply", b'{"inputs": ' + b"[" * 1000 + b"]" * 1000 + b"}", [IDS], "input 'ids'"),
]


@pytest.mark.parametrize(("body", "metas", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_decode_predict_request_errors(body: bytes, metas: list[TensorMetadata], message: str) -> None:
    """Malformed bodies and values that do not fit are InvalidRequest naming the field or the input."""
    with pytest.raises(InvalidRequest) as info:
        decode_predict_request(body, metas)
    assert message in info.value.message


# --- responses to TF Serving clients ----------------------------------------------------------------

Y = Tensor("y", "FP32", (2, 2), np.array([[0.5, 1.0], [2.0, 0.25]], dtype=np.float32))
K = Tensor("k", "INT32", (2,), np.array([1, 2], dtype=np.int32))
NAMES = Tensor("names", "BYTES", (2,), np.array([b"a", b"\xff"], dtype=object))
RAW = Tensor("raw_bytes", "BYTES", (1,), np.array([b"ab"], dtype=object))
RESPONSES: list[tuple[str, list[Tensor], bool, Any]] = [
    ("row-single", [Y], True, {"predictions": [[0.5, 1.0], [2.0, 0.25]]}),
    ("row-several", [Y, K], True, {"predictions": [{"y": [0.5, 1.0], "k": 1}, {"y": [2.0, 0.25], "k": 2}]}),
    ("columnar-single", [K], False, {"outputs": [1, 2]}),
    ("columnar-several", [Y, K], False, {"outputs": {"y": [[0.5, 1.0], [2.0, 0.25]], "k": [1, 2]}}),
    ("bytes-suffix-is-b64", [RAW], False, {"outputs": [{"b64": "YWI="}]}),
    ("other-bytes-utf8-else-b64", [NAMES], False, {"outputs": ["a", {"b64": "/w=="}]}),
]


@pytest.mark.parametrize(
    ("outputs", "row_format", "expected"), [r[1:] for r in RESPONSES], ids=[r[0] for r in RESPONSES]
)
def test_encode_predict_response(outputs: list[Tensor], row_format: bool, expected: Any) -> None:
    """`predictions` per row (objects when several outputs) or `outputs` (an object when several)."""
    assert orjson.loads(encode_predict_response(outputs, row_format)) == expected


def test_non_finite_floats_are_written_as_tf_serving_tokens() -> None:
    """NaN and infinities are written as NaN / Infinity / -Infinity, not null."""
    values = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    body = encode_predict_response([Tensor("y", "FP32", (4,), values)], False)
    assert body == b'{"outputs":[NaN,Infinity,-Infinity,1.5]}'
    assert json.loads(body)["outputs"][3] == 1.5


S = Tensor("s", "INT32", (), np.array(1, dtype=np.int32))


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ([S], {"outputs": 1}),
        (
            [Y, Tensor("k", "INT32", (3,), np.arange(3, dtype=np.int32))],
            {"outputs": {"y": Y.data.tolist(), "k": [0, 1, 2]}},
        ),
        ([], {"outputs": {}}),
    ],
    ids=["rank-0", "batch-mismatch", "no-outputs"],
)
def test_answer_that_cannot_be_rows_is_written_columnar(outputs: list[Tensor], expected: Any) -> None:
    """A row request's answer that cannot be rows is written in the columnar format, never an error."""
    assert orjson.loads(encode_predict_response(outputs, True)) == expected


@pytest.mark.parametrize(
    ("datatype", "value", "expected"),
    [("FP32", 0.5, b"0.5"), ("FP32", np.nan, b"NaN"), ("BF16", 2.0, b"2.0"), ("INT64", 7, b"7")],
)
def test_rank_0_output_is_a_bare_value(datatype: str, value: Any, expected: bytes) -> None:
    """A scalar output is a bare JSON value, not a list of one (numpy makes contiguous arrays rank 1)."""
    data = np.array(value, dtype=np.float32 if datatype == "FP32" else np.int64)
    if datatype == "BF16":
        data = np.array(0x4000, dtype=np.uint16)  # 2.0's bit pattern
    assert (
        encode_predict_response([Tensor("y", datatype, (), data)], False) == b'{"outputs":' + expected + b"}"
    )


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([TensorMetadata("y", "FP32", (-1, 2)), TensorMetadata("s", "INT32", ())], "output 's' has no batch"),
        (
            [TensorMetadata("y", "FP32", (2,)), TensorMetadata("z", "FP32", (3, 1))],
            "output 'z' has batch size 3",
        ),
    ],
    ids=["rank-0", "fixed-batch-sizes-differ"],
)
def test_check_row_format_refuses_what_metadata_shows_cannot_be_rows(
    outputs: list[TensorMetadata], message: str
) -> None:
    """Outputs of rank 0 or of different fixed batch sizes refuse a row request, pointing to columnar."""
    with pytest.raises(InvalidRequest) as info:
        check_row_format(outputs)
    assert message in info.value.message and "columnar" in info.value.message


def test_check_row_format_takes_variable_and_equal_batch_sizes() -> None:
    """Variable batch dimensions (and an unknown rank, read as (-1,)) and equal fixed ones pass."""
    check_row_format([TensorMetadata("a", "FP32", (-1, 3)), TensorMetadata("b", "FP32", (2,)), X])
    check_row_format([TensorMetadata("a", "FP32", (2, 1)), TensorMetadata("b", "FP32", (2,))])


@pytest.mark.parametrize("message", ["plain", "quotes '\ud800' and '\udfff'"])
def test_error_body_writes_any_message(message: str) -> None:
    """Any str becomes TF Serving's error body; unpaired surrogates (orjson refuses them) are escaped."""
    assert orjson.loads(error_body(message))["error"] == message.encode("utf-8", "backslashreplace").decode()


# --- answers from a TF Serving backend --------------------------------------------------------------


def test_decode_predict_response_picks_requested_outputs_in_order() -> None:
    """Several outputs come as an object; `requested` selects and orders them; empties take metadata dims."""
    body = b'{"outputs": {"x": [], "ids": [1, 2]}}'
    got = decode_predict_response(body, [X, IDS], ["ids", "x"])
    assert [(t.name, t.shape) for t in got] == [("ids", (2,)), ("x", (0, 2))]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "JSON Parse error"),
        (b'{"predictions": [1]}', "no 'outputs'"),
        (b'{"outputs": [1]}', "plain value/list"),
        (b'{"outputs": {"x": [[1, 2]]}}', "without output 'ids'"),
        (b'{"outputs": {"x": [["a", 2]], "ids": [1]}}', "output 'x'"),
    ],
    ids=["not-json", "no-outputs", "bare-value-for-several", "missing-output", "bad-value"],
)
def test_decode_predict_response_errors_are_backend_errors(body: bytes, message: str) -> None:
    """Whatever a backend answers that cannot be read is a BackendError naming the problem."""
    with pytest.raises(BackendError) as info:
        decode_predict_response(body, [X, IDS], None)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b'{"error": "Servable not found"}', "Servable not found"), (b'{"error": 1}', None), (b"oops", None)],
    ids=["error", "not-a-string", "not-json"],
)
def test_error_message(body: bytes, expected: str | None) -> None:
    """The message of TF Serving's `{"error": ...}` body, None for anything else."""
    assert error_message(body) == expected


def test_status_json_is_tf_servings() -> None:
    """GetModelStatus's JSON is TF Serving's documented body, defaults included."""
    body = proto_body(status_response("m", [123], ready=True))
    assert orjson.loads(body) == {
        "model_version_status": [
            {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
