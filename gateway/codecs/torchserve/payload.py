"""The project's tensor payload for TorchServe: named tensors in one binary body, both ways.

Layout (all integers little-endian)::

    offset 0   4 bytes   magic b"GWT1" (gateway tensors, layout version 1)
    offset 4   uint32    H, the length of the JSON header
    offset 8   H bytes   UTF-8 JSON header (below)
    then       zero bytes up to a multiple of 8, then each tensor's data in header order, each one
               starting at a multiple of 8 from the start of the payload (zero bytes between)

    request header:  {"inputs":  [{"name", "datatype", "shape", "nbytes"}, ...], "outputs": [names]?}
    response header: {"outputs": [{"name", "datatype", "shape", "nbytes"}, ...]}
    metadata query:  {"inputs": [], "metadata": true}  (the handler answers with the signature's JSON)

Tensor data is what the Open Inference Protocol's binary extension and raw gRPC contents carry: the
row-major buffer (`datatypes` names and dtypes; BOOL one byte, BF16 its 16-bit patterns), and for BYTES
each element as a uint32 length then its bytes.

Why this form. The numbers never pass through text or a per-element loop: decoding is one small
`json.loads` (tens of microseconds whatever the tensor size) and one `np.frombuffer` per tensor, a
zero-copy view of the body, aligned for every datatype because each buffer starts at a multiple of 8
(CPython's `bytes` data is 16-byte aligned). JSON lists of floats cost ~20x the bytes' parse time and
lose float32 bits in round trips; `torch.save`/pickle would run code from the request and tie the
gateway to torch; npz adds zip framing and a copy; protobuf would need generated code inside every model
archive and copies each field on parse. The header stays human-readable for debugging and can grow
fields without a new layout version. The body is self-describing (no HTTP header needed), so the same
bytes travel over REST `/predictions` (send `Content-Type: application/octet-stream`) and as the value
of gRPC `PredictionsRequest.input["data"]`.

Errors: decoding a request raises `InvalidRequest`, decoding a response `BackendError`; each message
names what is wrong (the tensor, its offset, the expected and actual sizes). The handler answers a
request it cannot serve with TorchServe's own error shape, `error_body`, which `decode_error` reads.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from gateway.codecs.v2.tensors import owner, tensor_from_buffer, tensor_to_buffer
from gateway.errors import BackendError, GatewayError, InvalidRequest, clip
from gateway.types import Tensor

MAGIC: Final = b"GWT1"
CONTENT_TYPE: Final = "application/octet-stream"
ALIGNMENT: Final = 8
MAX_HEADER_BYTES: Final = 1 << 20
"""A header longer than this is refused before parsing (a header is ~80 bytes per tensor)."""

_PREFIX: Final = struct.Struct("<4sI")
_MESSAGE_CHARS: Final = 1024  # an error message passed on: room for one naming a few tensors and shapes
_KEY_REFUSED_TYPE: Final = "InvalidKeyException"
_KEY_REFUSAL_MAX_BYTES: Final = 4096  # TorchServe's refusal is ~150 bytes; a larger body is no refusal
_PAD: Final = bytes(ALIGNMENT)


class Framed(NamedTuple):
    """A payload as the parts it is made of (the tensors' own buffers among them, not copied) and its
    size: a transport that frames it in a message of its own joins everything once (`grpc_wire`)."""

    parts: list[bytes | memoryview]
    size: int

    def join(self) -> bytes:
        return b"".join(self.parts)


def encode_request(tensors: Sequence[Tensor], outputs: Sequence[str] | None = None) -> bytes:
    """A request payload of `tensors` (the model's inputs); `outputs` limits the outputs returned.

    Raises:
        InvalidRequest: A tensor cannot be encoded (data not convertible to its datatype).
    """
    return encode_request_parts(tensors, outputs).join()


def encode_request_parts(tensors: Sequence[Tensor], outputs: Sequence[str] | None = None) -> Framed:
    """`encode_request`, not joined yet."""
    extra: dict[str, Any] = {} if outputs is None else {"outputs": list(outputs)}
    return _encode("inputs", tensors, extra, InvalidRequest)


def encode_metadata_request() -> bytes:
    """A payload that asks the handler for the model's signature instead of running the model."""
    return _frame({"inputs": [], "metadata": True}, []).join()


def decode_request(payload: bytes | bytearray | memoryview) -> list[Tensor]:
    """The input tensors of a request payload (numeric data: read-only views of `payload`)."""
    return parse_request(payload)[0]


def parse_request(
    payload: bytes | bytearray | memoryview,
) -> tuple[list[Tensor], tuple[str, ...] | None, bool]:
    """A request payload's inputs, requested output names (None: all) and whether it is a metadata query.

    Raises:
        InvalidRequest: The payload is not in this layout, or a tensor's description or data is wrong.
    """
    header, body, start = _split(payload, "inputs", "request", InvalidRequest)
    outputs = header.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list) or not all(isinstance(name, str) for name in outputs)
    ):
        raise InvalidRequest("request payload: 'outputs' must be a list of output names")
    metadata = header.get("metadata", False)
    if not isinstance(metadata, bool):
        raise InvalidRequest("request payload: 'metadata' must be true or false")
    tensors = _tensors(header["inputs"], body, start, "input", InvalidRequest)
    return tensors, None if outputs is None else tuple(outputs), metadata


def encode_response(tensors: Sequence[Tensor]) -> bytes:
    """A response payload of a model's output tensors.

    Raises:
        BackendError: A tensor cannot be encoded (data not convertible to its datatype).
    """
    return _encode("outputs", tensors, {}, BackendError).join()


