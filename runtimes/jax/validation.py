"""Checks a request against a model's signature before it is queued, so a bad one fails alone.

A request that reached a batch with the wrong dtype or shape would fail every request merged with it;
here it is refused with `InvalidRequest` naming the tensor, and never enqueued.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_dtypes
import numpy as np

from gateway.core.validation import validate_request
from gateway.errors import InvalidRequest
from gateway.types import InferenceRequest, ModelMetadata, RequestedOutput, Tensor, TensorMetadata
from runtimes.jax.config import PLATFORM, ModelVersionConfig, TensorSpec


def signature(model: str, config: ModelVersionConfig) -> ModelMetadata:
    """The version's tensors as OIP metadata (-1 for the batch), what `validate_request` checks against."""
    return ModelMetadata(
        name=model,
        platform=PLATFORM,
        inputs=[TensorMetadata(spec.name, spec.datatype, spec.shape) for spec in config.inputs],
        outputs=[TensorMetadata(spec.name, spec.datatype, spec.shape) for spec in config.outputs],
    )


def check_inputs(
    request: InferenceRequest, metadata: ModelMetadata, config: ModelVersionConfig
) -> list[np.ndarray]:
    """The request's arrays in the model's input order, in the dtype the model computes with.

    Names, datatypes, shapes and requested outputs are checked by the gateway's own
    `validate_request` (one set of rules and messages for both processes); what only a batching
    runtime needs is checked here.

    Raises:
        InvalidRequest: An unknown, duplicated or missing input or output; a datatype other than the
            model's (BYTES included: XLA models take fixed-size tensors); wrong non-batch dims; a batch
            dimension below 1 or differing between inputs; data that does not fill the shape.
    """
    validate_request(request, metadata)
    by_name = {tensor.name: tensor for tensor in request.inputs}
    arrays = []
    rows: int | None = None
    for spec in config.inputs:
        array = _array(spec, by_name[spec.name])
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise InvalidRequest(
                f"input '{spec.name}' has batch size {array.shape[0]}; other inputs have {rows}"
            )
        arrays.append(array)
    return arrays


def _array(spec: TensorSpec, tensor: Tensor) -> np.ndarray:
    shape = tuple(tensor.shape)
    if shape[0] < 1:
        raise InvalidRequest(f"input '{spec.name}' has batch size {shape[0]}; it must be at least 1")
    data = tensor.data
    needed = math.prod(shape)
    if data.size != needed:
        raise InvalidRequest(
            f"input '{spec.name}' holds {data.size} elements; shape {list(shape)} needs {needed}"
        )
    if spec.datatype == "BF16" and data.dtype != ml_dtypes.bfloat16:
        # BF16 travels as its uint16 bit patterns; reinterpret, do not convert.
        data = data.view(ml_dtypes.bfloat16)
    return np.asarray(data, dtype=spec.numpy_dtype).reshape(shape)


def select_outputs(config: ModelVersionConfig, requested: Sequence[RequestedOutput] | None) -> list[int]:
    """Indexes into `config.outputs` of the outputs to return: all of them when none are requested.

    The names were checked by `check_inputs`."""
    if not requested:
        return list(range(len(config.outputs)))
    index = {spec.name: i for i, spec in enumerate(config.outputs)}
    chosen: list[int] = []
    for output in requested:
        if index[output.name] not in chosen:
            chosen.append(index[output.name])
    return chosen
