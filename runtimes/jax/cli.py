"""`python -m runtimes.jax serve | export-examples`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from prometheus_client import start_http_server

from gateway.logs import configure_logging
from runtimes.common.lifecycle import signals_set, until_stopped
from runtimes.jax.repository import DEFAULT_POLICY, VersionPolicy

_log = logging.getLogger("runtimes.jax")
_GRACE_S = 10.0


@dataclass(frozen=True, slots=True)
class ServeOptions:
    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8010
    grpc_port: int = 8011
    metrics_port: int = 8012
    compilation_cache: Path | None = None
    poll_interval_s: float = 2.0
    version_policy: VersionPolicy = DEFAULT_POLICY
    grpc_max_connection_age_s: float = 300.0
    max_in_flight: int = 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtimes.jax", description="The JAX XLA model server.")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository over OIP REST and gRPC")
    serve.add_argument("--model-repository", type=Path, required=True, help="the repository root")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=8010, help="REST port (default 8010)")
    serve.add_argument("--grpc-port", type=int, default=8011, help="gRPC port (default 8011)")
    serve.add_argument("--metrics-port", type=int, default=8012, help="Prometheus port (default 8012)")
    serve.add_argument("--compilation-cache", type=Path, help="persistent XLA compilation cache directory")
    serve.add_argument(
        "--poll-interval-s", type=float, default=2.0, help="repository poll period; 0 disables hot reload"
    )
    serve.add_argument(
        "--version-policy",
        type=_policy,
        default=DEFAULT_POLICY,
        help="default for models without one in model.json: latest:N | all | specific:1,2 (default latest:1)",
    )

    serve.add_argument(
        "--grpc-max-connection-age-s",
        type=float,
        default=300.0,
        help="gRPC clients reconnect after this long; streams still open are cut 30 s later; 0: never",
    )

    serve.add_argument(
        "--max-in-flight",
        type=_non_negative,
        default=0,
        help="inference requests served at once; past it 429 / RESOURCE_EXHAUSTED (default 0: no limit)",
    )

    examples = commands.add_parser("export-examples", help="export the example CNN, transformer and MLP")
    examples.add_argument("directory", type=Path, help="the model repository to write into")
    examples.add_argument("--version", type=int, default=1, help="version number to write (default 1)")
    examples.add_argument("--max-batch-size", type=int, default=8, help="largest batch bucket (default 8)")
    examples.add_argument(
        "--instances-per-device", type=int, default=1, help="batches run at once per device (default 1)"
    )
    examples.add_argument(
        "--weights",
        type=Path,
        help="directory of the weight files to export (written there from seed 0 if missing); "
        "default: drawn from seed 0 in memory",
    )
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.command == "export-examples":
        from runtimes.examples.build import print_progress
        from runtimes.jax.examples import export_examples

        for path in export_examples(
            args.directory,
            version=args.version,
            max_batch_size=args.max_batch_size,
            instances_per_device=args.instances_per_device,
            overwrite=True,
            weights=args.weights,
            progress=print_progress("jax"),
        ):
            print(path)
        return 0
    options = ServeOptions(
        model_repository=args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        compilation_cache=args.compilation_cache,
        poll_interval_s=args.poll_interval_s,
        version_policy=args.version_policy,
        grpc_max_connection_age_s=args.grpc_max_connection_age_s,
        max_in_flight=args.max_in_flight,
    )
    if options.compilation_cache is not None:
        from runtimes.jax.compiled import enable_compilation_cache

        enable_compilation_cache(options.compilation_cache)  # before anything compiles
    from gateway.api.serving import run_in_loop

    try:
        run_in_loop(serve(options))
    except OSError as exc:  # a port in use, mostly: say so in one line, not a traceback
        _log.error("cannot serve: %s", exc)
        return 1
    return 0


async def serve(options: ServeOptions) -> None:
    """Loads the repository, starts REST, gRPC and metrics listeners, and runs until SIGINT/SIGTERM.

    Shutdown: both listeners stop taking requests and finish those in flight (up to a grace period),
    then every model's batcher drains, then the models are unloaded.
    """
    # The listeners come from the gateway package: the same, once-tested OIP code serves both processes.
    from gateway.api.admission import InFlightLimit
    from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
    from gateway.api.rest.app import create_app
    from gateway.api.serving import bind_socket, start_rest_server
    from runtimes.jax.compiled import make_loader
    from runtimes.jax.manager import ModelManager
    from runtimes.jax.metrics import RuntimeMetrics
    from runtimes.jax.server import JaxInferenceServer

    stop = asyncio.Event()
    metrics = RuntimeMetrics()
    manager = ModelManager(
        options.model_repository,
        make_loader(metrics),
        default_policy=options.version_policy,
        poll_interval_s=options.poll_interval_s,
        metrics=metrics,
    )
    with signals_set(stop):
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.push_async_callback(manager.close)  # unwinds last: after the listeners stopped
            if not await until_stopped(manager.start(), stop):
                return
            server = JaxInferenceServer(manager, metrics)
            # Bound here rather than by uvicorn, so a port in use is an OSError we report, not its exit.
            http_socket = cleanup.enter_context(bind_socket(options.host, options.http_port))
            metrics_server, _ = start_http_server(
                options.metrics_port, addr=options.host, registry=metrics.registry
            )
            cleanup.callback(metrics_server.shutdown)
            in_flight = InFlightLimit(options.max_in_flight)  # one count for both listeners
            grpc_server = await start_grpc_server(
                server,
                options.host,
                options.grpc_port,
                max_connection_age_s=options.grpc_max_connection_age_s,
                limit=in_flight,
            )
            try:
                http, http_task = await start_rest_server(
                    uvicorn.Config(
                        create_app(server, limit=in_flight),
                        loop="uvloop",
                        log_level="warning",
                    ),
                    http_socket,
                )
            except BaseException:
                await stop_grpc_server(grpc_server, 0)
                raise
            try:
                h = options.host
                print(
                    f"jax-runtime ready http={h}:{options.http_port} grpc={h}:{options.grpc_port} "
                    f"metrics={h}:{options.metrics_port}",
                    flush=True,
                )
                await until_stopped(asyncio.shield(http_task), stop)
            finally:
                _log.info("shutting down: refusing new requests, finishing those in flight")
                http.should_exit = True
                await asyncio.gather(stop_grpc_server(grpc_server, _GRACE_S), http_task)


def _policy(text: str) -> VersionPolicy:
    try:
        return VersionPolicy.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
