"""Composition root: settings -> backends -> clusters -> router -> DataPlane -> listeners.

`run(settings)` runs the whole stack in the current event loop: the REST listener (uvicorn, in this
loop), the gRPC listener (grpc.aio), the Prometheus endpoint, and one health-check task per cluster; it
prints `gateway ready rest=H:P grpc=H:P metrics=H:P` once all listen, and shuts down gracefully on
SIGINT/SIGTERM: stop accepting, let in-flight requests finish (up to `listeners.shutdown_grace_s`),
then close the backends' connections.

Workers (`listeners.workers > 1`, see `serve`): the parent process spawns N workers (multiprocessing
"spawn": no forked event loop or gRPC state), each running the full stack on the same REST and gRPC
ports, bound with SO_REUSEPORT so the kernel spreads incoming connections over them. Metrics use
prometheus_client's multiprocess mode: workers write their values to files in a private
PROMETHEUS_MULTIPROC_DIR, and the parent alone serves the metrics port, merging them. The parent prints
the ready line once every worker is ready, forwards SIGTERM/SIGINT to the workers, and shuts all down
(exit status 1) if one dies. Caveat: SO_REUSEPORT balances connections, not requests, so a few
long-lived gRPC connections may land on the same worker.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from gateway.api.admission import InFlightLimit
from gateway.api.grpc.server import GrpcListener, start_grpc_server, stop_grpc_server
from gateway.api.rest.app import create_app
from gateway.api.serving import RestServer, bind_socket, run_in_loop, start_rest_server
from gateway.backends import Backend, build_backend
from gateway.core.cluster import Cluster
from gateway.core.dataplane import DataPlane
from gateway.core.routing import Router
from gateway.logs import configure_logging
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings, ListenerSettings

log = logging.getLogger(__name__)

READY_PREFIX = "gateway ready"
_WORKER_READY_TIMEOUT_S = 120.0


def address(host: str, port: int) -> str:
    """`host:port`, bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_dataplane(
    settings: GatewaySettings, metrics: GatewayMetrics
) -> tuple[DataPlane, dict[str, Cluster], dict[str, Backend]]:
    """Backends, their clusters, the router and the DataPlane over them (call inside the event loop)."""
    backends: dict[str, Backend] = {}
    clusters: dict[str, Cluster] = {}
    for name, spec in settings.backends.items():
        backends[name] = build_backend(name, spec)
        clusters[name] = Cluster(
            name,
            backends[name],
            spec.endpoints,
            timeout_s=spec.timeout_s,
            health_check_interval_s=spec.health_check_interval_s,
            health_check_timeout_s=spec.health_check_timeout_s,
            metadata_ttl_s=spec.metadata_ttl_s,
            metrics=metrics,
            framework=spec.framework_label,
        )
    return DataPlane(Router.from_settings(settings), clusters, metrics), clusters, backends


