"""What each example model is, independent of the framework that runs it: tensors and seeded weights.

The arrays are drawn with numpy's `Generator` from a seed, in a fixed order, so a seed always gives the
same weights (and the JAX exports of "cnn" and "transformer" stay what they were before this module held
their weights). The model functions themselves live with each framework: `runtimes.jax.examples` and
`runtimes.tfserving.example_models`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

# Nested dicts and lists of float32 arrays: a JAX pytree as it is, and tf.nest-compatible as it is.
Params = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output: its name on the wire, numpy dtype name and shape (-1: the batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    # Integer inputs are ids in [0, high): what `sample_inputs` draws (ignored for float inputs).
    high: int = 0


@dataclass(frozen=True, slots=True)
class ExampleSpec:
    """An example model's name, tensors and weight generator."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    weights: Callable[[np.random.Generator], Params]

    def draw(self, seed: int = 0, rows: int = 2) -> tuple[Params, tuple[np.ndarray, ...]]:
        """The weights from `seed`, then `rows` example input rows drawn from the same generator."""
        rng = np.random.default_rng(seed)
        params = self.weights(rng)
        return params, sample_inputs(self, rng, rows)


def sample_inputs(spec: ExampleSpec, rng: np.random.Generator, rows: int) -> tuple[np.ndarray, ...]:
    """Random inputs for `spec`, `rows` of them: uniform [0, 1) floats, or ids in [0, high)."""
    arrays = []
    for tensor in spec.inputs:
        shape = (rows, *tensor.shape[1:])
        dtype = np.dtype(tensor.dtype)
        if dtype.kind == "f":
            arrays.append(rng.random(shape, dtype=dtype))
        else:
            arrays.append(rng.integers(0, tensor.high, shape, dtype=dtype))
    return tuple(arrays)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)


# --- CNN image classifier: "image" FP32 [-1, 28, 28, 1] -> "probabilities" FP32 [-1, 10] ---------------


def cnn_weights(rng: np.random.Generator, width: int = 1) -> Params:
    """Two 3x3 conv layers (8 and 16 channels, times `width`) and a dense head over 7x7 pooled maps."""
    c1, c2 = 8 * width, 16 * width
    return {
        "conv1": {"w": _normal(rng, (3, 3, 1, c1), 1 / 3), "b": np.zeros(c1, np.float32)},
        "conv2": {"w": _normal(rng, (3, 3, c1, c2), 1 / math.sqrt(9 * c1)), "b": np.zeros(c2, np.float32)},
        "dense": {"w": _normal(rng, (7 * 7 * c2, 10), 1 / math.sqrt(49 * c2)), "b": np.zeros(10, np.float32)},
    }


CNN: Final = ExampleSpec(
    "cnn",
    (TensorInfo("image", "float32", (-1, 28, 28, 1)),),
    (TensorInfo("probabilities", "float32", (-1, 10)),),
    cnn_weights,
)

# --- Transformer encoder: "tokens" INT32 [-1, 16] -> "embedding" FP32 [-1, 32] --------------------------

VOCAB, SEQ, D_MODEL, HEADS, D_FF, LAYERS = 128, 16, 32, 4, 64, 2
LAYER_NORM_EPSILON: Final = 1e-5


def transformer_weights(rng: np.random.Generator) -> Params:
    """A two-layer, four-head pre-norm encoder: token and position embeddings, attention, GELU MLP."""
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
    return {
        "embed": _normal(rng, (VOCAB, D_MODEL), 1.0),
        "pos": _normal(rng, (SEQ, D_MODEL), 0.1),
        "layers": layers,
        "ln_scale": ones,
        "ln_bias": zeros,
    }


TRANSFORMER: Final = ExampleSpec(
    "transformer",
    (TensorInfo("tokens", "int32", (-1, SEQ), high=VOCAB),),
    (TensorInfo("embedding", "float32", (-1, D_MODEL)),),
    transformer_weights,
)

# --- MLP: "features" FP32 [-1, 16] -> "logits" FP32 [-1, 4] ---------------------------------------------

MLP_SIZES: Final = (16, 32, 32, 4)


def mlp_weights(rng: np.random.Generator) -> Params:
    """Dense layers 16 -> 32 -> 32 -> 4. Unlike the others its biases are not zero, so a model that
    dropped or misplaced a bias would give different answers."""
    return {
        "layers": [
            {"w": _normal(rng, (n_in, n_out), n_in**-0.5), "b": _normal(rng, (n_out,), 0.1)}
            for n_in, n_out in itertools.pairwise(MLP_SIZES)
        ]
    }


MLP: Final = ExampleSpec(
    "mlp",
    (TensorInfo("features", "float32", (-1, MLP_SIZES[0])),),
    (TensorInfo("logits", "float32", (-1, MLP_SIZES[-1])),),
    mlp_weights,
)

SPECS: Final[dict[str, ExampleSpec]] = {spec.name: spec for spec in (CNN, TRANSFORMER, MLP)}
