"""`python -m runtimes.torchserve package|config|relay ...`: a model archive, a config.properties, or the
key relay (a Kubernetes sidecar beside TorchServe: `relay.py`), one command.

    python -m runtimes.torchserve package --model model.pt --signature signature.json \\
        --name mlp --version 1 --out model-store/
    python -m runtimes.torchserve package --model my_model.py:build --weights state.pt ...
    python -m runtimes.torchserve config --model-store model-store/ --model mlp=mlp.mar --batch-size 8 \\
        --out workdir/config.properties
    python -m runtimes.torchserve relay --secret-file /var/run/secrets/torchserve/key \\
        --key-file /workdir/key_file.json --rest-port 8080 --grpc-port 7070 \\
        --upstream-rest http://127.0.0.1:8085 --upstream-grpc 127.0.0.1:7075
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from runtimes.torchserve.archive import PackagingError, package
from runtimes.torchserve.config import ModelEntry, TorchServeConfig, write_config
from runtimes.torchserve.relay import RelaySettings

# The defaults the options show are the dataclasses' own, so the CLI and the library cannot drift apart.
_ENTRY = ModelEntry("", "")
_CONFIG = TorchServeConfig(model_store=Path(), models=())
_RELAY = RelaySettings(secret_file=Path(), key_file=Path())


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
    cfg.add_argument(
        "--workers", type=int, default=_ENTRY.workers, help="workers per model (default %(default)s)"
    )
    cfg.add_argument(
        "--batch-size", type=int, default=_ENTRY.batch_size, help="TorchServe batchSize (default %(default)s)"
    )
    cfg.add_argument(
        "--max-batch-delay-ms",
        type=int,
        default=_ENTRY.max_batch_delay_ms,
        help="TorchServe maxBatchDelay (default %(default)s)",
    )
    cfg.add_argument("--host", default=_CONFIG.inference_host, help="inference (REST and gRPC) address")
    cfg.add_argument("--inference-port", type=int, default=_CONFIG.inference_port)
    cfg.add_argument(
        "--management-port", type=int, default=_CONFIG.management_port, help="always bound to 127.0.0.1"
    )
    cfg.add_argument("--metrics-port", type=int, default=_CONFIG.metrics_port)
    cfg.add_argument("--grpc-port", type=int, default=_CONFIG.grpc_inference_port)
    cfg.add_argument(
        "--grpc-management-port",
        type=int,
        default=_CONFIG.grpc_management_port,
        help="always bound to 127.0.0.1",
    )
    cfg.add_argument(
        "--heap-mb", type=int, default=_CONFIG.heap_mb, help="JVM max heap (default %(default)s)"
    )
    cfg.add_argument("--out", required=True, type=Path, help="file, or directory for config.properties")

    relay = commands.add_parser(
        "relay", help="the key relay: admit callers bearing the Secret's key, forward with the pod's"
    )
    relay.add_argument("--secret-file", required=True, type=Path, help="the key callers must bear (a Secret)")
    relay.add_argument("--key-file", required=True, type=Path, help="TorchServe's key_file.json")
    relay.add_argument("--host", default=_RELAY.host, help="the relay's address (default %(default)s)")
    relay.add_argument(
        "--rest-port", type=int, default=_RELAY.rest_port, help="the relay's REST port (default %(default)s)"
    )
    relay.add_argument(
        "--grpc-port", type=int, default=_RELAY.grpc_port, help="the relay's gRPC port (default %(default)s)"
    )
    relay.add_argument(
        "--upstream-rest", default=_RELAY.upstream_rest, help="TorchServe's REST inference URL"
    )
    relay.add_argument(
        "--upstream-grpc", default=_RELAY.upstream_grpc, help="TorchServe's gRPC inference address"
    )
    relay.add_argument("--management-url", default=_RELAY.management_url, help="TorchServe's management URL")
    relay.add_argument(
        "--token-expiration-min",
        type=float,
        default=_RELAY.token_expiration_min,
        help="TorchServe's token_expiration_min (default %(default)s)",
    )
    relay.add_argument(
        "--max-request-bytes", type=int, default=_RELAY.max_request_bytes, help="default 64 MiB"
    )
    relay.add_argument(
        "--timeout-s",
        type=float,
        default=_RELAY.timeout_s,
        help="per call to TorchServe (default %(default)s)",
    )
    relay.add_argument(
        "--previous-key-grace-s",
        type=float,
        default=_RELAY.previous_key_grace_s,
        help="how long the Secret's key before a rotation is still admitted (default %(default)s)",
    )
    return parser


def _relay(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from runtimes.torchserve.relay import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The relay's options are named after RelaySettings' fields (argparse's dests).
    settings = RelaySettings(**{key: value for key, value in vars(args).items() if key != "command"})
    asyncio.run(serve(settings))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "relay":
        return _relay(args)
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