async def run(
    settings: GatewaySettings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    serve_metrics: bool = True,
    reuse_port: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM (or `stop` is set), then shut down gracefully.

    Args:
        settings: The validated configuration.
        stop: Set it to shut down; signals are handled only when None (and in the main thread).
        on_ready: Called with the ready line once everything listens; by default it is printed.
        serve_metrics: Serve this process's metrics (off in workers: the parent serves them).
        reuse_port: Bind REST and gRPC with SO_REUSEPORT (workers sharing the ports).
    """
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
    listeners = settings.listeners
    grace = listeners.shutdown_grace_s
    metrics = GatewayMetrics()
    dataplane, clusters, backends = build_dataplane(settings, metrics)
    health_tasks: list[asyncio.Task[None]] = []
    rest: RestServer | None = None
    rest_task: asyncio.Task[None] | None = None
    grpc_server: GrpcListener | None = None
    reservations: list[socket.socket] = []
    httpd: Any = None
    try:
        # One probe round first, so `ready` is truthful from the first request on.
        await asyncio.gather(*(c.check_health() for c in clusters.values()))
        health_tasks = [
            loop.create_task(c.run_health_checks(), name=f"health:{c.name}") for c in clusters.values()
        ]

        # One count for both listeners: max_in_flight is the process's, whatever the protocols' mix.
        in_flight = InFlightLimit(listeners.max_in_flight)
        rest_sock = bind_socket(listeners.rest.host, listeners.rest.port, reuse_port=reuse_port)
        rest_port = rest_sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(
                dataplane,
                max_request_bytes=listeners.max_request_bytes,
                limit=in_flight,
                tfserving=True,
                torchserve=True,
            ),
            loop="uvloop",
            lifespan="off",
            access_log=False,  # one log line per request costs more than the gateway's own work
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(grace),
        )
        rest, rest_task = await start_rest_server(config, rest_sock)

        grpc_port = listeners.grpc.port
        grpc_reuse = reuse_port
        if grpc_port == 0:
            # grpc.aio does not report the port it picked: pick it here, hold it (bound, not listening,
            # so it takes no connections) and let gRPC bind it beside us with SO_REUSEPORT.
            held = bind_socket(listeners.grpc.host, 0, reuse_port=True)
            reservations.append(held)
            grpc_port, grpc_reuse = held.getsockname()[1], True
        grpc_server = await start_grpc_server(
            dataplane,
            listeners.grpc.host,
            grpc_port,
            max_message_bytes=listeners.max_request_bytes,
            reuse_port=grpc_reuse,
            max_connection_age_s=listeners.grpc_max_connection_age_s,
            limit=in_flight,
            tfserving=True,  # TF Serving's API beside OIP's, on the same ports (its clients move over)
            torchserve=True,  # and TorchServe's inference API, likewise
        )

        metrics_port = listeners.metrics.port
        if serve_metrics:
            httpd, _ = start_http_server(metrics_port, addr=listeners.metrics.host, registry=metrics.registry)
            metrics_port = httpd.server_port
        dataplane.start_serving()
        line = _ready_line(
            listeners.rest, rest_port, listeners.grpc, grpc_port, listeners.metrics, metrics_port
        )
        if on_ready is None:
            print(line, flush=True)
        else:
            on_ready(line)

        stopped = loop.create_task(stop.wait())
        await asyncio.wait({stopped, rest_task}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if rest_task.done():
            log.error("the REST listener stopped unexpectedly; shutting down")
        log.info("shutting down: draining in-flight requests (up to %.1f s)", grace)
    finally:
        dataplane.stop_serving()  # probes see the drain while in-flight requests finish
        await _shutdown(rest, rest_task, grpc_server, grace, health_tasks, backends, httpd)
        for held in reservations:
            held.close()
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _shutdown(
    rest: RestServer | None,
    rest_task: asyncio.Task[None] | None,
    grpc_server: GrpcListener | None,
    grace: float,
    health_tasks: list[asyncio.Task[None]],
    backends: dict[str, Backend],
    httpd: Any,
) -> None:
    """Stop listeners (in-flight requests finish), then health checks, then backend connections."""
    draining: list[Coroutine[Any, Any, Any]] = []
    if rest is not None and rest_task is not None:
        rest.should_exit = True
        draining.append(asyncio.wait_for(rest_task, grace + 5.0))
    if grpc_server is not None:
        draining.append(stop_grpc_server(grpc_server, grace))
    for outcome in await asyncio.gather(*draining, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            log.error("listener shutdown failed: %r", outcome)
    for task in health_tasks:
        task.cancel()
    await asyncio.gather(*health_tasks, return_exceptions=True)
    for name, backend in backends.items():
        try:
            await backend.close()
        except Exception:
            log.exception("closing backend '%s' failed", name)
    if httpd is not None:
        await asyncio.to_thread(httpd.shutdown)
        httpd.server_close()


def _ready_line(
    rest: ListenerSettings,
    rest_port: int,
    grpc: ListenerSettings,
    grpc_port: int,
    metrics: ListenerSettings,
    metrics_port: int,
) -> str:
    return (
        f"{READY_PREFIX} rest={address(rest.host, rest_port)} grpc={address(grpc.host, grpc_port)} "
        f"metrics={address(metrics.host, metrics_port)}"
    )


def serve(settings: GatewaySettings) -> int:
    """Run the gateway in the foreground until SIGINT/SIGTERM; the process's exit status."""
    if settings.listeners.workers <= 1:
        run_in_loop(run(settings))
        return 0
    return _supervise(settings)


# --- workers -------------------------------------------------------------------------------------


def _worker_main(settings: GatewaySettings, index: int, events: Any, log_level: int) -> None:
    """A worker process: the full stack on shared ports; reports readiness to the parent."""
    configure_logging(log_level, f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s")
    try:
        run_in_loop(
            run(
                settings,
                on_ready=lambda _: events.put(("ready", index)),
                serve_metrics=False,
                reuse_port=True,
            )
        )
    except BaseException as exc:
        events.put(("failed", index))
        if not isinstance(exc, KeyboardInterrupt):
            raise


def _supervise(settings: GatewaySettings) -> int:
    """The parent of `workers` processes: metrics, readiness, signals, and shutdown of all."""
    listeners = settings.listeners
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    reservations: list[socket.socket] = []
    workers: list[Any] = []
    httpd: Any = None
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as metrics_dir:
        # Set before spawning: a worker's prometheus_client picks its storage when first imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            ports = {}
            for key in ("rest", "grpc"):
                listener: ListenerSettings = getattr(listeners, key)
                port = listener.port
                if port == 0:
                    # Pick the port once for all workers and hold it (bound, never listening).
                    held = bind_socket(listener.host, 0, reuse_port=True)
                    reservations.append(held)
                    port = held.getsockname()[1]
                ports[key] = listener.model_copy(update={"port": port})
            shared = settings.model_copy(
                update={
                    "listeners": listeners.model_copy(update={"rest": ports["rest"], "grpc": ports["grpc"]})
                }
            )
            context = multiprocessing.get_context("spawn")
            events = context.Queue()
            level = logging.getLogger().getEffectiveLevel()
            for index in range(listeners.workers):
                worker = context.Process(
                    target=_worker_main, args=(shared, index, events, level), name=f"gateway-worker-{index}"
                )
                worker.start()
                workers.append(worker)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
            httpd, _ = start_http_server(
                listeners.metrics.port, addr=listeners.metrics.host, registry=registry
            )
            if not _await_workers(workers, events, stop):
                return 1
            print(
                _ready_line(
                    ports["rest"], ports["rest"].port, ports["grpc"], ports["grpc"].port,
                    listeners.metrics, httpd.server_port,
                ),
                flush=True,
            )  # fmt: skip
            while not stop.is_set():
                if multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.2):
                    log.error("a worker exited unexpectedly; shutting down")
                    return 1
            return 0
        finally:
            _stop_workers(workers, listeners.shutdown_grace_s, metrics_dir)
            if httpd is not None:
                httpd.shutdown()
                httpd.server_close()
            for held in reservations:
                held.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _await_workers(workers: list[Any], events: Any, stop: threading.Event) -> bool:
    """Wait until every worker reported ready; False if one failed, died or timed out, or on a signal."""
    pending = set(range(len(workers)))
    deadline = time.monotonic() + _WORKER_READY_TIMEOUT_S
    while pending and not stop.is_set():
        if time.monotonic() > deadline:
            log.error("workers %s did not become ready in %.0f s", sorted(pending), _WORKER_READY_TIMEOUT_S)
            return False
        try:
            kind, index = events.get(timeout=0.2)
        except queue.Empty:
            kind, index = "", -1
        if kind == "failed":
            log.error("worker %d failed to start", index)
            return False
        pending.discard(index)
        if any(not w.is_alive() for w in workers):
            log.error("a worker exited during start-up")
            return False
    return not pending


def _stop_workers(workers: list[Any], grace: float, metrics_dir: str) -> None:
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker drains gracefully
    for worker in workers:
        worker.join(grace + 10.0)
        if worker.is_alive():
            log.error("worker %s did not stop in time; killing it", worker.pid)
            worker.kill()
            worker.join()
        if worker.pid is not None:
            multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
