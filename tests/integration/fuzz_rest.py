"""REST fuzz cases for `test_fuzz`: valid seed bodies of each framing, and strategies that mutate them.

A case records how it was made (seed and mutation), the request it sends, and two facts the checks use:
`must_refuse`, the reason the protocol requires a refusal (None where accepting may be right), and
`short_deadline`, whether it carries a `timeout` parameter short enough to expire honestly.
"""

from __future__ import annotations

import gzip
import json
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any, Final

import hypothesis.strategies as st
import numpy as np
import orjson

from tests.integration.fuzz_mutations import (
    BYTE_OPS,
    JSON_VALUES,
    LONG,
    OUTPUT_ONLY,
    PARAMETER_KEYS,
    SHARED_MEMORY,
    TYPED_PARAMETERS,
    JsonOp,
    JsonPath,
    ShortRepr,
    apply_byte_ops,
    apply_json_op,
    json_get,
    json_paths,
    json_strings,
    json_type,
    timeout_is_short,
)

TOKENS: Final = list(range(1, 17))
OPTIONAL_FIELDS: Final = frozenset({"id", "parameters", "outputs"})
"""Fields where null reads as absent."""
HEADER_LENGTH: Final = "inference-header-content-length"
JSON: Final = "application/json"


@dataclass(frozen=True)
class RestSeed:
    name: str
    model: str
    framing: str  # "json" | "binary" (JSON header + blobs) | "raw" (header length 0) | "gzip"
    doc: dict[str, Any] | None
    blob: bytes = b""

    def frame(self, doc: Any) -> tuple[bytes, dict[str, str]]:
        """The body and headers that send `doc` (and this seed's blob) in this seed's framing."""
        if self.framing == "raw":
            return self.blob, {"inference-header-content-length": "0"}
        header = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        if self.framing == "binary":
            length = str(len(header))
            return header + self.blob, {"content-type": "application/octet-stream", HEADER_LENGTH: length}
        if self.framing == "gzip":
            return gzip.compress(header, mtime=0), {"content-type": JSON, "content-encoding": "gzip"}
        return header, {"content-type": JSON}


def _tokens(**extra: Any) -> dict[str, Any]:
    return {"name": "tokens", "shape": [1, 16], "datatype": "INT32", **extra}


def image() -> np.ndarray:
    """The cnn seeds' input."""
    return np.random.default_rng(7).random((1, 28, 28, 1), dtype=np.float32)


_IMAGE_INPUT: Final = {
    "name": "image",
    "shape": [1, 28, 28, 1],
    "datatype": "FP32",
    "parameters": {"binary_data_size": 3136},
}
REST_SEEDS: Final = (
    RestSeed(
        "json",
        "transformer",
        "json",
        {
            "id": "fuzz-json",
            "parameters": {"timeout": 30_000_000, "priority": 1},
            "inputs": [_tokens(data=TOKENS, parameters={"note": "seed"})],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": False}}],
        },
    ),
    RestSeed(
        "json-nested",
        "transformer",
        "json",
        {
            "inputs": [_tokens(shape=[2, 16], data=[TOKENS, TOKENS[::-1]])],
            "parameters": {"binary_data_output": True},
        },
    ),
    RestSeed(
        "binary",
        "transformer",
        "binary",
        {
            "id": "fuzz-binary",
            "inputs": [_tokens(parameters={"binary_data_size": 64})],
            "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}],
        },
        np.array(TOKENS, dtype=np.int32).tobytes(),
    ),
    RestSeed("binary-cnn", "cnn", "binary", {"inputs": [_IMAGE_INPUT]}, image().tobytes()),
    RestSeed("raw", "transformer", "raw", None, np.array(TOKENS, dtype=np.int32).tobytes()),
    RestSeed("gzip", "transformer", "gzip", {"inputs": [_tokens(data=TOKENS)]}),
)


