"""JSON bodies of the metadata, config and error endpoints."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.codecs.v2.rest import (
    error_body,
    model_config_from_json,
    model_config_to_json,
    model_metadata_from_json,
    model_metadata_to_json,
    server_metadata_to_json,
)
from gateway.errors import BackendError
from gateway.types import ModelConfig, ModelMetadata, ServerMetadata, TensorMetadata
from tests.unit.codecs import TESTDATA

METADATA = ModelMetadata(
    name="resnet",
    platform="onnxruntime_onnx",
    inputs=[TensorMetadata("image", "FP32", (-1, 3, 224, 224))],
    outputs=[TensorMetadata("probs", "FP16", (-1, 1000)), TensorMetadata("label", "BYTES", (-1, 1))],
    versions=["1", "2"],
)
CONFIG = ModelConfig(
    name="resnet",
    platform="onnxruntime_onnx",
    max_batch_size=8,
    inputs=[TensorMetadata("image", "FP32", (3, 224, 224))],
    outputs=[TensorMetadata("probs", "FP16", (1000,)), TensorMetadata("label", "BYTES", (1,))],
    backend="onnxruntime",
    max_queue_delay_microseconds=100,
    preferred_batch_sizes=[4, 8],
)


def test_server_metadata() -> None:
    """Server metadata has name, version and extensions."""
    doc = server_metadata_to_json(ServerMetadata("gw", "0.1", ["binary_tensor_data", "model_configuration"]))
    assert doc == {
        "name": "gw",
        "version": "0.1",
        "extensions": ["binary_tensor_data", "model_configuration"],
    }


def test_model_metadata_matches_sample() -> None:
    """Model metadata serialises to the OIP shape and reads back from a backend's document."""
    sample = orjson.loads((TESTDATA / "model_metadata.json").read_bytes())
    assert model_metadata_to_json(METADATA) == sample
    assert model_metadata_from_json(sample) == METADATA


def test_model_metadata_without_versions() -> None:
    """`versions` is omitted when unknown and optional when read."""
    bare = ModelMetadata("m", "", [], [])
    doc = model_metadata_to_json(bare)
    assert "versions" not in doc
    assert model_metadata_from_json(doc) == bare


def test_model_config_matches_sample() -> None:
    """Triton's JSON config (TYPE_* names, TYPE_STRING for BYTES, int64 as strings) reads and writes."""
    sample = orjson.loads((TESTDATA / "model_config.json").read_bytes())
    assert model_config_from_json(sample) == CONFIG
    doc = model_config_to_json(CONFIG)
    assert doc["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [3, 224, 224]}]
    assert doc["output"][1] == {"name": "label", "data_type": "TYPE_STRING", "dims": [1]}
    assert doc["dynamic_batching"] == {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100}
    assert model_config_from_json(doc) == CONFIG


def test_model_config_minimal() -> None:
    """A config without batching settings has no dynamic_batching and keeps Triton's required keys."""
    config = ModelConfig("m", "jax", 0, [], [])
    doc = model_config_to_json(config)
    assert doc == {
        "name": "m",
        "platform": "jax",
        "backend": "",
        "max_batch_size": 0,
        "input": [],
        "output": [],
    }
    assert model_config_from_json({"name": "m", "platform": "jax"}) == config


def test_error_body() -> None:
    """Errors are {"error": message}."""
    assert orjson.loads(error_body('model "x" not found')) == {"error": 'model "x" not found'}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "model metadata must be a JSON object"),
        ({"platform": "x"}, "model metadata: 'name' must be a string"),
        ({"name": "m", "versions": [1]}, "'versions' must be an array of strings"),
        ({"name": "m", "inputs": {}}, "'inputs' must be an array"),
        (
            {"name": "m", "inputs": [{"name": "a", "datatype": "FP8", "shape": []}]},
            "inputs 'a': unknown datatype",
        ),
        ({"name": "m", "outputs": [{"name": "a", "shape": []}]}, "outputs 'a': 'datatype' must be a string"),
        (
            {"name": "m", "inputs": [{"name": "a", "datatype": "FP32", "shape": [1.5]}]},
            "shape must be an integer",
        ),
        ({"name": "m", "inputs": [1]}, "'inputs' entries must be objects"),
    ],
    ids=[
        "not-object",
        "no-name",
        "versions",
        "inputs-not-array",
        "unknown-datatype",
        "no-datatype",
        "float-dim",
        "entry-not-object",
    ],
)
def test_model_metadata_rejects(doc: Any, message: str) -> None:
    """Unreadable model metadata from a backend is a BackendError naming the field."""
    with pytest.raises(BackendError, match=message):
        model_metadata_from_json(doc)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("config", "model config must be a JSON object"),
        ({}, "model config: 'name' must be a string"),
        ({"name": "m", "max_batch_size": "eight"}, "max_batch_size must be an integer"),
        (
            {"name": "m", "input": [{"name": "a", "data_type": "TYPE_INVALID"}]},
            "input 'a': unknown model config",
        ),
        (
            {"name": "m", "output": [{"name": "a", "data_type": "TYPE_FP32", "dims": 3}]},
            "'dims' must be an array",
        ),
        ({"name": "m", "dynamic_batching": []}, "'dynamic_batching' must be an object"),
        (
            {"name": "m", "dynamic_batching": {"preferred_batch_size": 4}},
            "'preferred_batch_size' must be an array",
        ),
    ],
    ids=["not-object", "no-name", "batch-size", "type-invalid", "dims", "batching", "preferred"],
)
def test_model_config_rejects(doc: Any, message: str) -> None:
    """Unreadable model config from a backend is a BackendError naming the field."""
    with pytest.raises(BackendError, match=message):
        model_config_from_json(doc)
