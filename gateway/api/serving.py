"""Process glue shared by every server built on the listeners: the gateway and the JAX runtime.

Sockets are bound by us (a port in use is an `OSError` the caller reports in one line, and workers can
share a port with SO_REUSEPORT); uvicorn runs in the caller's event loop without its own signal
handlers (the caller owns SIGINT/SIGTERM for all its listeners); the loop is uvloop's where available.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound (not listening) to host:port; SO_REUSEPORT lets other processes bind it too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class RestServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller stops it by setting `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_rest_server(
    config: uvicorn.Config, sock: socket.socket
) -> tuple[RestServer, asyncio.Task[None]]:
    """Serve `config.app` on `sock` in this loop; returns once it accepts connections.

    Raises:
        RuntimeError: The server stopped during start-up (its own error, if any, is raised instead).
    """
    server = RestServer(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="rest")
    # uvicorn exposes start-up only as the `started` flag, so poll it.
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the REST listener stopped during start-up")
        await asyncio.sleep(0.005)
    return server, task


def run_in_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion in a fresh uvloop event loop (asyncio's own if uvloop is missing)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # uvloop is not built for every platform; asyncio's loop works, only slower
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)
