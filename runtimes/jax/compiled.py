"""Loading a version directory into compiled, warmed-up executables: one replica per device.

Everything slow happens here, at load, so the request path only ever calls an executable that exists:
deserialize the StableHLO, place the weights on each device, compile one executable per batch bucket
per device, and run each once. With a persistent compilation cache (`enable_compilation_cache`) a
restart reads the executables back instead of running XLA again.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gateway.errors import ConfigError
from runtimes.jax.config import ModelVersionConfig, TensorSpec
from runtimes.jax.exporter import shape_struct
from runtimes.jax.metrics import RuntimeMetrics
from runtimes.jax.repository import CONFIG_FILE, EXPORTED_FILE, WEIGHTS_FILE, VersionDir

_log = logging.getLogger(__name__)

# Called with (bucket, seconds) after each executable compiles.
CompileObserver = Callable[[int, float], None]


def enable_compilation_cache(directory: str | Path) -> None:
    """Persists compiled executables in `directory` so a restart skips XLA for models it has seen.

    jax only caches compilations slower than a second and entries above a size by default, which
    leaves out most CPU executables; both thresholds are dropped here. Call before the first compile.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    update: Callable[[str, Any], None] = jax.config.update
    update("jax_compilation_cache_dir", str(path))
    update("jax_persistent_cache_min_compile_time_secs", 0.0)
    update("jax_persistent_cache_min_entry_size_bytes", -1)


