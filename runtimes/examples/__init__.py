"""The example models, framework-neutral: names, tensors and seeded weights (numpy only).

The JAX runtime's and TF Serving's example models are built from these definitions and the same weight
files, so the two frameworks serve the same function and their answers can be compared. Nothing here
imports JAX or TensorFlow: `python -m runtimes.examples WORKDIR` builds every framework's models, each
exporter in a process of its own.
"""

from runtimes.examples.specs import SPECS, ExampleSpec, Params, TensorInfo, sample_inputs
from runtimes.examples.weights import ensure_weights, example_params, load_weights, save_weights

__all__ = [
    "SPECS",
    "ExampleSpec",
    "Params",
    "TensorInfo",
    "ensure_weights",
    "example_params",
    "load_weights",
    "sample_inputs",
    "save_weights",
]
