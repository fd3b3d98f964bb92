"""Tensor payload conversions shared by the REST and gRPC codecs."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

from gateway.codecs.v2.tensors import (
    check_shape,
    config_type,
    datatype_from_config_type,
    json_data,
    tensor_from_buffer,
    tensor_from_list,
    tensor_to_buffer,
    wire_bytes,
)
from gateway.errors import InvalidRequest
from gateway.types import Tensor
from tests.unit.codecs import JSON_DATATYPES, SAMPLES


def _assert_same(tensor: Tensor, datatype: str, expected: np.ndarray) -> None:
    assert tensor.datatype == datatype
    assert tensor.shape == expected.shape
    assert tensor.data.shape == expected.shape
    if datatype == "BYTES":
        assert tensor.data.dtype == object
        assert tensor.data.tolist() == expected.tolist()
    else:
        assert tensor.data.dtype == expected.dtype
        assert tensor.data.tobytes() == expected.tobytes()


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_buffer_round_trip(datatype: str) -> None:
    """Every datatype survives tensor_to_buffer -> tensor_from_buffer bit for bit."""
    sample = SAMPLES[datatype]
    buf = tensor_to_buffer(Tensor("x", datatype, sample.shape, sample))
    _assert_same(tensor_from_buffer("x", datatype, list(sample.shape), buf), datatype, sample)
    _assert_same(tensor_from_buffer("x", datatype, sample.shape, memoryview(buf)), datatype, sample)


@pytest.mark.parametrize("datatype", JSON_DATATYPES, ids=JSON_DATATYPES)
@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_list_round_trip(datatype: str, layout: str) -> None:
    """Every JSON datatype decodes from nested and flat `data` arrays, and json_data gives them back flat."""
    sample = SAMPLES[datatype]
    values: Any = [b.decode() for b in sample.ravel()] if datatype == "BYTES" else sample.tolist()
    if layout == "nested" and datatype == "BYTES":
        values = [values[:3], values[3:]]
    elif layout == "flat" and datatype != "BYTES":
        values = sample.ravel().tolist()
    tensor = tensor_from_list("x", datatype, [2, 3], values)
    _assert_same(tensor, datatype, sample)
    flat = json_data(tensor)
    if datatype == "BYTES":
        assert flat == [b.decode() for b in sample.ravel()]
    else:
        assert isinstance(flat, np.ndarray)
        assert flat.shape == (6,)
        assert flat.tobytes() == sample.tobytes()


def test_bytes_wire_layout() -> None:
    """BYTES elements are 4-byte little-endian lengths followed by the bytes; str elements are UTF-8."""
    data = np.array([b"ab", "\u00e9", b""], dtype=object)
    assert tensor_to_buffer(Tensor("s", "BYTES", (3,), data)) == b"\x02\0\0\0ab\x02\0\0\0\xc3\xa9\0\0\0\0"


def test_buffer_views_without_copy() -> None:
    """Numeric buffers become read-only views of the wire bytes, not copies."""
    buf = np.arange(6, dtype=np.float32).tobytes()
    tensor = tensor_from_buffer("x", "FP32", [2, 3], buf)
    assert not tensor.data.flags.writeable
    assert np.shares_memory(tensor.data, np.frombuffer(buf, dtype=np.uint8))


def test_wire_bytes_are_forwarded_without_copy() -> None:
    """A tensor decoded from wire bytes encodes back to those very bytes (forwarding copies nothing), and
    other contiguous data to a read-only view of its own memory."""
    buf = np.arange(6, dtype=np.float32).tobytes()
    decoded = tensor_from_buffer("x", "FP32", [2, 3], buf)
    assert tensor_to_buffer(decoded) is buf
    assert wire_bytes(decoded) is buf
    computed = np.arange(6, dtype=np.float32).reshape(2, 3)
    view = tensor_to_buffer(Tensor("y", "FP32", (2, 3), computed))
    assert isinstance(view, memoryview) and view.readonly
    assert np.shares_memory(np.frombuffer(view, dtype=np.float32), computed)
    assert wire_bytes(Tensor("y", "FP32", (2, 3), computed)) == computed.tobytes()


def test_part_of_a_buffer_or_strided_data_encodes_its_own_elements() -> None:
    """A view of part of a wire buffer, or a transposed array, gives its own elements in C order."""
    buf = np.arange(8, dtype=np.int32).tobytes()
    part = tensor_from_buffer("x", "INT32", [2], memoryview(buf)[8:16])
    assert bytes(tensor_to_buffer(part)) == np.array([2, 3], dtype=np.int32).tobytes()
    transposed = np.arange(6, dtype=np.int32).reshape(2, 3).T
    assert (
        tensor_to_buffer(Tensor("t", "INT32", (3, 2), transposed))
        == np.ascontiguousarray(transposed).tobytes()
    )


def test_bool_bytes_normalised() -> None:
    """A BOOL byte other than 0/1 decodes as true and re-encodes as 1."""
    tensor = tensor_from_buffer("b", "BOOL", [3], b"\x00\x02\x01")
    assert tensor.data.tolist() == [False, True, True]
    assert tensor_to_buffer(tensor) == b"\x00\x01\x01"


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        (np.array([1, 2], dtype=np.float64), "FP32", np.array([1, 2], dtype=np.float32).tobytes()),
        (np.array([1.0, -2.0], dtype=ml_dtypes.bfloat16), "BF16", b"\x80\x3f\x00\xc0"),
        (np.array([1, 2], dtype=">i4"), "INT32", b"\x01\0\0\0\x02\0\0\0"),
    ],
    ids=["wider-dtype", "ml_dtypes-bfloat16", "big-endian"],
)
def test_to_buffer_converts_dtype(data: np.ndarray, datatype: str, expected: bytes) -> None:
    """tensor_to_buffer writes the datatype's little-endian layout whatever dtype the data has."""
    assert tensor_to_buffer(Tensor("x", datatype, data.shape, data)) == expected


