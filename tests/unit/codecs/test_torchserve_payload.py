"""The project's TorchServe tensor payload: round trips for every datatype, layout, and named errors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from gateway.codecs.torchserve.payload import (
    ALIGNMENT,
    MAGIC,
    decode_error,
    decode_request,
    decode_response,
    encode_metadata_request,
    encode_request,
    encode_response,
    error_body,
    is_key_refusal,
    parse_request,
)
from gateway.codecs.torchserve.signature import loads_signature
from gateway.errors import BackendError, ConfigError, InvalidRequest
from gateway.types import Tensor


def _bytes(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


CASES = [
    Tensor("b", "BOOL", (2, 2), np.array([[True, False], [False, True]])),
    Tensor("u8", "UINT8", (3,), np.array([0, 7, 255], np.uint8)),
    Tensor("u16", "UINT16", (2,), np.array([1, 65535], np.uint16)),
    Tensor("u32", "UINT32", (1,), np.array([2**32 - 1], np.uint32)),
    Tensor("u64", "UINT64", (1,), np.array([2**64 - 1], np.uint64)),
    Tensor("i8", "INT8", (2,), np.array([-128, 127], np.int8)),
    Tensor("i16", "INT16", (1, 1), np.array([[-5]], np.int16)),
    Tensor("i32", "INT32", (2, 3), np.arange(6, dtype=np.int32).reshape(2, 3)),
    Tensor("i64", "INT64", (1,), np.array([-(2**63)], np.int64)),
    Tensor("f16", "FP16", (3,), np.array([0.5, -1.0, 65504], np.float16)),
    Tensor("f32", "FP32", (2, 2), np.array([[1.5, np.nan], [np.inf, -0.0]], np.float32)),
    Tensor("f64", "FP64", (1,), np.array([1e300])),
    Tensor("bf16", "BF16", (2,), np.array([0x3F80, 0xC000], np.uint16)),  # 1.0, -2.0
    Tensor("s", "BYTES", (3,), _bytes(b"abc", b"", b"\x00\xff")),
    Tensor("empty", "FP32", (0, 4), np.zeros((0, 4), np.float32)),
]


@pytest.mark.parametrize("tensor", CASES, ids=lambda t: t.datatype + ":" + t.name)
def test_every_datatype_round_trips_bit_for_bit(tensor: Tensor) -> None:
    """A tensor of each datatype comes back with its name, datatype, shape and exact bytes, both ways."""
    for encode, decode in ((encode_request, decode_request), (encode_response, decode_response)):
        (back,) = decode(encode([tensor]))
        assert (back.name, back.datatype, back.shape) == (tensor.name, tensor.datatype, tensor.shape)
        if tensor.datatype == "BYTES":
            assert back.data.tolist() == tensor.data.tolist()
        else:
            assert back.data.tobytes() == tensor.data.tobytes()


def test_several_tensors_are_aligned_and_zero_copy() -> None:
    """Each buffer starts at a multiple of 8 and decodes as a view of the payload, not a copy."""
    tensors = [CASES[1], CASES[10], CASES[13], CASES[8]]
    payload = encode_request(tensors, outputs=["y"])
    decoded, outputs, metadata = parse_request(payload)
    assert outputs == ("y",) and metadata is False
    assert [t.name for t in decoded] == [t.name for t in tensors]
    base = np.frombuffer(payload, np.uint8).ctypes.data
    for tensor in decoded:
        if tensor.datatype not in ("BYTES", "BOOL"):
            assert (tensor.data.ctypes.data - base) % ALIGNMENT == 0
            assert not tensor.data.flags.writeable  # a view of the immutable payload
    writable = decode_request(bytearray(payload))
    assert writable[1].data.flags.writeable  # TorchServe hands bytearrays: torch.from_numpy without a copy


def test_layout_is_magic_length_json_header() -> None:
    """The documented layout: magic, uint32 LE header length, JSON header with nbytes per tensor."""
    payload = encode_request([CASES[7]])
    magic, length = struct.unpack_from("<4sI", payload)
    header = json.loads(payload[8 : 8 + length])
    assert magic == MAGIC
    assert header == {"inputs": [{"name": "i32", "datatype": "INT32", "shape": [2, 3], "nbytes": 24}]}
    assert len(payload) == 8 + length + (-(8 + length) % 8) + 24


def test_metadata_query() -> None:
    """The metadata query has no inputs and says so."""
    assert parse_request(encode_metadata_request()) == ([], None, True)


def _frame(header: object, data: bytes = b"", length: int | None = None, magic: bytes = MAGIC) -> bytes:
    text = json.dumps(header).encode()
    head = struct.pack("<4sI", magic, len(text) if length is None else length) + text
    return head + bytes(-len(head) % 8) + data


def _entry(**fields: object) -> dict[str, object]:
    return {"name": "x", "datatype": "FP32", "shape": [2], "nbytes": 8, **fields}


ERRORS = [
    (b"GWT", "shorter than the 8-byte prefix"),
    (_frame({}, magic=b"NOPE"), "not the magic"),
    (_frame({}, length=1 << 30), "over the limit"),
    (_frame({}, length=500), "runs past the end"),
    (MAGIC + struct.pack("<I", 3) + b"{x]", "header is not JSON"),
    (MAGIC + struct.pack("<I", 200_000) + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (_frame([1]), "must be an object with a list 'inputs'"),
    (_frame({"inputs": {}}), "must be an object with a list 'inputs'"),
    (_frame({"inputs": [], "outputs": "y"}), "'outputs' must be a list"),
    (_frame({"inputs": [], "metadata": 1}), "'metadata' must be true or false"),
    (_frame({"inputs": [7]}), "input 0: must be an object with a string 'name'"),
    (_frame({"inputs": [_entry(), _entry()]}, bytes(16)), "input 'x': appears twice"),
    (_frame({"inputs": [_entry(nbytes=-1)]}), "input 'x': 'nbytes' must be a non-negative integer"),
    (
        _frame({"inputs": [_entry()]}, bytes(4)),
        "input 'x': 8 bytes at offset 88 run past the end of the payload (92 bytes)",
    ),
    (_frame({"inputs": [_entry(datatype="FP8")]}, bytes(8)), "input 'x': unknown datatype 'FP8'"),
    (_frame({"inputs": [_entry(shape=[-2])]}, bytes(8)), "input 'x': shape [-2] has a negative dimension"),
    (
        _frame({"inputs": [_entry(shape=[3])]}, bytes(8)),
        "input 'x': expected 12 bytes for shape [3] of FP32, got 8",
    ),
    (_frame({"inputs": [_entry()]}, bytes(9)), "inputs end at byte 96 but the payload has 97 bytes"),
    (
        _frame({"inputs": [_entry(datatype="BYTES", shape=[1], nbytes=5)]}, b"\x09\x00\x00\x00a"),
        "input 'x': BYTES element 0 claims 9 bytes but only 1 remain",
    ),
]


@pytest.mark.parametrize(("payload", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_malformed_request_names_the_fault(payload: bytes, message: str) -> None:
    """Every malformed request is an InvalidRequest whose message says what is wrong."""
    with pytest.raises(InvalidRequest) as caught:
        decode_request(payload)
    assert message in caught.value.message


def test_malformed_response_is_a_backend_error() -> None:
    """The same faults in a response are the backend's: BackendError, with output in the message."""
    with pytest.raises(BackendError, match="output 'x': 8 bytes at offset 88"):
        decode_response(_frame({"outputs": [_entry()]}, bytes(4)))


