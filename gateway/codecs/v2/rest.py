"""Open Inference Protocol REST inference bodies, with Triton's binary tensor data extension, both ways.

Server side (listener): `decode_infer_request` / `encode_infer_response`, plus `complete_raw_request` for
raw binary requests (`Inference-Header-Content-Length: 0`), which only the server can finish because only
it knows the model's single input. Client side (REST backend): `encode_infer_request` /
`decode_infer_response`; anything unreadable there came from upstream and is a `BackendError`.

Framing (extension_binary_data.md): the JSON header, then one blob per tensor whose parameters carry
`binary_data_size`, in the order the tensors appear in the JSON. `binary_data_size` is a framing detail,
so decoders drop it from `Tensor.parameters` and encoders recompute it. The JSON helpers for the metadata
and config endpoints live in `rest_metadata` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import orjson

from gateway.codecs.v2.extensions import refuse_unserved
from gateway.codecs.v2.rest_metadata import (
    error_body,
    model_config_from_json,
    model_config_to_json,
    model_metadata_from_json,
    model_metadata_to_json,
    server_metadata_to_json,
)
from gateway.codecs.v2.tensors import (
    check_datatype,
    json_data,
    tensor_from_buffer,
    tensor_from_list,
    tensor_to_buffer,
)
from gateway.codecs.v2.tensors import (
    owner as tensor_owner,
)
from gateway.datatypes import element_size
from gateway.errors import BackendError, InvalidRequest, clip
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    Parameter,
    Parameters,
    RequestedOutput,
    Tensor,
    TensorMetadata,
)

__all__ = [
    "HEADER_LENGTH",
    "complete_raw_request",
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
    "error_body",
    "model_config_from_json",
    "model_config_to_json",
    "model_metadata_from_json",
    "model_metadata_to_json",
    "server_metadata_to_json",
]

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
# Request parameters that steer our own framing; they are not forwarded to a backend.
_FRAMING_PARAMETERS: Final = frozenset({"binary_data_output", "raw_binary"})
_SCALARS: Final = (bool, int, float, str)


def decode_infer_request(
    body: bytes, header_length: int | None, model_name: str, model_version: str = ""
) -> InferenceRequest:
    """Decode a REST inference request body.

    Args:
        body: The whole HTTP body.
        header_length: The `Inference-Header-Content-Length` value, None if the header is absent.
            0 marks a raw binary request: the body is one input's bytes, completed later by
            `complete_raw_request`.
        model_name: The model named in the URL (the body's `model_name`, if any, is ignored).
        model_version: The version named in the URL, "" if none.

    Returns:
        The request; numeric binary inputs are zero-copy views of `body`.

    Raises:
        InvalidRequest: The body is malformed; the message names the offending field or input.
    """
    if header_length == 0:
        raw = Tensor("", "", (), np.frombuffer(body, dtype=np.uint8))
        return InferenceRequest(
            model_name,
            [raw],
            model_version,
            parameters={"raw_binary": True, "binary_data_output": True},
        )
    doc, blobs = _split_body(body, header_length, "request")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequest("request 'id' must be a string")
    parameters = _parameters(doc.get("parameters"), "request")
    if "inputs" not in doc:
        raise InvalidRequest("request has no 'inputs'")
    _require_bool(parameters, "binary_data_output", "request")
    inputs = _tensors(doc["inputs"], "input", blobs)
    blobs.finish()
    outputs = _requested_outputs(doc.get("outputs"))
    for output in outputs or ():
        _require_bool(output.parameters, "binary_data", tensor_owner("requested output", output.name))
    request = InferenceRequest(model_name, inputs, model_version, request_id, outputs, parameters)
    refuse_unserved(request)
    return request


def complete_raw_request(
    request: InferenceRequest, input_meta: TensorMetadata | Sequence[TensorMetadata]
) -> InferenceRequest:
    """Turn a raw binary request into a batch-1 request for the model's single input.

    The shape is the metadata shape with a leading -1 (batch) set to 1; one other -1 is inferred from
    the body size. For a BYTES input the whole body is one element (no length prefix). A request that
    is not raw is returned unchanged.

    Args:
        request: As returned by `decode_infer_request` with header length 0.
        input_meta: The model's input metadata, or the list of all its inputs (which must hold one).

    Raises:
        InvalidRequest: The model does not have exactly one input, or the body does not fit its shape.
    """
    if request.parameters.get("raw_binary") is not True:
        return request
    metas = [input_meta] if isinstance(input_meta, TensorMetadata) else list(input_meta)
    if len(metas) != 1:
        raise InvalidRequest(
            f"a raw binary request needs a single-input model; model '{clip(request.model_name)}' "
            f"has {len(metas)} inputs"
        )
    meta = metas[0]
    body = request.inputs[0].data.data  # the uint8 array's own buffer, no copy
    dims = _raw_shape(meta, body.nbytes)
    if meta.datatype == "BYTES":
        element = np.empty(1, dtype=object)
        element[0] = body.tobytes()
        tensor = Tensor(meta.name, meta.datatype, dims, element.reshape(dims))
    else:
        tensor = tensor_from_buffer(meta.name, meta.datatype, dims, body)
    parameters = {k: v for k, v in request.parameters.items() if k != "raw_binary"}
    parameters["binary_data_output"] = True  # a raw client cannot parse JSON outputs
    return InferenceRequest(
        request.model_name, [tensor], request.model_version, request.id, request.outputs, parameters
    )


def encode_infer_response(response: InferenceResponse, request: InferenceRequest) -> tuple[bytes, int | None]:
    """Encode a REST inference response for the client that sent `request`.

    An output goes binary if its requested output says `binary_data: true`, or the request says
    `binary_data_output: true` and the output does not say `binary_data: false`. BF16 and non-UTF-8
    BYTES outputs always go binary, since JSON cannot carry them. When the request names its outputs,
    only those are sent.

    Returns:
        The body and the JSON header length for `Inference-Header-Content-Length`, or None if the body
        is pure JSON.
    """
    default_binary = request.parameters.get("binary_data_output") is True
    requested = {o.name: o.parameters for o in request.outputs} if request.outputs else None
    outputs = response.outputs
    if requested is not None:
        outputs = [t for t in outputs if t.name in requested]

    def binary_for(tensor: Tensor) -> bool:
        flag = requested[tensor.name].get("binary_data") if requested is not None else None
        return default_binary if flag is None else flag is True

    entries, blobs = _encode_tensors(outputs, binary_for)
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        doc["model_version"] = response.model_version
    doc["id"] = response.id or request.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = entries
    return _frame(doc, blobs)


def encode_infer_request(request: InferenceRequest, binary: bool = True) -> tuple[bytes, int | None]:
    """Encode a REST inference request for a backend.

    Args:
        request: The request; framing parameters from the client (`binary_data_output`, `binary_data`)
            are replaced by our own choice.
        binary: Send inputs as binary blobs and ask for binary outputs; otherwise JSON both ways
            (BF16 and non-UTF-8 BYTES inputs still go binary).

    Returns:
        The body and the JSON header length, or None if the body is pure JSON.
    """
    parameters = {k: v for k, v in request.parameters.items() if k not in _FRAMING_PARAMETERS}
    if binary:
        parameters["binary_data_output"] = True
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    if parameters:
        doc["parameters"] = parameters
    entries, blobs = _encode_tensors(request.inputs, lambda _: binary)
    doc["inputs"] = entries
    if request.outputs is not None:
        doc["outputs"] = [_requested_output_entry(o) for o in request.outputs]
    return _frame(doc, blobs)


def decode_infer_response(body: bytes, header_length: int | None) -> InferenceResponse:
    """Decode a backend's REST inference response (JSON and binary outputs alike).

    Raises:
        BackendError: The response is not a readable OIP inference response.
    """
    try:
        doc, blobs = _split_body(body, header_length, "response")
        fields = {key: doc.get(key, "") for key in ("model_name", "model_version", "id")}
        for key, value in fields.items():
            if not isinstance(value, str):
                raise InvalidRequest(f"response '{key}' must be a string")
        parameters = _parameters(doc.get("parameters"), "response")
        if "outputs" not in doc:
            raise InvalidRequest("response has no 'outputs'")
        outputs = _tensors(doc["outputs"], "output", blobs)
        blobs.finish()
    except InvalidRequest as exc:
        raise BackendError(f"unreadable inference response: {exc.message}") from None
    return InferenceResponse(fields["model_name"], outputs, fields["model_version"], fields["id"], parameters)


class _Blobs:
    """Hands out consecutive binary blobs that follow the JSON header."""

    __slots__ = ("_framed", "_offset", "_view", "_what")

    def __init__(self, view: memoryview, framed: bool, what: str) -> None:
        self._view = view
        self._offset = 0
        self._framed = framed
        self._what = what

    def take(self, size: int, owner: str) -> memoryview:
        if not self._framed:
            raise InvalidRequest(
                f"{owner}: binary_data_size is set but the {self._what} has no {HEADER_LENGTH} header"
            )
        left = len(self._view) - self._offset
        if size > left:
            raise InvalidRequest(
                f"{owner}: binary_data_size {size} exceeds the {left} bytes of binary data left "
                f"in the {self._what} body"
            )
        start = self._offset
        self._offset += size
        return self._view[start : self._offset]

    def finish(self) -> None:
        left = len(self._view) - self._offset
        if left:
            raise InvalidRequest(
                f"{self._what} body has {left} bytes of binary data beyond the tensors' binary_data_size"
            )


def _split_body(body: bytes, header_length: int | None, what: str) -> tuple[dict[str, Any], _Blobs]:
    view = memoryview(body)
    if header_length is None:
        header, binary = view, view[len(view) :]
    elif header_length < 0:
        raise InvalidRequest(f"{HEADER_LENGTH} must not be negative, got {header_length}")
    elif header_length > len(view):
        raise InvalidRequest(f"{HEADER_LENGTH} {header_length} exceeds the body length {len(view)}")
    else:
        header, binary = view[:header_length], view[header_length:]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest(f"{what} body must be a JSON object")
    return doc, _Blobs(binary, header_length is not None, what)


def _tensors(items: Any, role: str, blobs: _Blobs) -> list[Tensor]:
    if not isinstance(items, list):
        raise InvalidRequest(f"'{role}s' must be an array")
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"{role}s[{index}] must be an object")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidRequest(f"{role}s[{index}]: missing 'name' (a string)")
        owner = tensor_owner(role, name)
        if name in seen:
            raise InvalidRequest(f"{owner} appears more than once")
        seen.add(name)
        for key in ("datatype", "shape"):
            if key not in item:
                raise InvalidRequest(f"{owner}: missing '{key}'")
        # tensor_from_list / tensor_from_buffer check the datatype and the shape.
        datatype, shape = item["datatype"], item["shape"]
        parameters = _parameters(item.get("parameters"), owner)
        size = parameters.pop("binary_data_size", None)
        if size is not None and "data" in item:
            raise InvalidRequest(f"{owner}: has both 'data' and binary_data_size")
        if size is None:
            if "data" not in item:
                raise InvalidRequest(f"{owner}: has neither 'data' nor binary_data_size")
            tensor = tensor_from_list(name, datatype, shape, item["data"], role=role)
        else:
            if type(size) is not int or size < 0:
                raise InvalidRequest(f"{owner}: binary_data_size must be a non-negative integer")
            tensor = tensor_from_buffer(name, datatype, shape, blobs.take(size, owner), role=role)
        tensor.parameters = parameters
        tensors.append(tensor)
    return tensors


def _requested_outputs(items: Any) -> list[RequestedOutput] | None:
    if items is None:
        return None
    if not isinstance(items, list):
        raise InvalidRequest("request 'outputs' must be an array")
    outputs: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(f"outputs[{index}]: must be an object with a 'name' string")
        name = item["name"]
        owner = tensor_owner("requested output", name)
        if name in seen:
            raise InvalidRequest(f"{owner} appears more than once")
        seen.add(name)
        outputs.append(RequestedOutput(name, _parameters(item.get("parameters"), owner)))
    return outputs


def _parameters(value: Any, owner: str) -> Parameters:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{owner}: 'parameters' must be an object")
    for key, item in value.items():
        if not isinstance(item, _SCALARS):
            raise InvalidRequest(f"{owner}: parameter '{clip(key)}' must be a string, number or boolean")
    return dict(value)


def _require_bool(parameters: Parameters, key: str, owner: str) -> None:
    """The binary extension's flags are JSON booleans; "true", "yes" or 1 would be read as false."""
    if key in parameters and not isinstance(parameters[key], bool):
        raise InvalidRequest(f"{owner}: parameter '{key}' must be a boolean (true or false)")


def _encode_tensors(
    tensors: list[Tensor], binary_for: Callable[[Tensor], bool]
) -> tuple[list[dict[str, Any]], list[bytes | memoryview]]:
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for tensor in tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters: dict[str, Parameter] = dict(tensor.parameters)
        parameters.pop("binary_data_size", None)
        data = None if binary_for(tensor) else json_data(tensor)
        if data is None:
            buf = tensor_to_buffer(tensor)
            parameters["binary_data_size"] = len(buf)
            blobs.append(buf)
        else:
            entry["data"] = data
        if parameters:
            entry["parameters"] = parameters
        entries.append(entry)
    return entries, blobs


def _requested_output_entry(output: RequestedOutput) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": output.name}
    parameters = {k: v for k, v in output.parameters.items() if k != "binary_data"}
    if parameters:
        entry["parameters"] = parameters
    return entry


def _frame(doc: dict[str, Any], blobs: list[bytes | memoryview]) -> tuple[bytes, int | None]:
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _raw_shape(meta: TensorMetadata, nbytes: int) -> tuple[int, ...]:
    dims = list(meta.shape)
    if dims and dims[0] < 0:
        dims[0] = 1  # the batch dimension: a raw request is batch-1
    variable = [i for i, d in enumerate(dims) if d < 0]
    owner = f"input '{meta.name}'"
    if meta.datatype == "BYTES":
        for i in variable:
            dims[i] = 1
        if math.prod(dims) != 1:
            raise InvalidRequest(
                f"{owner}: a raw binary body is one BYTES element, but shape {dims} needs more"
            )
        return tuple(dims)
    if len(variable) > 1:
        raise InvalidRequest(f"{owner}: cannot infer shape {list(meta.shape)} from a raw binary body")
    if variable:
        check_datatype(meta.name, meta.datatype)
        row = math.prod(d for d in dims if d >= 0) * element_size(meta.datatype)
        if row == 0 or nbytes % row:
            raise InvalidRequest(
                f"{owner}: a raw binary body of {nbytes} bytes does not fit shape {list(meta.shape)} "
                f"of {meta.datatype}"
            )
        dims[variable[0]] = nbytes // row
    return tuple(dims)
