"""The `gateway` command: `gateway serve --config FILE`, `gateway up`.

Each subcommand is a `(name, add_arguments, handler)` entry in `_COMMANDS`; a handler returns the exit
status. A new subcommand (`gateway bench`, ...) is one entry. Configuration errors are reported on
stderr in one message, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway.errors import ConfigError
from gateway.logs import configure_logging

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def _add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", required=True, type=Path, help="the gateway's YAML configuration")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="log verbosity"
    )


def _serve(args: argparse.Namespace) -> int:
    # Imported here: `gateway --help` should not pay for grpc, uvicorn and FastAPI.
    from gateway.app import serve
    from gateway.settings import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gateway: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level)
    try:
        return serve(settings)
    except OSError as exc:  # a port in use, an address that does not exist
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _add_up(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir", type=Path, default=Path(".local"), help="where models, config and caches go"
    )
    parser.add_argument("--no-tfserving", action="store_true", help="leave TF Serving out")
    parser.add_argument("--no-torchserve", action="store_true", help="leave TorchServe out")


def _up(args: argparse.Namespace) -> int:
    from gateway.local_stack import run_foreground

    return run_foreground(args.workdir, tfserving=not args.no_tfserving, torchserve=not args.no_torchserve)


def _add_compare(parser: argparse.ArgumentParser) -> None:
    from gateway.local_stack import EXAMPLE_MODELS

    parser.add_argument(
        "--model", default="mlp", choices=EXAMPLE_MODELS, help="the example model (default mlp)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput run (default 5)")
    parser.add_argument("--requests", type=int, default=300, help="calls per latency run (default 300)")
    parser.add_argument("--out", type=Path, help="folder for the report (default compare-<timestamp>/)")
    parser.add_argument("--workdir", type=Path, help="models and caches (default a temporary directory)")
    parser.add_argument(
        "--no-restarts", action="store_true", help="skip the start-up rounds (no start-to-ready figures)"
    )


def _compare(args: argparse.Namespace) -> int:
    # Imported here: the comparison starts the whole stack, and its chart needs matplotlib.
    from gateway.compare.command import run_compare
    from gateway.compare.run import CompareOptions

    if args.rounds < 1 or args.seconds <= 0 or args.requests < 1:
        print("gateway compare: --rounds, --seconds and --requests must be positive", file=sys.stderr)
        return EXIT_CONFIG
    options = CompareOptions(
        model=args.model,
        rounds=args.rounds,
        seconds=args.seconds,
        requests=args.requests,
        restarts=not args.no_restarts,
    )
    return run_compare(options, args.out, args.workdir)


_COMMANDS: list[
    tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = [
    ("serve", "run the gateway from a configuration file", _add_serve, _serve),
    (
        "up",
        "run the example stack (JAX runtime, TF Serving, TorchServe, gateway) on this machine",
        _add_up,
        _up,
    ),
    (
        "compare",
        "the same model on the JAX runtime, TF Serving and TorchServe through the gateway: a report",
        _add_compare,
        _compare,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gateway", description="Open Inference Protocol model-serving gateway."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, add_arguments, handler in _COMMANDS:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: `sys.argv[1:]`), run the subcommand, return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
