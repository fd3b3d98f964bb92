"""validate_request: a table of well-formed and malformed requests against one model's metadata."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.core.validation import validate_request
from gateway.errors import InvalidRequest
from gateway.types import InferenceRequest, ModelMetadata, RequestedOutput, Tensor, TensorMetadata

METADATA = ModelMetadata(
    name="cnn",
    platform="fake",
    inputs=[TensorMetadata("image", "FP32", (-1, 28, 28)), TensorMetadata("scale", "INT32", (1,))],
    outputs=[TensorMetadata("logits", "FP32", (-1, 10))],
)


def tensor(name: str, datatype: str, shape: tuple[int, ...]) -> Tensor:
    return Tensor(name, datatype, shape, np.zeros(shape, dtype=np.float32))


IMAGE = tensor("image", "FP32", (4, 28, 28))
SCALE = tensor("scale", "INT32", (1,))


def request(*inputs: Tensor, outputs: list[str] | None = None) -> InferenceRequest:
    wanted = None if outputs is None else [RequestedOutput(n) for n in outputs]
    return InferenceRequest("cnn", list(inputs), outputs=wanted)


@pytest.mark.parametrize(
    "req",
    [
        request(IMAGE, SCALE),
        request(SCALE, IMAGE),  # order does not matter
        request(tensor("image", "FP32", (1, 28, 28)), SCALE),  # -1 matches any batch
        request(IMAGE, SCALE, outputs=["logits"]),
    ],
)
def test_well_formed_requests_pass(req: InferenceRequest) -> None:
    """Requests that match names, datatypes, ranks and fixed dims pass."""
    validate_request(req, METADATA)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request(IMAGE, SCALE, tensor("mask", "BOOL", (1,))), "has no input 'mask'"),
        (request(IMAGE), "requires input 'scale'"),
        (request(IMAGE, IMAGE, SCALE), "input 'image' is given more than once"),
        (request(tensor("image", "FP64", (4, 28, 28)), SCALE), "input 'image' has datatype FP64"),
        (request(tensor("image", "FP32", (4, 784)), SCALE), "input 'image' has shape [4, 784]"),
        (request(tensor("image", "FP32", (4, 28, 27)), SCALE), "input 'image' has shape [4, 28, 27]"),
        (request(IMAGE, tensor("scale", "INT32", (2,))), "input 'scale' has shape [2]"),
        (request(IMAGE, SCALE, outputs=["probs"]), "has no output 'probs'"),
    ],
    ids=[
        "unknown-input",
        "missing-input",
        "repeated-input",
        "datatype",
        "rank",
        "dim",
        "fixed-dim",
        "output",
    ],
)
def test_malformed_requests_name_the_tensor(req: InferenceRequest, message: str) -> None:
    """Each malformed case raises InvalidRequest whose message names the offending tensor."""
    with pytest.raises(InvalidRequest) as info:
        validate_request(req, METADATA)
    assert message in info.value.message
