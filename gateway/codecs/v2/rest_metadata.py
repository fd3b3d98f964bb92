"""JSON bodies of the non-inference OIP REST endpoints: server metadata, model metadata, model config, errors.

The `*_to_json` functions return plain dicts for the listener to serialise. The `*_from_json` functions
read what a backend answered, so a malformed document is a `BackendError`. The model config follows
Triton's JSON form (`input` / `output` lists with `data_type: "TYPE_FP32"` and `dims`), which is what
Triton's tools read from `/v2/models/{m}/config`.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.codecs.v2.tensors import config_type, datatype_from_config_type
from gateway.datatypes import ALL_DATATYPES
from gateway.errors import BackendError
from gateway.types import ModelConfig, ModelMetadata, ServerMetadata, TensorMetadata


def server_metadata_to_json(metadata: ServerMetadata) -> dict[str, Any]:
    """The `GET /v2` body: name, version and extensions."""
    return {"name": metadata.name, "version": metadata.version, "extensions": list(metadata.extensions)}


def model_metadata_to_json(metadata: ModelMetadata) -> dict[str, Any]:
    """The `GET /v2/models/{m}` body; `versions` only when known, -1 marks variable dimensions."""
    doc: dict[str, Any] = {"name": metadata.name}
    if metadata.versions:
        doc["versions"] = list(metadata.versions)
    doc["platform"] = metadata.platform
    doc["inputs"] = [_tensor_meta_to_json(t) for t in metadata.inputs]
    doc["outputs"] = [_tensor_meta_to_json(t) for t in metadata.outputs]
    return doc


def model_metadata_from_json(doc: dict[str, Any]) -> ModelMetadata:
    """Read a backend's model metadata document.

    Raises:
        BackendError: The document is not OIP model metadata.
    """
    _expect(isinstance(doc, dict), "model metadata must be a JSON object")
    versions = doc.get("versions", [])
    _expect(
        isinstance(versions, list) and all(isinstance(v, str) for v in versions),
        "model metadata 'versions' must be an array of strings",
    )
    return ModelMetadata(
        name=_string(doc, "name", "model metadata", required=True),
        platform=_string(doc, "platform", "model metadata"),
        inputs=[_tensor_meta_from_json(t, "inputs") for t in _array(doc, "inputs")],
        outputs=[_tensor_meta_from_json(t, "outputs") for t in _array(doc, "outputs")],
        versions=list(versions),
    )


def model_config_to_json(config: ModelConfig) -> dict[str, Any]:
    """Triton's JSON model configuration; `dynamic_batching` only when a delay or preferred size is set."""
    doc: dict[str, Any] = {
        "name": config.name,
        "platform": config.platform,
        "backend": config.backend,
        "max_batch_size": config.max_batch_size,
        "input": [_config_io_to_json(t) for t in config.inputs],
        "output": [_config_io_to_json(t) for t in config.outputs],
    }
    if config.max_queue_delay_microseconds or config.preferred_batch_sizes:
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(config.preferred_batch_sizes),
            "max_queue_delay_microseconds": config.max_queue_delay_microseconds,
        }
    return doc


def model_config_from_json(doc: dict[str, Any]) -> ModelConfig:
    """Read Triton's JSON model configuration (int64 fields may be numbers or protobuf-JSON strings).

    Raises:
        BackendError: The document is not a model configuration we can read.
    """
    _expect(isinstance(doc, dict), "model config must be a JSON object")
    batching = doc.get("dynamic_batching")
    batching = {} if batching is None else batching
    _expect(isinstance(batching, dict), "model config 'dynamic_batching' must be an object")
    preferred = batching.get("preferred_batch_size", [])
    _expect(isinstance(preferred, list), "model config 'preferred_batch_size' must be an array")
    return ModelConfig(
        name=_string(doc, "name", "model config", required=True),
        platform=_string(doc, "platform", "model config"),
        max_batch_size=_int(doc.get("max_batch_size", 0), "max_batch_size"),
        inputs=[_config_io_from_json(t, "input") for t in _array(doc, "input")],
        outputs=[_config_io_from_json(t, "output") for t in _array(doc, "output")],
        backend=_string(doc, "backend", "model config"),
        max_queue_delay_microseconds=_int(batching.get("max_queue_delay_microseconds", 0), "max_queue_delay"),
        preferred_batch_sizes=[_int(v, "preferred_batch_size") for v in preferred],
    )


def error_body(message: str) -> bytes:
    """The OIP error body `{"error": message}`."""
    return orjson.dumps({"error": message})


def _tensor_meta_to_json(meta: TensorMetadata) -> dict[str, Any]:
    return {"name": meta.name, "datatype": meta.datatype, "shape": list(meta.shape)}


def _tensor_meta_from_json(item: Any, where: str) -> TensorMetadata:
    _expect(isinstance(item, dict), f"model metadata '{where}' entries must be objects")
    name = _string(item, "name", f"model metadata {where}", required=True)
    datatype = _string(item, "datatype", f"{where} '{name}'", required=True)
    _expect(datatype in ALL_DATATYPES, f"{where} '{name}': unknown datatype '{datatype}'")
    shape = item.get("shape", [])
    _expect(isinstance(shape, list), f"{where} '{name}': 'shape' must be an array")
    return TensorMetadata(name, datatype, tuple(_int(d, f"{where} '{name}' shape") for d in shape))


def _config_io_to_json(meta: TensorMetadata) -> dict[str, Any]:
    return {"name": meta.name, "data_type": config_type(meta.datatype), "dims": list(meta.shape)}


def _config_io_from_json(item: Any, where: str) -> TensorMetadata:
    _expect(isinstance(item, dict), f"model config '{where}' entries must be objects")
    name = _string(item, "name", f"model config {where}", required=True)
    try:
        datatype = datatype_from_config_type(_string(item, "data_type", f"{where} '{name}'", required=True))
    except ValueError as exc:
        raise BackendError(f"{where} '{name}': {exc}") from None
    dims = item.get("dims", [])
    _expect(isinstance(dims, list), f"{where} '{name}': 'dims' must be an array")
    return TensorMetadata(name, datatype, tuple(_int(d, f"{where} '{name}' dims") for d in dims))


def _string(doc: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    _expect(isinstance(value, str), f"{where}: '{key}' must be a string")
    return str(value)


def _array(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    _expect(isinstance(value, list), f"'{key}' must be an array")
    return list(value)


def _int(value: Any, what: str) -> int:
    # Protobuf's canonical JSON writes int64 as strings; Triton writes numbers. Accept both.
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    elif type(value) is int:
        return value
    raise BackendError(f"{what} must be an integer")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise BackendError(message)