class Replica:
    """A model's executables and weights on one device. `run` blocks; the batcher calls it off the loop."""

    def __init__(self, device: Any, params: Any, executables: dict[int, Any]) -> None:
        self.device = device
        self.name = str(device)
        self._params = params
        self._executables = executables

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Runs the executable for the batch size of `inputs` (which must be a bucket)."""
        executable = self._executables[inputs[0].shape[0]]
        outputs = executable(self._params, *inputs)
        # np.asarray waits for the device and copies to the host: the batch is complete on return.
        return [np.asarray(out) for out in outputs]

    def close(self) -> None:
        """Frees the device copy of the weights now rather than whenever the GC runs."""
        for leaf in jax.tree.leaves(self._params):
            leaf.delete()
        self._executables.clear()


class CompiledModel:
    """A loaded model version: its config, one `Replica` per device, and compile time per bucket."""

    def __init__(
        self, config: ModelVersionConfig, replicas: list[Replica], compile_seconds: dict[int, float]
    ) -> None:
        self.config = config
        self.replicas = replicas
        self.compile_seconds = compile_seconds

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        devices: Sequence[Any] | None = None,
        on_compile: CompileObserver | None = None,
    ) -> CompiledModel:
        """Loads, compiles and warms up the version in `path` on `devices` (default: all local devices).

        Raises:
            ConfigError: The files are missing, malformed, or disagree with each other.
        """
        config = ModelVersionConfig.read(path / CONFIG_FILE)
        try:
            exported = jax.export.deserialize(bytearray((path / EXPORTED_FILE).read_bytes()))
        except Exception as exc:  # jax raises several types for a corrupt or too-new artifact
            raise ConfigError(f"{path / EXPORTED_FILE}: cannot deserialize: {exc}") from exc
        platform = jax.export.default_export_platform()
        if platform not in exported.platforms:
            raise ConfigError(
                f"{path / EXPORTED_FILE}: exported for {list(exported.platforms)}, this node runs "
                f"{platform}; re-export with platforms=(..., '{platform}')"
            )
        n_params = len(exported.in_avals) - len(config.inputs)
        _check_signature(path, config, exported.in_avals[n_params:], exported.out_avals)
        params = _load_params(path / WEIGHTS_FILE, exported, n_params)

        compile_seconds: dict[int, float] = {}
        replicas = []
        for device in devices if devices is not None else jax.local_devices():
            executables = {}
            sharding = jax.sharding.SingleDeviceSharding(device)
            placed = jax.device_put(params, sharding)
            call = jax.jit(exported.call, in_shardings=sharding, out_shardings=sharding)
            for bucket in config.batching.buckets:
                start = time.perf_counter()
                executables[bucket] = call.lower(placed, *_input_structs(config.inputs, bucket)).compile()
                seconds = time.perf_counter() - start
                compile_seconds[bucket] = max(seconds, compile_seconds.get(bucket, 0.0))
                if on_compile is not None:
                    on_compile(bucket, seconds)
            replica = Replica(device, placed, executables)
            _warm_up(replica, config)
            replicas.append(replica)
        _log.info(
            "compiled %s for %d device(s); seconds per bucket: %s",
            path,
            len(replicas),
            {b: round(s, 3) for b, s in compile_seconds.items()},
        )
        return cls(config, replicas, compile_seconds)

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()


def make_loader(
    metrics: RuntimeMetrics | None = None, devices: Sequence[Any] | None = None
) -> Callable[[VersionDir], CompiledModel]:
    """The `ModelManager` loader: compiles on `devices` and reports compile times to `metrics`."""

    def load(source: VersionDir) -> CompiledModel:
        def observe(bucket: int, seconds: float) -> None:
            if metrics is not None:
                metrics.observe_compile(source.model, str(source.version), seconds)

        return CompiledModel.load(source.path, devices=devices, on_compile=observe)

    return load


def _input_structs(inputs: Sequence[TensorSpec], bucket: int) -> list[Any]:
    return [shape_struct((bucket, *spec.dims), spec.numpy_dtype) for spec in inputs]


def _warm_up(replica: Replica, config: ModelVersionConfig) -> None:
    """Runs every bucket once: first-call costs (allocation, thunk setup) are paid before ready."""
    for bucket in config.batching.buckets:
        zeros = [np.zeros((bucket, *spec.dims), spec.numpy_dtype) for spec in config.inputs]
        outputs = replica.run(zeros)
        for spec, out in zip(config.outputs, outputs, strict=True):
            if out.shape != (bucket, *spec.dims):
                raise ConfigError(f"output '{spec.name}' has shape {out.shape} for batch {bucket}")


def _check_signature(
    path: Path, config: ModelVersionConfig, in_avals: Sequence[Any], out_avals: Sequence[Any]
) -> None:
    """The config must describe the artifact: a mismatch would fail on the first request otherwise."""
    for role, specs, avals in (("input", config.inputs, in_avals), ("output", config.outputs, out_avals)):
        if len(specs) != len(avals):
            raise ConfigError(
                f"{path}: config lists {len(specs)} {role}s, the exported model has {len(avals)}"
            )
        for spec, aval in zip(specs, avals, strict=True):
            if np.dtype(aval.dtype) != spec.numpy_dtype or tuple(aval.shape[1:]) != spec.dims:
                raise ConfigError(
                    f"{path}: {role} '{spec.name}' is {spec.datatype} {list(spec.shape)} in the config but "
                    f"{aval.dtype} {aval.shape} in the exported model"
                )


def _load_params(path: Path, exported: Any, n_params: int) -> Any:
    """Rebuilds the params pytree from the `.npz`, matching leaves to the artifact by key path."""
    (args, _kwargs) = jax.tree_util.tree_unflatten(exported.in_tree, range(len(exported.in_avals)))
    # Always (params, *inputs), also for a model without weights: its params are then {} or None, which
    # the executable must be called with as they were exported.
    if len(args) != len(exported.in_avals) - n_params + 1:
        raise ConfigError(f"{path.parent}: the exported model does not take (params, *inputs)")
    params_tree = args[0]
    indexed, treedef = jax.tree_util.tree_flatten_with_path(params_tree)
    try:
        # Opened here, not by np.load, which leaves its file open when the archive is truncated.
        with path.open("rb") as file, np.load(file, allow_pickle=False) as weights:
            expected = {jax.tree_util.keystr(key_path) for key_path, _ in indexed}
            extra = sorted(set(weights.files) - expected)
            if extra:
                raise ConfigError(f"{path}: weight '{extra[0]}' is not a parameter of the exported model")
            leaves = [
                _leaf(path, weights, jax.tree_util.keystr(kp), exported.in_avals[i]) for kp, i in indexed
            ]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # missing, truncated, not an .npz
        raise ConfigError(f"{path}: cannot read weights: {exc}") from None
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _leaf(path: Path, weights: Any, key: str, aval: Any) -> np.ndarray:
    if key not in weights.files:
        raise ConfigError(f"{path}: missing weight '{key}'")
    array: np.ndarray = weights[key]
    dtype = np.dtype(aval.dtype)
    if array.dtype != dtype and array.dtype.itemsize == dtype.itemsize and dtype.kind == "V":
        array = array.view(dtype)  # bfloat16 and friends are stored as their bits
    if array.dtype != dtype or array.shape != tuple(aval.shape):
        raise ConfigError(f"{path}: weight '{key}' is {array.dtype}{list(array.shape)}, expected {aval}")
    return array
