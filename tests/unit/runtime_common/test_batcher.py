"""The dynamic batcher, driven with fake executables and an injected clock (behaviour, not timings)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from gateway.errors import DeadlineExceeded, ErrorCode, GatewayError, InvalidRequest, ModelNotReady
from runtimes.common.batching import BatchingConfig, BatchRunner, DynamicBatcher, default_buckets
from tests.unit.runtime_common.fakes import POISON, FakeClock, FakeRunner, rows, started

LONG_MS = 60_000.0  # a delay no test waits out for real: flushes come from full batches or the fake clock


def batcher(
    *runners: BatchRunner,
    max_batch: int = 4,
    delay_ms: float = LONG_MS,
    clock: FakeClock | None = None,
    depth: int = 2,
    when_idle: bool = False,
) -> DynamicBatcher:
    # Most tests pin down how batches form from the queue and the delay, so by default they turn off
    # dispatching at once on an idle device (the production default); the tests of that turn it on.
    config = BatchingConfig(max_batch, default_buckets(max_batch), delay_ms, when_idle)
    return DynamicBatcher(
        "model 'fake' version '1'", runners or [FakeRunner()], config, clock=clock or FakeClock(), depth=depth
    )


async def settle() -> None:
    """Lets every ready task run until it blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


async def within(awaitable: object, seconds: float = 10.0) -> object:
    """Fails a test that would hang, instead of hanging the suite."""
    return await asyncio.wait_for(awaitable, seconds)  # type: ignore[arg-type]


def batch_rows(runner: FakeRunner) -> list[int]:
    return [b.shape[0] for b in runner.batches]


async def test_concurrent_requests_merge_into_one_batch() -> None:
    """Requests that together fill max_batch_size run as one batch, each getting its own rows back."""
    runner = FakeRunner()
    b = batcher(runner)
    inputs = [rows(1, 0), rows(2, 10), rows(1, 20)]
    results = await within(asyncio.gather(*(b.submit([x]) for x in inputs)))
    assert batch_rows(runner) == [4]
    for x, (doubled, total) in zip(inputs, results, strict=True):  # type: ignore[call-overload]
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(total, x.sum(axis=1))
    await b.close()


async def test_partial_batch_is_padded_to_the_next_bucket() -> None:
    """Three rows run in the bucket of 4 with a zero row; the caller gets three rows."""
    runner = FakeRunner()
    b = batcher(runner, max_batch=8, delay_ms=0)
    doubled, _ = await within(b.submit([rows(3, 1)]))  # type: ignore[misc]
    (ran,) = runner.batches
    assert ran.shape == (4, 3) and not ran[3].any()
    np.testing.assert_array_equal(doubled, rows(3, 1) * 2)
    await b.close()


async def test_queue_delay_expiry_flushes_a_partial_batch() -> None:
    """A partial batch waits while the oldest request is younger than the delay, and flushes after."""
    clock = FakeClock()
    runner = FakeRunner()
    b = batcher(runner, max_batch=8, delay_ms=1000, clock=clock)
    first = asyncio.ensure_future(b.submit([rows(1, 0)]))
    await settle()
    assert runner.batches == [] and not first.done()
    clock.now += 1.5  # the first request's delay is up; the next arrival wakes the dispatcher
    second = asyncio.ensure_future(b.submit([rows(1, 5)]))
    await within(asyncio.gather(first, second))
    assert batch_rows(runner) == [2]
    await b.close()


async def test_lone_request_is_served_after_a_short_real_delay() -> None:
    """With the real clock, a request nobody joins still runs once max_queue_delay_ms passes."""
    runner = FakeRunner()
    config = BatchingConfig(8, default_buckets(8), 5.0)
    b = DynamicBatcher("model 'fake' version '1'", [runner], config)
    doubled, _ = await within(b.submit([rows(1, 7)]))  # type: ignore[misc]
    np.testing.assert_array_equal(doubled, rows(1, 7) * 2)
    await b.close()


