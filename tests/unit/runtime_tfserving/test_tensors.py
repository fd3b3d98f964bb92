"""TensorProto <-> numpy: both value forms read, typed fields written by default, as TF itself reads them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from gateway.codecs.protowire import encode_varint
from gateway.errors import InvalidRequest
from runtimes.tfserving import tensors

ARRAYS = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array([1.5, -2.25], np.float64),
    np.array([-1, 2, -300000], np.int32),
    np.array([[2**40, -5]], np.int64),
    np.array([-3, 4], np.int8),
    np.array([0, 255], np.uint8),
    np.array([7, 65535], np.uint16),
    np.array([2**32 - 1], np.uint32),
    np.array([2**63 + 5], np.uint64),
    np.array([True, False, True]),
    np.array([1.5, -2], np.float16),
    np.array([1.5, -2], ml_dtypes.bfloat16),
    np.array([1 + 2j, -3j], np.complex64),
    np.array([1 + 2j], np.complex128),
    np.zeros((0, 3), np.float32),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
@pytest.mark.parametrize("as_content", [False, True])
def test_round_trip_and_tensorflow_agrees(array: np.ndarray, as_content: bool) -> None:
    """Our encoding reads back exactly, and TensorFlow's own make_ndarray reads it the same."""
    proto = tensors.to_proto(array, as_content=as_content)
    assert bool(proto.tensor_content) == (as_content and array.size > 0)
    back = tensors.to_ndarray(proto)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(tf.make_ndarray(proto).astype(array.dtype), array)


@pytest.mark.parametrize("array", ARRAYS[:-1], ids=lambda a: str(a.dtype))
def test_reads_what_tensorflow_writes(array: np.ndarray) -> None:
    """tf.make_tensor_proto's output (tensor_content or typed, as TF picks) is read back exactly."""
    back = tensors.to_ndarray(tf.make_tensor_proto(array))
    np.testing.assert_array_equal(back, array)


def test_strings_use_string_val() -> None:
    """DT_STRING is written to string_val, never tensor_content."""
    array = np.array([[b"a", b""], [b"\xff", b"xyz"]], object)
    proto = tensors.to_proto(array, as_content=True)
    assert proto.dtype == types_pb2.DT_STRING and list(proto.string_val) == [b"a", b"", b"\xff", b"xyz"]
    np.testing.assert_array_equal(tensors.to_ndarray(proto), array)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([7.0], [7.0, 7.0, 7.0]), ([], [0.0, 0.0, 0.0]), ([1.0, 2.0], [1.0, 2.0, 2.0])],
)
def test_version_zero_fill(values: list[float], expected: list[float]) -> None:
    """Fewer typed values than the shape holds: the last repeats (one broadcasts), none are zeros."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(tensors.to_ndarray(proto), expected)


def test_unpacked_typed_field_is_read() -> None:
    """A sender may write repeated numbers unpacked (one tag each); the slow path reads them."""
    payload = b"".join(encode_varint(7 << 3 | 0) + encode_varint(v) for v in (5, 6))
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32)
    proto.tensor_shape.dim.add(size=2)
    proto.MergeFromString(payload)
    np.testing.assert_array_equal(tensors.to_ndarray(proto), [5, 6])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda p: setattr(p, "dtype", types_pb2.DT_RESOURCE), "unsupported dtype DT_RESOURCE"),
        (lambda p: setattr(p, "tensor_content", b"\0" * 5), "tensor_content holds 5 bytes"),
        (lambda p: p.float_val.extend([1.0] * 5), "float_val holds 5 values"),
        (lambda p: p.tensor_shape.dim.add(size=-1), "negative dimension"),
    ],
)
def test_malformed_tensors_name_the_input(build: object, message: str) -> None:
    """Each malformed TensorProto is INVALID_ARGUMENT naming the input and what is wrong."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    proto.tensor_shape.dim.add(size=2)
    build(proto)  # type: ignore[operator]
    with pytest.raises(InvalidRequest, match=message) as err:
        tensors.to_ndarray(proto, "x")
    assert "'x'" in err.value.message


def test_typed_value_is_not_filled_past_max_bytes() -> None:
    """A 28-byte request declaring [10**6, 28, 28, 1] is refused before anything is allocated."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    for size in (10**6, 28, 28, 1):
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(InvalidRequest, match=r"input 'x': .* over the 1048576-byte limit"):
        tensors.to_ndarray(proto, "x", max_bytes=2**20)
    proto.tensor_shape.dim[0].size = 10  # 31 KB: within the limit, filled as before
    assert tensors.to_ndarray(proto, "x", max_bytes=2**20).shape == (10, 28, 28, 1)


def test_names_and_shapes_in_messages_are_clipped() -> None:
    """The input name (a client's map key) and the shape are quoted clipped."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE)
    with pytest.raises(InvalidRequest) as err:
        tensors.to_ndarray(proto, "n" * 5000)
    assert len(err.value.message) < 1024
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0")
    for _ in range(2000):
        proto.tensor_shape.dim.add(size=1)
    with pytest.raises(InvalidRequest) as err:
        tensors.to_ndarray(proto, "x")
    assert len(err.value.message) < 1024
