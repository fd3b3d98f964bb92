"""Example models built with plain `jax.numpy`, for the docs, the tests and the benchmark.

All are small enough to compile in well under a second per batch bucket on a CPU, yet exercise what
real models do: convolutions, pooling, attention, layer norm, integer-token embedding lookups, dense
layers with biases. Their weights and tensors come from `runtimes.examples` (numpy only, drawn from a
seed), which TF Serving's copies of these models (`runtimes.tfserving.examples`) use too, so an exported
model, the function it came from and its TensorFlow twin can all be compared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from runtimes.examples import SPECS, ExampleSpec, Params, ensure_weights, load_weights, sample_inputs
from runtimes.examples.build import Progress
from runtimes.examples.specs import CNN, HEADS, LAYER_NORM_EPSILON, MLP, TRANSFORMER, VOCAB, cnn_weights
from runtimes.jax.exporter import export


@dataclass(frozen=True, slots=True)
class ExampleModel:
    """A model function with its weights and what `export` needs to know about it."""

    name: str
    fn: Callable[..., Any]
    params: Params
    example_inputs: tuple[np.ndarray, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


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
    params = cnn_weights(rng, width)
    return _model(CNN, name, params, sample_inputs(CNN, rng, 2))


# --- Transformer encoder: "tokens" INT32 [-1, 16] -> "embedding" FP32 [-1, 32] --------------------------


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYER_NORM_EPSILON) * scale + bias


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
    return example_model(TRANSFORMER.name, seed)


# --- MLP: "features" FP32 [-1, 16] -> "logits" FP32 [-1, 4] ---------------------------------------------


def mlp_apply(params: Params, features: jax.Array) -> jax.Array:
    """Dense layers with ReLU between them; the last layer's output is the logits, unnormalised."""
    x = features
    *hidden, last = params["layers"]
    for layer in hidden:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    out: jax.Array = x @ last["w"] + last["b"]
    return out


def mlp(seed: int = 0) -> ExampleModel:
    """A 16 -> 32 -> 32 -> 4 multilayer perceptron with random weights and biases drawn from `seed`."""
    return example_model(MLP.name, seed)


APPLY: dict[str, Callable[..., Any]] = {"cnn": cnn_apply, "transformer": transformer_apply, "mlp": mlp_apply}


def example_model(name: str, seed: int = 0, params: Params | None = None) -> ExampleModel:
    """Example model `name` with the weights drawn from `seed`, or `params` instead (from `load_weights`).

    The example inputs are drawn from `seed` after the weights either way: only their dtypes and shapes
    matter to `export`.
    """
    spec = SPECS[name]
    drawn, example_inputs = spec.draw(seed)
    return _model(spec, name, drawn if params is None else params, example_inputs)


def _model(
    spec: ExampleSpec, name: str, params: Params, example_inputs: tuple[np.ndarray, ...]
) -> ExampleModel:
    inputs = tuple(t.name for t in spec.inputs)
    outputs = tuple(t.name for t in spec.outputs)
    return ExampleModel(name, APPLY[spec.name], params, example_inputs, inputs, outputs)


EXAMPLES: dict[str, Callable[[int], ExampleModel]] = {
    "cnn": cnn_classifier,
    "transformer": transformer_encoder,
    "mlp": mlp,
}


def export_examples(
    root: Path,
    *,
    version: int = 1,
    max_batch_size: int = 8,
    max_queue_delay_ms: float = 2.0,
    instances_per_device: int = 1,
    overwrite: bool = False,
    weights: Path | None = None,
    progress: Progress | None = None,
) -> list[Path]:
    """Exports every example model into the model repository `root` as `<root>/<name>/<version>/`.

    Args:
        weights: A directory of weight files (`runtimes.examples.ensure_weights`: `<name>.npz`, written
            there from seed 0 if missing) to export instead of drawing the weights here; the same
            arrays either way, but TF Serving's exporter reads the same files.
        progress: Called after each model with its name, version directory and the seconds it took.
    """
    written = []
    for name in EXAMPLES:
        started = time.perf_counter()
        params = None if weights is None else load_weights(ensure_weights(weights, name))
        model = example_model(name, params=params)
        path = export(
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
        written.append(path)
        if progress is not None:
            progress(name, path, time.perf_counter() - started)
    return written
