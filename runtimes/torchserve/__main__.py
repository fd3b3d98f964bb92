"""`python -m runtimes.torchserve package|config ...`: a model archive or a config.properties, one command.

    python -m runtimes.torchserve package --model model.pt --signature signature.json \\
        --name mlp --version 1 --out model-store/
    python -m runtimes.torchserve package --model my_model.py:build --weights state.pt ...
    python -m runtimes.torchserve config --model-store model-store/ --model mlp=mlp.mar --batch-size 8 \\
        --out workdir/config.properties
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from runtimes.torchserve.archive import PackagingError, package
from runtimes.torchserve.config import ModelEntry, TorchServeConfig, write_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtimes.torchserve")
    commands = parser.add_subparsers(dest="command", required=True)

    pkg = commands.add_parser("package", help="archive a model with the project's tensor handler (.mar)")
    pkg.add_argument(
        "--model", required=True, help="TorchScript file (.pt), or FILE.py:factory / module:factory"
    )
    pkg.add_argument("--signature", required=True, type=Path, help="signature.json: inputs and outputs")
    pkg.add_argument("--name", required=True, help="model name (and archive file name)")
    pkg.add_argument("--version", default="1", help="model version (default 1)")
    pkg.add_argument("--out", required=True, type=Path, help="directory for <name>.mar (the model store)")
    pkg.add_argument("--weights", type=Path, help="eager models: a state dict to load into the module")
    pkg.add_argument("--requirements", type=Path, help="pip requirements file stored in the archive")
    pkg.add_argument("--force", action="store_true", help="replace an archive already there")

    cfg = commands.add_parser("config", help="write config.properties with the project's defaults")
    cfg.add_argument("--model-store", required=True, type=Path)
    cfg.add_argument("--model", action="append", default=[], metavar="NAME=FILE.mar", help="repeatable")
    cfg.add_argument("--workers", type=int, default=1, help="workers per model (default 1)")
    cfg.add_argument("--batch-size", type=int, default=1, help="TorchServe batchSize (default 1)")
    cfg.add_argument("--max-batch-delay-ms", type=int, default=5, help="TorchServe maxBatchDelay (default 5)")
    cfg.add_argument("--host", default="127.0.0.1", help="inference (REST and gRPC) address")
    cfg.add_argument("--inference-port", type=int, default=8080)
    cfg.add_argument("--management-port", type=int, default=8081, help="always bound to 127.0.0.1")
    cfg.add_argument("--metrics-port", type=int, default=8082)
    cfg.add_argument("--grpc-port", type=int, default=7070)
    cfg.add_argument("--grpc-management-port", type=int, default=7071, help="always bound to 127.0.0.1")
    cfg.add_argument("--heap-mb", type=int, default=256, help="JVM max heap (default 256)")
    cfg.add_argument("--out", required=True, type=Path, help="file, or directory for config.properties")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "package":
        try:
            path = package(
                args.model,
                args.signature,
                name=args.name,
                version=args.version,
                out=args.out,
                weights=args.weights,
                requirements=args.requirements,
                force=args.force,
            )
        except PackagingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
        return 0
    models = []
    for spec in args.model:
        name, sep, mar = spec.partition("=")
        if not sep or not name or not mar:
            print(f"error: --model {spec!r}: expected NAME=FILE.mar", file=sys.stderr)
            return 2
        models.append(
            ModelEntry(
                name,
                mar,
                workers=args.workers,
                batch_size=args.batch_size,
                max_batch_delay_ms=args.max_batch_delay_ms,
            )
        )
    config = TorchServeConfig(
        model_store=args.model_store.resolve(),
        models=tuple(models),
        inference_host=args.host,
        inference_port=args.inference_port,
        management_port=args.management_port,
        metrics_port=args.metrics_port,
        grpc_inference_port=args.grpc_port,
        grpc_management_port=args.grpc_management_port,
        heap_mb=args.heap_mb,
    )
    print(write_config(config, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