async def test_lone_request_on_an_idle_device_runs_at_once() -> None:
    """With dispatch_when_idle, a request finding the device idle does not wait the delay for company."""
    runner = FakeRunner()
    b = batcher(runner, max_batch=8, when_idle=True)  # a delay no test waits out
    doubled, _ = await within(b.submit([rows(1, 7)]))  # type: ignore[misc]
    np.testing.assert_array_equal(doubled, rows(1, 7) * 2)
    assert batch_rows(runner) == [1]
    await b.close()


async def test_requests_arriving_while_the_device_is_busy_wait_for_company() -> None:
    """While a batch runs, later requests gather (the delay applies) and go together when it finishes."""
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    b = batcher(runner, max_batch=8, when_idle=True)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    later = [asyncio.ensure_future(b.submit([rows(1, i)])) for i in (1, 2, 3)]
    await settle()
    assert b.queued_rows == 3  # the second slot holds them: the device is busy, the delay is long
    gate.set()
    await within(asyncio.gather(first, *later))
    assert batch_rows(runner) == [1, 4]  # the three together, padded to the bucket of 4
    await b.close()


async def test_instances_of_one_replica_share_the_device() -> None:
    """Two instances of one replica: while one runs, a request does not start the other at once (the
    device is busy); it goes when the device frees up."""
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    b = batcher(runner, runner, max_batch=8, when_idle=True, depth=1)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    second = asyncio.ensure_future(b.submit([rows(1, 1)]))
    await settle()
    assert b.queued_rows == 1 and runner.peak_running == 1
    gate.set()
    await within(asyncio.gather(first, second))
    assert batch_rows(runner) == [1, 1]
    await b.close()


async def test_an_idle_device_takes_a_request_while_another_device_is_busy() -> None:
    """Replicas on two devices: with one busy, a new request runs at once on the idle one."""
    gate = threading.Event()
    replicas = [FakeRunner("r0", gate=gate), FakeRunner("r1", gate=gate)]
    b = batcher(*replicas, when_idle=True)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(replicas[0])
    second = asyncio.ensure_future(b.submit([rows(1, 1)]))
    await started(replicas[1])
    gate.set()
    await within(asyncio.gather(first, second))
    await b.close()


async def test_a_request_waiting_on_a_busy_device_moves_to_one_that_goes_idle() -> None:
    """Two devices, both busy; a third request waits (long delay) holding a slot on the first. When the
    second device finishes, the request runs there at once instead of waiting for the first."""
    gates = [threading.Event(), threading.Event()]
    replicas = [FakeRunner("r0", gate=gates[0]), FakeRunner("r1", gate=gates[1])]
    b = batcher(*replicas, max_batch=8, when_idle=True)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(replicas[0])
    second = asyncio.ensure_future(b.submit([rows(1, 1)]))
    await started(replicas[1])
    third = asyncio.ensure_future(b.submit([rows(1, 2)]))
    await settle()
    assert b.queued_rows == 1  # both devices busy, the delay is long: it waits
    replicas[1].started.clear()
    gates[1].set()
    await within(second)
    await started(replicas[1])  # ran on r1, r0 still busy
    await within(third)
    assert not first.done() and [len(r.batches) for r in replicas] == [1, 2]
    gates[0].set()
    await within(first)
    await b.close()


async def test_a_full_queue_refuses_new_requests_and_keeps_those_accepted() -> None:
    """With max_queue_size 2 and the device busy, a third queued request is refused RESOURCE_EXHAUSTED
    at once; the accepted ones are all answered, and once the queue drains requests are taken again."""
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    config = BatchingConfig(1, default_buckets(1), 0.0, True, max_queue_size=2)
    b = DynamicBatcher("model 'fake' version '1'", [runner], config, clock=FakeClock(), depth=1)
    running = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    queued = [asyncio.ensure_future(b.submit([rows(1, i)])) for i in (1, 2)]
    await settle()
    with pytest.raises(GatewayError, match="overloaded") as info:
        await b.submit([rows(1, 3)])
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    gate.set()
    await within(asyncio.gather(running, *queued))
    doubled, _ = await within(b.submit([rows(3, 10)]))  # type: ignore[misc]
    np.testing.assert_array_equal(doubled, rows(3, 10) * 2)  # 3 chunks of 1 row: accepted as one request
    await b.close()


