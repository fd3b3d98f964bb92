"""The Triton-style model configuration, derived in one place for every backend kind.

Load tools of the Triton ecosystem (perf_analyzer, model_analyzer, tritonclient users) read
`/v2/models/{m}/config`; what it says is the model's OIP metadata (inputs, outputs, platform) plus what
its server says of batching. With `max_batch_size > 0` the dims leave out the batch dimension, as
Triton's do; without batching they are the metadata's shapes.
"""

from __future__ import annotations

from gateway.types import Batching, ModelConfig, ModelMetadata, TensorMetadata


def _without_batch(tensors: list[TensorMetadata]) -> list[TensorMetadata]:
    return [TensorMetadata(t.name, t.datatype, t.shape[1:]) for t in tensors]


def derive_config(metadata: ModelMetadata, batching: Batching) -> ModelConfig:
    """The configuration of a model from its metadata and its server's batching.

    A model whose every tensor has a leading -1 is batched along it; a server that batches a model whose
    tensors have no such dimension is not believed (its max_batch_size is reported as 0), since Triton's
    dims would then lose a real dimension.
    """
    batched = batching.max_batch_size > 0 and all(
        t.shape and t.shape[0] == -1 for t in (*metadata.inputs, *metadata.outputs)
    )
    if not batched:
        return ModelConfig(metadata.name, metadata.platform, 0, list(metadata.inputs), list(metadata.outputs))
    return ModelConfig(
        metadata.name,
        metadata.platform,
        batching.max_batch_size,
        _without_batch(metadata.inputs),
        _without_batch(metadata.outputs),
        max_queue_delay_microseconds=batching.max_queue_delay_microseconds,
        preferred_batch_sizes=list(batching.preferred_batch_sizes),
    )
