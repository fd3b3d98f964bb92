"""The protobuf wire format, the little of it the codecs read and write by hand.

Where the generated classes cost too much for large data (TF Serving's packed `float_val`,
`gateway.codecs.tfserving.wire`; TorchServe's payload in a `map<string, bytes>`,
`gateway.codecs.torchserve.grpc_wire`), the codecs walk a message's top-level fields here and slice the
one they want. Reading follows what a protobuf parser accepts: every wire type is skipped, unknown groups
included (matched start to end), and truncation, wire types 6 and 7, field number 0 and unmatched group
ends are refused. Standard library only: the TorchServe codecs travel inside model archives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

VARINT: Final = 0
FIXED64: Final = 1
LENGTH: Final = 2
_GROUP_START: Final = 3
_GROUP_END: Final = 4
FIXED32: Final = 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
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


def length_prefix(field: int, size: int) -> bytes:
    """The tag and length of a length-delimited field of `size` bytes (the bytes themselves follow)."""
    return encode_varint(field << 3 | LENGTH) + encode_varint(size)


def length_field(field: int, data: bytes) -> bytes:
    """One length-delimited field (bytes, a string's UTF-8, a packed repeated field) as wire bytes."""
    return length_prefix(field, len(data)) + data


def top_level_fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """`(number, wire type, start, end)` of each top-level field of a serialized message, in order:
    `data[start:end]` is a length-delimited field's payload, or the encoded value of the others. Groups
    (and all inside them) are skipped, as unknown fields.

    Raises:
        WireError: The bytes are not a well-formed message.
    """
    pos = 0
    end = len(data)
    groups: list[int] = []  # the numbers of the groups being skipped, innermost last
    while pos < end:
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        start = pos
        if wire_type == VARINT:
            _, pos = read_varint(data, pos)
        elif wire_type == FIXED64:
            pos += 8
        elif wire_type == FIXED32:
            pos += 4
        elif wire_type == LENGTH:
            size, start = read_varint(data, pos)
            pos = start + size
        elif wire_type == _GROUP_START:
            groups.append(number)
            continue
        elif wire_type == _GROUP_END:
            if not groups or groups.pop() != number:
                raise WireError("unmatched end of group")
            continue
        else:  # the undefined wire types 6 and 7
            raise WireError(f"invalid wire type {wire_type}")
        if pos > end:
            raise WireError("truncated message")
        if not groups:
            yield number, wire_type, start, pos
    if groups:
        raise WireError("unterminated group")
