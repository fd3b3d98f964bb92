"""The per-version config file: defaults, bucket choice, and errors that name the bad key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from runtimes.common.batching import BatchingConfig, default_buckets
from runtimes.jax.config import ModelVersionConfig

VALID: dict[str, Any] = {
    "platform": "jax_xla",
    "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    "batching": {"max_batch_size": 8, "batch_buckets": [1, 2, 4, 8], "max_queue_delay_ms": 2},
}


@pytest.mark.parametrize(
    ("max_batch", "buckets"),
    [(1, (1,)), (2, (1, 2)), (8, (1, 2, 4, 8)), (6, (1, 2, 4, 6)), (32, (1, 2, 4, 8, 16, 32))],
)
def test_default_buckets_are_powers_of_two_up_to_max(max_batch: int, buckets: tuple[int, ...]) -> None:
    """Default buckets double from 1 and always end at max_batch_size."""
    assert default_buckets(max_batch) == buckets


@pytest.mark.parametrize(("rows", "bucket"), [(1, 1), (2, 2), (3, 4), (4, 4), (5, 6), (6, 6)])
def test_bucket_for_picks_smallest_bucket_that_fits(rows: int, bucket: int) -> None:
    """A batch runs at the smallest bucket holding its rows."""
    assert BatchingConfig(6, (1, 2, 4, 6)).bucket_for(rows) == bucket


def test_config_round_trips_through_file(tmp_path: Path) -> None:
    """What `write` produces, `read` parses back to an equal config."""
    config = ModelVersionConfig.from_json(VALID)
    config.write(tmp_path / "config.json")
    assert ModelVersionConfig.read(tmp_path / "config.json") == config
    assert config.inputs[0].dims == (28, 28, 1)


def test_instances_per_device_defaults_to_one_and_round_trips() -> None:
    assert ModelVersionConfig.from_json(VALID).instances_per_device == 1
    two = ModelVersionConfig.from_json({**VALID, "instances_per_device": 2})
    assert two.instances_per_device == 2
    assert ModelVersionConfig.from_json(two.to_json()) == two


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    target: Any = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("unknown", 1, "unknown key 'unknown'"),
        ("platform", "tensorflow", "'platform' must be 'jax_xla'"),
        ("inputs", _DELETE, "missing key 'inputs'"),
        ("inputs", [], "'inputs' must list at least one tensor"),
        ("inputs.0.datatype", "BYTES", "inputs[0]: 'datatype'"),
        ("inputs.0.datatype", "FLOAT", "inputs[0]: 'datatype'"),
        ("inputs.0.shape", [28, 28], "must start with -1"),
        ("inputs.0.shape", [-1, -1], "dims after the batch dimension must be fixed"),
        ("outputs.0.name", "image", "names must be unique"),
        ("outputs.0.colour", "red", "outputs[0]: unknown key 'colour'"),
        ("batching.max_batch_size", 0, "'max_batch_size' must be >= 1"),
        ("batching.max_batch_size", True, "'max_batch_size' must be int"),
        ("batching.batch_buckets", [1, 4, 2, 8], "'batch_buckets' must be increasing"),
        ("batching.batch_buckets", [1, 2, 4], "ending at max_batch_size 8"),
        ("batching.max_queue_delay_ms", -1, "'max_queue_delay_ms' must be >= 0"),
        ("batching.max_queue_delay_ms", "2", "'max_queue_delay_ms' must be int or float"),
        ("batching.dispatch_when_idle", "yes", "'dispatch_when_idle' must be bool"),
        ("batching.max_queue_size", -1, "'max_queue_size' must be >= 0"),
        ("batching.max_queue_size", 2.5, "'max_queue_size' must be int"),
        ("instances_per_device", 0, "'instances_per_device' must be >= 1"),
        ("instances_per_device", 1.5, "'instances_per_device' must be int"),
        ("instances_per_device", True, "'instances_per_device' must be int"),
    ],
)
def test_invalid_config_names_the_key(path: str, value: Any, message: str) -> None:
    """Every invalid config is refused with a message naming the file and the offending key."""
    with pytest.raises(ConfigError, match=r"^m/1/config\.json: ") as info:
        ModelVersionConfig.from_json(_with(path, value), source="m/1/config.json")
    assert message in str(info.value)
