"""gRPC fuzz cases for `test_fuzz`: valid seed messages, and strategies that change them field by field,
byte by byte, or with raw fields appended; the bytes are sent as they are, so what does not parse reaches
the server too.

A ModelInfer case carries, as a REST case does, `must_refuse` (why the protocol requires a refusal, or None)
and `short_deadline` (a `timeout` parameter short enough to expire honestly), both read from the message as
the server's parser sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import hypothesis.strategies as st
import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

from gateway.proto import inference_pb2 as pb
from tests.integration.fuzz_mutations import (
    BYTE_OPS,
    JUNK_FIELDS,
    ODD_NAMES,
    OUTPUT_ONLY,
    PARAMETER_KEYS,
    SHARED_MEMORY,
    ByteOp,
    JunkField,
    ShortRepr,
    apply_byte_ops,
    encode_junk,
    parse_or_none,
    timeout_is_short,
)
from tests.integration.fuzz_rest import TOKENS, image

CONTENTS_FIELD: Final = {
    "BOOL": "bool_contents",
    **{t: "uint_contents" for t in ("UINT8", "UINT16", "UINT32")},
    "UINT64": "uint64_contents",
    **{t: "int_contents" for t in ("INT8", "INT16", "INT32")},
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The typed `InferTensorContents` field each datatype's values travel in (8- and 16-bit ones widened)."""
TYPED_FIELDS: Final = tuple(sorted(set(CONTENTS_FIELD.values())))


def _seeds() -> dict[str, pb.ModelInferRequest]:
    typed = pb.ModelInferRequest(model_name="transformer", id="fuzz-typed")
    typed.parameters["timeout"].int64_param = 30_000_000
    typed.parameters["priority"].int64_param = 1
    tokens = typed.inputs.add(name="tokens", datatype="INT32", shape=[1, 16])
    tokens.contents.int_contents.extend(TOKENS)
    tokens.parameters["note"].string_param = "seed"
    typed.outputs.add(name="embedding")
    raw = pb.ModelInferRequest(model_name="transformer", model_version="1")
    raw.inputs.add(name="tokens", datatype="INT32", shape=[2, 16])
    raw.raw_input_contents.append(np.array(TOKENS + TOKENS[::-1], dtype=np.int32).tobytes())
    cnn = pb.ModelInferRequest(model_name="cnn", id="fuzz-cnn")
    cnn.inputs.add(name="image", datatype="FP32", shape=[1, 28, 28, 1])
    cnn.raw_input_contents.append(image().tobytes())
    return {"typed": typed, "raw": raw, "cnn": cnn}


GRPC_SEEDS: Final = _seeds()
VALID_INFER_REQUEST: Final = GRPC_SEEDS["typed"]

# --- field-level changes: each a plain tuple, applied by `apply_proto_op` ----------------------------------

ProtoOp = tuple[Any, ...]
_INT64: Final = st.integers(-(2**63), 2**63 - 1)
_DIMS: Final = st.one_of(st.sampled_from([0, 1, 2, 16, 28, 784, -1, -(2**63), 2**63 - 1, 2**32]), _INT64)
_PARAM_VALUES: Final = {
    "bool_param": st.booleans(),
    "int64_param": st.one_of(st.integers(-3, 20_000_000), _INT64),
    "string_param": ODD_NAMES,
    "double_param": st.floats(),
    "uint64_param": st.integers(0, 2**64 - 1),
    "unset": st.none(),
}
_CONTENT_VALUES: Final = {
    "bool_contents": st.booleans(),
    "int_contents": st.sampled_from([0, 1, -1, 127, 128, 2**31 - 1, -(2**31)]),
    "int64_contents": st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]),
    "uint_contents": st.sampled_from([0, 1, 255, 256, 2**32 - 1]),
    "uint64_contents": st.sampled_from([0, 1, 2**64 - 1]),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.sampled_from([b"", b"x", b"\xff\xfe", b"\x00" * 64]),
}
_WHERE: Final = ("model_name", "model_version", "id", "input.name", "input.datatype", "output.name")
_COUNTS: Final = st.sampled_from([0, 1, 15, 16, 17, 32, 784])
_PARAM_OP: Final = st.one_of(
    [
        st.tuples(
            st.just("param"),
            st.sampled_from(("request", "input", "output")),
            st.sampled_from(PARAMETER_KEYS),
            st.just(which),
            values,
        )
        for which, values in _PARAM_VALUES.items()
    ]
)
PROTO_OP: Final = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(_WHERE), ODD_NAMES),
    st.tuples(st.just("shape"), st.lists(_DIMS, max_size=6)),
    st.one_of(
        [st.tuples(st.just("contents"), st.just(f), _COUNTS, values) for f, values in _CONTENT_VALUES.items()]
    ),
    st.tuples(st.just("raw"), st.sampled_from(("clear", "append", "resize")), st.integers(0, 4000)),
    _PARAM_OP,
    _PARAM_OP,
    st.tuples(
        st.just("inputs"),
        st.sampled_from(("dup", "drop", "add")),
        ODD_NAMES,
        st.sampled_from((*CONTENTS_FIELD, "FP16", "BF16", "x")),
    ),
    st.tuples(st.just("outputs"), st.sampled_from(("dup", "drop", "add")), ODD_NAMES),
)
"""One field-level change of a ModelInferRequest."""


