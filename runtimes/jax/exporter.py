"""`export`: how users bring a JAX (or Flax) model to the runtime.

The model is exported ONCE with a symbolic batch dimension: one serialized StableHLO artifact serves every
batch bucket, and the runtime compiles it per bucket at load. So the bucket list is a serving setting
that can be changed in `config.json` without re-exporting, and there is one file to ship, not one per
bucket. The price: the model must be shape-polymorphic in its leading dimension (code that branches on
a concrete batch size fails at export, with jax's own message, not at serving time).

Weights are not baked into the StableHLO: they are an argument, stored beside it as an `.npz` keyed by
each leaf's pytree key path. Swapping weights is a file copy, the artifact stays small, and the runtime
places the weights on each device once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jax
import jax.numpy as jnp
import numpy as np

from gateway.datatypes import datatype_of
from runtimes.common.batching import DEFAULT_MAX_QUEUE_DELAY_MS, BatchingConfig, default_buckets
from runtimes.jax.config import ModelVersionConfig, TensorSpec
from runtimes.jax.repository import CONFIG_FILE, EXPORTED_FILE, WEIGHTS_FILE

# Lowered for all three so one artifact serves CPU, GPU and TPU nodes; jax selects the platform at load.
DEFAULT_PLATFORMS: Final = ("cpu", "cuda", "tpu")
_BATCH: Final = "batch"


class ExportError(ValueError):
    """The model, its inputs or its outputs cannot be exported as a batched serving model."""


def export(
    fn: Callable[..., Any],
    params: Any,
    example_inputs: Sequence[Any] | Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    max_batch_size: int = 8,
    batch_buckets: Sequence[int] | None = None,
    max_queue_delay_ms: float = DEFAULT_MAX_QUEUE_DELAY_MS,
    dispatch_when_idle: bool = True,
    instances_per_device: int = 1,
    platforms: Sequence[str] | None = DEFAULT_PLATFORMS,
    overwrite: bool = False,
) -> Path:
    """Exports `fn(params, *inputs)` into a model version directory the JAX runtime serves.

    Writes `config.json`, `model.jaxexport` (serialized StableHLO from `jax.export`, with a symbolic
    batch dimension) and `weights.npz` into `path`, normally `<repository>/<model>/<version>`. The
    directory appears atomically (written beside it, then renamed), so a runtime polling the repository
    never loads a half-written version.

    Example::

        def apply(params, image):
            return jax.nn.softmax(image.reshape(image.shape[0], -1) @ params["w"])

        export(apply, {"w": w}, [np.zeros((1, 28, 28, 1), np.float32)], "repo/mnist/1",
               input_names=["image"], output_names=["probabilities"], max_batch_size=16)

    Args:
        fn: The model, `fn(params, *inputs)`, inputs in `input_names` order, each with the batch as its
            first dimension. It returns one array, a tuple/list in `output_names` order, or a dict keyed
            by output name; every output has the batch as its first dimension.
        params: The weights, a pytree of arrays made of dicts, lists and tuples (convert Flax
            `FrozenDict`s with `flax.core.unfreeze`; other custom nodes need
            `jax.export.register_pytree_node_serialization`).
        example_inputs: One array per input (a sequence in `input_names` order or a mapping by name);
            only their dtypes and non-batch dims are used, their batch size is irrelevant.
        path: The version directory to create, e.g. `repo/cnn/3`.
        input_names: The Open Inference Protocol names of the inputs.
        output_names: The names of the outputs.
        max_batch_size: The most rows one executable runs (and the largest bucket).
        batch_buckets: Batch sizes to compile, increasing, ending at `max_batch_size`; default
            1, 2, 4, ..., max_batch_size.
        max_queue_delay_ms: How long the first queued request waits for others to join its batch
            while the device is busy.
        dispatch_when_idle: Run what is queued at once when the device has nothing running (default);
            False always waits the delay for a full batch.
        instances_per_device: Batches each device runs at once (see `ModelVersionConfig`).
        platforms: Platforms to lower for (`jax.export` names: "cpu", "cuda", "rocm", "tpu"); None means
            the platform jax runs on here.
        overwrite: Replace `path` if it exists, instead of raising `FileExistsError`.

    Returns:
        The version directory written.

    Raises:
        ExportError: Names or shapes do not describe a batched model (the message says which tensor).
        FileExistsError: `path` exists and `overwrite` is false.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    examples = _examples(example_inputs, input_names)
    if len(set(output_names)) != len(output_names) or not output_names:
        raise ExportError(f"output_names must be non-empty and unique, got {list(output_names)}")
    if set(input_names) & set(output_names):
        raise ExportError("input and output names must differ")
    buckets = tuple(batch_buckets) if batch_buckets else default_buckets(max_batch_size)
    batching = BatchingConfig(max_batch_size, buckets, float(max_queue_delay_ms), dispatch_when_idle)

    # Canonicalise dtypes the way jax will (e.g. float64 -> float32 without x64) so the saved weights
    # match the exported signature exactly.
    params = jax.tree.map(lambda leaf: np.asarray(jnp.asarray(leaf)), params)
    (batch,) = jax.export.symbolic_shape(_BATCH)
    arg_specs = [shape_struct((batch, *x.shape[1:]), x.dtype) for x in examples]
    param_specs = jax.tree.map(lambda a: shape_struct(a.shape, a.dtype), params)
    serving_fn = _tuple_outputs(fn, tuple(output_names))
    exported = jax.export.export(jax.jit(serving_fn), platforms=platforms)(param_specs, *arg_specs)

    inputs = tuple(
        TensorSpec(name, datatype_of(x), (-1, *x.shape[1:]))
        for name, x in zip(input_names, examples, strict=True)
    )
    outputs = tuple(
        _output_spec(name, aval) for name, aval in zip(output_names, exported.out_avals, strict=True)
    )
    config = ModelVersionConfig(
        inputs,
        outputs,
        batching,
        instances_per_device=instances_per_device,
        exported_with={"jax": jax.__version__, "platforms": list(exported.platforms)},
    )
    # Round-trip through the parser so export never writes a config the runtime would refuse.
    ModelVersionConfig.from_json(config.to_json(), source=f"export of {target}")
    _publish(target, config, bytes(exported.serialize()), params, overwrite)
    return target


