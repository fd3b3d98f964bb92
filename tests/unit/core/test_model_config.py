"""The Triton-style configuration derived from metadata and a backend's batching."""

from __future__ import annotations

from gateway.core.model_config import derive_config
from gateway.types import NO_BATCHING, Batching, ModelMetadata, TensorMetadata

BATCHED = ModelMetadata(
    "cnn", "jax", [TensorMetadata("image", "FP32", (-1, 28, 28, 1))], [TensorMetadata("p", "FP32", (-1, 10))]
)


def test_no_batching_keeps_the_metadata_shapes() -> None:
    """A server that does not batch: max_batch_size 0, dims as the metadata says."""
    config = derive_config(BATCHED, NO_BATCHING)
    assert config.max_batch_size == 0
    assert [t.shape for t in config.inputs] == [(-1, 28, 28, 1)]


def test_batching_drops_the_batch_dimension() -> None:
    """With batching, dims leave out the leading -1, as Triton's do, and the batching fields carry over."""
    config = derive_config(BATCHED, Batching(16, (8, 16), 2000))
    assert (config.max_batch_size, config.preferred_batch_sizes, config.max_queue_delay_microseconds) == (
        16,
        [8, 16],
        2000,
    )
    assert [t.shape for t in config.inputs] == [(28, 28, 1)]
    assert [t.shape for t in config.outputs] == [(10,)]


def test_batching_without_a_batch_dimension_is_not_believed() -> None:
    """Tensors without a leading -1 cannot lose it: the config says no batching rather than drop a dim."""
    fixed = ModelMetadata(
        "m", "p", [TensorMetadata("x", "FP32", (4, 3))], [TensorMetadata("y", "FP32", (4,))]
    )
    config = derive_config(fixed, Batching(8))
    assert config.max_batch_size == 0
    assert [t.shape for t in config.inputs] == [(4, 3)]
