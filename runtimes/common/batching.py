"""Dynamic batching, shared by the runtimes: merge concurrent requests into one model call per batch bucket.

`BatchingConfig` says how (the JAX runtime reads it from its `config.json`, the TF Serving runtime from
TF Serving's batching parameters file); `DynamicBatcher` does it, over any `BatchRunner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np

from gateway.errors import (
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    InvalidRequest,
    ModelNotReady,
    Overloaded,
)

_log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_DELAY_MS: Final = 2.0


def default_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below `max_batch_size`, then `max_batch_size` itself: 1, 2, 4, ..., max."""
    buckets = [1 << i for i in range(max(max_batch_size, 1).bit_length()) if (1 << i) < max_batch_size]
    return (*buckets, max_batch_size)


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """How requests are merged: up to `max_batch_size` rows, run at the smallest bucket that fits them."""

    max_batch_size: int
    buckets: tuple[int, ...]
    max_queue_delay_ms: float = DEFAULT_MAX_QUEUE_DELAY_MS
    # Run what is queued at once when the device has nothing running, rather than wait the delay for
    # company: a lone request gets no added latency, and under load (the device busy) batches still fill.
    dispatch_when_idle: bool = True
    # Requests waiting in the queue (not yet in a batch) beyond which new ones are refused with
    # RESOURCE_EXHAUSTED, so an overloaded server sheds load instead of growing its queue and every
    # request's latency without bound. 0: no limit (Triton's default too).
    max_queue_size: int = 0

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket holding `rows` (1 <= rows <= max_batch_size)."""
        for bucket in self.buckets:
            if bucket >= rows:
                return bucket
        raise ValueError(f"{rows} rows exceed the largest bucket {self.buckets[-1]}")

    def to_json(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "batch_buckets": list(self.buckets),
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "dispatch_when_idle": self.dispatch_when_idle,
            "max_queue_size": self.max_queue_size,
        }


Arrays = Sequence[np.ndarray]


class BatchRunner(Protocol):
    """Runs one padded batch, blocking (a model replica on one device; a fake in tests)."""

    name: str

    def run(self, inputs: Arrays) -> Arrays: ...


class BatchStats(Protocol):
    """Receives one observation per batch run (metrics; nothing in tests)."""

    def observe_batch(
        self, *, rows: int, bucket: int, queue_seconds: Sequence[float], compute_seconds: float
    ) -> None: ...


@dataclass(eq=False, slots=True)
class _Item:
    inputs: Arrays
    rows: int
    future: asyncio.Future[list[np.ndarray]]
    enqueued_at: float
    deadline: float | None


@dataclass(slots=True)
class _Outcome:
    """What a worker thread reports for a batch: the requests it ran (the others had expired) and how."""

    ran: list[_Item]
    outputs: list[list[np.ndarray]]
    bucket: int
    started: float  # a `clock()` value: when the replica took the batch up
    compute_seconds: float


class DynamicBatcher:
    """Merges concurrent requests into batches and runs each on the replica that has been free longest.

    Algorithm (one dispatcher task per model version; its state lives on the event loop, so no locks):

    1. `submit` appends the request to a FIFO queue. A request of more than `max_batch_size` rows is
       SPLIT into chunks of at most that many, queued back to back, and its outputs concatenated:
       clients need not know the server's limit.
    2. The dispatcher waits for a queued request, then takes a free runner slot. A runner is one model
       instance with its own worker thread: a replica on a device, or one of several instances that
       share it (`instances_per_device`). Each runner has `depth` slots: with depth 2 (the default),
       one batch runs and the next is already formed behind it, so the device never idles while the
       event loop catches up. Slots are handed out in the order they were freed: round-robin across
       runners under load, least-busy when their speeds differ.
    3. Holding a slot, it waits until the queue holds `max_batch_size` rows or the oldest request has
       waited `max_queue_delay_ms`, whichever is first. Time spent waiting for a slot counts toward
       the delay, so a loaded server adds no delay on top of its queueing. With `dispatch_when_idle`
       (the default) it prefers a slot on a device that has nothing running and then does not wait
       at all; holding a slot on a busy device, it stops waiting when that device's last batch
       finishes or another device goes idle (it moves to that device's slot): waiting for company
       only pays while every device is busy anyway. So a lone request runs at once, and under load
       batches fill as before.
    4. It takes requests from the head while they fit (strict FIFO: it never skips a request that
       does not fit to pack a smaller one behind it, so large requests cannot starve), hands them to
       the replica's single worker thread, and loops: the next batch forms while this one runs.
    5. The worker thread stacks the rows into one array per input, zero-pads them to the smallest
       bucket that holds them, runs the executable, and slices each request's rows out of the
       outputs. The event loop only moves references; it never touches tensor data.

    Isolation: requests are validated against the model's signature before they are queued, so a
    malformed tensor never reaches a batch. If a merged batch still fails, each of its requests is
    run again alone, so the one at fault fails and the others get their answers.

    Caveats: padding rows cost compute (the padding-ratio metric shows how much; closer buckets cut
    it); without `dispatch_when_idle` a lone request waits the full delay when traffic is light, so
    keep the delay to a few milliseconds; with depth 2 a batch may leave before the previous one
    finished, so under moderate load batches are somewhat smaller than with depth 1 (the price of
    never idling the device); a cancelled request counts toward the rows that trigger a flush until
    it reaches the head of the queue; a request past its deadline fails with DEADLINE_EXCEEDED when
    its batch forms, or when the replica takes the batch up (with depth 2 a batch forms while the
    previous one still runs), but once running it is not interrupted.
    """

    def __init__(
        self,
        name: str,
        runners: Sequence[BatchRunner],
        batching: BatchingConfig,
        *,
        stats: BatchStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        depth: int = 2,
        thread_name: str = "replica",
    ) -> None:
        if not runners or depth < 1:
            raise ValueError("a batcher needs at least one runner and a depth of at least 1")
        # For messages and logs, e.g. "model 'cnn' version '1'".
        self.name = name
        self._runners = list(runners)
        self._batching = batching
        self._max_rows = batching.max_batch_size
        self._delay = batching.max_queue_delay_ms / 1000.0
        self._stats = stats
        self._clock = clock
        # One thread per replica: the device call releases the GIL, and the event loop keeps serving.
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread_name}-{i}")
            for i in range(len(runners))
        ]
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._changed = asyncio.Event()
        # Free slots, by runner index, oldest freed first: `depth` per runner, interleaved so that
        # batches alternate runners. A freed slot wakes the dispatcher through `_changed`.
        self._free: deque[int] = deque(index for _ in range(depth) for index in range(len(runners)))
        # Runners that are one object (instances of a replica) share a device: `_device[i]` is the index
        # of the first runner that is runners[i]. `_device_batches[d]`: batches handed to device d's
        # runners and not finished.
        self._device = [next(j for j, r in enumerate(runners) if r is runner) for runner in runners]
        self._device_batches = [0] * len(runners)
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, inputs: Arrays, *, deadline: float | None = None) -> list[np.ndarray]:
        """Queues one request (one array per model input, batch first) and returns its outputs.

        Raises:
            ModelNotReady: The batcher is closing (its model version is being unloaded).
            Overloaded: `max_queue_size` requests are already queued.
            DeadlineExceeded: `deadline` (a `clock()` value) passed before the request's batch formed.
            GatewayError: The model failed on this request.
        """
        if self._closing:
            raise ModelNotReady(f"{self.name} is unloading")
        rows = int(inputs[0].shape[0])
        if rows < 1:
            raise InvalidRequest(f"{self.name}: the batch dimension must be at least 1")
        limit = self._batching.max_queue_size
        if limit and len(self._queue) >= limit:  # a split request's chunks count once: it was accepted
            raise Overloaded(
                f"{self.name} is overloaded: {len(self._queue)} requests are queued (max_queue_size "
                f"{limit}); retry later"
            )
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"batcher {self.name}")
        if rows <= self._max_rows:
            return await self._put(inputs, rows, deadline)
        step = self._max_rows
        futures = [
            self._put([x[i : i + step] for x in inputs], min(step, rows - i), deadline)
            for i in range(0, rows, step)
        ]
        parts = await asyncio.gather(*futures)
        return [np.concatenate([part[k] for part in parts]) for k in range(len(parts[0]))]

    async def close(self) -> None:
        """Stops accepting requests, runs everything already queued, and waits for running batches."""
        self._closing = True
        self._changed.set()
        if self._dispatcher is not None:
            await self._dispatcher
        if self._running:
            await asyncio.gather(*self._running)
        for executor in self._executors:
            executor.shutdown(wait=False)

    def _put(self, inputs: Arrays, rows: int, deadline: float | None) -> asyncio.Future[list[np.ndarray]]:
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(inputs, rows, future, self._clock(), deadline))
        self._queued_rows += rows
        # Wake the dispatcher only when its decision can change: the first request (it waits for one)
        # or a full batch (it waits for one or the delay). Waking it on every arrival costs the event
        # loop a task switch and a timer per request under load, for nothing.
        if len(self._queue) == 1 or self._queued_rows >= self._max_rows:
            self._changed.set()
        return future

    async def _dispatch(self) -> None:
        try:
            while True:
                self._drop_finished_head()
                if not self._queue:
                    if self._closing:
                        return
                    await self._wait_for_change(None)
                    continue
                index = self._take_free_slot()
                if index is None:
                    await self._wait_for_change(None)
                    continue
                try:
                    index = await self._wait_for_batch(index)
                    batch = self._take_batch()
                except BaseException:
                    self._free.appendleft(index)
                    raise
                if not batch:
                    self._free.appendleft(index)
                    continue
                self._device_batches[self._device[index]] += 1
                task = asyncio.create_task(self._run(index, batch))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        except Exception:
            # A bug here would strand every queued request; fail them rather than hang.
            _log.exception("batcher for %s stopped", self.name)
            while self._queue:
                self._fail(self._queue.popleft(), RuntimeError("batcher stopped"))
            raise

    def _take_free_slot(self) -> int | None:
        """The free slot freed longest ago, or with `dispatch_when_idle` one on an idle device first."""
        if not self._free:
            return None
        index = self._free_slot_on_idle_device()
        if index is None:
            return self._free.popleft()
        self._free.remove(index)
        return index

    def _free_slot_on_idle_device(self) -> int | None:
        if self._batching.dispatch_when_idle:
            for index in self._free:
                if self._device_idle(index):
                    return index
        return None

    async def _wait_for_batch(self, index: int) -> int:
        """Holding slot `index`, returns the slot to run the batch on, when the queue holds a full batch,
        the oldest request's delay is up, or on close; with `dispatch_when_idle`, also as soon as the
        slot's device is idle, or another device is idle with a free slot (the slots are swapped)."""
        while not self._closing:
            self._drop_finished_head()
            if not self._queue or self._queued_rows >= self._max_rows:
                return index
            if self._batching.dispatch_when_idle:
                if self._device_idle(index):
                    return index
                other = self._free_slot_on_idle_device()
                if other is not None:
                    self._free.remove(other)
                    self._free.appendleft(index)
                    return other
            remaining = self._queue[0].enqueued_at + self._delay - self._clock()
            if remaining <= 0:
                return index
            await self._wait_for_change(remaining)
        return index

    async def _wait_for_change(self, limit_s: float | None) -> None:
        # Cleared only just before waiting, with no await since the caller checked the queue: no
        # `submit` can slip in between and have its wake-up lost.
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._changed.wait()

    def _device_idle(self, index: int) -> bool:
        return self._device_batches[self._device[index]] == 0

    def _drop_finished_head(self) -> None:
        while self._queue and self._queue[0].future.done():  # cancelled by its caller
            self._queued_rows -= self._queue.popleft().rows

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        now = self._clock()
        while self._queue:
            item = self._queue[0]
            if not item.future.done() and item.deadline is not None and item.deadline <= now:
                item.future.set_exception(
                    DeadlineExceeded(f"{self.name}: the deadline passed while the request was queued")
                )
            if item.future.done():
                self._queued_rows -= self._queue.popleft().rows
                continue
            if rows + item.rows > self._max_rows:
                break
            self._queued_rows -= self._queue.popleft().rows
            batch.append(item)
            rows += item.rows
        return batch

    async def _run(self, index: int, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                outcome = await loop.run_in_executor(self._executors[index], self._execute, index, batch)
            except Exception as exc:
                if len(batch) == 1:
                    self._fail(batch[0], exc)
                    return
                _log.warning(
                    "batch of %d requests failed on %s; running them one by one", len(batch), self.name
                )
                for item in batch:
                    if item.future.done():
                        continue
                    try:
                        alone = await loop.run_in_executor(
                            self._executors[index], self._execute, index, [item]
                        )
                    except Exception as item_exc:
                        self._fail(item, item_exc)
                    else:
                        self._deliver(alone.ran, alone.outputs)
                        self._expire([item])
                return
            self._deliver(outcome.ran, outcome.outputs)
            self._expire(batch)
            if self._stats is not None and outcome.ran:
                self._stats.observe_batch(
                    rows=sum(item.rows for item in outcome.ran),
                    bucket=outcome.bucket,
                    queue_seconds=[outcome.started - item.enqueued_at for item in outcome.ran],
                    compute_seconds=outcome.compute_seconds,
                )
        finally:
            self._device_batches[self._device[index]] -= 1
            self._free.append(index)
            # The dispatcher may be waiting for a slot, or (dispatch_when_idle) for this device to idle.
            self._changed.set()

    def _execute(self, index: int, batch: Sequence[_Item]) -> _Outcome:
        """Runs on the replica's worker thread: drop the expired requests, pad, run, split.

        The deadlines are checked here, not only when the batch formed: a batch formed behind a running
        one waits for it, and a request whose deadline passed meanwhile would cost a run for nothing.
        Only immutable fields of the items are read; their futures are left to the event loop.
        """
        started = self._clock()
        ran = [item for item in batch if item.deadline is None or item.deadline > started]
        if not ran:
            return _Outcome([], [], 0, started, 0.0)
        rows = [item.rows for item in ran]
        bucket = self._batching.bucket_for(sum(rows))
        padded = pad_batch([item.inputs for item in ran], bucket)
        start = time.perf_counter()
        outputs = self._runners[index].run(padded)
        compute = time.perf_counter() - start
        return _Outcome(ran, split_batch(outputs, rows, bucket), bucket, started, compute)

    @staticmethod
    def _deliver(batch: Sequence[_Item], outputs: list[list[np.ndarray]]) -> None:
        for item, result in zip(batch, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    def _expire(self, batch: Sequence[_Item]) -> None:
        """Fails the requests of `batch` left unanswered after delivery: `_execute` found them expired."""
        for item in batch:
            if not item.future.done():
                item.future.set_exception(
                    DeadlineExceeded(f"{self.name}: the deadline passed while the request was queued")
                )

    def _fail(self, item: _Item, exc: BaseException) -> None:
        if item.future.done():
            return
        if not isinstance(exc, GatewayError):
            # The client gets an opaque message; the traceback stays in this log.
            _log.error("model %s failed", self.name, exc_info=exc)
            exc = GatewayError(f"{self.name} failed to run the request", code=ErrorCode.INTERNAL)
        item.future.set_exception(exc)


def pad_batch(requests: Sequence[Arrays], bucket: int) -> list[np.ndarray]:
    """Stacks the requests' rows input by input and fills the rows up to `bucket` with zeros."""
    if len(requests) == 1 and requests[0][0].shape[0] == bucket:
        return list(requests[0])  # already a bucket: no copy
    padded = []
    for k, first in enumerate(requests[0]):
        batch = np.empty((bucket, *first.shape[1:]), first.dtype)
        offset = 0
        for inputs in requests:
            rows = inputs[k].shape[0]
            batch[offset : offset + rows] = inputs[k]
            offset += rows
        # Strings (object arrays, as TensorFlow's DT_STRING) pad with b"": a 0 there would not convert.
        batch[offset:] = b"" if batch.dtype == object else 0
        padded.append(batch)
    return padded


def split_batch(outputs: Arrays, rows: Sequence[int], bucket: int) -> list[list[np.ndarray]]:
    """Slices each request's rows out of the batch outputs (views, no copies); padding rows are dropped."""
    for out in outputs:
        if out.ndim == 0 or out.shape[0] != bucket:
            raise RuntimeError(f"an output has shape {out.shape}, expected batch {bucket} first")
    result = []
    offset = 0
    for n in rows:
        result.append([out[offset : offset + n] for out in outputs])
        offset += n
    return result
