"""TF Serving's REST JSON (PROTOCOLS §1.3-1.6) <-> the gateway's tensors, typed by OIP model metadata.

JSON numbers carry no dtype, so every conversion takes the model's `TensorMetadata`: the datatype comes
from it, the shape from the nesting of the JSON lists (an empty list takes its inner dimensions from the
metadata, since no element is there to show them). Both directions live here: for TF Serving clients of
the gateway's front (`decode_predict_request` / `encode_predict_response`) and toward a TF Serving
backend (`encode_predict_request` / `decode_predict_response`, whose errors are `BackendError`s).

What TF Serving's JSON adds to plain JSON, and what it means here:
- `NaN`, `Infinity` and `-Infinity` tokens, in requests and responses. orjson refuses them, so a body it
  refuses is parsed once more with the stdlib parser, which takes them (orjson stays the fast path);
  responses holding a non-finite float are written by the stdlib encoder, which writes those tokens.
- `{"b64": "..."}` wherever a BYTES value goes. In outputs TF Serving cannot tell bytes from text, so only
  outputs named `*_bytes` are written that way; other BYTES outputs are UTF-8 strings (a value that is
  not valid UTF-8 is written as `{"b64": ...}` too: the only lossless choice, where TF Serving would
  emit invalid JSON).
- Integer inputs take JSON integers only (2.0 is refused, as TF Serving's parser refuses it) and BOOL
  only true/false: the checks of the OIP JSON codec (`tensor_from_list`), which every path goes through.
- Strings holding an unpaired surrogate (`"\\ud800"`: orjson refuses them, the stdlib parser takes
  them) cannot become UTF-8 bytes: an `InvalidRequest` naming the field, and `error_body` can write any
  message, one that quotes such a string included.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import orjson
from google.protobuf import json_format
from google.protobuf.message import Message

from gateway.codecs.v2.tensors import json_type, owner, reshape, tensor_from_list
from gateway.datatypes import NUMPY_DTYPES
from gateway.errors import BackendError, InvalidRequest, clip
from gateway.proto.tfserving import POOL
from gateway.types import InferenceRequest, Tensor, TensorMetadata

B64: Final = "b64"
BYTES_SUFFIX: Final = "_bytes"
_ORJSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY


# --- front: TF Serving clients of the gateway ------------------------------------------------------


def decode_predict_request(body: bytes, inputs: Sequence[TensorMetadata]) -> tuple[str, list[Tensor], bool]:
    """Decode a `:predict` body for a model with these inputs.

    Returns:
        The signature name ("" when the body names none), the input tensors, and whether the body was in
        row format (`instances`; the answer is then `predictions`) rather than columnar (`inputs`).

    Raises:
        InvalidRequest: The body is not valid JSON, has both or neither of `instances` / `inputs`, names
            an input the model lacks, or a value does not fit its input; the message names the field.
    """
    doc = _load(body, "request")
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidRequest("'signature_name' must be a string")
    _utf8(signature, "'signature_name'")
    if "instances" in doc:
        if "inputs" in doc:
            raise InvalidRequest(
                "request must have either 'instances' (row format) or 'inputs' (columnar format), NOT both"
            )
        return signature, _from_instances(doc["instances"], inputs), True
    if "inputs" in doc:
        return signature, _from_columns(doc["inputs"], inputs, "input"), False
    raise InvalidRequest("request has neither 'instances' (row format) nor 'inputs' (columnar format)")


def check_row_format(outputs: Sequence[TensorMetadata]) -> None:
    """Refuse a row request (`instances`) whose answer the model's metadata shows cannot be rows, before
    the model runs: an output of rank 0, or outputs of fixed, different batch sizes. TF Serving refuses
    those too (INVALID_ARGUMENT), once its model has run.

    Raises:
        InvalidRequest: The output at fault is named; the columnar format carries any answer.
    """
    fixed: TensorMetadata | None = None
    for meta in outputs:
        if not meta.shape:
            raise InvalidRequest(
                f"{owner('output', meta.name)} has no batch dimension, so the answer cannot be written "
                "in row format: use the columnar format ('inputs')"
            )
        if meta.shape[0] < 0:
            continue
        if fixed is not None and meta.shape[0] != fixed.shape[0]:
            raise InvalidRequest(
                f"{owner('output', meta.name)} has batch size {meta.shape[0]}, "
                f"{owner('output', fixed.name)} {fixed.shape[0]}: use the columnar format ('inputs')"
            )
        fixed = meta


def encode_predict_response(outputs: list[Tensor], row_format: bool) -> bytes:
    """The body answering a `:predict` call: `predictions` for a row request, else `outputs`.

    Never an error: when the model's answer cannot be rows after all (no outputs, an output of rank 0,
    or outputs of different batch sizes, which its metadata did not show: see `check_row_format`), it
    is written in the columnar format. The model has answered, and the call is counted as answered; TF
    Serving's INVALID_ARGUMENT here would blame the client for the model's answer.
    """
    values = {t.name: _json_value(t, b64=t.name.endswith(BYTES_SUFFIX)) for t in outputs}
    finite = _all_finite(values.values())
    batch = _batch_size(outputs) if row_format else None
    if batch is None:
        return _dump({"outputs": values[outputs[0].name] if len(outputs) == 1 else values}, finite)
    if len(outputs) == 1:
        return _dump({"predictions": values[outputs[0].name]}, finite)
    rows = [{name: value[i] for name, value in values.items()} for i in range(batch)]
    return _dump({"predictions": rows}, finite)


def error_body(message: str) -> bytes:
    """TF Serving's error body, for any message: one quoting a string with unpaired surrogates (which
    orjson refuses) has them written as `\\udXXX` escapes."""
    try:
        return orjson.dumps({"error": message})
    except TypeError:
        return orjson.dumps({"error": message.encode("utf-8", "backslashreplace").decode("utf-8")})


def proto_body(message: Message) -> bytes:
    """The JSON form of a TF Serving response message (GetModelStatus, GetModelMetadata), as TF Serving
    writes it: proto field names, every field even when at its default (`"error_code": "OK"`), int64 as
    strings, an `Any` resolved in the private pool TF Serving's types live in."""
    text = json_format.MessageToJson(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        descriptor_pool=POOL,
        indent=None,
    )
    return text.encode()


