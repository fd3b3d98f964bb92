"""Checking an inference request against the model's metadata before it leaves the gateway.

A malformed request caught here costs the client a 400 with a message naming the input, instead of a
round trip and whatever the backend makes of it. The check reads only names, datatypes and shapes,
never tensor data, so it costs microseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import InvalidRequest, clip
from gateway.types import InferenceRequest, ModelMetadata, TensorMetadata


def validate_request(request: InferenceRequest, metadata: ModelMetadata) -> None:
    """Check the request's inputs and requested outputs against the model's metadata.

    Every input the model declares is required (OIP metadata has no notion of an optional input).
    A -1 in the metadata's shape matches any size, the batch dimension included.

    Args:
        request: The request as the client sent it.
        metadata: The model's metadata, under the name the client used.

    Raises:
        InvalidRequest: An input the model does not have, a repeated or missing input, a datatype or
            shape mismatch, or a requested output the model does not have. The message names it.
    """
    model = metadata.name
    expected = {t.name: t for t in metadata.inputs}
    seen: set[str] = set()
    for tensor in request.inputs:
        meta = expected.get(tensor.name)
        if meta is None:
            raise InvalidRequest(
                f"model '{model}' has no input '{clip(tensor.name)}' (inputs: {_names(metadata.inputs)})"
            )
        if tensor.name in seen:
            raise InvalidRequest(f"input '{clip(tensor.name)}' is given more than once")
        seen.add(tensor.name)
        if tensor.datatype != meta.datatype:
            raise InvalidRequest(
                f"input '{tensor.name}' has datatype {tensor.datatype}; "
                f"model '{model}' expects {meta.datatype}"
            )
        if not shape_matches(tensor.shape, meta.shape):
            raise InvalidRequest(
                f"input '{tensor.name}' has shape {_fmt(tensor.shape)}; model '{model}' expects "
                f"{_fmt(meta.shape)} (-1: any size)"
            )
    if len(seen) != len(expected):
        missing = [name for name in expected if name not in seen]
        raise InvalidRequest(f"model '{model}' requires input '{missing[0]}', which the request lacks")
    if request.outputs:
        outputs = {t.name for t in metadata.outputs}
        for output in request.outputs:
            if output.name not in outputs:
                raise InvalidRequest(
                    f"model '{model}' has no output '{clip(output.name)}' "
                    f"(outputs: {_names(metadata.outputs)})"
                )


def shape_matches(shape: Sequence[int], expected: Sequence[int]) -> bool:
    """Whether `shape` fits `expected`: the same rank, and each dimension equal or -1 (any size)."""
    if len(shape) != len(expected):
        return False
    for got, want in zip(shape, expected, strict=True):  # a loop: cheaper than all() over a generator
        if got != want and want != -1:
            return False
    return True


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _names(tensors: Sequence[TensorMetadata]) -> str:
    return ", ".join(t.name for t in tensors) or "none"
