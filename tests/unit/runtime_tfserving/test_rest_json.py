"""TF Serving's REST predict JSON: both request forms, b64, NaN tokens, and the response shapes."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from gateway.errors import InvalidRequest
from runtimes.tfserving import rest_json

F32 = np.dtype(np.float32)
STR = np.dtype(object)


@pytest.mark.parametrize(
    ("body", "dtypes", "expected"),
    [
        (b'{"instances": [[1, 2], [3, 4]]}', {"x": F32}, {"x": [[1, 2], [3, 4]]}),
        (
            b'{"instances": [{"x": [1], "s": "a"}, {"x": [2], "s": "b"}]}',
            {"x": F32, "s": STR},
            {"x": [[1], [2]], "s": [b"a", b"b"]},
        ),
        (
            b'{"inputs": {"x": [[1]], "s": [{"b64": "aGk="}]}}',
            {"x": F32, "s": STR},
            {"x": [[1]], "s": [b"hi"]},
        ),
        (b'{"inputs": 5}', {"x": F32}, {"x": 5}),
        (b'{"inputs": [NaN, Infinity, -Infinity]}', {"x": F32}, {"x": [np.nan, np.inf, -np.inf]}),
        (b'{"signature_name": "s", "inputs": [{"b64": "AA=="}]}', {"x": STR}, {"x": [b"\0"]}),
    ],
)
def test_request_forms(body: bytes, dtypes: dict[str, np.dtype], expected: dict[str, object]) -> None:
    """Row and columnar bodies, b64 strings and NaN tokens become typed arrays per input."""
    arrays = rest_json.to_arrays(rest_json.parse_predict(body), dtypes)
    assert set(arrays) == set(expected)
    for name, value in expected.items():
        assert arrays[name].dtype == dtypes[name]
        np.testing.assert_array_equal(arrays[name], np.array(value, dtype=dtypes[name]))


@pytest.mark.parametrize(
    ("body", "dtypes", "message"),
    [
        (b"{}", {"x": F32}, "Missing 'inputs' or 'instances'"),
        (b'{"inputs": 1, "instances": [1]}', {"x": F32}, "Not both"),
        (b'{"inputs": [[1, 2], [3]]}', {"x": F32}, "input 'x'"),
        (b'{"inputs": {"z": 1}}', {"x": F32}, "input 'z' is not in the signature"),
        (b'{"inputs": [1]}', {"x": F32, "y": F32}, "name each input"),
        (b'{"inputs": [{"b64": "aGk="}]}', {"x": F32}, "needs a DT_STRING"),
        (b'{"inputs": [{"b64": "!!"}]}', {"x": STR}, "invalid base64"),
        (b'{"instances": [{"x": 1}, {"y": 2}]}', {"x": F32, "y": F32}, "same inputs"),
        (b"[1", {"x": F32}, "JSON Parse error"),
    ],
)
def test_bad_requests(body: bytes, dtypes: dict[str, np.dtype], message: str) -> None:
    """Each malformed body is INVALID_ARGUMENT saying what is wrong."""
    with pytest.raises(InvalidRequest, match=message):
        rest_json.to_arrays(rest_json.parse_predict(body), dtypes)


Y = np.array([[0.5], [1.5]], np.float32)
B = np.array([b"\xff", b"a"], object)


@pytest.mark.parametrize(
    ("form", "outputs", "expected"),
    [
        ("row", {"y": Y}, {"predictions": [[0.5], [1.5]]}),
        (
            "row",
            {"y": Y, "y_bytes": B},
            {
                "predictions": [
                    {"y": [0.5], "y_bytes": {"b64": "/w=="}},
                    {"y": [1.5], "y_bytes": {"b64": "YQ=="}},
                ]
            },
        ),
        ("columnar", {"y": Y}, {"outputs": [[0.5], [1.5]]}),
        ("columnar", {"y": Y, "s": np.array([b"t"], object)}, {"outputs": {"y": [[0.5], [1.5]], "s": ["t"]}}),
        ("columnar", {"n": np.array(3, np.int64)}, {"outputs": 3}),
    ],
)
def test_response_shapes(form: str, outputs: dict[str, np.ndarray], expected: object) -> None:
    """One output: the bare value; several: keyed by name (per row in the row form); *_bytes as b64."""
    assert orjson.loads(rest_json.dumps_predict(form, outputs)) == expected


def test_non_finite_outputs_use_tf_serving_tokens() -> None:
    """NaN and infinities are written as TF Serving writes them, not as null."""
    body = rest_json.dumps_predict("columnar", {"y": np.array([np.nan, np.inf, -np.inf], np.float32)})
    assert body == b'{"outputs":[NaN,Infinity,-Infinity]}'


def test_row_form_needs_equal_batch_sizes() -> None:
    """Several outputs of different batch sizes cannot be split into rows."""
    with pytest.raises(InvalidRequest, match="columnar"):
        rest_json.dumps_predict("row", {"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