def decode_response(payload: bytes | bytearray | memoryview) -> list[Tensor]:
    """The output tensors of a response payload.

    Raises:
        BackendError: The payload is not in this layout, or a tensor's description or data is wrong.
    """
    header, body, start = _split(payload, "outputs", "response", BackendError)
    return _tensors(header["outputs"], body, start, "output", BackendError)


def error_body(code: int, kind: str, message: str) -> bytes:
    """An error answer in TorchServe's own shape, `{"code", "type", "message"}` (JSON)."""
    return json.dumps({"code": code, "type": kind, "message": message}).encode()


def decode_error(body: bytes) -> tuple[int, str, str]:
    """`(code, type, message)` of a TorchServe error body; (0, "", text) if it is not that shape. The
    message (and the text) are clipped: an upstream's or a model's, they may be of any length."""
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return 0, "", clip(body.decode("utf-8", "replace"))
    if isinstance(parsed, dict):
        code, kind, message = parsed.get("code"), parsed.get("type"), parsed.get("message")
        if isinstance(code, int) and isinstance(kind, str) and isinstance(message, str):
            return code, clip(kind), clip(message, _MESSAGE_CHARS)
    return 0, "", clip(body.decode("utf-8", "replace"))


def is_key_refusal(status: int, body: bytes) -> bool:
    """Whether an answer is TorchServe refusing the bearer key (its `InvalidKeyException`, HTTP 400 in
    0.12.0), not a handler's or a model's own 400: the error body's `type` must say so, not merely its
    text (a handler's message may quote a client's string, "InvalidKeyException" included)."""
    if status not in (400, 401, 403) or len(body) > _KEY_REFUSAL_MAX_BYTES:
        return False
    if _KEY_REFUSED_TYPE.encode() not in body:  # cheap: most 4xx bodies are not refusals
        return False
    return decode_error(body)[1] == _KEY_REFUSED_TYPE


def _encode(key: str, tensors: Sequence[Tensor], extra: dict[str, Any], error: type[GatewayError]) -> Framed:
    role = key[:-1]
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for tensor in tensors:
        try:
            buf = tensor_to_buffer(tensor)
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            raise error(f"{owner(role, tensor.name)}: cannot encode as {tensor.datatype}: {exc}") from None
        nbytes = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        shape = [int(d) for d in tensor.shape]
        entries.append({"name": tensor.name, "datatype": tensor.datatype, "shape": shape, "nbytes": nbytes})
        buffers.append(buf)
    return _frame({key: entries, **extra}, buffers)


def _frame(header: dict[str, Any], buffers: list[bytes | memoryview]) -> Framed:
    text = json.dumps(header, separators=(",", ":")).encode()
    parts: list[bytes | memoryview] = [_PREFIX.pack(MAGIC, len(text)), text]
    size = _PREFIX.size + len(text)
    for buf in buffers:
        parts.append(_PAD[: -size % ALIGNMENT])
        size += -size % ALIGNMENT
        parts.append(buf)
        size += buf.nbytes if isinstance(buf, memoryview) else len(buf)
    return Framed(parts, size)


def _split(
    payload: bytes | bytearray | memoryview, key: str, what: str, error: type[GatewayError]
) -> tuple[dict[str, Any], memoryview, int]:
    """The parsed header, the whole payload as a memoryview and the offset where the data starts."""
    body = memoryview(payload).cast("B")
    if body.nbytes < _PREFIX.size:
        raise error(f"{what} payload: {body.nbytes} bytes, shorter than the 8-byte prefix")
    magic, length = _PREFIX.unpack_from(body)
    if magic != MAGIC:
        raise error(f"{what} payload: starts with {bytes(magic)!r}, not the magic {MAGIC!r}")
    if length > MAX_HEADER_BYTES:
        raise error(f"{what} payload: header length {length} is over the limit of {MAX_HEADER_BYTES}")
    end = _PREFIX.size + length
    if end > body.nbytes:
        raise error(f"{what} payload: header length {length} runs past the end ({body.nbytes} bytes)")
    try:
        header = json.loads(bytes(body[_PREFIX.size : end]))
    except RecursionError:  # a header of arrays nested thousands deep: a client's, not our fault
        raise error(f"{what} payload: header is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} payload: header is not JSON ({clip(str(exc))})") from None
    if not isinstance(header, dict) or not isinstance(header.get(key), list):
        raise error(f"{what} payload: header must be an object with a list '{key}'")
    return header, body, end


def _tensors(
    entries: list[Any], body: memoryview, offset: int, role: str, error: type[GatewayError]
) -> list[Tensor]:
    tensors: list[Tensor] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise error(f"{role} {index}: must be an object with a string 'name'")
        name = entry["name"]
        if name in names:
            raise error(f"{owner(role, name)}: appears twice")
        names.add(name)
        nbytes = entry.get("nbytes")
        if type(nbytes) is not int or nbytes < 0:
            raise error(f"{owner(role, name)}: 'nbytes' must be a non-negative integer")
        offset += -offset % ALIGNMENT
        if offset + nbytes > body.nbytes:
            raise error(
                f"{owner(role, name)}: {nbytes} bytes at offset {offset} run past the end "
                f"of the payload ({body.nbytes} bytes)"
            )
        try:
            data = body[offset : offset + nbytes]
            tensors.append(
                tensor_from_buffer(name, entry.get("datatype"), entry.get("shape"), data, role=role)
            )
        except InvalidRequest as exc:
            raise error(exc.message) from None
        offset += nbytes
    if offset != body.nbytes:
        raise error(f"{role}s end at byte {offset} but the payload has {body.nbytes} bytes")
    return tensors
