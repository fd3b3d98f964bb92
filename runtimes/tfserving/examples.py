"""The example models as TF Serving SavedModels: `python -m runtimes.tfserving.examples BASE`.

Writes `<BASE>/<model>/<version>/` (TF Serving's layout: each model's base path holds numbered versions)
for every model of `runtimes.examples`, with the weights from `--weights` (the files
`runtimes.examples.ensure_weights` writes, shared with the JAX exporter) or drawn from seed 0. Each
SavedModel's `serving_default` signature takes and returns the JAX model's tensor names and dtypes with a
`None` batch. Normally run by `python -m runtimes.examples WORKDIR`, which builds both frameworks' models.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from runtimes.examples import SPECS, example_params
from runtimes.examples.build import Progress, print_progress

SIGNATURE = "serving_default"


def export_examples(
    base: Path, *, version: int = 1, weights: Path | None = None, progress: Progress | None = None
) -> list[Path]:
    """Exports every example model as `<base>/<name>/<version>/`, replacing a version already there.

    Args:
        base: The directory holding one base path per model (what TF Serving's model config points at).
        version: The version directory to write.
        weights: A directory of weight files (`<name>.npz`, written there from seed 0 if missing);
            default: drawn from seed 0 in memory, the same arrays.
        progress: Called after each model with its name, version directory and the seconds it took.
    """
    # Imported here, not at the top: TensorFlow takes seconds to import, and `--help` should not.
    from runtimes.tfserving.example_models import ExampleModule

    written = []
    for name, spec in SPECS.items():
        started = time.perf_counter()
        params = example_params(name, weights)
        path = base / name / str(version)
        _save(ExampleModule(spec, params), path)
        written.append(path)
        if progress is not None:
            progress(name, path, time.perf_counter() - started)
    return written


def _save(module: object, target: Path) -> None:
    """Saves into a dot-prefixed sibling, then renames it into place.

    TF Serving polls the base path and loads a numbered directory as soon as it sees one: it must never
    see a half-written SavedModel, and a non-numeric name is ignored by its version scan.
    """
    import tensorflow as tf

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        serve = module.serve  # type: ignore[attr-defined]
        tf.saved_model.save(
            module, str(staging / "model"), signatures={SIGNATURE: serve.get_concrete_function()}
        )
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.rename(retired / target.name)
            (staging / "model").rename(target)
            shutil.rmtree(retired)
        else:
            (staging / "model").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runtimes.tfserving.examples",
        description="Export the example models as TF Serving SavedModels: BASE/<model>/<version>/.",
    )
    parser.add_argument("base", type=Path, help="directory of the models' base paths")
    parser.add_argument("--version", type=int, default=1, help="version number to write (default 1)")
    parser.add_argument(
        "--weights",
        type=Path,
        help="directory of the weight files to export (written there from seed 0 if missing); "
        "default: drawn from seed 0 in memory",
    )
    args = parser.parse_args(argv)
    # TensorFlow's C++ start-up notes (oneDNN, CPU features) would bury the progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print(
            "TensorFlow is not installed (pip install '.[tfserving]'): no SavedModels written",
            file=sys.stderr,
        )
        return 2
    for path in export_examples(
        args.base, version=args.version, weights=args.weights, progress=print_progress("tfserving")
    ):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
