"""Open Inference Protocol gRPC messages (package `inference`) <-> internal types.

Tensor data takes the raw route wherever we choose: responses and backend requests always use
`raw_*_contents`, one little-endian buffer per tensor, as Triton does, so encoding is one `tobytes` per
tensor. Forwarding gRPC to gRPC re-encodes nothing: a decoded request or response keeps the message it
came from (`wire`), and `request_to_wire` / `response_to_proto` reuse it with the new model name when
nothing else changed, so a tensor is neither copied nor re-serialized field by field. Typed `contents` are
accepted when decoding, for clients that send them; they cannot carry FP16 or BF16. Validation errors are
`InvalidRequest` for what a client sent and `BackendError` for what a backend answered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from google.protobuf.internal.containers import MessageMap

from gateway.codecs.v2.extensions import refuse_unserved
from gateway.codecs.v2.tensors import (
    INT64_MAX,
    buffer_tensor,
    check_datatype,
    config_type,
    datatype_from_config_type,
    int64_shape,
    owner,
    reshape,
    wire_bytes,
)
from gateway.datatypes import ALL_DATATYPES, NUMPY_DTYPES
from gateway.errors import BackendError, InvalidRequest
from gateway.proto import inference_pb2 as pb
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    Parameter,
    Parameters,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorMetadata,
)

# The typed `InferTensorContents` field of each datatype and the dtype protobuf hands its values in;
# 8- and 16-bit integers travel widened in the 32-bit fields.
_CONTENTS: Final[dict[str, tuple[str, np.dtype[Any]]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}
# Request parameters that steer the REST framing; meaningless over gRPC, so not forwarded.
_FRAMING_PARAMETERS: Final = frozenset({"binary_data_output", "raw_binary"})
_UINT64_MAX: Final = 2**64 - 1
# Requested-output parameters that steer the REST framing; not forwarded either.
_NOT_FORWARDED_OUTPUT: Final = frozenset({"binary_data"})
_NONE_DROPPED: Final[frozenset[str]] = frozenset()

ParameterMap = MessageMap[str, pb.InferParameter]


def request_from_proto(msg: pb.ModelInferRequest) -> InferenceRequest:
    """Decode a client's `ModelInferRequest`.

    The request keeps `msg` as its `wire` when the message can be forwarded as it came (see
    `request_to_wire`); whether it can is found out while decoding, which reads every field it depends on
    anyway.

    Raises:
        InvalidRequest: Malformed tensors, mixed raw and typed contents, or duplicate names.
    """
    inputs, verbatim = _tensors(msg.inputs, msg.raw_input_contents, "input")
    outputs: list[RequestedOutput] | None = None
    if msg.outputs:
        outputs = []
        seen: set[str] = set()
        for requested in msg.outputs:
            if requested.name in seen:
                raise InvalidRequest(f"{owner('requested output', requested.name)} appears more than once")
            seen.add(requested.name)
            parameters, valued = _parameters(requested.parameters, _NOT_FORWARDED_OUTPUT)
            verbatim = verbatim and valued
            outputs.append(RequestedOutput(requested.name, parameters))
    parameters, valued = _parameters(msg.parameters, _FRAMING_PARAMETERS)
    request = InferenceRequest(
        msg.model_name,
        inputs,
        msg.model_version,
        msg.id,
        outputs,
        parameters,
        msg if verbatim and valued else None,
    )
    refuse_unserved(request)
    return request


def response_to_proto(
    response: InferenceResponse, request: InferenceRequest | None = None
) -> pb.ModelInferResponse:
    """Encode a `ModelInferResponse` with all outputs in `raw_output_contents`.

    Args:
        response: The response.
        request: If given and it names its outputs, only those are sent (as the REST codec does).
    """
    wanted = {o.name for o in request.outputs} if request is not None and request.outputs else None
    reply_id = response.id or (request.id if request is not None else "")
    source = response.wire
    if isinstance(source, pb.ModelInferResponse) and _answers_as_is(source, response, wanted):
        source.model_name = response.model_name
        source.model_version = response.model_version
        source.id = reply_id
        return source
    outputs = response.outputs
    if wanted is not None:
        outputs = [t for t in outputs if t.name in wanted]
    msg = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=reply_id,
    )
    parameters_to_proto(response.parameters, msg.parameters)
    for tensor in outputs:
        entry = msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, entry.parameters)
    msg.raw_output_contents.extend([wire_bytes(t) for t in outputs])
    return msg


def request_to_wire(request: InferenceRequest) -> bytes:
    """The serialized `ModelInferRequest` for a backend.

    A request decoded from a client's gRPC message that decoding took as it came (`wire` is set: raw
    contents only, no BOOL bytes to normalise, every parameter valued and none of the REST framing ones;
    see `_tensors`) is that message again under the request's (backend) model name; otherwise it is
    encoded anew. Fields this build of the protocol does not know are discarded before forwarding, as
    re-encoding would (from the client's message too: nothing reads them afterwards); its model name is
    restored.
    """
    source = request.wire
    if not isinstance(source, pb.ModelInferRequest):
        return request_to_proto(request).SerializeToString()
    client_name = source.model_name
    source.DiscardUnknownFields()
    source.model_name = request.model_name
    try:
        return source.SerializeToString()
    finally:
        source.model_name = client_name


def _parameters(params: ParameterMap, dropped: frozenset[str]) -> tuple[Parameters, bool]:
    """`parameters_from_proto`, and whether the map goes on as it came: every entry has a value (decoding
    skips those that do not) and none is one that is not forwarded (`dropped`)."""
    if not params:  # the usual case, checked first: walking even an empty map costs far more
        return {}, True
    decoded = parameters_from_proto(params)
    return decoded, len(decoded) == len(params) and dropped.isdisjoint(decoded)


def _answers_as_is(msg: pb.ModelInferResponse, response: InferenceResponse, wanted: set[str] | None) -> bool:
    """Whether a backend's message (kept as `wire` only when decoding took it as it came: raw contents,
    which standard clients read) still holds what `response` does, and only `wanted` outputs."""
    outputs = msg.outputs
    if len(outputs) != len(response.outputs):
        return False
    if wanted is None:
        return True
    for output in outputs:  # a loop, not all() over a generator: this runs on every gRPC answer
        if output.name not in wanted:
            return False
    return True


def request_to_proto(request: InferenceRequest) -> pb.ModelInferRequest:
    """Encode a `ModelInferRequest` for a backend, inputs in `raw_input_contents`."""
    msg = pb.ModelInferRequest(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )
    parameters_to_proto(
        {k: v for k, v in request.parameters.items() if k not in _FRAMING_PARAMETERS}, msg.parameters
    )
    for tensor in request.inputs:
        entry = msg.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        parameters_to_proto(tensor.parameters, entry.parameters)
    msg.raw_input_contents.extend([wire_bytes(t) for t in request.inputs])
    for output in request.outputs or ():
        entry_out = msg.outputs.add(name=output.name)
        parameters_to_proto(
            {k: v for k, v in output.parameters.items() if k != "binary_data"}, entry_out.parameters
        )
    return msg


def response_from_proto(msg: pb.ModelInferResponse) -> InferenceResponse:
    """Decode a backend's `ModelInferResponse` (typed or raw contents).

    Raises:
        BackendError: The response is inconsistent (counts, sizes, datatypes).
    """
    try:
        outputs, verbatim = _tensors(msg.outputs, msg.raw_output_contents, "output")
    except InvalidRequest as exc:
        raise BackendError(f"unreadable inference response: {exc.message}") from None
    parameters, valued = _parameters(msg.parameters, _NONE_DROPPED)
    wire = msg if verbatim and valued else None
    return InferenceResponse(msg.model_name, outputs, msg.model_version, msg.id, parameters, wire)


def parameters_from_proto(params: Mapping[str, pb.InferParameter]) -> Parameters:
    """The Python scalars of an `InferParameter` map; entries with no value set are skipped."""
    if not params:
        return {}
    out: Parameters = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(param, which)
    return out


def parameters_to_proto(params: Mapping[str, Parameter], target: ParameterMap) -> None:
    """Write Python scalars into an `InferParameter` map (ints beyond int64 use `uint64_param`).

    Raises:
        ValueError: An int beyond uint64 or a value that is not a str, int, float or bool.
    """
    for key, value in params.items():
        param = target[key]
        if isinstance(value, bool):  # before int: bool is an int subclass
            param.bool_param = value
        elif isinstance(value, int):
            if -INT64_MAX - 1 <= value <= INT64_MAX:
                param.int64_param = value
            elif INT64_MAX < value <= _UINT64_MAX:
                param.uint64_param = value
            else:
                raise ValueError(f"parameter '{key}' does not fit in 64 bits")
        elif isinstance(value, float):
            param.double_param = value
        elif isinstance(value, str):
            param.string_param = value
        else:
            raise ValueError(f"parameter '{key}' has unsupported type {type(value).__name__}")


def server_metadata_to_proto(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    """The `ServerMetadata` RPC answer."""
    return pb.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=metadata.extensions
    )


def model_metadata_to_proto(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    """The `ModelMetadata` RPC answer."""
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor_meta_to_proto(t) for t in metadata.inputs],
        outputs=[_tensor_meta_to_proto(t) for t in metadata.outputs],
    )


def model_metadata_from_proto(msg: pb.ModelMetadataResponse) -> ModelMetadata:
    """Read a backend's `ModelMetadataResponse`.

    Raises:
        BackendError: A tensor has an unknown datatype.
    """
    return ModelMetadata(
        name=msg.name,
        platform=msg.platform,
        inputs=[_tensor_meta_from_proto(t, "input") for t in msg.inputs],
        outputs=[_tensor_meta_from_proto(t, "output") for t in msg.outputs],
        versions=list(msg.versions),
    )


def model_config_to_proto(config: ModelConfig) -> pb.ModelConfig:
    """Triton's `ModelConfig` message (wrap it in `ModelConfigResponse(config=...)` to answer the RPC)."""
    msg = pb.ModelConfig(
        name=config.name,
        platform=config.platform,
        backend=config.backend,
        max_batch_size=config.max_batch_size,
        input=[pb.ModelInput(name=t.name, data_type=_enum(t.datatype), dims=t.shape) for t in config.inputs],
        output=[
            pb.ModelOutput(name=t.name, data_type=_enum(t.datatype), dims=t.shape) for t in config.outputs
        ],
    )
    if config.max_queue_delay_microseconds or config.preferred_batch_sizes:
        msg.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_microseconds
        msg.dynamic_batching.preferred_batch_size.extend(config.preferred_batch_sizes)
    return msg


