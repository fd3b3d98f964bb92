"""The per-version model config (`config.json`): tensor signature and batching settings.

It is written by `runtimes.jax.export` and read at load; unknown keys are rejected and every error names
the file and the key, so a hand-edited config fails loudly rather than serving something else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import ml_dtypes
import numpy as np

from gateway.datatypes import ALL_DATATYPES, numpy_dtype
from gateway.errors import ConfigError
from runtimes.common.batching import DEFAULT_MAX_QUEUE_DELAY_MS, BatchingConfig, default_buckets

PLATFORM: Final = "jax_xla"
_NUMBER_LIST: Final = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: `shape[0]` is -1, the batch dimension; the other dims are fixed."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape without the batch dimension (what a Triton-style config lists)."""
        return self.shape[1:]

    @property
    def row_elements(self) -> int:
        return math.prod(self.dims)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The dtype the model computes with: BF16 is `ml_dtypes.bfloat16`, not its wire form uint16."""
        return np.dtype(ml_dtypes.bfloat16) if self.datatype == "BF16" else numpy_dtype(self.datatype)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class ModelVersionConfig:
    """The contents of `<root>/<model>/<version>/config.json`."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: BatchingConfig
    platform: str = PLATFORM
    # Batches run at once on each device (Triton's instance_group count). Two help where one execution
    # leaves the device partly idle: XLA:CPU rarely keeps every core busy on a small model, and on an
    # accelerator one batch's host transfers overlap another's compute. They share the weights.
    instances_per_device: int = 1
    # Informational: which jax wrote the artifact and for which platforms it was lowered.
    exported_with: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "batching": self.batching.to_json(),
            "instances_per_device": self.instances_per_device,
            "exported_with": dict(self.exported_with),
        }

    def write(self, path: Path) -> None:
        text = json.dumps(self.to_json(), indent=2)
        # Keep shapes and bucket lists on one line: the file is meant to be read and edited by hand.
        text = _NUMBER_LIST.sub(
            lambda m: "[" + ", ".join(n.strip() for n in m.group(1).split(",")) + "]", text
        )
        path.write_text(text + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelVersionConfig:
        """Parses and validates a config file; `ConfigError` names the file and the bad key."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read model config: {exc}") from None
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, data: Any, *, source: str = "config") -> ModelVersionConfig:
        obj = _Obj(data, source)
        obj.only({"platform", "inputs", "outputs", "batching", "instances_per_device", "exported_with"})
        platform = obj.get("platform", str, PLATFORM)
        if platform != PLATFORM:
            raise ConfigError(f"{source}: 'platform' must be '{PLATFORM}', not '{platform}'")
        inputs = _tensors(obj, "inputs")
        outputs = _tensors(obj, "outputs")
        names = [t.name for t in inputs] + [t.name for t in outputs]
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: input and output names must be unique, got {names}")
        batching = _batching(_Obj(obj.require("batching", dict), f"{source}: batching"))
        instances = obj.get("instances_per_device", int, 1)
        if instances < 1:
            raise ConfigError(f"{source}: 'instances_per_device' must be >= 1")
        exported_with = obj.get("exported_with", dict, {})
        return cls(
            inputs, outputs, batching, platform, instances_per_device=instances, exported_with=exported_with
        )


class _Obj:
    """A JSON object being validated, so each error message can name its file and key."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.where = where

    def only(self, keys: set[str]) -> None:
        unknown = sorted(set(self.data) - keys)
        if unknown:
            raise ConfigError(
                f"{self.where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(keys))})"
            )

    def require(self, key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in self.data:
            raise ConfigError(f"{self.where}: missing key '{key}'")
        return self.get(key, kind, None)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.data.get(key, default)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int subclass; a JSON `true` is never a valid size.
        if key in self.data and (
            not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))
        ):
            expected = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.where}: '{key}' must be {expected}, got {json.dumps(value)}")
        return value


def _tensors(obj: _Obj, key: str) -> tuple[TensorSpec, ...]:
    items = obj.require(key, list)
    if not items:
        raise ConfigError(f"{obj.where}: '{key}' must list at least one tensor")
    specs = []
    for i, item in enumerate(items):
        t = _Obj(item, f"{obj.where}: {key}[{i}]")
        t.only({"name", "datatype", "shape"})
        name, datatype, shape = t.require("name", str), t.require("datatype", str), t.require("shape", list)
        if not name:
            raise ConfigError(f"{t.where}: 'name' must not be empty")
        if datatype not in ALL_DATATYPES or datatype == "BYTES":
            raise ConfigError(f"{t.where}: 'datatype' {datatype!r} is not a fixed-size OIP datatype")
        if not shape or shape[0] != -1:
            raise ConfigError(f"{t.where}: 'shape' must start with -1, the batch dimension")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape[1:]):
            raise ConfigError(f"{t.where}: 'shape' dims after the batch dimension must be fixed ints >= 0")
        specs.append(TensorSpec(name, datatype, tuple(shape)))
    return tuple(specs)


def _batching(obj: _Obj) -> BatchingConfig:
    obj.only(
        {"max_batch_size", "batch_buckets", "max_queue_delay_ms", "dispatch_when_idle", "max_queue_size"}
    )
    max_batch = obj.require("max_batch_size", int)
    if max_batch < 1:
        raise ConfigError(f"{obj.where}: 'max_batch_size' must be >= 1")
    buckets: Sequence[Any] = obj.get("batch_buckets", list, None) or default_buckets(max_batch)
    if (
        not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in buckets)
        or list(buckets) != sorted(set(buckets))
        or buckets[-1] != max_batch
    ):
        raise ConfigError(
            f"{obj.where}: 'batch_buckets' must be increasing ints >= 1 ending at max_batch_size {max_batch}"
        )
    delay = obj.get("max_queue_delay_ms", (int, float), DEFAULT_MAX_QUEUE_DELAY_MS)
    if delay < 0:
        raise ConfigError(f"{obj.where}: 'max_queue_delay_ms' must be >= 0")
    when_idle = obj.get("dispatch_when_idle", bool, True)
    queue_size = obj.get("max_queue_size", int, 0)
    if queue_size < 0:
        raise ConfigError(f"{obj.where}: 'max_queue_size' must be >= 0 (0: no limit)")
    return BatchingConfig(max_batch, tuple(buckets), float(delay), when_idle, queue_size)
