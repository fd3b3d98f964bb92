"""TensorProto <-> Tensor, checked against TensorFlow's own `make_tensor_proto` / `make_ndarray`: both value
representations, TensorFlow's fill rule for short typed fields (bounded), fp16/bf16 in half_val, DT_STRING
in string_val, refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.codecs.tfserving.tensor_proto import tensor_from_proto, tensor_to_proto
from gateway.datatypes import datatype_of
from gateway.errors import InvalidRequest
from gateway.proto.tfserving.tensorflow.core.framework import tensor_pb2
from gateway.types import Tensor

tf = pytest.importorskip("tensorflow")


def _ours(official: Any) -> tensor_pb2.TensorProto:
    """An official TensorProto re-read as the gateway's (the same bytes)."""
    return tensor_pb2.TensorProto.FromString(official.SerializeToString())


ARRAYS = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.arange(4, dtype=np.float64),
    np.array([[1, -2], [3, 4]], dtype=np.int32),
    np.array([1, 2**40], dtype=np.int64),
    np.array([0, 255], dtype=np.uint8),
    np.array([-128, 127], dtype=np.int8),
    np.array([-3, 300], dtype=np.int16),
    np.array([65535, 1], dtype=np.uint16),
    np.array([2**32 - 1], dtype=np.uint32),
    np.array([2**64 - 1], dtype=np.uint64),
    np.array([True, False, True]),
    np.array([1.5, -2.25], dtype=np.float16),
    np.array([[b"ab", b""], [b"\xff\x00", b"xyz"]], dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: str(a.dtype) + str(a.shape))
def test_decodes_what_tensorflow_writes(array: np.ndarray) -> None:
    """TF's make_tensor_proto (tensor_content for most numeric types, typed fields for others)."""
    tensor = tensor_from_proto("x", _ours(tf.make_tensor_proto(array)))
    assert tensor.shape == array.shape
    np.testing.assert_array_equal(tensor.data, array)


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: str(a.dtype) + str(a.shape))
@pytest.mark.parametrize("typed", [False, True], ids=["tensor_content", "typed"])
def test_tensorflow_reads_what_we_write(array: np.ndarray, typed: bool) -> None:
    """Both of our encodings are what TF's make_ndarray reads back to the same array."""
    datatype = {"object": "BYTES", "bool": "BOOL"}.get(str(array.dtype), None)
    tensor = Tensor("x", datatype or datatype_of(array), array.shape, array)
    proto = tensor_pb2.TensorProto()
    tensor_to_proto(tensor, proto, typed=typed)
    if typed or datatype == "BYTES":
        assert not proto.tensor_content
    back = tf.make_ndarray(tf.make_tensor_proto(0).FromString(proto.SerializeToString()))
    np.testing.assert_array_equal(back, array)


def test_typed_fields_are_read_like_tensorflow_serving_writes_them() -> None:
    """TF Serving replies in float_val / half_val (AsProtoField): decoded to the right dtype and shape."""
    proto = tensor_pb2.TensorProto(dtype=1, float_val=[1, 2, 3, 4])
    proto.tensor_shape.dim.add().size = 2
    proto.tensor_shape.dim.add().size = 2
    assert tensor_from_proto("y", proto).data.tolist() == [[1, 2], [3, 4]]
    half = tensor_pb2.TensorProto(dtype=19, half_val=list(np.array([1.5, -2], np.float16).view(np.uint16)))
    half.tensor_shape.dim.add().size = 2
    assert tensor_from_proto("h", half).data.tolist() == [1.5, -2.0]
    bf16 = tensor_pb2.TensorProto(dtype=14, half_val=[0x3FC0])  # 1.5 in bfloat16, broadcast
    bf16.tensor_shape.dim.add().size = 3
    decoded = tensor_from_proto("b", bf16)
    assert (decoded.datatype, decoded.data.tolist()) == ("BF16", [0x3FC0] * 3)


def test_one_value_is_broadcast_to_the_shape() -> None:
    """Version-0 rule: make_tensor_proto(7.0, shape=[2, 3]) sends one value for six."""
    tensor = tensor_from_proto("x", _ours(tf.make_tensor_proto(7.0, shape=[2, 3], dtype=tf.float32)))
    assert tensor.data.tolist() == [[7.0] * 3] * 2


def test_short_typed_fields_follow_tensorflows_fill_rule() -> None:
    """As TensorFlow reads them (make_ndarray): the last value repeats, no values at all are zeros."""
    for proto in (
        _proto(3, [2, 2], int_val=[5, -6]),
        _proto(1, [3]),
        _proto(7, [3], string_val=[b"a", b"b"]),
    ):
        ours = tensor_from_proto("x", proto).data
        theirs = tf.make_ndarray(tf.make_tensor_proto(0).FromString(proto.SerializeToString()))
        assert ours.tolist() == theirs.tolist()


def test_a_fill_may_not_exceed_the_limit() -> None:
    """28 bytes declaring a 3 GB tensor are refused, not allocated; under the limit they are filled."""
    huge = _proto(1, [10**6, 28, 28, 1], float_val=[1.0])
    with pytest.raises(InvalidRequest, match="over the 67108864-byte limit"):
        tensor_from_proto("x", huge)
    assert tensor_from_proto("x", _proto(1, [1000], float_val=[1.0]), max_bytes=4000).data.sum() == 1000
    with pytest.raises(InvalidRequest, match="over the 3999-byte limit"):
        tensor_from_proto("x", _proto(1, [1000], float_val=[1.0]), max_bytes=3999)


def _proto(dtype: int, dims: list[int], **fields: Any) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)  # type: ignore[arg-type]
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


@pytest.mark.parametrize(
    ("proto", "message"),
    [
        (_proto(1, [3], float_val=[1, 2, 3, 4]), "float_val holds 4 values, shape [3] holds 3"),
        (_proto(1, [2], tensor_content=b"\0" * 4), "tensor_content holds 4 bytes"),
        (_proto(1, [1], tensor_content=b"\0" * 4, float_val=[1]), "both tensor_content and float_val"),
        (_proto(1, [1], int_val=[1]), "int_val set on a FP32 tensor"),
        (_proto(7, [1], tensor_content=b"ab"), "DT_STRING goes in string_val"),
        (_proto(8, [1], scomplex_val=[1, 2]), "unsupported dtype DT_COMPLEX64"),
        (_proto(6, [1], int_val=[300]), "out of range for int8"),
        (_proto(1, [1], tensor_shape={"unknown_rank": True}), "unknown rank"),
        (_proto(1, [-1], float_val=[1]), "negative dimension"),
    ],
)
def test_refusals_name_the_tensor(proto: tensor_pb2.TensorProto, message: str) -> None:
    """Each malformed tensor is an InvalidRequest naming the input and what is wrong."""
    with pytest.raises(InvalidRequest) as caught:
        tensor_from_proto("img", proto)
    assert "input 'img'" in caught.value.message and message in caught.value.message