def model_config_from_proto(msg: pb.ModelConfig | pb.ModelConfigResponse) -> ModelConfig:
    """Read a backend's `ModelConfig` (or the `ModelConfigResponse` around it).

    Raises:
        BackendError: A tensor has TYPE_INVALID or a data type we do not know.
    """
    config = msg.config if isinstance(msg, pb.ModelConfigResponse) else msg
    return ModelConfig(
        name=config.name,
        platform=config.platform,
        max_batch_size=config.max_batch_size,
        inputs=[_config_io_from_proto(t.name, t.data_type, t.dims, "input") for t in config.input],
        outputs=[_config_io_from_proto(t.name, t.data_type, t.dims, "output") for t in config.output],
        backend=config.backend,
        max_queue_delay_microseconds=config.dynamic_batching.max_queue_delay_microseconds,
        preferred_batch_sizes=list(config.dynamic_batching.preferred_batch_size),
    )


def _tensors(
    items: Sequence[pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor],
    raw: Sequence[bytes],
    role: str,
) -> tuple[list[Tensor], bool]:
    """The tensors, and whether they are all in the message as re-encoding would write them
    (`verbatim`): in raw contents with no `contents` field, not BOOL (whose bytes decoding normalises to
    0/1), every parameter valued."""
    if raw and len(raw) != len(items):
        raise InvalidRequest(f"raw_{role}_contents has {len(raw)} entries for {len(items)} {role}s")
    tensors: list[Tensor] = []
    seen: set[str] = set()
    verbatim = bool(raw) or not items
    for index in range(len(items)):  # indexing a repeated field costs less than iterating it (upb)
        item = items[index]
        name = item.name
        if not name:
            raise InvalidRequest(f"{role}s[{index}]: missing 'name'")
        if name in seen:
            raise InvalidRequest(f"{owner(role, name)} appears more than once")
        seen.add(name)
        datatype = item.datatype
        if not datatype:
            raise InvalidRequest(f"{owner(role, name)}: missing 'datatype'")
        if raw:
            if item.HasField("contents"):
                # An empty `contents` message next to raw contents is harmless; data in both is ambiguous.
                if item.contents.ByteSize() > 0:
                    raise InvalidRequest(
                        f"{owner(role, name)}: sets 'contents' although raw_{role}_contents is used"
                    )
                verbatim = False
            # Checks the datatype itself (this is the hot path: no second check here).
            tensor = buffer_tensor(
                name, datatype, int64_shape(name, item.shape, role=role), raw[index], role=role
            )
        else:
            check_datatype(name, datatype, role=role)
            shape = int64_shape(name, item.shape, role=role)
            tensor = _from_contents(name, datatype, shape, item.contents, role)
        if datatype == "BOOL":
            verbatim = False
        tensor.parameters, valued = _parameters(item.parameters, _NONE_DROPPED)
        verbatim = verbatim and valued
        tensors.append(tensor)
    return tensors, verbatim


