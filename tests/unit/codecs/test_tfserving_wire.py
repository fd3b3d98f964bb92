"""The packed-field reader and writer behind TensorProto's fast float path."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.codecs.protowire import encode_varint
from gateway.codecs.tfserving import wire
from gateway.proto.tfserving.tensorflow.core.framework import tensor_pb2

FLOAT_VAL = 5


def test_packed_floats_are_sliced_as_they_lie() -> None:
    """The packed payload of float_val is exactly the little-endian floats, other fields skipped."""
    proto = tensor_pb2.TensorProto(dtype=1, float_val=[1.5, -2.0, 3.25], version_number=7)
    proto.tensor_shape.dim.add().size = 3
    payload = wire.packed_field(proto.SerializeToString(), FLOAT_VAL)
    assert payload is not None
    assert np.frombuffer(payload, "<f4").tolist() == [1.5, -2.0, 3.25]


def test_written_bytes_merge_into_the_field() -> None:
    """len_field + MergeFromString sets the repeated field as if extended value by value."""
    proto = tensor_pb2.TensorProto(dtype=1)
    proto.MergeFromString(wire.len_field(FLOAT_VAL, np.array([4.0, 5.0], "<f4").tobytes()))
    assert list(proto.float_val) == [4.0, 5.0]


def test_an_unpacked_field_is_left_to_the_runtime() -> None:
    """One tag per element (legal, unusual) answers None: the caller reads it through protobuf."""
    unpacked = b"".join(encode_varint(FLOAT_VAL << 3 | 5) + np.float32(v).tobytes() for v in (1, 2))
    assert wire.packed_field(unpacked, FLOAT_VAL) is None


@pytest.mark.parametrize(
    "data", [b"\x2a\x08\x00\x00", b"\x80", b"\x2f"], ids=["truncated", "varint", "wire type"]
)
def test_malformed_bytes_are_a_wire_error(data: bytes) -> None:
    """Truncated payloads, unterminated varints and unknown wire types are refused, not misread."""
    with pytest.raises(wire.WireError):
        wire.packed_field(data, FLOAT_VAL)
