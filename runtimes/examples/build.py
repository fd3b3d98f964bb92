"""`build_examples`: every example model for every framework installed (JAX, TF Serving, TorchServe),
from one set of weight files.

The weights are written once under `<workdir>/weights/`; then each framework's exporter runs in a
process of its own and reads them, so this module (and the gateway, which calls it through
`python -m runtimes.examples`) imports neither JAX nor TensorFlow, and a framework that is not installed
is skipped with a message instead of failing the others.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from runtimes.examples.specs import SPECS
from runtimes.examples.weights import ensure_weights, weights_path

# Called by an exporter after each model: its name, the version directory written, seconds taken.
Progress = Callable[[str, Path, float], None]

WEIGHTS_DIR: Final = "weights"


@dataclass(frozen=True, slots=True)
class Framework:
    """One framework's exporter: where its models go under the workdir and how it is run."""

    name: str
    directory: str  # under the workdir: a JAX model repository, or TF Serving's model base paths
    requires: str  # the top-level package that must be importable to run it
    module: str  # `python -m <module> <args...> DIRECTORY --version N --weights WEIGHTS`
    args: tuple[str, ...]
    # What one model's export is, under the directory: a version directory, or TorchServe's archive
    # (which records its version inside).
    artifact: str = "{name}/{version}"
    # The exporter's flag for the largest batch its models take (`--max-batch-size N`); None: it has none.
    batch_size_flag: str | None = None


FRAMEWORKS: Final = (
    Framework(
        "jax", "models", "jax", "runtimes.jax", ("export-examples",), batch_size_flag="--max-batch-size"
    ),
    Framework("tfserving", "tfserving-models", "tensorflow", "runtimes.tfserving.examples", ()),
    Framework("torchserve", "torchserve-models", "torch", "runtimes.torchserve.examples", (), "{name}.mar"),
)


def progress_line(framework: str, model: str, seconds: float | None, path: Path) -> str:
    """One line of the build's display: framework, model, seconds (or "up to date"), where it went."""
    took = "up to date" if seconds is None else f"{seconds:8.2f} s"
    return f"{framework:<10} {model:<12} {took:>10}  {path}"


def print_progress(framework: str) -> Progress:
    """A `Progress` that prints `progress_line`s to stderr, so stdout stays free for a caller's output."""

    def report(model: str, path: Path, seconds: float) -> None:
        print(progress_line(framework, model, seconds, path), file=sys.stderr, flush=True)

    return report


def build_examples(
    workdir: Path,
    *,
    version: int = 1,
    max_batch_size: int = 8,
    force: bool = False,
    frameworks: tuple[Framework, ...] = FRAMEWORKS,
) -> int:
    """Writes the weights, then each framework's example models; 0 if every installed framework built.

    A framework whose models all exist at `version` is left as it is unless `force`: the weights come from
    a fixed seed, so a second build would write the same models.
    """
    weights = workdir / WEIGHTS_DIR
    for name in SPECS:
        started = time.perf_counter()
        existed = weights_path(weights, name).exists()
        path = ensure_weights(weights, name)
        took = None if existed else time.perf_counter() - started
        print(progress_line("weights", name, took, path), file=sys.stderr, flush=True)
    failed = []
    for framework in frameworks:
        target = workdir / framework.directory
        paths = {name: target / framework.artifact.format(name=name, version=version) for name in SPECS}
        if not force and all(path.exists() for path in paths.values()):
            for name, path in paths.items():
                print(progress_line(framework.name, name, None, path), file=sys.stderr, flush=True)
            continue
        if importlib.util.find_spec(framework.requires) is None:
            print(
                f"{framework.name:<10} skipped: {framework.requires} is not installed "
                f"(pip install '.[{framework.name}]'); its example models were not built",
                file=sys.stderr,
                flush=True,
            )
            continue
        command = [sys.executable, "-m", framework.module, *framework.args, str(target)]
        command += ["--version", str(version), "--weights", str(weights)]
        if framework.batch_size_flag is not None:
            command += [framework.batch_size_flag, str(max_batch_size)]
        # Each exporter prints its own progress lines to stderr; its stdout (the paths) is redundant here.
        if subprocess.run(command, stdout=subprocess.DEVNULL, check=False).returncode != 0:
            failed.append(framework.name)
    if failed:
        print(f"example models failed to build for: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0