# --- backend: the gateway as a TF Serving client ---------------------------------------------------


def encode_predict_request(request: InferenceRequest, signature_name: str) -> bytes:
    """A columnar `:predict` body for a TF Serving backend (BYTES as `{"b64": ...}`: lossless)."""
    doc: dict[str, Any] = {}
    if signature_name:
        doc["signature_name"] = signature_name
    doc["inputs"] = values = {t.name: _json_value(t, b64=True) for t in request.inputs}
    return _dump(doc, _all_finite(values.values()))


def decode_predict_response(
    body: bytes, outputs: Sequence[TensorMetadata], requested: Sequence[str] | None
) -> list[Tensor]:
    """The tensors of a backend's columnar `:predict` answer, typed by the model's output metadata.

    Args:
        body: The response body: `{"outputs": value}` for a one-output model, else an object by name.
        outputs: The model's outputs (datatype and rank; the batch dimension comes from the data).
        requested: The outputs to return, in this order; None for all, in the metadata's order.

    Raises:
        BackendError: The body is unreadable, lacks an output asked for, or a value does not fit.
    """
    try:
        doc = _load(body, "response")
        if "outputs" not in doc:
            raise InvalidRequest("response has no 'outputs'")
        metas = {m.name: m for m in outputs}
        value = doc["outputs"]
        if len(outputs) == 1 and not _is_object(value):
            values = {outputs[0].name: value}
        elif _is_object(value):
            values = value
        else:
            raise InvalidRequest(f"'outputs' is a plain value/list, but the model has {len(outputs)} outputs")
        tensors = []
        for name in requested if requested is not None else list(metas):
            if name not in values:
                raise InvalidRequest(f"answered without output '{clip(name)}'")
            if name not in metas:
                raise InvalidRequest(f"output '{clip(name)}' is not in the model's metadata")
            tensors.append(_tensor(values[name], metas[name], "output"))
        return tensors
    except InvalidRequest as exc:
        raise BackendError(f"unreadable predict response: {exc.message}") from None


def error_message(body: bytes) -> str | None:
    """The message of a TF Serving error body (`{"error": "..."}`), None if the body is not one."""
    try:
        doc = _load(body, "response")
    except InvalidRequest:
        return None
    message = doc.get("error")
    return message if isinstance(message, str) else None


# --- JSON values <-> tensors -----------------------------------------------------------------------


