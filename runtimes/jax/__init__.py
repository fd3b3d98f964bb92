"""The JAX XLA runtime: serves models exported with `runtimes.jax.export` over the Open Inference Protocol.

Models are compiled per batch bucket at load, requests are merged by a dynamic batcher, and the model
repository is polled for new versions. See README.md beside this file.
"""

from __future__ import annotations

from runtimes.jax.exporter import ExportError, export

__all__ = ["ExportError", "export"]