def _from_contents(
    name: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents, role: str
) -> Tensor:
    spec = _CONTENTS.get(datatype)
    if spec is None:  # FP16 / BF16 have no typed field
        raise InvalidRequest(f"{owner(role, name)}: {datatype} data must be sent in raw_{role}_contents")
    field, wire_dtype = spec
    given = [descriptor.name for descriptor, _ in contents.ListFields()]
    if len(given) > 1:
        raise InvalidRequest(
            f"{owner(role, name)}: sets more than one typed contents field ({', '.join(given)})"
        )
    if given and given[0] != field:
        raise InvalidRequest(f"{owner(role, name)}: {datatype} data goes in {field}, not {given[0]}")
    values: Sequence[Any] = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidRequest(
            f"{owner(role, name)}: expected {count} values in {field} for shape {list(shape)}, "
            f"got {len(values)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return Tensor(name, datatype, shape, reshape(name, array, shape, role=role))
    wide = np.fromiter(values, dtype=wire_dtype, count=count)
    dtype = NUMPY_DTYPES[datatype]
    if dtype != wire_dtype and count:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidRequest(f"{owner(role, name)}: a value in {field} is out of range for {datatype}")
        wide = wide.astype(dtype)
    return Tensor(name, datatype, shape, reshape(name, wide, shape, role=role))


def _tensor_meta_to_proto(meta: TensorMetadata) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=meta.name, datatype=meta.datatype, shape=meta.shape)


def _tensor_meta_from_proto(meta: pb.ModelMetadataResponse.TensorMetadata, role: str) -> TensorMetadata:
    if meta.datatype not in ALL_DATATYPES:
        raise BackendError(f"model metadata {role} '{meta.name}': unknown datatype '{meta.datatype}'")
    return TensorMetadata(meta.name, meta.datatype, tuple(meta.shape))


def _enum(datatype: str) -> pb.DataType.ValueType:
    return pb.DataType.Value(config_type(datatype))


def _config_io_from_proto(
    name: str, data_type: pb.DataType.ValueType, dims: Iterable[int], role: str
) -> TensorMetadata:
    try:
        datatype = datatype_from_config_type(pb.DataType.Name(data_type))
    except ValueError as exc:  # TYPE_INVALID, or a number this build of the enum does not know
        raise BackendError(f"model config {owner(role, name)}: {exc}") from None
    return TensorMetadata(name, datatype, tuple(dims))