def _load(body: bytes, what: str) -> dict[str, Any]:
    """The JSON object in `body`; the stdlib parser is the fallback for TF Serving's NaN/Infinity."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise InvalidRequest(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"{what} body must be a JSON object")
    return doc


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get(B64)) is str


def _is_object(value: Any) -> bool:
    """A JSON object that names tensors (one holding only "b64" is a BYTES value instead, as in TF)."""
    return type(value) is dict and not _is_b64(value)


def _from_instances(rows: Any, metas: Sequence[TensorMetadata]) -> list[Tensor]:
    """Row format: the list is the tensor (one input), or one object per row naming every input."""
    if not isinstance(rows, list):
        raise InvalidRequest("'instances' must be a list")
    if not rows:
        raise InvalidRequest("'instances' is an empty list")
    if not _is_object(rows[0]):
        if len(metas) != 1:
            raise InvalidRequest(
                f"'instances' is a plain list, but the model has {len(metas)} inputs "
                f"({_names(metas)}): send one object per instance"
            )
        if any(_is_object(row) for row in rows):
            raise InvalidRequest("'instances' mixes objects and plain values")
        return [_tensor(rows, metas[0], "input")]
    expected = {m.name for m in metas}
    columns: dict[str, list[Any]] = {m.name: [] for m in metas}
    for index, row in enumerate(rows):
        if not _is_object(row):
            raise InvalidRequest(f"instances[{index}] is not an object, but instances[0] is")
        if row.keys() != expected:
            raise InvalidRequest(f"instances[{index}] must have exactly the keys {_names(metas)}")
        for name, column in columns.items():
            column.append(row[name])
    return [_tensor(columns[m.name], m, "input") for m in metas]


def _from_columns(value: Any, metas: Sequence[TensorMetadata], role: str) -> list[Tensor]:
    """Columnar format: a value for the single input, or an object by name naming every input and
    nothing else (TF Serving refuses other names: "Sent extra")."""
    if not _is_object(value):
        if len(metas) != 1:
            raise InvalidRequest(
                f"'{role}s' is a plain value/list, but the model has {len(metas)} {role}s "
                f"({_names(metas)}): send an object keyed by {role} name"
            )
        return [_tensor(value, metas[0], role)]
    for meta in metas:
        if meta.name not in value:
            raise InvalidRequest(f"'{role}s' has no {owner(role, meta.name)}")
    if len(value) != len(metas):
        known = {m.name for m in metas}
        extra = [key for key in value if key not in known]
        raise InvalidRequest(
            f"'{role}s' names {role}s the model does not have: {_listed(extra)} "
            f"(its {role}s: {_names(metas)})"
        )
    return [_tensor(value[m.name], m, role) for m in metas]


def _tensor(value: Any, meta: TensorMetadata, role: str) -> Tensor:
    """A JSON value (scalar or nested lists) as a tensor of `meta`'s datatype."""
    name, datatype = meta.name, meta.datatype
    if datatype == "BYTES":
        flat: list[bytes] = []
        try:
            dims = _flatten_bytes(name, value, flat, role)
        except RecursionError:  # a JSON parser allows deeper nesting than Python's stack
            raise InvalidRequest(f"{owner(role, name)}: the value is nested too deeply") from None
        if not flat:
            dims = _dims(value, meta)
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return Tensor(name, datatype, dims, reshape(name, array, dims, role=role))
    dims = _dims(value, meta)
    data = value if isinstance(value, list) else [value]
    if datatype == "BF16":  # JSON numbers -> FP32 -> BF16 bit patterns, rounded to nearest even
        tensor = tensor_from_list(name, "FP32", dims, data, role=role)
        return Tensor(name, datatype, dims, _bf16_bits(tensor.data))
    return tensor_from_list(name, datatype, dims, data, role=role)


def _dims(value: Any, meta: TensorMetadata) -> tuple[int, ...]:
    """The shape a JSON value's nesting shows (along its first elements; `tensor_from_list` checks the
    rest is rectangular). Below an empty list the dims are the metadata's (a variable one is 0)."""
    dims: list[int] = []
    item = value
    while type(item) is list:
        dims.append(len(item))
        if not item:
            dims.extend(max(d, 0) for d in meta.shape[len(dims) :])
            break
        item = item[0]
    return tuple(dims)


