"""TorchServe's gRPC `PredictionsRequest` written, and `PredictionResponse` read, by hand around the
tensor payload, so that the payload is copied once on its way out and once on its way in.

Built with the generated classes, a request's payload is copied three times (joined, copied into the
message's map, serialized) and an answer's twice (parsed, then handed out by the `prediction` getter):
at 16 MiB each copy costs milliseconds. Both messages are small and fixed (`gateway/proto/torchserve`,
from TorchServe 0.12.0's `inference.proto`):

    PredictionsRequest  { string model_name = 1; string model_version = 2;
                          map<string, bytes> input = 3; optional string sequence_id = 4; }
    PredictionResponse  { bytes prediction = 1; optional string sequence_id = 2;
                          google.rpc.Status status = 3; }

A map entry is the nested message `{key = 1; value = 2}`. Writing follows proto3's encoding (empty
strings left out); reading takes the last `prediction` (a repeated non-repeated field: the last one wins)
and skips every other field of any wire type, known or not, groups included, as a protobuf parser would.
It checks less than that parser about what it skips (a `sequence_id` that is not UTF-8, a malformed
`status`, field numbers past 2^29): such an answer still gives its `prediction`, which is all the gateway
reads. Tests check both ways against the generated classes. Standard library only, as the rest of this
package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

# Wire types (protobuf encoding): varint, 64-bit, length-delimited, start and end of a (deprecated)
# group, 32-bit.
_VARINT, _FIXED64, _LENGTH, _GROUP_START, _GROUP_END, _FIXED32 = 0, 1, 2, 3, 4, 5
_PREDICTION: Final = 1  # PredictionResponse.prediction


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_field(number: int, size: int) -> bytes:
    """The tag and length of a length-delimited field of `size` bytes."""
    return _varint(number << 3 | _LENGTH) + _varint(size)


def _string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return _length_field(number, len(data)) + data if data else b""


def predictions_request(
    model: str, version: str, key: str, payload_parts: Sequence[bytes | memoryview], payload_size: int
) -> bytes:
    """A serialized `PredictionsRequest` whose one input, `key`, is the payload made of `payload_parts`
    (`payload_size` bytes in all): the parts are copied once, into the message."""
    entry_head = _string_field(1, key) + _length_field(2, payload_size)
    head = (
        _string_field(1, model)
        + _string_field(2, version)
        + _length_field(3, len(entry_head) + payload_size)
        + entry_head
    )
    return b"".join([head, *payload_parts])


def prediction(reply: bytes) -> bytes:
    """The `prediction` of a serialized `PredictionResponse` (empty when it has none), copied once.

    Raises:
        ValueError: The bytes are not a valid protobuf message (truncated, a bad wire type or tag).
    """
    view = memoryview(reply)
    end = len(view)
    offset = 0
    found: tuple[int, int] = (0, 0)
    groups: list[int] = []  # the numbers of the unknown groups being skipped, innermost last
    while offset < end:
        tag, offset = _read_varint(view, offset)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == _VARINT:
            _, offset = _read_varint(view, offset)
        elif wire_type == _FIXED64:
            offset += 8
        elif wire_type == _FIXED32:
            offset += 4
        elif wire_type == _LENGTH:
            size, offset = _read_varint(view, offset)
            if number == _PREDICTION and not groups:
                found = (offset, offset + size)
            offset += size
        elif wire_type == _GROUP_START:
            groups.append(number)
        elif wire_type == _GROUP_END:
            if not groups or groups.pop() != number:
                raise ValueError("unmatched end of group")
        else:  # the undefined wire types 6 and 7
            raise ValueError(f"invalid wire type {wire_type}")
        if offset > end:
            raise ValueError("truncated message")
    if groups:
        raise ValueError("unterminated group")
    return bytes(view[found[0] : found[1]])


def _read_varint(view: memoryview, offset: int) -> tuple[int, int]:
    """The varint at `offset` and the offset after it."""
    value = shift = 0
    while True:
        if offset >= len(view) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = view[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def prediction_response(answer: bytes) -> bytes:
    """A serialized `PredictionResponse` whose `prediction` is `answer`, copied once."""
    return b"".join([_length_field(_PREDICTION, len(answer)), answer]) if answer else b""
