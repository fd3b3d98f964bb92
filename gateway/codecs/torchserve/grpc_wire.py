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
and skips every other field of any wire type, known or not, groups included, as a protobuf parser would
(`gateway.codecs.protowire`).
It checks less than that parser about what it skips (a `sequence_id` that is not UTF-8, a malformed
`status`, field numbers past 2^29): such an answer still gives its `prediction`, which is all the gateway
reads. Tests check both ways against the generated classes. Standard library only, as the rest of this
package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.codecs.protowire import LENGTH, length_field, length_prefix, top_level_fields

_PREDICTION: Final = 1  # PredictionResponse.prediction


def _string_field(number: int, text: str) -> bytes:
    """A proto3 string field: left out when empty."""
    return length_field(number, text.encode()) if text else b""


def predictions_request(
    model: str, version: str, key: str, payload_parts: Sequence[bytes | memoryview], payload_size: int
) -> bytes:
    """A serialized `PredictionsRequest` whose one input, `key`, is the payload made of `payload_parts`
    (`payload_size` bytes in all): the parts are copied once, into the message."""
    entry_head = _string_field(1, key) + length_prefix(2, payload_size)
    head = (
        _string_field(1, model)
        + _string_field(2, version)
        + length_prefix(3, len(entry_head) + payload_size)
        + entry_head
    )
    return b"".join([head, *payload_parts])


def prediction(reply: bytes) -> bytes:
    """The `prediction` of a serialized `PredictionResponse` (empty when it has none), copied once.

    Raises:
        WireError: The bytes are not a valid protobuf message (truncated, a bad wire type or tag).
    """
    found = (0, 0)
    for number, wire_type, start, end in top_level_fields(reply):
        if number == _PREDICTION and wire_type == LENGTH:
            found = (start, end)
    return reply[found[0] : found[1]]


def prediction_response(answer: bytes) -> bytes:
    """A serialized `PredictionResponse` whose `prediction` is `answer`, copied once."""
    return length_field(_PREDICTION, answer) if answer else b""
