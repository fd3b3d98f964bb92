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
    check_datatype,
    check_shape,
    config_type,
    datatype_from_config_type,
    owner,
    reshape,
    tensor_from_buffer,
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

ParameterMap = MessageMap[str, pb.InferParameter]


def request_from_proto(msg: pb.ModelInferRequest) -> InferenceRequest:
    """Decode a client's `ModelInferRequest`.

    Raises:
        InvalidRequest: Malformed tensors, mixed raw and typed contents, or duplicate names.
    """
    inputs = _tensors(msg.inputs, msg.raw_input_contents, "input")
    outputs: list[RequestedOutput] | None = None
    if msg.outputs:
        outputs = []
        seen: set[str] = set()
        for requested in msg.outputs:
            if requested.name in seen:
                raise InvalidRequest(f"{owner('requested output', requested.name)} appears more than once")
            seen.add(requested.name)
            outputs.append(RequestedOutput(requested.name, parameters_from_proto(requested.parameters)))
    request = InferenceRequest(
        msg.model_name, inputs, msg.model_version, msg.id, outputs, parameters_from_proto(msg.parameters), msg
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

    A request decoded from a client's gRPC message is that message again under the request's (backend)
    model name when decoding changed nothing else (`_forwardable`); otherwise it is encoded anew. The
    client's message is left as it came.
    """
    source = request.wire
    if not isinstance(source, pb.ModelInferRequest) or not _forwardable(source):
        return request_to_proto(request).SerializeToString()
    client_name = source.model_name
    source.DiscardUnknownFields()
    source.model_name = request.model_name
    try:
        return source.SerializeToString()
    finally:
        source.model_name = client_name


def _forwardable(msg: pb.ModelInferRequest) -> bool:
    """Whether the backend would get from a client's message exactly what `request_to_proto` sends.

    Not when decoding dropped or changed something: REST framing parameters and `binary_data` (not
    forwarded), parameters with no value (skipped), typed or empty `contents` (we send raw only), BOOL
    bytes (normalised to 0/1). Fields this build of the protocol does not know are discarded before
    forwarding, as re-encoding would.
    """
    if len(msg.raw_input_contents) != len(msg.inputs) or not _valued(msg.parameters, _FRAMING_PARAMETERS):
        return False
    for tensor in msg.inputs:
        if tensor.datatype == "BOOL" or tensor.HasField("contents") or not _valued(tensor.parameters):
            return False
    for output in msg.outputs:
        if not _valued(output.parameters, _NOT_FORWARDED_OUTPUT):
            return False
    return True


def _valued(parameters: ParameterMap, dropped: frozenset[str] = frozenset()) -> bool:
    """Every parameter has a value and none is one that is not forwarded."""
    return all(
        key not in dropped and value.WhichOneof("parameter_choice") for key, value in parameters.items()
    )


def _answers_as_is(msg: pb.ModelInferResponse, response: InferenceResponse, wanted: set[str] | None) -> bool:
    """Whether a backend's message still says what `response` does, in raw contents only (what standard
    clients read), and holds only `wanted` outputs."""
    if len(msg.outputs) != len(response.outputs) or len(msg.raw_output_contents) != len(msg.outputs):
        return False
    if any(output.HasField("contents") for output in msg.outputs):
        return False
    if wanted is None:
        return True
    return all(output.name in wanted for output in msg.outputs)


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
        outputs = _tensors(msg.outputs, msg.raw_output_contents, "output")
    except InvalidRequest as exc:
        raise BackendError(f"unreadable inference response: {exc.message}") from None
    return InferenceResponse(
        msg.model_name, outputs, msg.model_version, msg.id, parameters_from_proto(msg.parameters), msg
    )


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
) -> list[Tensor]:
    if raw and len(raw) != len(items):
        raise InvalidRequest(f"raw_{role}_contents has {len(raw)} entries for {len(items)} {role}s")
    tensors: list[Tensor] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        name = item.name
        if not name:
            raise InvalidRequest(f"{role}s[{index}]: missing 'name'")
        if name in seen:
            raise InvalidRequest(f"{owner(role, name)} appears more than once")
        seen.add(name)
        if not item.datatype:
            raise InvalidRequest(f"{owner(role, name)}: missing 'datatype'")
        if raw:
            # An empty `contents` message next to raw contents is harmless; data in both is ambiguous.
            if item.HasField("contents") and item.contents.ByteSize() > 0:
                raise InvalidRequest(
                    f"{owner(role, name)}: sets 'contents' although raw_{role}_contents is used"
                )
            # Checks the datatype and shape itself (this is the hot path: no second check here).
            tensor = tensor_from_buffer(name, item.datatype, item.shape, raw[index], role=role)
        else:
            check_datatype(name, item.datatype, role=role)
            shape = check_shape(name, item.shape, role=role)
            tensor = _from_contents(name, item.datatype, shape, item.contents, role)
        tensor.parameters = parameters_from_proto(item.parameters)
        tensors.append(tensor)
    return tensors


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