def test_scalar_and_empty_shapes() -> None:
    """Shape [] holds one element and a zero dimension holds none, in both forms."""
    assert tensor_from_list("s", "INT32", [], [7]).data.shape == ()
    assert tensor_from_buffer("s", "INT32", [], b"\x07\0\0\0").data.item() == 7
    assert tensor_from_list("e", "FP32", [0, 3], []).data.shape == (0, 3)
    assert tensor_from_buffer("e", "BYTES", [2, 0], b"").data.shape == (2, 0)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"a": 1}, "'shape' must be a list"),
        ("23", "'shape' must be a list"),
        (None, "'shape' must be a list of integers, got null"),
        ([2, 1.0], "non-integer"),
        ([True], "non-integer"),
        (["2"], "non-integer"),
        ([2, -1], "negative"),
        ([2**63], "beyond int64"),
    ],
    ids=["object", "string", "null", "float", "bool", "string-dim", "negative", "int64-overflow"],
)
def test_check_shape_rejects(shape: Any, message: str) -> None:
    """check_shape rejects anything but a list of non-negative int64 values, naming the tensor."""
    with pytest.raises(InvalidRequest, match=f"input 'x': .*{message}"):
        check_shape("x", shape)


def test_check_shape_accepts_int64_max() -> None:
    """The largest int64 dimension is a valid dimension."""
    assert check_shape("x", [2**63 - 1, 0]) == (2**63 - 1, 0)


def test_check_shape_accepts_numpy_ints() -> None:
    """Numpy integer dims (from shapes our own code computed) become plain ints."""
    dims = check_shape("x", [np.int64(2), 3, np.uint8(4)])
    assert dims == (2, 3, 4) and all(type(d) is int for d in dims)
    with pytest.raises(InvalidRequest, match="negative"):
        check_shape("x", [np.int64(-1)])


def test_check_shape_message_is_bounded() -> None:
    """A huge client shape is cut short in the error message."""
    with pytest.raises(InvalidRequest) as info:
        check_shape("x", [1] * 10_000 + [-1])
    assert len(info.value.message) < 200


