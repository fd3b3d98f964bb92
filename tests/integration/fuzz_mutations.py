"""Wire-agnostic mutations for `test_fuzz`: byte edits, JSON values of every type, raw protobuf fields.

Mutations are drawn as plain tuples (a recipe) and applied by a pure function, so a falsifying example that
hypothesis prints says exactly how its bytes were made, and shrinks towards fewer and earlier edits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Final

import hypothesis.strategies as st
from google.protobuf.message import DecodeError, Message

LONG: Final = "L" * 20_000
"""Past gRPC's 16 KiB metadata limit if an error quotes it whole."""
SHORT_DEADLINE_US: Final = 10_000_000
"""A `timeout` request parameter (µs) under this may legitimately expire before the server answers."""
SHARED_MEMORY: Final = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
"""Tensor parameters of Triton's shared-memory extension, which these servers do not serve."""
OUTPUT_ONLY: Final = ("classification",)
"""A requested output's parameter of Triton's classification extension, not served either."""
TYPED_PARAMETERS: Final = frozenset({"timeout", "binary_data_size", "binary_data", "binary_data_output"})
"""Parameters whose JSON type the protocol fixes; any other parameter is a free-form scalar."""
PARAMETER_KEYS: Final = (
    *sorted(TYPED_PARAMETERS),
    *SHARED_MEMORY,
    *OUTPUT_ONLY,
    *("priority", "sequence_id", "", "x", "K" * 5_000),
)
NAMES: Final = (
    *("", "transformer", "cnn", "tokens", "image", "embedding", "probabilities"),
    *("INT32", "FP32", "FP16", "BF16", "BYTES", "BOOL", "INT33", "int32", "1", "-1", "99"),
    *("\x00", "é", "a b", "../x", LONG),
)
TEXT: Final = st.text(st.characters(codec="utf-8"), max_size=12)
ODD_NAMES: Final = st.one_of(st.sampled_from(NAMES), TEXT)


def timeout_is_short(value: Any) -> bool:
    """Whether a `timeout` parameter is one the server reads as a deadline that may pass first."""
    return type(value) is int and 0 < value < SHORT_DEADLINE_US


# --- bytes ------------------------------------------------------------------------------------------------

ByteOp = tuple[str, int, bytes]
_INTERESTING: Final = b'\x00\xff\x7f\x80{}[],:"\\01-.eE \x08\x0a\x12\x1a\x22\x2a\x32\x3a'
_BYTE_OP: Final = st.tuples(
    st.sampled_from(("flip", "insert", "delete", "truncate", "duplicate", "set")),
    st.integers(0, 1 << 20),
    st.binary(min_size=1, max_size=8),
)
BYTE_OPS: Final = st.lists(_BYTE_OP, min_size=1, max_size=4).map(tuple)
"""1..4 edits at positions taken modulo the data's length (so they shrink towards the start)."""


def apply_byte_ops(data: bytes, ops: tuple[ByteOp, ...]) -> bytes:
    buf = bytearray(data)
    for kind, where, chunk in ops:
        at = where % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[where % len(buf)] ^= chunk[0] or 0x01
        elif kind == "set" and buf:
            buf[where % len(buf)] = _INTERESTING[chunk[0] % len(_INTERESTING)]
        elif kind == "insert":
            buf[at:at] = chunk
        elif kind == "delete":
            del buf[at : at + len(chunk)]
        elif kind == "truncate":
            del buf[at:]
        elif kind == "duplicate":
            buf[at:at] = buf[at : at + 4 * len(chunk)]
    return bytes(buf)


# --- JSON -------------------------------------------------------------------------------------------------

_SCALAR: Final = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3))
JSON_VALUES: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(["", "INT32", "FP32", "BYTES", "true", "1", "tokens", "embedding", LONG, "é" * 5000]),
    st.lists(_SCALAR, max_size=3),
    st.dictionaries(st.text(max_size=5), _SCALAR, max_size=2),
)
"""A JSON value of any type, odd ones favoured: huge integers, long strings, empty containers."""

JsonPath = tuple[str | int, ...]
JsonOp = tuple[Any, ...]
"""("replace", path, value) | ("delete", path) | ("add", path, key, value) | ("dup", path)"""


