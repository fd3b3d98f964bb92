"""`python -m runtimes.tfserving`: tensorflow_model_server's flags, so a launcher can swap the two.

Flags are TF Serving's (`--port=8500 --rest_api_port=8501 --model_name=m --model_base_path=/models/m`,
or `--model_config_file=...`); booleans take `--flag`, `--flag=true` or `--flag=false`. Differences:
port 0 binds a free port (TF Serving's `--rest_api_port=0` turns REST off; here leave the flag out), and
once both listeners serve, one line on stdout names the bound ports:
`tfserving-runtime ready grpc=HOST:PORT rest=HOST:PORT` (`READY_PREFIX`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import tensorflow as tf
import uvicorn

from gateway.api.serving import bind_socket, run_in_loop, start_rest_server
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from runtimes.common.lifecycle import signals_set, until_stopped
from runtimes.tfserving import config
from runtimes.tfserving.grpc_api import start_grpc_server
from runtimes.tfserving.launcher import RUNTIME_READY_PREFIX
from runtimes.tfserving.manager import ModelManager
from runtimes.tfserving.metrics import ServingMetrics
from runtimes.tfserving.model import load_version
from runtimes.tfserving.rest_api import RestApp
from runtimes.tfserving.service import DEFAULT_MAX_REQUEST_BYTES, TFServingCore

READY_PREFIX: Final = RUNTIME_READY_PREFIX
_GRACE_S: Final = 10.0
_log = logging.getLogger("runtimes.tfserving")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtimes.tfserving",
        description="TF Serving's APIs served by TensorFlow, for hosts without tensorflow_model_server.",
        allow_abbrev=False,  # TF Serving takes no abbreviated flags: `--model_base` is an error there too
    )

    def flag(name: str, help_text: str) -> None:
        parser.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=False, help=help_text)

    parser.add_argument("--port", type=_port, default=8500, help="gRPC port (default 8500; 0: a free one)")
    parser.add_argument("--rest_api_port", type=_port, default=None, help="REST port (default: no REST)")
    parser.add_argument("--rest_api_host", default="0.0.0.0", help="REST address (default 0.0.0.0)")
    parser.add_argument("--grpc_host", default="0.0.0.0", help="gRPC address (default 0.0.0.0)")
    parser.add_argument(
        "--rest_api_timeout_in_ms", type=int, default=30000, help="REST request deadline (default 30000)"
    )
    parser.add_argument("--rest_api_num_threads", type=int, default=0, help="accepted, ignored (asyncio)")
    parser.add_argument(
        "--max_request_bytes",
        type=_positive,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest REST body / gRPC request, and the most a tensor may hold (default 64 MiB; ours)",
    )
    parser.add_argument("--model_name", default="default", help="model name (with --model_base_path)")
    parser.add_argument("--model_base_path", default="", help="directory of numeric version subdirectories")
    parser.add_argument("--model_config_file", type=Path, help="text-format ModelServerConfig")
    parser.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="re-read --model_config_file this often (default 0: never)",
    )
    parser.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="scan base paths for new versions this often (default 1; 0: only at start)",
    )
    parser.add_argument("--monitoring_config_file", type=Path, help="text-format MonitoringConfig")
    flag("enable_batching", "merge concurrent requests (--batching_parameters_file)")
    parser.add_argument("--batching_parameters_file", type=Path, help="text-format BatchingParameters")
    flag("enable_serialization_as_tensor_content", "reply with tensor_content, not typed fields")
    flag("allow_version_labels_for_unavailable_models", "let labels name versions not served")
    parser.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0, help="0: TF's default")
    parser.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0, help="0: TF's default")
    parser.add_argument("--log_level", default="INFO", help="Python logging level (default INFO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        run_in_loop(serve(args))
    except ConfigError as exc:
        _log.error("bad configuration: %s", exc)
        return 1
    except OSError as exc:  # a port in use, mostly
        _log.error("cannot serve: %s", exc)
        return 1
    return 0


async def serve(args: argparse.Namespace) -> None:
    """Loads the models, starts gRPC (and REST), prints the ready line, runs until SIGINT/SIGTERM.

    Shutdown: listeners stop taking requests and finish those in flight (up to a grace period), then
    every version's batcher drains and the models are unloaded.
    """
    models = _model_list(args)
    batching = config.read_batching_file(args.batching_parameters_file) if args.enable_batching else None
    metrics_path = config.read_monitoring_file(args.monitoring_config_file)
    _configure_threads(args)

    manager = ModelManager(
        lambda name, version, path: load_version(name, version, path, batching),
        allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models,
    )
    core = TFServingCore(manager, ServingMetrics(), max_request_bytes=args.max_request_bytes)
    stop = asyncio.Event()
    with signals_set(stop):
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.callback(core.close)
            cleanup.push_async_callback(manager.close)  # unwinds after the listeners stopped
            if not await until_stopped(manager.apply(models), stop):
                return
            grpc_server, grpc_port = await start_grpc_server(
                core, args.grpc_host, args.port, as_tensor_content=args.enable_serialization_as_tensor_content
            )
            cleanup.push_async_callback(grpc_server.stop, _GRACE_S)
            ready = f"{READY_PREFIX} grpc={args.grpc_host}:{grpc_port}"
            rest: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
            if args.rest_api_port is not None:
                sock = cleanup.enter_context(bind_socket(args.rest_api_host, args.rest_api_port))
                app = RestApp(core, metrics_path=metrics_path, timeout_s=args.rest_api_timeout_in_ms / 1000)
                rest = await start_rest_server(
                    uvicorn.Config(app, loop="uvloop", lifespan="off", log_level="warning"), sock
                )
                ready += f" rest={args.rest_api_host}:{sock.getsockname()[1]}"
            pollers = [
                asyncio.create_task(_poll(manager.reconcile, args.file_system_poll_wait_seconds)),
            ]
            if args.model_config_file is not None and args.model_config_file_poll_wait_seconds > 0:
                pollers.append(
                    asyncio.create_task(
                        _poll(
                            _config_reloader(args.model_config_file, manager),
                            args.model_config_file_poll_wait_seconds,
                        )
                    )
                )
            print(ready, flush=True)
            try:
                await stop.wait()
            finally:
                _log.info("shutting down: refusing new requests, finishing those in flight")
                for task in pollers:
                    task.cancel()
                if rest is not None:
                    rest[0].should_exit = True
                    await rest[1]


def _model_list(args: argparse.Namespace) -> list[config.ModelConfig]:
    if args.model_config_file is not None:
        if args.model_base_path:
            raise ConfigError("use --model_config_file or --model_base_path, not both")
        return list(config.read_model_config_file(args.model_config_file))
    if not args.model_base_path:
        raise ConfigError("either --model_config_file or --model_base_path is required")
    return list(config.single_model(args.model_name, args.model_base_path))


def _configure_threads(args: argparse.Namespace) -> None:
    if args.tensorflow_intra_op_parallelism or args.tensorflow_inter_op_parallelism:
        if args.tensorflow_intra_op_parallelism:
            tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
        if args.tensorflow_inter_op_parallelism:
            tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)


def _config_reloader(path: Path, manager: ModelManager) -> Callable[[], Awaitable[None]]:
    """A poll step: applies the config file whenever its text changed."""
    last = [path.read_text() if path.exists() else ""]

    async def reload() -> None:
        text = await asyncio.to_thread(path.read_text)
        if text == last[0]:
            return
        models = config.parse_model_server_config(text, source=str(path), base_dir=Path.cwd())
        await manager.apply(models)
        last[0] = text  # only once applied: a config that failed is tried again next round
        _log.info("applied the new model config from %s", path)

    return reload


async def _poll(work: Callable[[], Awaitable[None]], interval_s: float) -> None:
    """Runs `work()` every `interval_s` (never when 0); an error is logged and the next round tries again."""
    if interval_s <= 0:
        return
    while True:
        await asyncio.sleep(interval_s)
        try:
            await work()
        except Exception:
            _log.exception("poll failed; the models served stay as they are")