def _flatten_bytes(name: str, items: Any, out: list[bytes], role: str) -> tuple[int, ...]:
    """Appends a BYTES value's elements to `out` in row-major order; returns the nesting's shape."""
    if type(items) is not list:
        out.append(_bytes_value(name, items, role))
        return ()
    inner: tuple[int, ...] | None = None
    for item in items:
        shape = _flatten_bytes(name, item, out, role)
        if inner is None:
            inner = shape
        elif shape != inner:
            raise InvalidRequest(
                f"{owner(role, name)}: the value is ragged (nested lists of different lengths)"
            )
    return (len(items), *(inner or ()))


def _bytes_value(name: str, item: Any, role: str) -> bytes:
    if type(item) is str:
        return _utf8(item, owner(role, name))
    if _is_b64(item):
        text: str = item[B64]
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(f'{owner(role, name)}: a {{"b64": ...}} value is not valid base64') from None
    raise InvalidRequest(
        f'{owner(role, name)}: BYTES values must be strings or {{"b64": ...}} objects, got {json_type(item)}'
    )


def _json_value(tensor: Tensor, *, b64: bool) -> Any:
    """A tensor as a JSON-ready value: a C-contiguous numpy array (orjson writes it nested, fast) or a
    numpy scalar, or nested lists for BYTES (whose elements are written one by one anyway)."""
    data = tensor.data
    if tensor.datatype == "BYTES":
        items = np.empty(data.size, dtype=object)
        items[:] = [_bytes_json(item, b64) for item in data.ravel()]
        return items.reshape(tensor.shape).tolist()
    if tensor.datatype == "BF16":
        array = (np.ascontiguousarray(data).view("<u2").astype("<u4") << 16).view("<f4")
    else:
        # Converting here keeps the answer the same when a backend used a wider dtype than its metadata's.
        array = np.ascontiguousarray(data, dtype=NUMPY_DTYPES[tensor.datatype])
    # `ascontiguousarray` makes a rank-0 array rank 1 (and orjson writes no rank-0 array): a scalar is
    # written as the numpy scalar it is, not as a list of one.
    return array.reshape(())[()] if not tensor.shape else array


def _bytes_json(item: Any, b64: bool) -> str | dict[str, str]:
    raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    if not b64:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass  # JSON strings cannot hold these bytes: base64 instead (see the module's docstring)
    return {B64: base64.b64encode(raw).decode("ascii")}


def _batch_size(outputs: list[Tensor]) -> int | None:
    """The batch size every output shares, None if they share none (or there are no outputs)."""
    batch: int | None = None
    for tensor in outputs:
        if not tensor.shape or (batch is not None and tensor.shape[0] != batch):
            return None
        batch = tensor.shape[0]
    return batch


def _all_finite(values: Iterable[Any]) -> bool:
    """Whether no float array or scalar among these JSON values holds a NaN or an infinity."""
    return all(
        bool(np.isfinite(v).all())
        for v in values
        if isinstance(v, np.ndarray | np.generic) and v.dtype.kind == "f"
    )


def _dump(doc: dict[str, Any], finite: bool) -> bytes:
    """orjson, unless a float is not finite: orjson writes those as null, TF Serving as NaN/Infinity
    (the stdlib encoder's tokens; its floats are float64 reprs, exact but longer: a rare, slow path)."""
    if finite:
        return orjson.dumps(doc, option=_ORJSON_OPTIONS)
    return json.dumps(doc, default=_plain, separators=(",", ":")).encode()


def _plain(value: Any) -> Any:
    """The stdlib encoder's fallback for numpy values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _bf16_bits(fp32: np.ndarray) -> np.ndarray:
    """FP32 values as BF16 bit patterns, rounded to nearest even; NaN stays a (quiet) NaN."""
    bits = np.ascontiguousarray(fp32, dtype="<f4").view("<u4")
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    return np.where(np.isnan(fp32), np.uint16(0x7FC0), rounded).astype("<u2")


def _utf8(text: str, what: str) -> bytes:
    """`text` as UTF-8; an `InvalidRequest` naming `what` if it holds an unpaired surrogate."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what}: a string holds an unpaired surrogate, which is not Unicode") from None


def _names(metas: Sequence[TensorMetadata]) -> str:
    return _listed([m.name for m in metas])


def _listed(names: Sequence[str]) -> str:
    """Names (from a client or a model) as a message lists them: clipped, at most 16."""
    return ", ".join(clip(name, 64) for name in names[:16]) + (", ..." if len(names) > 16 else "")