def shape_struct(shape: tuple[Any, ...], dtype: Any) -> Any:
    """`jax.ShapeDtypeStruct`, which jax leaves untyped."""
    return jax.ShapeDtypeStruct(shape, dtype)  # type: ignore[no-untyped-call]


def _examples(example_inputs: Sequence[Any] | Mapping[str, Any], names: Sequence[str]) -> list[np.ndarray]:
    if len(set(names)) != len(names) or not names:
        raise ExportError(f"input_names must be non-empty and unique, got {list(names)}")
    if isinstance(example_inputs, Mapping):
        missing = [n for n in names if n not in example_inputs]
        if missing or len(example_inputs) != len(names):
            raise ExportError(
                f"example_inputs keys {sorted(example_inputs)} do not match input_names {list(names)}"
            )
        values = [example_inputs[n] for n in names]
    else:
        values = list(example_inputs)
        if len(values) != len(names):
            raise ExportError(f"{len(values)} example inputs for {len(names)} input names")
    arrays = []
    for name, value in zip(names, values, strict=True):
        array = np.asarray(jnp.asarray(value))
        if array.ndim < 1:
            raise ExportError(f"example input '{name}' must have a batch dimension first")
        arrays.append(array)
    return arrays


def _tuple_outputs(fn: Callable[..., Any], names: tuple[str, ...]) -> Callable[..., tuple[Any, ...]]:
    """Wraps `fn` so the exported function always returns a tuple in `names` order."""

    def serving_fn(params: Any, *inputs: Any) -> tuple[Any, ...]:
        out = fn(params, *inputs)
        if isinstance(out, Mapping):
            if set(out) != set(names):
                raise ExportError(f"model returned outputs {sorted(out)}, output_names are {list(names)}")
            return tuple(out[n] for n in names)
        if isinstance(out, (tuple, list)):
            if len(out) != len(names):
                raise ExportError(f"model returned {len(out)} outputs for {len(names)} output names")
            return tuple(out)
        if len(names) != 1:
            raise ExportError(f"model returned one output for {len(names)} output names")
        return (out,)

    return serving_fn


def _output_spec(name: str, aval: Any) -> TensorSpec:
    shape = aval.shape
    if not shape or not jax.export.is_symbolic_dim(shape[0]) or str(shape[0]) != _BATCH:
        raise ExportError(f"output '{name}' has shape {shape}; its first dimension must be the batch")
    rest = shape[1:]
    if not all(isinstance(d, int) for d in rest):
        raise ExportError(f"output '{name}' has shape {shape}; only the batch dimension may vary")
    return TensorSpec(name, datatype_of(np.empty(0, aval.dtype)), (-1, *rest))


def _publish(target: Path, config: ModelVersionConfig, artifact: bytes, params: Any, overwrite: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # A dot-prefixed sibling: the repository scanner ignores it, and the rename below is atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        config.write(staging / CONFIG_FILE)
        (staging / EXPORTED_FILE).write_bytes(artifact)
        np.savez(staging / WEIGHTS_FILE, **_weights_by_key_path(params))  # type: ignore[arg-type]
        if overwrite and target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.rename(retired / target.name)
            staging.rename(target)
            shutil.rmtree(retired)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _weights_by_key_path(params: Any) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    weights = {}
    for key_path, leaf in leaves:
        array = np.asarray(leaf)
        # ml_dtypes types (bfloat16, float8...) have no .npy dtype; store their bits, the loader views
        # them back as the dtype the exported signature declares.
        if array.dtype.kind == "V":
            array = array.view(f"u{array.dtype.itemsize}")
        weights[jax.tree_util.keystr(key_path)] = array
    return weights