def _set_parameter(target: Any, key: str, which: str, value: Any) -> None:
    param = target[key]
    if which == "unset":
        param.Clear()
    else:
        setattr(param, which, value)


def apply_proto_op(msg: pb.ModelInferRequest, op: ProtoOp) -> None:
    """Apply one `PROTO_OP` in place; one that names a tensor the message no longer has does nothing."""
    kind = op[0]
    first = msg.inputs[0] if msg.inputs else None
    if kind == "set":
        where, value = op[1], op[2]
        if where in ("model_name", "model_version", "id"):
            setattr(msg, where, value)
        elif where.startswith("input.") and first is not None:
            setattr(first, where.removeprefix("input."), value)
        elif where == "output.name" and msg.outputs:
            msg.outputs[0].name = value
    elif kind == "shape" and first is not None:
        del first.shape[:]
        first.shape.extend(op[1])
    elif kind == "contents" and first is not None:
        getattr(first.contents, op[1]).extend([op[3]] * op[2])
    elif kind == "raw":
        action, size = op[1], op[2]
        if action == "clear":
            del msg.raw_input_contents[:]
        elif action == "append":
            msg.raw_input_contents.append(b"\x01" * size)
        elif msg.raw_input_contents:
            msg.raw_input_contents[0] = (msg.raw_input_contents[0] * 2)[:size]
    elif kind == "param":
        scope, key, which, value = op[1:]
        if scope == "request":
            _set_parameter(msg.parameters, key, which, value)
        elif scope == "input" and first is not None:
            _set_parameter(first.parameters, key, which, value)
        elif scope == "output" and msg.outputs:
            _set_parameter(msg.outputs[0].parameters, key, which, value)
    elif kind == "inputs":
        if op[1] == "dup" and first is not None:
            msg.inputs.add().CopyFrom(first)
        elif op[1] == "drop" and first is not None:
            del msg.inputs[0]
        elif op[1] == "add":
            msg.inputs.add(name=op[2], datatype=op[3], shape=[1, 16]).contents.int_contents.extend(TOKENS)
    elif kind == "outputs":
        if op[1] == "dup" and msg.outputs:
            msg.outputs.add().CopyFrom(msg.outputs[0])
        elif op[1] == "drop" and msg.outputs:
            del msg.outputs[0]
        elif op[1] == "add":
            msg.outputs.add(name=op[2])


# --- what the server must make of a message ---------------------------------------------------------------


def _asks(parameters: Any, keys: tuple[str, ...]) -> str | None:
    """The first of `keys` set to a value (an entry with no value set reads as absent)."""
    for key in keys:
        if key in parameters and parameters[key].WhichOneof("parameter_choice") is not None:
            return key
    return None


def refusal_reason(msg: pb.ModelInferRequest | None) -> str | None:
    """Why this ModelInferRequest must be refused even if it otherwise fits the model, or None."""
    if msg is None:
        return None
    for tensor in msg.inputs:
        own = CONTENTS_FIELD.get(tensor.datatype)
        for typed in TYPED_FIELDS:
            if typed != own and len(getattr(tensor.contents, typed)):
                return f"input '{tensor.name[:40]}' ({tensor.datatype[:20]}) carries values in {typed}"
        if key := _asks(tensor.parameters, SHARED_MEMORY):
            return f"input parameter '{key}' (an extension not served)"
    for output in msg.outputs:
        if key := _asks(output.parameters, (*SHARED_MEMORY, *OUTPUT_ONLY)):
            return f"requested output parameter '{key}' (an extension not served)"
    return None


