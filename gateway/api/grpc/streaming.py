"""Bidirectional streams of independent requests: each answered as soon as it completes.

A client that streams (Triton's `ModelStreamInfer`) keeps many requests in flight on one HTTP/2 stream
and pays gRPC's per-call cost (a new stream, headers, a status) once instead of once per request. The
requests still run concurrently here, so the dynamic batcher behind them sees them all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")

DEFAULT_MAX_IN_FLIGHT: Final = 1024


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class _End:
    pass


_END: Final = _End()


@dataclass(slots=True)
class _Stream(Generic[Req, Resp]):
    answer: Callable[[Req], Awaitable[Resp]]
    slots: asyncio.Semaphore
    answers: asyncio.Queue[Resp | _Failed | _End]
    running: set[asyncio.Task[None]]

    async def run_one(self, request: Req) -> None:
        # The request's slot is released once its answer is written (see `answer_stream`), not here:
        # a client that sends without reading must not make this process buffer answers without bound.
        try:
            self.answers.put_nowait(await self.answer(request))
        except asyncio.CancelledError:
            self.slots.release()
            raise
        except Exception as exc:  # `answer` turns failures into answers: this is a bug, fail the stream
            self.answers.put_nowait(_Failed(exc))

    async def read_all(self, requests: AsyncIterable[Req]) -> None:
        try:
            async for request in requests:
                await self.slots.acquire()
                task = asyncio.create_task(self.run_one(request))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
            while self.running:  # the client half-closed: finish what it sent
                await asyncio.wait(set(self.running))
            self.answers.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.answers.put_nowait(_Failed(exc))


async def answer_stream(
    requests: AsyncIterable[Req],
    answer: Callable[[Req], Awaitable[Resp]],
    *,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> AsyncGenerator[Resp, None]:
    """Yields one answer per request, in completion order (answers carry the request id to match them).

    Requests are read while earlier ones still run, up to `max_in_flight` running or answered but not yet
    written. Past that this stops reading, so HTTP/2 flow control pushes back on the client rather than
    this process buffering without bound, also when the client sends without reading the answers.
    `answer` reports a request's failure as an answer; if it raises, the stream fails with that error.
    When the client half-closes, the remaining answers are sent and the iteration ends. If the consumer
    stops early (the client cancelled the call), the requests still running are cancelled.
    """
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    stream: _Stream[Req, Resp] = _Stream(answer, asyncio.Semaphore(max_in_flight), asyncio.Queue(), set())
    reader = asyncio.create_task(stream.read_all(requests))
    try:
        while True:
            item = await stream.answers.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # resumes once the consumer (gRPC) has written it and asks for the next
            stream.slots.release()
    finally:
        reader.cancel()
        for task in list(stream.running):
            task.cancel()
        await asyncio.gather(reader, *stream.running, return_exceptions=True)
