"""`answer_stream`: completion order, bounded concurrency, half-close, failure and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.api.grpc.streaming import answer_stream


async def _items(*values: float, then: asyncio.Event | None = None) -> AsyncIterator[float]:
    for value in values:
        yield value
    if then is not None:  # keep the stream open (the client has not half-closed) until told
        await then.wait()


async def _sleep_then_echo(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def test_answers_come_in_completion_order() -> None:
    """A slow request does not hold back the answers of faster ones sent after it."""
    answers = [a async for a in answer_stream(_items(0.05, 0.0, 0.01), _sleep_then_echo)]
    assert answers == [0.0, 0.01, 0.05]


async def test_in_flight_requests_are_bounded() -> None:
    """At most `max_in_flight` requests run at once; the rest wait to be read."""
    running = 0
    peak = 0

    async def answer(value: float) -> float:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return value

    answers = [a async for a in answer_stream(_items(*range(50)), answer, max_in_flight=4)]
    assert sorted(answers) == list(range(50))
    assert peak == 4


async def test_unwritten_answers_count_against_the_limit() -> None:
    """A client that sends without reading: once `max_in_flight` answers wait to be written, no more
    requests are read (the one pulled from the iterator waits for a slot), whatever the client sends."""
    pulled = 0

    async def endless() -> AsyncIterator[float]:
        nonlocal pulled
        while True:
            pulled += 1
            yield 0.0

    stream = answer_stream(endless(), _sleep_then_echo, max_in_flight=2)
    assert await anext(stream) == 0.0  # one answer taken, not yet acknowledged as written
    await asyncio.sleep(0.05)
    assert pulled == 3
    assert await anext(stream) == 0.0  # the first answer is written: one more request may run
    await asyncio.sleep(0.05)
    assert pulled == 4
    await stream.aclose()


async def test_half_close_finishes_the_requests_already_sent() -> None:
    """The request iterator ends while requests still run: all of them are answered, then the stream ends."""
    answers = [a async for a in answer_stream(_items(0.02, 0.02, 0.02), _sleep_then_echo)]
    assert answers == [0.02] * 3


async def test_an_answer_that_raises_fails_the_stream() -> None:
    async def answer(value: float) -> float:
        if value == 2:
            raise RuntimeError("bug in answer")
        return value

    with pytest.raises(RuntimeError, match="bug in answer"):
        async for _ in answer_stream(_items(1, 2, 3), answer):
            pass


async def test_a_failing_request_iterator_fails_the_stream() -> None:
    async def broken() -> AsyncIterator[float]:
        yield 1.0
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError, match="client went away"):
        async for _ in answer_stream(broken(), _sleep_then_echo):
            pass


async def test_closing_the_stream_cancels_running_requests() -> None:
    """When the consumer stops (the call was cancelled), requests still running are cancelled, not leaked."""
    started = asyncio.Event()
    cancelled = asyncio.Event()
    keep_open = asyncio.Event()

    async def answer(value: float) -> float:
        if value == 0:
            return value
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return value

    stream = answer_stream(_items(0, 1, then=keep_open), answer)
    assert await anext(stream) == 0
    await asyncio.wait_for(started.wait(), 5)
    await stream.aclose()
    assert cancelled.is_set()


async def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        await anext(answer_stream(_items(1), _sleep_then_echo, max_in_flight=0))
