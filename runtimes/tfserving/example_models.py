"""The example models in TensorFlow: the same functions as `runtimes.jax.examples`, op for op.

Each choice below mirrors the JAX version so the two agree to float32 rounding: SAME-padded 3x3
convolutions on NHWC images with HWIO kernels, 2x2 average pooling with VALID padding (the maps are even,
so no window is partial), layer norm with the biased variance and epsilon 1e-5, attention scores divided
by sqrt(head size), GELU's tanh approximation (`jax.nn.gelu`'s default; `tf.nn.gelu`'s is the exact erf),
and token ids clipped into the vocabulary before the embedding lookup.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from runtimes.examples.specs import HEADS, LAYER_NORM_EPSILON, VOCAB, ExampleSpec, Params

Apply = Callable[[Any, tf.Tensor], tf.Tensor]


def cnn_apply(params: Any, image: tf.Tensor) -> tf.Tensor:
    """Two conv + pool stages and a dense softmax head."""
    x = image
    for name in ("conv1", "conv2"):
        x = tf.nn.relu(tf.nn.conv2d(x, params[name]["w"], strides=1, padding="SAME") + params[name]["b"])
        x = tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")
    x = tf.reshape(x, [tf.shape(x)[0], -1])  # NHWC order, as JAX's reshape flattens it
    return tf.nn.softmax(tf.matmul(x, params["dense"]["w"]) + params["dense"]["b"], axis=-1)


def _layer_norm(x: tf.Tensor, scale: Any, bias: Any) -> tf.Tensor:
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + LAYER_NORM_EPSILON) * scale + bias


def _attention(x: tf.Tensor, layer: Any) -> tf.Tensor:
    batch, tokens, d = tf.shape(x)[0], x.shape[1], x.shape[2]
    head = d // HEADS
    qkv = tf.matmul(x, layer["qkv"])  # [b, t, 3d]: matmul broadcasts the 2-D weight over the batch
    q, k, v = (tf.reshape(z, [batch, tokens, HEADS, head]) for z in tf.split(qkv, 3, axis=-1))
    scores = tf.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head)
    mixed = tf.einsum("bhqk,bkhd->bqhd", tf.nn.softmax(scores, axis=-1), v)
    return tf.matmul(tf.reshape(mixed, [batch, tokens, d]), layer["out"])


def transformer_apply(params: Any, tokens: tf.Tensor) -> tf.Tensor:
    """A pre-norm encoder; the embedding is the mean of the final token states."""
    x = tf.gather(params["embed"], tf.clip_by_value(tokens, 0, VOCAB - 1)) + params["pos"]
    for layer in params["layers"]:
        x = x + _attention(_layer_norm(x, layer["ln1_scale"], layer["ln1_bias"]), layer)
        h = _layer_norm(x, layer["ln2_scale"], layer["ln2_bias"])
        x = x + tf.matmul(tf.nn.gelu(tf.matmul(h, layer["ff1"]), approximate=True), layer["ff2"])
    x = _layer_norm(x, params["ln_scale"], params["ln_bias"])
    return tf.reduce_mean(x, axis=1)


def mlp_apply(params: Any, features: tf.Tensor) -> tf.Tensor:
    """Dense layers with ReLU between them; the last layer's output is the logits, unnormalised."""
    x = features
    *hidden, last = params["layers"]
    for layer in hidden:
        x = tf.nn.relu(tf.matmul(x, layer["w"]) + layer["b"])
    return tf.matmul(x, last["w"]) + last["b"]


APPLY: dict[str, Apply] = {"cnn": cnn_apply, "transformer": transformer_apply, "mlp": mlp_apply}


class ExampleModule(tf.Module):  # type: ignore[misc]  # tf.Module is untyped
    """An example model as a SavedModel-ready module: weights as variables, one `serve` function.

    `serve` takes a dict keyed by the model's input names and returns one keyed by its output names, so
    the `serving_default` signature's names are the JAX model's tensor names. The batch is `None`.
    """

    def __init__(self, spec: ExampleSpec, params: Params) -> None:
        super().__init__(name=spec.name)
        # Variables, not constants folded into the graph: SavedModel keeps them in variables/, as
        # TF Serving expects of a model, and the graph stays small.
        self.params = tf.nest.map_structure(lambda a: tf.Variable(np.asarray(a), trainable=False), params)
        self._spec = spec
        self._apply = APPLY[spec.name]
        signature = {
            t.name: tf.TensorSpec((None, *t.shape[1:]), tf.as_dtype(t.dtype), name=t.name)
            for t in spec.inputs
        }
        self.serve = tf.function(self._serve, input_signature=[signature])

    def _serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        (output,) = self._spec.outputs  # every example has one output
        return {output.name: self._apply(self.params, *(inputs[t.name] for t in self._spec.inputs))}