def infer_path(model: str, version: str | None = None) -> str:
    quoted = urllib.parse.quote(model, safe="")
    if version is None:
        return f"/v2/models/{quoted}/infer"
    return f"/v2/models/{quoted}/versions/{urllib.parse.quote(version, safe='')}/infer"


def decoded_doc(body: bytes, headers: dict[str, str]) -> Any:
    """The JSON document the server reads from this body, or None where it reads none."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    try:
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        elif encoding not in ("identity", ""):
            return None
        length = headers.get(HEADER_LENGTH)
        if length is not None:
            body = body[: int(length)] if int(length) > 0 else b""
        return orjson.loads(body)
    except (ValueError, EOFError, OSError, zlib.error):
        return None


def wrong_type_reason(doc: Any, path: JsonPath, value: Any) -> str | None:
    """Why replacing the node at `path` by `value` must be refused, or None when the server may accept it.

    A field the protocol types (a name, a datatype, a shape dimension, a numeric data element, the id, a
    typed parameter such as binary_data_output) given a value of another JSON type is malformed. Exceptions:
    null for an optional field, and the free-form scalar parameters.
    """
    old = json_get(doc, path)
    if json_type(old) == json_type(value):
        return None
    key = path[-1] if path else None
    if value is None and key in OPTIONAL_FIELDS:
        return None
    if len(path) >= 2 and path[-2] == "parameters" and key not in TYPED_PARAMETERS:
        return None
    where = "/".join(map(str, path)) or "the body"
    return f"{where} ({json_type(old)}) replaced by a {json_type(value)}"


def unserved_extension(doc: Any) -> str | None:
    """The reason a request must be refused for asking an extension that is not served, if it does."""
    if not isinstance(doc, dict):
        return None
    for role, keys in (("inputs", SHARED_MEMORY), ("outputs", (*SHARED_MEMORY, *OUTPUT_ONLY))):
        tensors = doc.get(role)
        for tensor in tensors if isinstance(tensors, list) else ():
            parameters = tensor.get("parameters") if isinstance(tensor, dict) else None
            if isinstance(parameters, dict):
                for key in keys:
                    if key in parameters:
                        return f"{role} tensor parameter '{key}' (an extension not served)"
    return None


@dataclass(frozen=True, repr=False)
class RestCase(ShortRepr):
    _shown = ("seed", "mutation")
    seed: str
    mutation: tuple[Any, ...]
    path: str
    model: str
    body: bytes
    headers: dict[str, str]
    must_refuse: str | None = None
    short_deadline: bool = False

    def sent_text(self) -> str:
        """Everything the client sent, as text an error may legitimately echo."""
        sent = [urllib.parse.unquote(self.path), *self.headers.values(), self.body.decode("utf-8", "replace")]
        return "\n".join([*sent, *json_strings(decoded_doc(self.body, self.headers))])

    def describe(self) -> str:
        body = self.body if len(self.body) <= 600 else self.body[:600] + b"...(%d bytes)" % len(self.body)
        return f"POST {self.path[:300]} headers={self.headers} body={body!r}"


_PATH_NAMES: Final = ("nope", "Transformer", "cnn", "transformer ", "\x00", "é", "%", "?", "#", "..x")
# No '/' and no all-dot names: the path must still match an infer route (every call is then counted).
_SEGMENT_TEXT: Final = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=20)
PATH_SEGMENTS: Final = st.one_of(
    st.sampled_from((*_PATH_NAMES, LONG[:10_000])), _SEGMENT_TEXT.filter(lambda s: s.strip(".") != "")
)
_VERSIONS: Final = st.one_of(st.none(), st.sampled_from(("1", "2", "0", "-1", "01")), PATH_SEGMENTS)
_HEADER_VALUES: Final = ("", "abc", "1e3", "+12", "0x40", "-0", "-1", "9" * 5000, "1_0")
_ENCODINGS: Final = ("gzip", "deflate", "br", "GZIP", "identity", "gzip, gzip", "x" * 300)
_ACTIONS: Final = st.sampled_from(("replace", "replace", "replace", "delete", "add", "dup"))
_ADDED_KEYS: Final = st.sampled_from((*PARAMETER_KEYS, "data", "contents", "datatype"))
# Per seed, the paths each JSON action may take: any node, an object, an array element, a non-root node.
_PATHS: Final = {
    seed.name: {
        "replace": st.sampled_from(paths),
        "add": st.sampled_from([p for p in paths if isinstance(json_get(seed.doc, p), dict)]),
        "dup": st.sampled_from([p for p in paths if p and isinstance(p[-1], int)]),
        "delete": st.sampled_from([p for p in paths if p]),
    }
    for seed in REST_SEEDS
    if seed.doc is not None
    for paths in [list(json_paths(seed.doc))]
}
_KINDS: Final = {
    True: st.sampled_from(("bytes", "bytes", "header", "path", "json", "json", "json")),
    False: st.sampled_from(("bytes", "bytes", "header", "path")),
}


def _json_mutation(draw: st.DrawFn, seed: RestSeed) -> tuple[JsonOp, str | None]:
    assert seed.doc is not None
    action = draw(_ACTIONS)
    target = draw(_PATHS[seed.name][action])
    if action == "replace":
        value = draw(JSON_VALUES)
        return (action, target, value), wrong_type_reason(seed.doc, target, value)
    if action == "add":
        return (action, target, draw(_ADDED_KEYS), draw(JSON_VALUES)), None
    return (action, target), None


@st.composite
def rest_cases(draw: st.DrawFn) -> RestCase:
    """A seed REST request with one kind of mutation: its bytes, one JSON node, a header, or its URL."""
    seed = draw(st.sampled_from(REST_SEEDS))
    kind = draw(_KINDS[seed.doc is not None])
    body, headers = seed.frame(seed.doc)
    path, model, reason = infer_path(seed.model), seed.model, None
    mutation: tuple[Any, ...]
    if kind == "bytes":
        ops = draw(BYTE_OPS)
        body, mutation = apply_byte_ops(body, ops), ("bytes", ops)
    elif kind == "json":
        op, reason = _json_mutation(draw, seed)
        body, headers = seed.frame(apply_json_op(seed.doc, op))
        mutation = ("json", op)
    elif kind == "header":
        name = draw(st.sampled_from((HEADER_LENGTH, "content-encoding")))
        pool = _HEADER_VALUES if name == HEADER_LENGTH else _ENCODINGS
        value = draw(st.one_of(st.sampled_from(pool), st.integers(-3, len(body) + 3).map(str)))
        headers, mutation = {**headers, name: value}, ("header", name, value)
    else:
        model, version = draw(PATH_SEGMENTS), draw(_VERSIONS)
        path, mutation = infer_path(model, version), ("path", model, version)
    doc = decoded_doc(body, headers)
    reason = reason or unserved_extension(doc)
    params = doc.get("parameters") if isinstance(doc, dict) else None
    short = isinstance(params, dict) and timeout_is_short(params.get("timeout"))
    return RestCase(seed.name, mutation, path, model, body, headers, reason, short)


@dataclass(frozen=True, repr=False)
class RestGetCase(ShortRepr):
    _shown = ("path",)
    path: str


@st.composite
def rest_get_cases(draw: st.DrawFn) -> RestGetCase:
    """GET of a model's metadata, readiness or config, with odd model and version names."""
    model = draw(st.one_of(st.sampled_from(("transformer", "cnn")), PATH_SEGMENTS))
    version = draw(st.one_of(st.none(), st.sampled_from(("1", "2")), PATH_SEGMENTS))
    suffix = draw(st.sampled_from(("", "/ready", "/config")))
    return RestGetCase(infer_path(model, version).removesuffix("/infer") + suffix)