async def test_request_larger_than_max_batch_is_split_and_reassembled() -> None:
    """A 10-row request with max_batch_size 4 runs as 4 + 4 + 2 rows and comes back whole, in order."""
    runner = FakeRunner()
    b = batcher(runner, max_batch=4, delay_ms=0)
    x = rows(10)
    doubled, total = await within(b.submit([x]))  # type: ignore[misc]
    assert batch_rows(runner) == [4, 4, 2]
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(total, x.sum(axis=1))
    await b.close()


async def test_failing_batch_fails_only_the_request_at_fault() -> None:
    """When a merged batch fails, each request is rerun alone: the bad one fails, the others succeed."""
    runner = FakeRunner()
    b = batcher(runner)
    bad = rows(1)
    bad[0, 0] = POISON
    results = await within(
        asyncio.gather(
            b.submit([rows(1, 1)]), b.submit([bad]), b.submit([rows(2, 3)]), return_exceptions=True
        )
    )
    good1, failed, good2 = results  # type: ignore[misc]
    np.testing.assert_array_equal(good1[0], rows(1, 1) * 2)
    np.testing.assert_array_equal(good2[0], rows(2, 3) * 2)
    assert isinstance(failed, GatewayError) and failed.code is ErrorCode.INTERNAL
    assert "poisoned" not in failed.message  # the client never sees the model's internals
    assert batch_rows(runner) == [4, 1, 1, 2]
    await b.close()


async def test_next_batch_forms_while_the_current_one_runs() -> None:
    """Requests arriving during a run are batched at once and queued behind it on the replica's thread."""
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    b = batcher(runner, max_batch=4, delay_ms=0)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    later = [asyncio.ensure_future(b.submit([rows(1, i)])) for i in (1, 2)]
    await settle()
    assert b.queued_rows == 0 and not first.done()  # taken into the next batch while the first runs
    gate.set()
    await within(asyncio.gather(first, *later))
    assert batch_rows(runner) == [1, 2]
    await b.close()


async def test_depth_one_holds_the_next_batch_until_the_replica_is_free() -> None:
    """With depth 1, requests arriving during a run wait in the queue, then go out together."""
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    b = batcher(runner, max_batch=4, delay_ms=0, depth=1)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    later = [asyncio.ensure_future(b.submit([rows(1, i)])) for i in (1, 2)]
    await settle()
    assert b.queued_rows == 2 and not first.done()  # the loop kept accepting while the device ran
    gate.set()
    await within(asyncio.gather(first, *later))
    assert batch_rows(runner) == [1, 2]
    await b.close()


async def test_batches_go_to_an_idle_replica() -> None:
    """With one replica busy, the next batch runs on the other: both run at the same time."""
    gate = threading.Event()
    replicas = [FakeRunner("r0", gate=gate), FakeRunner("r1", gate=gate)]
    b = batcher(*replicas, delay_ms=0)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(replicas[0])
    second = asyncio.ensure_future(b.submit([rows(1, 1)]))
    await started(replicas[1])  # r1 started while r0 is still blocked
    gate.set()
    await within(asyncio.gather(first, second))
    assert [len(r.batches) for r in replicas] == [1, 1]
    await b.close()


async def test_cancelled_request_is_not_run() -> None:
    """A request its caller abandoned is dropped from the queue instead of costing compute."""
    runner = FakeRunner()
    b = batcher(runner)
    abandoned = asyncio.ensure_future(b.submit([rows(1, 9)]))
    await settle()
    abandoned.cancel()
    await within(b.submit([rows(4)]))
    (ran,) = runner.batches
    assert 9 not in ran
    await b.close()


