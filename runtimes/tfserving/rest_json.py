"""TF Serving's REST predict JSON <-> numpy (PROTOCOLS.md §1.3, §1.4, §1.6).

Row form (`instances`) and columnar form (`inputs`) in; `predictions` and `outputs` out, with the
server's quirks: `{"b64": ...}` accepted wherever a string may be, outputs named `*_bytes` written as
b64, and the non-standard `NaN` / `Infinity` / `-Infinity` tokens read and written.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import ml_dtypes
import numpy as np
import orjson

from gateway.errors import InvalidRequest

ROW: Final = "row"
COLUMNAR: Final = "columnar"
_B64: Final = "b64"
_BYTES_SUFFIX: Final = "_bytes"


@dataclass(frozen=True, slots=True)
class PredictBody:
    """A parsed predict request: raw JSON values per input (converted once the signature is known)."""

    signature_name: str
    form: str  # ROW or COLUMNAR
    values: dict[str, Any] | Any  # one value when the request names no input (a single-input model)


def loads(body: bytes) -> Any:
    """Parses JSON; orjson first (fast), the stdlib where it refuses TF Serving's NaN/Infinity tokens."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"JSON Parse error: {exc}") from None


def parse_predict(body: bytes) -> PredictBody:
    """Splits a predict body into its form and per-input values; the tensors come from `to_arrays`."""
    doc = loads(body)
    if not isinstance(doc, dict):
        raise InvalidRequest("JSON Value: the request body must be an object")
    signature = doc.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidRequest("'signature_name' must be a string")
    has_rows, has_columns = "instances" in doc, "inputs" in doc
    if has_rows == has_columns:
        raise InvalidRequest(
            "Missing 'inputs' or 'instances' key" if not has_rows else "Not both 'inputs' and 'instances'"
        )
    if has_rows:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise InvalidRequest("'instances' must be a list")
        if instances and all(_is_object(row) for row in instances):
            return PredictBody(signature, ROW, _rows_to_columns(instances))
        return PredictBody(signature, ROW, instances)
    inputs = doc["inputs"]
    return PredictBody(signature, COLUMNAR, inputs)


def _is_object(value: Any) -> bool:
    """A JSON object that names inputs, as opposed to a `{"b64": ...}` value."""
    return isinstance(value, dict) and not (len(value) == 1 and _B64 in value)


def _rows_to_columns(instances: list[dict[str, Any]]) -> dict[str, list[Any]]:
    names = list(instances[0])
    for i, row in enumerate(instances):
        if list(row) != names and set(row) != set(names):
            raise InvalidRequest(
                f"instances[{i}] names inputs {sorted(row)}, instances[0] names {sorted(names)}: every "
                "instance must name the same inputs"
            )
    return {name: [row[name] for row in instances] for name in names}


def to_arrays(body: PredictBody, dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """The request's tensors, each converted to its signature input's dtype (`dtypes`, by input name)."""
    values = body.values
    if not _is_object(values):
        if len(dtypes) != 1:
            raise InvalidRequest(
                f"the signature has {len(dtypes)} inputs ({', '.join(sorted(dtypes))}): name each input"
            )
        values = {next(iter(dtypes)): values}
    arrays = {}
    for name, value in values.items():
        dtype = dtypes.get(name)
        if dtype is None:
            raise InvalidRequest(
                f"input '{name}' is not in the signature; expected one of {{{', '.join(sorted(dtypes))}}}"
            )
        arrays[name] = to_array(value, dtype, name)
    return arrays


def to_array(value: Any, dtype: np.dtype, name: str) -> np.ndarray:
    """One JSON value (a scalar or nested lists) as an array of `dtype`."""
    try:
        if dtype.kind == "O":
            decoded = _strings(value, name)
            shaped = np.array(decoded, dtype=object)
            if shaped.dtype != object or any(isinstance(v, list) for v in shaped.flat):
                raise ValueError("ragged")
            return shaped
        if _has_object(value):
            raise InvalidRequest(f"input '{name}': a {{\"b64\": ...}} value needs a DT_STRING input")
        array = np.array(value, dtype=dtype)
    except InvalidRequest:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(
            f"input '{name}': cannot read it as a tensor of {dtype} (ragged lists or a value of the "
            f"wrong type): {exc}"
        ) from None
    return array


def _strings(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_strings(v, name) for v in value]
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, dict) and set(value) == {_B64} and isinstance(value[_B64], str):
        try:
            return base64.b64decode(value[_B64], validate=True)
        except binascii.Error:
            raise InvalidRequest(f"input '{name}': invalid base64 in a {{\"b64\": ...}} value") from None
    raise InvalidRequest(f"input '{name}': a DT_STRING input takes strings or {{\"b64\": ...}} objects")


def _has_object(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_object(v) for v in value[:1]) or any(isinstance(v, dict) for v in value)
    return isinstance(value, dict)


def dumps_predict(form: str, outputs: Mapping[str, np.ndarray]) -> bytes:
    """`{"predictions": ...}` for a row request, `{"outputs": ...}` for a columnar one; one output's
    name is left out, several are keyed by name (per row in the row form)."""
    values = {name: _json_value(name, array) for name, array in outputs.items()}
    if form == COLUMNAR:
        doc: dict[str, Any] = {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    elif len(values) == 1:
        doc = {"predictions": next(iter(values.values()))}
    else:
        rows = {name: array.shape[0] if array.ndim else -1 for name, array in outputs.items()}
        if len(set(rows.values())) != 1 or -1 in rows.values():
            raise InvalidRequest(
                f"the outputs' batch sizes differ ({rows}): use the columnar form ('inputs') for this model"
            )
        count = next(iter(rows.values()))
        doc = {"predictions": [{name: value[i] for name, value in values.items()} for i in range(count)]}
    return _dumps(doc, any(_non_finite(a) for a in outputs.values()))


def _json_value(name: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind in "SU":
        encode = _b64 if name.endswith(_BYTES_SUFFIX) else _text
        flat = [encode(v) for v in array.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    if array.dtype.kind == "c":
        raise InvalidRequest(f"output '{name}' is complex, which JSON cannot carry: use gRPC")
    if array.dtype.kind == "V" or array.dtype == ml_dtypes.bfloat16:
        array = array.astype(np.float32)  # bf16: a JSON number either way
    if array.ndim == 0:
        return array.item()  # orjson would write a 0-d array as a one-element list
    # orjson writes numpy arrays itself (OPT_SERIALIZE_NUMPY), float32 in its shortest float32 form.
    return np.ascontiguousarray(array)


def _b64(value: Any) -> dict[str, str]:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return {_B64: base64.b64encode(raw).decode()}


def _text(value: Any) -> str:
    # TF cannot tell text from binary; outputs not named *_bytes are taken as UTF-8 text.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _non_finite(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and not bool(np.isfinite(array).all())


def _dumps(doc: Any, non_finite: bool) -> bytes:
    if non_finite:
        # orjson writes NaN as null; TF Serving writes the NaN / Infinity / -Infinity tokens, as json does.
        return json.dumps(doc, separators=(",", ":"), default=_plain).encode()
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
