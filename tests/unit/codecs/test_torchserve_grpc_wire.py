"""The hand-framed TorchServe gRPC messages (`gateway.codecs.torchserve.grpc_wire`) against the classes
generated from TorchServe's own `inference.proto`: what we write parses to the message meant, and what we
read of any valid `PredictionResponse` is what protobuf reads."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codecs.protowire import WireError
from gateway.codecs.torchserve import grpc_wire
from gateway.proto.torchserve import inference_pb2 as pb


@pytest.mark.parametrize(
    ("model", "version", "key", "parts"),
    [
        ("mlp", "", "data", [b"GWT1", b"\x00" * 4]),
        ("mödel", "2.0", "body", [b"x" * 200, memoryview(b"y" * 20_000)]),  # multi-byte lengths
        ("m", "1", "data", []),
    ],
)
def test_requests_parse_as_the_message_meant(
    model: str, version: str, key: str, parts: list[bytes | memoryview]
) -> None:
    """The request we frame is, to protobuf, the PredictionsRequest with the payload as its one input."""
    size = sum(len(p) for p in parts)
    wire = grpc_wire.predictions_request(model, version, key, parts, size)
    payload = b"".join(bytes(p) for p in parts)
    assert pb.PredictionsRequest.FromString(wire) == pb.PredictionsRequest(
        model_name=model, model_version=version, input={key: payload}
    )


def _response(
    prediction: bytes, *, sequence_id: str | None = None, status: bool = False
) -> pb.PredictionResponse:
    message = pb.PredictionResponse(prediction=prediction)
    if sequence_id is not None:
        message.sequence_id = sequence_id
    if status:
        message.status.code = 13
        message.status.message = "Parameter sequenceId is required."
        message.status.details.add(type_url="type.googleapis.com/x", value=b"\x08\x01")
    return message


# Fields this build does not know, of each wire type a reader must skip: varint (9), 64-bit (10),
# length-delimited (11), 32-bit (12).
_UNKNOWN = b"\x48\x96\x01" + b"\x51" + bytes(8) + b"\x5a\x03abc" + b"\x65" + bytes(4)


@pytest.mark.parametrize(
    "wire",
    [
        _response(b"GWT1 payload").SerializeToString(),
        _response(b"p" * 70_000, sequence_id="seq-1", status=True).SerializeToString(),
        _UNKNOWN + _response(b"after unknown fields").SerializeToString() + _UNKNOWN,
        _response(b"first").SerializeToString() + _response(b"last wins").SerializeToString(),
        b"\x1b\x0a\x02in\x1c" + _response(b"outside the group").SerializeToString(),
        b"",
    ],
    ids=["plain", "all-fields", "unknown-fields", "repeated-field", "unknown-group", "empty"],
)
def test_the_prediction_read_is_protobufs(wire: bytes) -> None:
    assert grpc_wire.prediction(wire) == pb.PredictionResponse.FromString(wire).prediction


@pytest.mark.parametrize(
    "wire",
    [
        b"\x0a\x05ab",  # a length past the end
        b"\x0a",  # a tag with no length
        b"\x0b\x0a\x01x",  # a group (wire type 3) never ended
        b"\x0c",  # the end of a group never started
        b"\x0f",  # wire type 7
        b"\x00\x01",  # field number 0
        b"\x08" + b"\xff" * 11,  # a varint past 64 bits
    ],
)
def test_invalid_bytes_are_refused(wire: bytes) -> None:
    """Bytes that are not a message raise WireError (protobuf refuses them too)."""
    with pytest.raises(WireError):
        grpc_wire.prediction(wire)
    with pytest.raises(DecodeError):
        pb.PredictionResponse.FromString(wire)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.data())
def test_mutated_responses_read_as_protobuf_reads_them(data: st.DataObject) -> None:
    """Over mutated responses (bytes flipped, cut, inserted): where protobuf parses them we read the same
    prediction, and where we refuse them protobuf does too (it checks more: UTF-8, nested messages)."""
    base = bytearray(_response(b"tensor" * 9, sequence_id="s", status=True).SerializeToString())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(base)))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip" and at < len(base):
            base[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del base[at:]
        else:
            base[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    wire = bytes(base)
    try:
        expected = pb.PredictionResponse.FromString(wire).prediction
    except DecodeError:
        expected = None
    try:
        ours = grpc_wire.prediction(wire)
    except WireError:
        assert expected is None
    else:
        assert expected is None or ours == expected


def test_responses_we_write_parse_as_the_message_meant() -> None:
    for answer in (b"GWT1" + bytes(300), b""):
        assert pb.PredictionResponse.FromString(grpc_wire.prediction_response(answer)).prediction == answer
