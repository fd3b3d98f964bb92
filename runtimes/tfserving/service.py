"""The transport-free core both listeners call: predict, metadata and status, with TF Serving's errors.

The gRPC servicer and the REST app only decode their wire format, call this, and encode; the checks
(signature, inputs, output filter) and the runtime-latency metric live here once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

from gateway.codecs.tfserving.front import check_metadata_fields
from gateway.codecs.tfserving.signature import DEFAULT_SIGNATURE, SIGNATURE_DEF_FIELD
from gateway.core.validation import shape_matches
from gateway.errors import ErrorCode, GatewayError, InvalidRequest, clip
from gateway.metrics import UNKNOWN_MODEL
from runtimes.tfserving.manager import ModelManager
from runtimes.tfserving.metrics import ServingMetrics
from runtimes.tfserving.model import LoadedVersion, Signature, TensorInfo
from runtimes.tfserving.tensors import dtype_name

# The largest request either listener reads (a REST body, a gRPC message), and the most bytes a typed
# TensorProto's few values may be filled out to: the gateway's default limit. TF Serving takes gRPC
# messages up to INT32_MAX; `--max_request_bytes` raises this one.
DEFAULT_MAX_REQUEST_BYTES: Final = 64 * 2**20
# Our codes TF Serving has no name for, as its metrics' status label names them (the gRPC code's name).
_CODE_NAMES: Final = {
    ErrorCode.BAD_GATEWAY: "UNAVAILABLE",
    ErrorCode.PAYLOAD_TOO_LARGE: "RESOURCE_EXHAUSTED",
}


@dataclass(frozen=True, slots=True)
class Target:
    """What a request addresses: a model, and a version number or label or neither (the latest)."""

    model: str
    version: int | None = None
    label: str = ""
    signature: str = ""


@dataclass(frozen=True, slots=True)
class Prediction:
    version: LoadedVersion
    signature: Signature
    outputs: dict[str, np.ndarray]


class TFServingCore:
    """Runs requests against the manager's models; a thread pool runs unbatched signatures.

    `max_request_bytes` bounds what the listeners read (REST bodies, gRPC messages) and what a request's
    tensors may expand to (a typed TensorProto's fill).
    """

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        *,
        threads: int = 4,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tf-run")

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    def model_label(self, model: str) -> str:
        """`model` as a metric label: a configured model's name, else `UNKNOWN_MODEL` (labels stay
        bounded whatever names clients send)."""
        return model if self.manager.serves(model) else UNKNOWN_MODEL

    def signature(self, target: Target) -> tuple[LoadedVersion, Signature]:
        """The version and signature a request addresses; FAILED_PRECONDITION for an unknown signature,
        as TF Serving's predict_util.cc."""
        version = self.manager.resolve(target.model, target.version, target.label)
        key = target.signature or DEFAULT_SIGNATURE
        signature = version.signatures.get(key)
        if signature is None:
            raise GatewayError(
                f'Serving signature key "{clip(key)}" not found.', code=ErrorCode.FAILED_PRECONDITION
            )
        return version, signature

    async def predict(
        self,
        target: Target,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> Prediction:
        version, signature = self.signature(target)
        return await self.run(version, signature, inputs, output_filter, deadline)

    async def run(
        self,
        version: LoadedVersion,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
    ) -> Prediction:
        """Predict on a signature already resolved (`signature`): checks the inputs and output filter,
        runs it, and records the runtime latency under the version's model."""
        ordered = _check_inputs(signature, inputs)
        wanted = _check_filter(signature, output_filter)
        start = time.perf_counter()
        try:
            if signature.batcher is not None:
                outputs = await signature.batcher.submit(ordered, deadline=deadline)
            else:
                future = self._executor.submit(signature.run_direct, ordered)
                outputs = await asyncio.wrap_future(future)
        except tf.errors.InvalidArgumentError as exc:
            # The graph's own check (a shape the signature allows but an op refuses): the client's fault.
            raise InvalidRequest(clip(exc.message, 1024)) from None
        self.metrics.runtime_latency(self.model_label(version.model), "Predict", time.perf_counter() - start)
        names = [info.alias for info in signature.outputs]
        return Prediction(
            version, signature, {n: out for n, out in zip(names, outputs, strict=True) if n in wanted}
        )

    def metadata(self, target: Target, fields: Sequence[str]) -> LoadedVersion:
        """GetModelMetadata: the version whose SignatureDefMap to report (only "signature_def" exists)."""
        check_metadata_fields(fields)
        return self.manager.resolve(target.model, target.version, target.label)


def _check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The inputs in the signature's order, each checked against its TensorInfo (INVALID_ARGUMENT)."""
    expected = {info.alias for info in signature.inputs}
    if set(inputs) != expected:
        missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
        raise InvalidRequest(
            f"input size does not match signature: {len(inputs)}!={len(expected)} len({{"
            f"{_names(inputs)}}}) != len({{{_names(expected)}}}). Sent extra: "
            f"{{{_names(extra)}}}. Missing but required: {{{_names(missing)}}}."
        )
    ordered = []
    for info in signature.inputs:
        array = inputs[info.alias]
        _check_tensor(info, array)
        ordered.append(array)
    if signature.batcher is not None:
        rows = {int(a.shape[0]) for a in ordered}
        if len(rows) != 1:
            raise InvalidRequest(
                f"the inputs' batch sizes differ ({sorted(rows)}); a batched signature needs them equal"
            )
    return ordered


def _names(names: Iterable[str], limit: int = 16) -> str:
    """Names for a message, sorted: each clipped, at most `limit` of them (request names are the
    client's: a message must not grow with them)."""
    ordered = sorted(names)
    shown = ", ".join(clip(name, 64) for name in ordered[:limit])
    return shown + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")


def _check_tensor(info: TensorInfo, array: np.ndarray) -> None:
    if array.dtype != info.numpy_dtype:
        raise InvalidRequest(
            f"Expects arg '{info.alias}' to be {dtype_name(info.dtype)} but {array.dtype} is provided"
        )
    if info.shape is None:
        return
    if not shape_matches(array.shape, info.shape):
        raise InvalidRequest(
            f"input '{info.alias}' has shape {list(array.shape)}, the signature expects "
            f"{[d if d >= 0 else None for d in info.shape]}"
        )
    if info.shape and info.shape[0] == -1 and array.shape[0] == 0:
        raise InvalidRequest(f"input '{info.alias}': the batch dimension must be at least 1")


def _check_filter(signature: Signature, output_filter: Sequence[str]) -> set[str]:
    names = {info.alias for info in signature.outputs}
    if not output_filter:
        return names
    for name in output_filter:
        if name not in names:
            raise InvalidRequest(
                f"output tensor alias not found in signature: {clip(name)} Outputs expected to be in the "
                f"set {{{','.join(sorted(names))}}}."
            )
    return set(output_filter)


def model_spec(version: LoadedVersion, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=version.model, signature_name=signature_name)
    spec.version.value = version.version
    return spec


def metadata_response(version: LoadedVersion) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_spec(version))
    response.metadata[SIGNATURE_DEF_FIELD].Pack(version.signature_def_map)
    return response


def metadata_json(version: LoadedVersion) -> dict[str, Any]:
    """The REST metadata body: the response's JSON with the Any unpacked, as TF Serving writes it."""
    return {
        "model_spec": to_json(model_spec(version)),
        "metadata": {SIGNATURE_DEF_FIELD: to_json(version.signature_def_map)},
    }


def to_json(message: Any) -> dict[str, Any]:
    """A message as TF Serving's REST API prints it: proto field names, default values included."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def error_code_name(code: ErrorCode) -> str:
    """The status name TF Serving's metrics use: the gRPC code's (BAD_GATEWAY and PAYLOAD_TOO_LARGE are
    not among its codes)."""
    return _CODE_NAMES.get(code, code.name)


def gateway_error(exc: BaseException) -> GatewayError:
    """Any exception as the error the client sees: unknown ones become an opaque INTERNAL."""
    if isinstance(exc, GatewayError):
        return exc
    return GatewayError("internal error", code=ErrorCode.INTERNAL)
