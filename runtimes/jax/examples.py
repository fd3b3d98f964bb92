"""Example models built with plain `jax.numpy`, for the docs, the tests and the benchmark.

Both are small enough to compile in well under a second per batch bucket on a CPU, yet exercise what
real models do: convolutions, pooling, attention, layer norm, integer-token embedding lookups. Their
weights are deterministic random values drawn from a seed, so an exported model and the function it
came from can be compared exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from runtimes.jax.exporter import export

Params = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ExampleModel:
    """A model function with its weights and what `export` needs to know about it."""

    name: str
    fn: Callable[..., Any]
    params: Params
    example_inputs: tuple[np.ndarray, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    # numpy, not jax.random: eager jax ops each compile once, which costs seconds for a handful of arrays.
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)


# --- CNN image classifier: "image" FP32 [-1, 28, 28, 1] -> "probabilities" FP32 [-1, 10] ---------------


def _conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.relu(y + b)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    summed: jax.Array = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return summed / 4.0


def cnn_apply(params: Params, image: jax.Array) -> jax.Array:
    """Two conv + pool stages and a dense softmax head."""
    x = _avg_pool_2x2(_conv(image, params["conv1"]["w"], params["conv1"]["b"]))  # 14x14x8
    x = _avg_pool_2x2(_conv(x, params["conv2"]["w"], params["conv2"]["b"]))  # 7x7x16
    x = x.reshape(x.shape[0], -1)
    logits = x @ params["dense"]["w"] + params["dense"]["b"]
    return jax.nn.softmax(logits, axis=-1)


def cnn_classifier(seed: int = 0, width: int = 1, name: str = "cnn") -> ExampleModel:
    """A small MNIST-shaped CNN classifier with random weights drawn from `seed`.

    `width` multiplies the channel counts (8 and 16): the benchmark uses a wider one to show how the
    runtime fares when a row costs more compute than a request costs the server.
    """
    rng = np.random.default_rng(seed)
    c1, c2 = 8 * width, 16 * width
    params: Params = {
        "conv1": {"w": _normal(rng, (3, 3, 1, c1), 1 / 3), "b": np.zeros(c1, np.float32)},
        "conv2": {"w": _normal(rng, (3, 3, c1, c2), 1 / math.sqrt(9 * c1)), "b": np.zeros(c2, np.float32)},
        "dense": {"w": _normal(rng, (7 * 7 * c2, 10), 1 / math.sqrt(49 * c2)), "b": np.zeros(10, np.float32)},
    }
    example = rng.random((2, 28, 28, 1), dtype=np.float32)
    return ExampleModel(name, cnn_apply, params, (example,), ("image",), ("probabilities",))


# --- Transformer encoder: "tokens" INT32 [-1, 16] -> "embedding" FP32 [-1, 32] --------------------------

VOCAB, SEQ, D_MODEL, HEADS, D_FF, LAYERS = 128, 16, 32, 4, 64, 2


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


def _attention(x: jax.Array, layer: Params) -> jax.Array:
    b, t, d = x.shape
    head = d // HEADS
    qkv = x @ layer["qkv"]  # [b, t, 3d]
    q, k, v = (z.reshape(b, t, HEADS, head) for z in jnp.split(qkv, 3, axis=-1))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head)
    mixed = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    out: jax.Array = mixed.reshape(b, t, d) @ layer["out"]
    return out


def transformer_apply(params: Params, tokens: jax.Array) -> jax.Array:
    """A pre-norm encoder; the embedding is the mean of the final token states."""
    # Out-of-vocabulary ids are clipped rather than left to gather's fill value (NaN).
    x = params["embed"][jnp.clip(tokens, 0, VOCAB - 1)] + params["pos"]
    for layer in params["layers"]:
        x = x + _attention(_layer_norm(x, layer["ln1_scale"], layer["ln1_bias"]), layer)
        h = _layer_norm(x, layer["ln2_scale"], layer["ln2_bias"])
        x = x + jax.nn.gelu(h @ layer["ff1"]) @ layer["ff2"]
    x = _layer_norm(x, params["ln_scale"], params["ln_bias"])
    return x.mean(axis=1)


def transformer_encoder(seed: int = 0) -> ExampleModel:
    """A two-layer, four-head encoder over 16 tokens with random weights drawn from `seed`."""
    rng = np.random.default_rng(seed)
    ones, zeros = np.ones(D_MODEL, np.float32), np.zeros(D_MODEL, np.float32)
    layers = [
        {
            "qkv": _normal(rng, (D_MODEL, 3 * D_MODEL), D_MODEL**-0.5),
            "out": _normal(rng, (D_MODEL, D_MODEL), D_MODEL**-0.5),
            "ff1": _normal(rng, (D_MODEL, D_FF), D_MODEL**-0.5),
            "ff2": _normal(rng, (D_FF, D_MODEL), D_FF**-0.5),
            "ln1_scale": ones,
            "ln1_bias": zeros,
            "ln2_scale": ones,
            "ln2_bias": zeros,
        }
        for _ in range(LAYERS)
    ]
    params: Params = {
        "embed": _normal(rng, (VOCAB, D_MODEL), 1.0),
        "pos": _normal(rng, (SEQ, D_MODEL), 0.1),
        "layers": layers,
        "ln_scale": ones,
        "ln_bias": zeros,
    }
    example = rng.integers(0, VOCAB, (2, SEQ), dtype=np.int32)
    return ExampleModel("transformer", transformer_apply, params, (example,), ("tokens",), ("embedding",))


EXAMPLES: dict[str, Callable[[int], ExampleModel]] = {
    "cnn": cnn_classifier,
    "transformer": transformer_encoder,
}


def export_examples(
    root: Path,
    *,
    version: int = 1,
    max_batch_size: int = 8,
    max_queue_delay_ms: float = 2.0,
    instances_per_device: int = 1,
    overwrite: bool = False,
) -> list[Path]:
    """Exports every example model into the model repository `root` as `<root>/<name>/<version>/`."""
    written = []
    for build in EXAMPLES.values():
        model = build(0)
        written.append(
            export(
                model.fn,
                model.params,
                model.example_inputs,
                root / model.name / str(version),
                input_names=model.input_names,
                output_names=model.output_names,
                max_batch_size=max_batch_size,
                max_queue_delay_ms=max_queue_delay_ms,
                instances_per_device=instances_per_device,
                overwrite=overwrite,
            )
        )
    return written
