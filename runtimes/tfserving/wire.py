"""Protobuf wire-format helpers for TensorProto's repeated value fields, done with numpy.

Why: reading `proto.float_val` element by element through the protobuf runtime costs about 70 ns a
value (4.6 ms for 64k floats), and `extend` as much on the way out; the same fields as packed wire bytes
are one `np.frombuffer` (fixed-width) or a few vectorised passes (varints). Measured on 64k float32:
decode 4.6 ms -> 25 us, encode 3.5 ms -> 55 us.
"""

from __future__ import annotations

import numpy as np

_WIRE_VARINT = 0
_WIRE_FIXED64 = 1
_WIRE_LEN = 2
_WIRE_FIXED32 = 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def packed_field(data: bytes, field: int) -> bytes | None:
    """The concatenated packed payloads of `field` among a message's top-level fields.

    None when the field also occurs unpacked (one tag per element, legal but rare): the caller then
    reads it through the protobuf runtime. A message's top level has a handful of fields, so this
    loop is short; the payloads themselves are sliced, never walked.
    """
    chunks: list[bytes] = []
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _WIRE_VARINT:
            _, pos = read_varint(data, pos)
        elif wire == _WIRE_FIXED64:
            pos += 8
        elif wire == _WIRE_FIXED32:
            pos += 4
        elif wire == _WIRE_LEN:
            size, pos = read_varint(data, pos)
            if number == field:
                chunks.append(data[pos : pos + size])
            pos += size
        else:
            raise WireError(f"unsupported wire type {wire}")
        if pos > end:
            raise WireError("truncated message")
        if number == field and wire != _WIRE_LEN:
            return None
    return b"".join(chunks)


def decode_varints(payload: bytes) -> np.ndarray:
    """A packed run of varints as uint64 (int64 values come back as their two's complement)."""
    raw = np.frombuffer(payload, np.uint8)
    if raw.size == 0:
        return np.zeros(0, np.uint64)
    ends = raw < 0x80
    if not ends[-1]:
        raise WireError("truncated varint")
    last = np.flatnonzero(ends)
    starts = np.concatenate(([0], last[:-1] + 1))
    # Each byte's position inside its varint: its index minus its varint's first index.
    group = np.repeat(np.arange(starts.size), np.diff(np.concatenate((starts, [raw.size]))))
    position = np.arange(raw.size) - starts[group]
    if position.max() > 9:
        raise WireError("overlong varint")
    parts = (raw & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    # The 7-bit groups do not overlap, so adding them is or-ing them.
    return np.add.reduceat(parts, starts)


def encode_varints(values: np.ndarray) -> bytes:
    """uint64 values as a packed run of varints (negative ints: pass their int64 view as uint64)."""
    v = values.astype(np.uint64, copy=False).ravel()
    if v.size == 0:
        return b""
    # Bytes per value: 1 + number of 7-bit groups above the first.
    lengths = np.ones(v.size, np.int64)
    for k in range(1, 10):
        lengths += v >= (np.uint64(1) << np.uint64(7 * k))
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    out = np.empty(int(lengths.sum()), np.uint8)
    for k in range(int(lengths.max())):
        has = lengths > k
        byte = (v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = lengths[has] > k + 1
        out[offsets[has] + k] = (byte | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return out.tobytes()


def len_field(field: int, payload: bytes) -> bytes:
    """One length-delimited field (a packed repeated field, here) as wire bytes."""
    return encode_varint(field << 3 | _WIRE_LEN) + encode_varint(len(payload)) + payload