def _short_deadline(msg: pb.ModelInferRequest | None) -> bool:
    if msg is None or "timeout" not in msg.parameters:
        return False
    param = msg.parameters["timeout"]
    which = param.WhichOneof("parameter_choice")
    return which in ("int64_param", "uint64_param") and timeout_is_short(getattr(param, which))


def describe(message_type: type[Message], data: bytes) -> str:
    """The message as text (unknown fields too), or the bytes where they do not parse."""
    msg = parse_or_none(message_type, data)
    if msg is None:
        shown = data if len(data) <= 400 else data[:400] + b"..."
        return f"{len(data)} bytes that do not parse: {shown!r}"
    text = text_format.MessageToString(msg, as_one_line=True, print_unknown_fields=True)
    return f"{len(data)} bytes: {text[:1500]}"


@dataclass(frozen=True, repr=False)
class GrpcCase(ShortRepr):
    _shown = ("seed", "ops", "bytes_ops", "junk")
    seed: str
    ops: tuple[ProtoOp, ...] = ()
    bytes_ops: tuple[ByteOp, ...] = ()
    junk: tuple[JunkField, ...] = ()
    data: bytes = b""
    must_refuse: str | None = None
    short_deadline: bool = False

    def describe(self) -> str:
        return describe(pb.ModelInferRequest, self.data)


_KINDS: Final = st.sampled_from(("proto", "proto", "proto", "bytes", "bytes", "junk"))
_PROTO_OPS: Final = {
    "proto": st.lists(PROTO_OP, min_size=1, max_size=3).map(tuple),
    "junk": st.lists(PROTO_OP, max_size=2).map(tuple),
}


@st.composite
def grpc_cases(draw: st.DrawFn) -> GrpcCase:
    """A seed ModelInferRequest changed field by field, byte by byte, or with raw fields appended."""
    name = draw(st.sampled_from(sorted(GRPC_SEEDS)))
    kind = draw(_KINDS)
    msg = pb.ModelInferRequest()
    msg.CopyFrom(GRPC_SEEDS[name])
    ops: tuple[ProtoOp, ...] = draw(_PROTO_OPS[kind]) if kind in _PROTO_OPS else ()
    for op in ops:
        apply_proto_op(msg, op)
    bops = draw(BYTE_OPS) if kind == "bytes" else ()
    junk = draw(JUNK_FIELDS) if kind == "junk" else ()
    data = apply_byte_ops(msg.SerializeToString(), bops) + encode_junk(junk)
    seen = parse_or_none(pb.ModelInferRequest, data)
    return GrpcCase(name, ops, bops, junk, data, refusal_reason(seen), _short_deadline(seen))


# --- the other unary methods ------------------------------------------------------------------------------

UNARY_METHODS: Final[dict[str, tuple[type[Message], type[Message]]]] = {
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
}


@dataclass(frozen=True, repr=False)
class UnaryCase(ShortRepr):
    _shown = ("method", "name", "version", "bytes_ops", "junk")
    method: str
    name: str | None = None
    version: str | None = None
    bytes_ops: tuple[ByteOp, ...] = ()
    junk: tuple[JunkField, ...] = ()
    data: bytes = b""


_MODEL_NAMES: Final = st.one_of(st.sampled_from(("transformer", "cnn")), ODD_NAMES)
_VERSIONS: Final = st.one_of(st.sampled_from(("", "1", "2")), ODD_NAMES)
_MAYBE_BYTE_OPS: Final = st.one_of(st.just(()), BYTE_OPS)
_MAYBE_JUNK: Final = st.one_of(st.just(()), JUNK_FIELDS)


@st.composite
def unary_cases(draw: st.DrawFn) -> UnaryCase:
    """A metadata, readiness or config request with odd names, mutated bytes or raw fields appended."""
    method = draw(st.sampled_from(sorted(UNARY_METHODS)))
    request_type = UNARY_METHODS[method][0]
    name = version = None
    msg = request_type()
    if "name" in request_type.DESCRIPTOR.fields_by_name:
        name, version = draw(_MODEL_NAMES), draw(_VERSIONS)
        msg = request_type(name=name, version=version)
    bops, junk = draw(_MAYBE_BYTE_OPS), draw(_MAYBE_JUNK)
    data = apply_byte_ops(msg.SerializeToString(), bops) + encode_junk(junk)
    return UnaryCase(method, name, version, bops, junk, data)
