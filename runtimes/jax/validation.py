"""Checks a request against a model's signature before it is queued, so a bad one fails alone.

A request that reached a batch with the wrong dtype or shape would fail every request merged with it;
here it is refused with `InvalidRequest` naming the tensor, and never enqueued.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_dtypes
import numpy as np

from gateway.errors import InvalidRequest
from gateway.types import RequestedOutput, Tensor
from runtimes.jax.config import ModelVersionConfig, TensorSpec


def check_inputs(model: str, config: ModelVersionConfig, tensors: Sequence[Tensor]) -> list[np.ndarray]:
    """The request's arrays in the model's input order, in the dtype the model computes with.

    Raises:
        InvalidRequest: An unknown, duplicated or missing input; a datatype other than the model's
            (BYTES included: XLA models take fixed-size tensors); wrong non-batch dims; a batch
            dimension below 1 or differing between inputs.
    """
    by_name: dict[str, Tensor] = {}
    expected = {spec.name for spec in config.inputs}
    for tensor in tensors:
        if tensor.name not in expected:
            raise InvalidRequest(
                f"model '{model}' has no input '{tensor.name}'; its inputs are {sorted(expected)}"
            )
        if tensor.name in by_name:
            raise InvalidRequest(f"input '{tensor.name}' appears more than once")
        by_name[tensor.name] = tensor
    arrays = []
    rows: int | None = None
    for spec in config.inputs:
        found = by_name.get(spec.name)
        if found is None:
            raise InvalidRequest(f"model '{model}' requires input '{spec.name}', which the request lacks")
        array = _check_tensor(spec, found)
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise InvalidRequest(
                f"input '{spec.name}' has batch size {array.shape[0]}; other inputs have {rows}"
            )
        arrays.append(array)
    return arrays


def _check_tensor(spec: TensorSpec, tensor: Tensor) -> np.ndarray:
    if tensor.datatype != spec.datatype:
        raise InvalidRequest(
            f"input '{spec.name}' has datatype {tensor.datatype}; the model expects {spec.datatype}"
        )
    shape = tuple(tensor.shape)
    if len(shape) != len(spec.shape) or shape[1:] != spec.dims:
        raise InvalidRequest(
            f"input '{spec.name}' has shape {list(shape)}; the model expects {list(spec.shape)} (-1: any)"
        )
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


def select_outputs(
    model: str, config: ModelVersionConfig, requested: Sequence[RequestedOutput] | None
) -> list[int]:
    """Indexes into `config.outputs` of the outputs to return: all of them when none are requested."""
    if not requested:
        return list(range(len(config.outputs)))
    index = {spec.name: i for i, spec in enumerate(config.outputs)}
    chosen = []
    for output in requested:
        if output.name not in index:
            raise InvalidRequest(
                f"model '{model}' has no output '{output.name}'; its outputs are {sorted(index)}"
            )
        if index[output.name] not in chosen:
            chosen.append(index[output.name])
    return chosen
