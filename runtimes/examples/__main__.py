"""`python -m runtimes.examples WORKDIR`: the example models for JAX, TF Serving and TorchServe."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from runtimes.examples.build import FRAMEWORKS, WEIGHTS_DIR, build_examples


def main(argv: Sequence[str] | None = None) -> int:
    layout = ", ".join(f"{f.directory}/ ({f.name})" for f in FRAMEWORKS)
    parser = argparse.ArgumentParser(
        prog="python -m runtimes.examples",
        description=f"Build the example models under WORKDIR: {WEIGHTS_DIR}/ (weights), {layout}.",
    )
    parser.add_argument("workdir", type=Path, help="directory to build in (created if missing)")
    parser.add_argument("--version", type=int, default=1, help="model version to write (default 1)")
    parser.add_argument(
        "--max-batch-size", type=int, default=8, help="JAX's largest batch bucket (default 8)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild models that already exist")
    args = parser.parse_args(argv)
    return build_examples(
        args.workdir, version=args.version, max_batch_size=args.max_batch_size, force=args.force
    )


if __name__ == "__main__":
    raise SystemExit(main())