async def test_request_past_its_deadline_fails_without_running() -> None:
    """A request whose deadline passed while queued fails with DEADLINE_EXCEEDED and is not run."""
    clock = FakeClock()
    runner = FakeRunner()
    b = batcher(runner, clock=clock)
    late = asyncio.ensure_future(b.submit([rows(1, 9)], deadline=clock.now + 1))
    await settle()
    clock.now += 5
    await within(b.submit([rows(3)]))
    with pytest.raises(DeadlineExceeded):
        await late
    assert batch_rows(runner) == [4] and 9 not in runner.batches[0]
    await b.close()


async def test_deadline_passing_while_the_batch_waits_for_the_replica_skips_the_request() -> None:
    """A request batched behind a running batch is not run if its deadline passes before its turn."""
    clock = FakeClock()
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    b = batcher(runner, max_batch=4, delay_ms=0, clock=clock)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    late = asyncio.ensure_future(b.submit([rows(1, 9)], deadline=clock.now + 1))
    kept = asyncio.ensure_future(b.submit([rows(1, 5)]))
    await settle()
    assert b.queued_rows == 0  # both already batched, waiting behind the first on the replica's thread
    clock.now += 5
    gate.set()
    await within(asyncio.gather(first, kept))
    with pytest.raises(DeadlineExceeded):
        await late
    assert all(9 not in ran for ran in runner.batches) and any(5 in ran for ran in runner.batches)
    await b.close()


async def test_close_drains_queued_requests_then_refuses_new_ones() -> None:
    """Closing runs what is queued without waiting out the delay; later requests get ModelNotReady."""
    runner = FakeRunner()
    b = batcher(runner)
    queued = asyncio.ensure_future(b.submit([rows(1, 4)]))
    await settle()
    await within(b.close())
    np.testing.assert_array_equal((await queued)[0], rows(1, 4) * 2)
    with pytest.raises(ModelNotReady, match="unloading"):
        await b.submit([rows(1)])


async def test_zero_row_request_is_rejected() -> None:
    """A request with an empty batch dimension is invalid, not an empty batch."""
    b = batcher(FakeRunner())
    with pytest.raises(InvalidRequest, match="at least 1"):
        await b.submit([np.zeros((0, 3), np.float32)])
    await b.close()


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int, float]] = []
        self.queue_seconds: list[float] = []

    def observe_batch(
        self, *, rows: int, bucket: int, queue_seconds: Sequence[float], compute_seconds: float
    ) -> None:
        self.batches.append((rows, bucket, len(queue_seconds), compute_seconds))
        self.queue_seconds.extend(queue_seconds)


async def test_each_batch_reports_rows_bucket_and_queue_times() -> None:
    """Stats get one observation per batch: its rows, its bucket, and a queue time per request."""
    stats = Recorder()
    config = BatchingConfig(8, default_buckets(8), 0.0)
    b = DynamicBatcher("m", [FakeRunner()], config, stats=stats, clock=FakeClock())
    await within(b.submit([rows(3)]))
    ((n, bucket, queued, compute),) = stats.batches
    assert (n, bucket, queued) == (3, 4, 1) and compute >= 0
    await b.close()


async def test_queue_time_includes_waiting_for_a_busy_replica() -> None:
    """A batch formed behind a running one counts its wait for the replica as queue time, not as nothing."""
    clock = FakeClock()
    gate = threading.Event()
    runner = FakeRunner(gate=gate)
    stats = Recorder()
    config = BatchingConfig(4, default_buckets(4), 0.0)
    b = DynamicBatcher("m", [runner], config, stats=stats, clock=clock)
    first = asyncio.ensure_future(b.submit([rows(1)]))
    await started(runner)
    second = asyncio.ensure_future(b.submit([rows(1, 1)]))
    await settle()
    assert b.queued_rows == 0  # batched, waiting behind the first on the replica's thread
    clock.now += 3
    gate.set()
    await within(asyncio.gather(first, second))
    assert stats.queue_seconds == [0.0, 3.0]
    await b.close()