def test_unencodable_tensor() -> None:
    """A tensor whose data cannot take its datatype is refused naming it (client side: InvalidRequest)."""
    bad = Tensor("s", "BYTES", (1,), _bytes(3))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="input 's': cannot encode as BYTES"):
        encode_request([bad])


def test_error_body_round_trip() -> None:
    """error_body writes TorchServe's error shape and decode_error reads it, or falls back to the text."""
    assert decode_error(error_body(400, "InvalidRequest", "bad")) == (400, "InvalidRequest", "bad")
    assert decode_error(b'{"code":503,"type":"ServiceUnavailableException","message":"m"}')[0] == 503
    assert decode_error(b"<html>") == (0, "", "<html>")


def test_deeply_nested_json_is_refused_not_raised() -> None:
    """JSON nested past the recursion limit: a BackendError in a response, decode_error's fallback (clipped
    text) for an error body, a ConfigError for a signature; never a RecursionError."""
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BackendError, match="nested too deeply"):
        decode_response(MAGIC + struct.pack("<I", len(deep)) + deep)
    code, kind, text = decode_error(deep)
    assert (code, kind) == (0, "") and len(text) < 300
    with pytest.raises(ConfigError, match="nested too deeply"):
        loads_signature(deep)


def test_decode_error_clips_the_message() -> None:
    """An upstream's error message of any length comes back clipped, with its length."""
    code, kind, message = decode_error(error_body(400, "InvalidRequest", "m" * 100_000))
    assert (code, kind) == (400, "InvalidRequest")
    assert len(message) < 1_100 and message.endswith("(100000 characters)")


@pytest.mark.parametrize(
    ("status", "body", "refused"),
    [
        (400, error_body(400, "InvalidKeyException", "Token Authorization failed"), True),
        (401, error_body(401, "InvalidKeyException", "expired"), True),
        (400, b'{\n  "code": 400,\n  "type": "InvalidKeyException",\n  "message": "x"\n}', True),
        (200, error_body(400, "InvalidKeyException", "x"), False),
        (400, error_body(400, "InvalidRequest", "unknown input 'InvalidKeyException'"), False),
        (400, b"InvalidKeyException", False),
        (400, error_body(400, "InvalidKeyException", "x" * 10_000), False),
    ],
)
def test_key_refusal_is_torchserves_error_type_only(status: int, body: bytes, refused: bool) -> None:
    """A refusal is a 400/401/403 whose error body's type is InvalidKeyException; a handler's 400 quoting
    that word (a client's tensor name) is not one."""
    assert is_key_refusal(status, body) is refused