def json_type(value: Any) -> str:
    """The JSON type of a value as the protocol reads it (integers and other numbers differ)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def json_paths(doc: Any, prefix: JsonPath = ()) -> Iterator[JsonPath]:
    """Every node's path, the root's included, depth first; of a long array only the first and last
    elements, so that the data values do not crowd out the fields around them."""
    yield prefix
    items: list[tuple[Any, Any]] = []
    if isinstance(doc, dict):
        items = list(doc.items())
    elif isinstance(doc, list):
        items = list(enumerate(doc))
        items = items if len(items) <= 2 else [items[0], items[-1]]
    for key, value in items:
        yield from json_paths(value, (*prefix, key))


def json_get(doc: Any, path: JsonPath) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def apply_json_op(doc: Any, op: JsonOp) -> Any:
    """A copy of `doc` with one mutation applied."""
    doc = json.loads(json.dumps(doc))
    kind, path = op[0], op[1]
    if kind == "add":  # a key into the object at `path`
        json_get(doc, path)[op[2]] = op[3]
        return doc
    if not path:
        return op[2] if kind == "replace" else doc
    parent = json_get(doc, path[:-1])
    if kind == "replace":
        parent[path[-1]] = op[2]
    elif kind == "delete":
        del parent[path[-1]]
    elif kind == "dup":  # an array element, twice
        parent.insert(path[-1], json.loads(json.dumps(parent[path[-1]])))
    return doc


def json_strings(doc: Any) -> Iterator[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield key
            yield from json_strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from json_strings(value)


def flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in flatten(item)]
    return [data]


def element_count(shape: Any) -> int | None:
    """The number of elements a shape holds, None if it is not a list of non-negative integers."""
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        return None
    return math.prod(shape)


# --- raw protobuf -----------------------------------------------------------------------------------------

JunkField = tuple[int, int, bytes, int]
_FIELD_NUMBER: Final = st.one_of(
    st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 2**29 - 1]), st.integers(1, 2**29 - 1)
)
_JUNK_FIELD: Final = st.tuples(
    _FIELD_NUMBER, st.integers(0, 7), st.binary(max_size=12), st.sampled_from([0, 0, 1, -1, 1 << 30])
)
JUNK_FIELDS: Final = st.lists(_JUNK_FIELD, min_size=1, max_size=3).map(tuple)
"""Raw fields to append: any field number, any wire type (the invalid 3, 4, 6, 7 too), lying lengths."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_junk(fields: tuple[JunkField, ...]) -> bytes:
    out = bytearray()
    for number, wire_type, payload, lie in fields:
        out += _varint(number << 3 | wire_type)
        if wire_type == 0:
            out += _varint(int.from_bytes(payload or b"\x01", "little"))
        elif wire_type == 1:
            out += payload[:8].ljust(8, b"\x00")
        elif wire_type == 2:
            out += _varint(max(0, len(payload) + lie)) + payload
        elif wire_type == 5:
            out += payload[:4].ljust(4, b"\x00")
        else:
            out += payload
    return bytes(out)


def parse_or_none(message_type: type[Message], data: bytes) -> Any:
    """The message `data` holds as the server's parser reads it, or None if it is not one."""
    try:
        return message_type.FromString(data)
    except DecodeError:
        return None


# --- printing cases ---------------------------------------------------------------------------------------


def short(value: Any) -> str:
    """`repr(value)` with long strings and bytes abridged, so a falsifying example prints readably."""
    if isinstance(value, list):
        return "[" + ", ".join(short(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(short(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{short(k)}: {short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str | bytes) and len(value) > 80:
        if len(set(value)) == 1:
            return f"{value[:1]!r} * {len(value)}"
        return f"{value[:60]!r} + ...({len(value)} long)"
    return repr(value)


class ShortRepr:
    """A case prints its recipe (the fields named in `_shown`), long strings abridged; hypothesis prints
    falsifying examples this way."""

    _shown: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={short(getattr(self, name))}" for name in self._shown)
        return f"{type(self).__name__}({fields})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
