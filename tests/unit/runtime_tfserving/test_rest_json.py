"""The REST edge: signatures described to the gateway's TF Serving JSON codec, its tensors <-> arrays."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import orjson
import pytest
from tensorflow.core.framework import types_pb2

from gateway.errors import InvalidRequest
from gateway.types import Tensor, TensorMetadata
from runtimes.tfserving import rest_json
from runtimes.tfserving.model import TensorInfo


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"inputs": [1]}', ""),
        (b'{"signature_name": "s", "inputs": [NaN]}', "s"),
        (b'{"signature\\u005fname": "t", "inputs": [1]}', "t"),  # an escaped key is still the key
        (b'{"inputs": {"signature_name": "not the key"}}', ""),
        (b'{"signature_name": "s", "inputs": [1', ""),  # not JSON: left to the codec to report
    ],
)
def test_signature_name_is_read_before_decoding(body: bytes, expected: str) -> None:
    """The top-level signature_name, however spelled; "" when there is none."""
    assert rest_json.signature_name(body) == expected


def test_signature_name_must_be_a_string() -> None:
    with pytest.raises(InvalidRequest, match="'signature_name' must be a string"):
        rest_json.signature_name(b'{"signature_name": 1, "inputs": [1]}')


def test_input_metadata_uses_oip_datatypes() -> None:
    """TensorInfos become the codec's TensorMetadata; an unknown rank is [-1]; complex is refused."""
    infos = [TensorInfo("a", types_pb2.DT_INT64, (-1, 3)), TensorInfo("b", types_pb2.DT_STRING, None)]
    assert rest_json.input_metadata(infos) == [
        TensorMetadata("a", "INT64", (-1, 3)),
        TensorMetadata("b", "BYTES", (-1,)),
    ]
    with pytest.raises(InvalidRequest, match=r"input 'c' is DT_COMPLEX128.*use gRPC"):
        rest_json.input_metadata([TensorInfo("c", types_pb2.DT_COMPLEX128, (-1,))])


def test_bf16_tensors_become_bfloat16_arrays() -> None:
    """The codec's BF16 bit patterns are viewed, not converted, as the bfloat16 the model takes."""
    bits = np.array([1.5, -2], ml_dtypes.bfloat16).view(np.uint16)
    (array,) = rest_json.to_arrays([Tensor("x", "BF16", (2,), bits)]).values()
    assert array.dtype == ml_dtypes.bfloat16 and array.tolist() == [1.5, -2]


def test_outputs_keep_the_signature_order_and_skip_filtered_ones() -> None:
    """Outputs are encoded in the signature's order; those the request did not get are left out."""
    infos = [TensorInfo(n, types_pb2.DT_FLOAT, (-1,)) for n in ("a", "b", "c")]
    outputs = {"c": np.array([3], np.float32), "a": np.array([1], np.float32)}
    body = rest_json.encode_outputs(infos, outputs, row_format=False)
    assert list(orjson.loads(body)["outputs"]) == ["a", "c"]


def test_complex_outputs_are_refused_over_rest() -> None:
    """A complex output has no JSON form in the codec: the error says to use gRPC."""
    info = TensorInfo("z", types_pb2.DT_COMPLEX64, (-1,))
    with pytest.raises(InvalidRequest, match="output 'z' is DT_COMPLEX64"):
        rest_json.encode_outputs([info], {"z": np.array([1j], np.complex64)}, row_format=False)
