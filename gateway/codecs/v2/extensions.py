"""Protocol extensions a request may ask for that these servers do not serve, refused by name.

Triton's shared-memory extension (`shared_memory_region`, `shared_memory_byte_size`,
`shared_memory_offset` on an input or a requested output) and classification extension (`classification`
on a requested output) are asked for with tensor parameters. A server that ignores them answers OK with
something else than what the client asked for: the input's data read from the request instead of the
region, or raw scores where class labels were expected. Refusing them names the problem instead. `/v2`
lists neither extension, so a client that checks first knows before it sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gateway.codecs.v2.tensors import owner
from gateway.errors import InvalidRequest
from gateway.types import InferenceRequest, Parameters

_SHARED_MEMORY: Final = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_OUTPUT_ONLY: Final = ("classification",)
_EXTENSION_OF: Final = {
    **{key: "shared-memory" for key in _SHARED_MEMORY},
    "classification": "classification",
}


def refuse_unserved(request: InferenceRequest) -> None:
    """Raise `InvalidRequest` if a tensor of `request` asks for an extension that is not served.

    The message names the tensor, the parameter and the extension.
    """
    for tensor in request.inputs:
        if tensor.parameters:
            _check(tensor.parameters, _SHARED_MEMORY, owner("input", tensor.name))
    for output in request.outputs or ():
        if output.parameters:
            _check(
                output.parameters, (*_SHARED_MEMORY, *_OUTPUT_ONLY), owner("requested output", output.name)
            )


def _check(parameters: Parameters, unserved: Iterable[str], who: str) -> None:
    for key in unserved:
        if key in parameters:
            raise InvalidRequest(
                f"{who}: parameter '{key}' asks for the {_EXTENSION_OF[key]} extension, which this server "
                "does not serve"
            )
