"""One SavedModel version loaded: its signatures traced and warmed up, ready to run.

Nothing is traced on the request path. At load, each signature is:

- with batching, traced once per batch bucket (a fixed batch dimension, so each bucket is its own
  graph, as TF Serving's `allowed_batch_sizes`) and run by the shared `DynamicBatcher`;
- without batching (or where its tensors are not batch-first with fixed inner dimensions, which the
  batcher cannot stack), run as the SavedModel's own concrete function, whose batch dimension is unknown,
  in a thread pool.

Every traced function is run once with zeros before the version is reported AVAILABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from runtimes.common.batching import DynamicBatcher
from runtimes.tfserving import tensors
from runtimes.tfserving.config import BatchingOptions

if TYPE_CHECKING:
    from gateway.types import TensorMetadata

_log = logging.getLogger(__name__)
SERVE_TAG: Final = "serve"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A signature input or output: alias, DataType and shape (None: unknown rank; -1: unknown dim)."""

    alias: str
    dtype: int
    shape: tuple[int, ...] | None

    @property
    def numpy_dtype(self) -> np.dtype:
        return tensors.numpy_dtype(self.dtype)

    @property
    def batch_first(self) -> bool:
        """Batch dimension unknown, every other one known: what the batcher can stack and pad."""
        return (
            self.shape is not None
            and len(self.shape) >= 1
            and self.shape[0] == -1
            and min(self.shape[1:], default=0) >= 0
        )


class _BucketRunner:
    """A `BatchRunner`: one traced concrete function per bucket, chosen by the padded batch's rows."""

    def __init__(self, name: str, by_bucket: dict[int, Any], outputs: Sequence[str]) -> None:
        self.name = name
        self._by_bucket = by_bucket
        self._outputs = list(outputs)

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        result = self._by_bucket[int(inputs[0].shape[0])](*inputs)
        return [result[name].numpy() for name in self._outputs]


@dataclass(eq=False)
class Signature:
    """A servable signature: its specs, and how to run it (a batcher, or its function in a pool)."""

    key: str
    inputs: tuple[TensorInfo, ...]  # sorted by alias: the order the runner takes them in
    outputs: tuple[TensorInfo, ...]
    function: Any
    batcher: DynamicBatcher | None = None

    @cached_property
    def rest_inputs(self) -> tuple[TensorMetadata, ...]:
        """The inputs as the REST codec takes them (`rest_json.input_metadata`), built once; a signature
        REST cannot carry (a complex input) raises INVALID_ARGUMENT each time it is asked."""
        from runtimes.tfserving import rest_json  # rest_json imports this module

        return tuple(rest_json.input_metadata(self.inputs))

    def run_direct(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Blocking: runs the signature's own function (unknown batch dim), all outputs in order."""
        result = self.function(**{info.alias: x for info, x in zip(self.inputs, inputs, strict=True)})
        return [result[info.alias].numpy() for info in self.outputs]


@dataclass(eq=False)
class LoadedVersion:
    """A loaded, warmed-up version of a model."""

    model: str
    version: int
    path: Path
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]  # all of them, as metadata reports
    signatures: dict[str, Signature]  # those that can be served
    saved_model: Any  # keeps the trackable objects (variables) alive

    @cached_property
    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """The SignatureDefMap metadata reports (gRPC and REST), built once from `signature_defs`."""
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig_def in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(sig_def)
        return signature_map

    async def close(self) -> None:
        for signature in self.signatures.values():
            if signature.batcher is not None:
                await signature.batcher.close()


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The `serve`-tagged MetaGraph's SignatureDefs, straight from saved_model.pb (for metadata)."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((path / "saved_model.pb").read_bytes())
    for meta_graph in saved.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f"{path}: no MetaGraph tagged '{SERVE_TAG}'")


def load_version(model: str, version: int, path: Path, batching: BatchingOptions | None) -> LoadedVersion:
    """Blocking (run it in a thread): loads, traces and warms up one version. Raises on any failure."""
    signature_defs = read_signature_defs(path)
    saved_model = tf.saved_model.load(str(path), tags=[SERVE_TAG])
    signatures: dict[str, Signature] = {}
    for key, function in saved_model.signatures.items():
        sig_def = signature_defs.get(key)
        if sig_def is None:
            continue
        signature = Signature(
            key,
            _infos(sig_def.inputs),
            _infos(sig_def.outputs),
            function,
        )
        name = f"model '{model}' version {version} signature '{key}'"
        if batching is not None and all(t.batch_first for t in (*signature.inputs, *signature.outputs)):
            runner = _BucketRunner(
                name, _trace_buckets(function, signature, batching), [o.alias for o in signature.outputs]
            )
            # One runner object, `num_batch_threads` threads: batches run concurrently on the one model.
            signature.batcher = DynamicBatcher(
                name, [runner] * batching.num_batch_threads, batching.config, thread_name="tf-batch"
            )
        else:
            if batching is not None:
                _log.info("%s is not batch-first with fixed inner dims: it runs unbatched", name)
            if all(info.shape is not None for info in signature.inputs):  # else no shape to warm up with
                signature.run_direct(_zeros(signature.inputs, 1))
        signatures[key] = signature
    return LoadedVersion(model, version, path, signature_defs, signatures, saved_model)


def _infos(tensor_infos: Any) -> tuple[TensorInfo, ...]:
    infos = []
    for alias in sorted(tensor_infos):
        info = tensor_infos[alias]
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        infos.append(TensorInfo(alias, info.dtype, shape))
    return tuple(infos)


def _trace_buckets(function: Any, signature: Signature, batching: BatchingOptions) -> dict[int, Any]:
    """One concrete function per bucket, each run once with zeros."""
    aliases = [info.alias for info in signature.inputs]

    def call(*args: Any) -> Any:
        return function(**dict(zip(aliases, args, strict=True)))

    traced = {}
    wrapper = tf.function(call)
    for bucket in batching.config.buckets:
        specs = [
            tf.TensorSpec([bucket, *(info.shape or ())[1:]], tf.dtypes.as_dtype(info.dtype), info.alias)
            for info in signature.inputs
        ]
        concrete = wrapper.get_concrete_function(*specs)
        concrete(*_zeros(signature.inputs, bucket))
        traced[bucket] = concrete
    return traced


def _zeros(infos: Sequence[TensorInfo], rows: int) -> list[np.ndarray]:
    arrays = []
    for info in infos:
        shape = [rows if i == 0 and d == -1 else max(d, 1) for i, d in enumerate(info.shape or ())]
        if info.numpy_dtype.kind == "O":
            arrays.append(np.full(shape, b"", dtype=object))
        else:
            arrays.append(np.zeros(shape, info.numpy_dtype))
    return arrays
