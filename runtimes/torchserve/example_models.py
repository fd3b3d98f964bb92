"""The example models in PyTorch: the same functions as `runtimes.jax.examples`, op for op, same weights.

Each choice mirrors the JAX version so the two agree to float32 rounding: the CNN takes NHWC images
(as the JAX and TF models do) and works in NCHW inside, its HWIO kernels transposed to OIHW, 3x3
convolutions padded by 1 on each side (SAME at stride 1), 2x2 average pooling, the maps put back in NHWC
order before flattening so the dense weights line up; layer norm with the biased variance and epsilon
1e-5; attention scores divided by sqrt(head size); GELU's tanh approximation (`jax.nn.gelu`'s default;
torch's default is the exact erf); token ids clipped into the vocabulary before the lookup. Weights are
buffers, not parameters: nothing here trains. Every module is scriptable (`torch.jit.script`), which
is why this module has no `from __future__ import annotations`: TorchScript reads the annotations of
the buffers and cannot resolve them as strings.
"""

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from runtimes.examples.specs import HEADS, LAYER_NORM_EPSILON, VOCAB, Params


def _t(array: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def _layer_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps) * scale + bias


class Dense(nn.Module):
    w: torch.Tensor
    b: torch.Tensor

    def __init__(self, layer: Params) -> None:
        super().__init__()
        self.register_buffer("w", _t(layer["w"]))
        self.register_buffer("b", _t(layer["b"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b


class MLP(nn.Module):
    """Dense layers with ReLU between them; the last layer's output is the logits, unnormalised."""

    def __init__(self, params: Params) -> None:
        super().__init__()
        *hidden, last = params["layers"]
        self.hidden = nn.ModuleList([Dense(layer) for layer in hidden])
        self.last = Dense(last)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for layer in self.hidden:
            x = torch.relu(layer(x))
        out: torch.Tensor = self.last(x)
        return out


class CNN(nn.Module):
    """Two conv + pool stages and a dense softmax head; NHWC in, as the JAX model."""

    conv1_w: torch.Tensor
    conv1_b: torch.Tensor
    conv2_w: torch.Tensor
    conv2_b: torch.Tensor
    dense_w: torch.Tensor
    dense_b: torch.Tensor

    def __init__(self, params: Params) -> None:
        super().__init__()
        for name in ("conv1", "conv2"):  # HWIO -> OIHW
            self.register_buffer(f"{name}_w", _t(np.transpose(params[name]["w"], (3, 2, 0, 1))))
            self.register_buffer(f"{name}_b", _t(params[name]["b"]))
        self.register_buffer("dense_w", _t(params["dense"]["w"]))
        self.register_buffer("dense_b", _t(params["dense"]["b"]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2)  # NHWC -> NCHW
        x = F.avg_pool2d(torch.relu(F.conv2d(x, self.conv1_w, self.conv1_b, padding=1)), 2)
        x = F.avg_pool2d(torch.relu(F.conv2d(x, self.conv2_w, self.conv2_b, padding=1)), 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # flattened in NHWC order, as JAX's
        return torch.softmax(x @ self.dense_w + self.dense_b, dim=-1)


class EncoderLayer(nn.Module):
    qkv: torch.Tensor
    out: torch.Tensor
    ff1: torch.Tensor
    ff2: torch.Tensor
    ln1_scale: torch.Tensor
    ln1_bias: torch.Tensor
    ln2_scale: torch.Tensor
    ln2_bias: torch.Tensor

    def __init__(self, layer: Params) -> None:
        super().__init__()
        for key in ("qkv", "out", "ff1", "ff2", "ln1_scale", "ln1_bias", "ln2_scale", "ln2_bias"):
            self.register_buffer(key, _t(layer[key]))
        self.heads = HEADS  # attributes, not globals: TorchScript compiles no Python globals
        self.eps = LAYER_NORM_EPSILON

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(_layer_norm(x, self.ln1_scale, self.ln1_bias, self.eps))
        h = _layer_norm(x, self.ln2_scale, self.ln2_bias, self.eps)
        return x + F.gelu(h @ self.ff1, approximate="tanh") @ self.ff2

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape[0], x.shape[1], x.shape[2]
        head = d // self.heads
        qkv = x @ self.qkv
        q = qkv[:, :, :d].reshape(b, t, self.heads, head)
        k = qkv[:, :, d : 2 * d].reshape(b, t, self.heads, head)
        v = qkv[:, :, 2 * d :].reshape(b, t, self.heads, head)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head)
        mixed = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(scores, dim=-1), v)
        return mixed.reshape(b, t, d) @ self.out


class Transformer(nn.Module):
    """A pre-norm encoder; the embedding is the mean of the final token states."""

    embed: torch.Tensor
    pos: torch.Tensor
    ln_scale: torch.Tensor
    ln_bias: torch.Tensor

    def __init__(self, params: Params) -> None:
        super().__init__()
        self.register_buffer("embed", _t(params["embed"]))
        self.register_buffer("pos", _t(params["pos"]))
        self.register_buffer("ln_scale", _t(params["ln_scale"]))
        self.register_buffer("ln_bias", _t(params["ln_bias"]))
        self.layers = nn.ModuleList([EncoderLayer(layer) for layer in params["layers"]])
        self.vocab = VOCAB
        self.eps = LAYER_NORM_EPSILON

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Out-of-vocabulary ids are clipped, as the JAX and TF models do.
        x = self.embed[tokens.clamp(0, self.vocab - 1).long()] + self.pos
        for layer in self.layers:
            x = layer(x)
        return _layer_norm(x, self.ln_scale, self.ln_bias, self.eps).mean(dim=1)


MODULES: dict[str, type[nn.Module]] = {"cnn": CNN, "transformer": Transformer, "mlp": MLP}


def example_module(name: str, params: Params) -> nn.Module:
    """Example model `name` as an eager module in eval mode, with `params` (from `load_weights`)."""
    return MODULES[name](params).eval()