@pytest.mark.parametrize(
    ("datatype", "shape", "buf", "message"),
    [
        ("FP32", [2, 3], b"\0" * 20, r"input 'x': expected 24 bytes for shape \[2, 3\] of FP32, got 20"),
        ("INT64", [1], b"\0" * 9, "expected 8 bytes"),
        ("FP8", [1], b"\0", "input 'x': unknown datatype 'FP8'"),
        ("BYTES", [2], b"\x01\0\0\0a", "BYTES data holds 1 elements, shape \\[2\\] needs 2"),
        ("BYTES", [1], b"\x05\0\0\0ab", "element 0 claims 5 bytes but only 2 remain"),
        ("BYTES", [1], b"\x01\0\0\0ab", "1 bytes left over"),
        ("BYTES", [1], b"\x01\0", "BYTES data holds 0 elements"),
        ("INT32", [2**62, 4], b"", "expected"),
        ("INT32", [0, 2**63 - 1], b"", r"input 'x': shape \[0, 9223372036854775807\] cannot be represented"),
        ("BYTES", [2**62, 0], b"", "input 'x': .* cannot be represented"),
        ("INT32", [1] * 100, b"\1\0\0\0", "input 'x': .* cannot be represented"),
    ],
    ids=[
        "fp32-short",
        "int64-long",
        "unknown-dtype",
        "bytes-too-few",
        "bytes-overrun",
        "bytes-trailing",
        "bytes-truncated-prefix",
        "huge-shape",
        "empty-with-huge-dim",
        "bytes-empty-with-huge-dim",
        "too-many-dims",
    ],
)
def test_from_buffer_rejects(datatype: str, shape: list[int], buf: bytes, message: str) -> None:
    """tensor_from_buffer rejects sizes that disagree with the shape, naming the input."""
    with pytest.raises(InvalidRequest, match=message):
        tensor_from_buffer("x", datatype, shape, buf)


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", [2, 3], [1, 2, 3, 4, 5], r"input 'x': expected 6 elements for shape \[2, 3\], got 5"),
        ("FP32", [2, 2], [[1, 2], [3]], "not a rectangular array"),
        ("FP32", [2], ["1", "2"], "FP32 data must be numbers"),
        ("FP32", [2], [1, None], "FP32 data must be numbers"),
        ("FP32", [1], [True], "FP32 data must be numbers"),
        ("INT32", [2], [1, 1.5], "INT32 data must be integers"),
        ("INT32", [1], [1.0], "INT32 data must be integers"),
        ("INT8", [2], [1, 300], "out of range for INT8"),
        ("UINT8", [2], [1, -1], "out of range for UINT8"),
        ("UINT64", [2], [-1, 2**64 - 1], "out of range for UINT64"),
        ("INT64", [2], [0, 2**63], "out of range for INT64"),
        ("BOOL", [2], [1, 0], "BOOL data must be true/false"),
        ("BYTES", [2], ["a", 1], "BYTES data must be strings, got a number"),
        ("BYTES", [2], ["a", None], "BYTES data must be strings, got null"),
        ("BYTES", [3], [["a", "b"], ["c"]], "ragged"),
        ("BYTES", [2], ["a", ["b"]], "ragged"),
        ("BF16", [1], [1.0], "BF16 cannot be sent as JSON data"),
        ("FP32", [1], 1.0, "'data' must be an array, got a number"),
        ("FP32", [1], {"a": 1}, "'data' must be an array, got an object"),
        ("INT", [1], [1], "unknown datatype 'INT'"),
        ("FP32", [-1], [1], "negative"),
        ("FP32", [0, 2**63 - 1], [], "cannot be represented"),
        ("BYTES", [0, 2**63 - 1], [], "cannot be represented"),
        ("INT32", [1] * 100, [1], "cannot be represented"),
    ],
    ids=[
        "count",
        "ragged",
        "strings-as-fp",
        "null",
        "bool-as-fp",
        "float-as-int",
        "float-1.0-as-int",
        "int8-overflow",
        "uint8-negative",
        "uint64-negative",
        "int64-overflow",
        "int-as-bool",
        "number-as-bytes",
        "null-as-bytes",
        "bytes-ragged",
        "bytes-string-beside-list",
        "bf16-json",
        "scalar-data",
        "object-data",
        "unknown-dtype",
        "negative-dim",
        "empty-with-huge-dim",
        "bytes-empty-with-huge-dim",
        "too-many-dims",
    ],
)
def test_from_list_rejects(datatype: str, shape: list[int], data: Any, message: str) -> None:
    """tensor_from_list rejects wrong types, counts and ranges with a message naming the input."""
    with pytest.raises(InvalidRequest, match=message) as info:
        tensor_from_list("x", datatype, shape, data)
    assert info.value.message.startswith("input 'x': ")


def test_from_list_uint64_full_range() -> None:
    """UINT64 JSON data spanning 0..2**64-1 decodes exactly (numpy alone would go through float64)."""
    assert tensor_from_list("u", "UINT64", [2], [0, 2**64 - 1]).data.tolist() == [0, 2**64 - 1]


def test_role_names_outputs() -> None:
    """The role keyword makes messages name an output rather than an input."""
    with pytest.raises(InvalidRequest, match="output 'y': expected 4 bytes"):
        tensor_from_buffer("y", "FP32", [1], b"", role="output")


@pytest.mark.parametrize(
    ("data", "expected"),
    [(np.array([b"\xff"], dtype=object), None), (np.array([1], dtype=np.uint16), None)],
    ids=["non-utf8-bytes", "bf16"],
)
def test_json_data_refuses(data: np.ndarray, expected: None) -> None:
    """json_data returns None for what JSON cannot carry (non-UTF-8 BYTES, BF16)."""
    datatype = "BYTES" if data.dtype == object else "BF16"
    assert json_data(Tensor("x", datatype, data.shape, data)) is expected


@pytest.mark.parametrize("datatype", list(SAMPLES), ids=list(SAMPLES))
def test_config_type_names(datatype: str) -> None:
    """Triton config type names map both ways, BYTES as TYPE_STRING."""
    name = config_type(datatype)
    assert name == ("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")
    assert datatype_from_config_type(name) == datatype


@pytest.mark.parametrize("name", ["TYPE_INVALID", "FP32", "TYPE_BYTES", ""], ids=str)
def test_config_type_unknown(name: str) -> None:
    """Config type names without an OIP datatype raise ValueError."""
    with pytest.raises(ValueError, match="data_type"):
        datatype_from_config_type(name)
