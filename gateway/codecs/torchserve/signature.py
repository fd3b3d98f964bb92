"""A TorchServe model's signature: the names, datatypes and shapes of its inputs and outputs.

The file `signature.json` travels in the model archive beside the model; the project's handler checks
requests against it and names the outputs with it, and the gateway answers Open Inference Protocol
metadata with it (the handler returns it for a metadata query, see `payload.encode_metadata_request`)::

    {"inputs":  [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}],
     "outputs": [{"name": "logits",   "datatype": "FP32", "shape": [-1, 4]}]}

Datatypes are OIP names (`FP32`, `INT64`, `BYTES`, ...); -1 is a dimension of any size. A model whose
every input and output has -1 first is batchable: the handler merges requests along that dimension.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from gateway.datatypes import ALL_DATATYPES
from gateway.errors import ConfigError
from gateway.types import TensorMetadata

FILENAME: Final = "signature.json"
# The archive's file naming an eager model's Python file and factory (written by the packager, read by
# the handler; kept here, beside the signature's name, because this module needs no torch).
EAGER_FILE: Final = "eager.json"


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]

    @property
    def batchable(self) -> bool:
        """Whether requests may be merged along the first dimension (every tensor's first dim is -1)."""
        return all(t.shape[:1] == (-1,) for t in (*self.inputs, *self.outputs))

    def to_json(self) -> dict[str, Any]:
        def entries(tensors: tuple[TensorMetadata, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]

        return {"inputs": entries(self.inputs), "outputs": entries(self.outputs)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"


def parse_signature(document: Any, source: str = FILENAME) -> Signature:
    """A `Signature` from the parsed JSON document.

    Raises:
        ConfigError: The document is not a signature; the message names `source` and the bad key.
    """
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: must be an object with 'inputs' and 'outputs'")
    unknown = sorted(set(document) - {"inputs", "outputs"})
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}'")
    inputs = _tensors(document, "inputs", source)
    outputs = _tensors(document, "outputs", source)
    if not outputs:
        raise ConfigError(f"{source}: 'outputs' is empty; a model has at least one output")
    return Signature(inputs, outputs)


def loads_signature(text: str | bytes, source: str = FILENAME) -> Signature:
    """`parse_signature` of a JSON text; ConfigError if it is not JSON."""
    try:
        document = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{source}: not a signature (JSON nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not JSON ({exc})") from None
    return parse_signature(document, source)


def _tensors(document: dict[str, Any], key: str, source: str) -> tuple[TensorMetadata, ...]:
    entries = document.get(key)
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: '{key}' must be a list of tensors")
    tensors: list[TensorMetadata] = []
    for index, entry in enumerate(entries):
        where = f"{source}: {key}[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be an object with name, datatype and shape")
        unknown = sorted(set(entry) - {"name", "datatype", "shape"})
        if unknown:
            raise ConfigError(f"{where}: unknown key '{unknown[0]}'")
        name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: must be a non-empty string")
        if datatype not in ALL_DATATYPES:
            known = ", ".join(sorted(ALL_DATATYPES))
            raise ConfigError(f"{where}.datatype: '{datatype}' is not one of {known}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= -1 for d in shape):
            raise ConfigError(f"{where}.shape: must be a list of integers >= -1")
        if name in (t.name for t in tensors):
            raise ConfigError(f"{where}.name: '{name}' appears twice")
        tensors.append(TensorMetadata(name, datatype, tuple(shape)))
    return tuple(tensors)
