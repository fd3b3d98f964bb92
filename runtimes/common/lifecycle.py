"""What every runtime's `serve` needs to start and stop like a server: SIGINT/SIGTERM set a stop event, and
start-up work (loading models) is abandoned when a stop comes first."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Iterator


async def until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Runs `work` unless `stop` is set first (a signal during the initial load); True if it finished."""
    work_task = asyncio.ensure_future(work)
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({work_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if work_task.done():
        work_task.result()
        return True
    work_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work_task
    return False


@contextlib.contextmanager
def signals_set(event: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set `event` (the graceful stop) instead of killing the process."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
