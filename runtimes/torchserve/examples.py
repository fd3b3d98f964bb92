"""The example models as TorchServe archives: `python -m runtimes.torchserve.examples STORE`.

Writes `<STORE>/<model>.mar` for every model of `runtimes.examples`: the PyTorch module of
`runtimes.torchserve.example_models` with the weights from `--weights` (the files
`runtimes.examples.ensure_weights` writes, shared with the JAX and TF exporters) or drawn from seed 0,
compiled with `torch.jit.script` (the batch stays dynamic), with a `signature.json` naming the JAX
model's tensors, and the project's tensor handler. Normally run by `python -m runtimes.examples WORKDIR`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.codecs.torchserve.signature import Signature
from gateway.datatypes import datatype_of
from gateway.types import TensorMetadata
from runtimes.examples import SPECS, ExampleSpec, example_params
from runtimes.examples.build import Progress, print_progress
from runtimes.torchserve.archive import package


def signature_of(spec: ExampleSpec) -> Signature:
    """The signature of an example model: its tensors' names, OIP datatypes and shapes."""

    def metas(tensors: Sequence[object]) -> tuple[TensorMetadata, ...]:
        return tuple(
            TensorMetadata(t.name, datatype_of(np.empty(0, t.dtype)), t.shape)  # type: ignore[attr-defined]
            for t in tensors
        )

    return Signature(metas(spec.inputs), metas(spec.outputs))


def export_examples(
    store: Path, *, version: int = 1, weights: Path | None = None, progress: Progress | None = None
) -> list[Path]:
    """Archives every example model as `<store>/<name>.mar`, replacing one already there.

    Args:
        store: TorchServe's model store.
        version: The model version recorded in each archive.
        weights: A directory of weight files (`<name>.npz`, written there from seed 0 if missing);
            default: drawn from seed 0 in memory, the same arrays.
        progress: Called after each model with its name, archive path and the seconds it took.
    """
    import torch  # here, not at the top: `--help` should not wait for torch

    from runtimes.torchserve.example_models import example_module

    written = []
    for name, spec in SPECS.items():
        started = time.perf_counter()
        params = example_params(name, weights)
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript for torch.export, but TorchServe 0.12 (the last release)
            # predates that: a TorchScript file is what every TorchServe image can load.
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(example_module(name, params))
        with tempfile.TemporaryDirectory() as scratch:
            model_file = Path(scratch) / f"{name}.pt"
            scripted.save(str(model_file))  # type: ignore[no-untyped-call]
            path = package(
                str(model_file), signature_of(spec), name=name, version=str(version), out=store, force=True
            )
        written.append(path)
        if progress is not None:
            progress(name, path, time.perf_counter() - started)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtimes.torchserve.examples",
        description="Archive the example models for TorchServe: STORE/<model>.mar.",
    )
    parser.add_argument("store", type=Path, help="the model store to write the archives to")
    parser.add_argument("--version", type=int, default=1, help="model version to record (default 1)")
    parser.add_argument(
        "--weights",
        type=Path,
        help="directory of the weight files (written there from seed 0 if missing); "
        "default: drawn from seed 0 in memory",
    )
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch is not installed (pip install '.[torchserve]'): no archives written", file=sys.stderr)
        return 2
    for path in export_examples(
        args.store, version=args.version, weights=args.weights, progress=print_progress("torchserve")
    ):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
