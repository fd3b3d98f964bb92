"""Fakes implementing the shared batcher's interfaces (`BatchRunner`, the clock), so batching is tested
without a framework; the runtimes' own fakes build on them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np

POISON = -999.0


class FakeClock:
    """An injected clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """A `BatchRunner`: doubles its one input and sums each row; fails on a batch holding POISON.

    With `gate`, each run blocks until the test sets it, so a test controls when a batch finishes.
    """

    def __init__(self, name: str = "fake", gate: threading.Event | None = None) -> None:
        self.name = name
        self.gate = gate
        self.batches: list[np.ndarray] = []
        self.started = threading.Event()
        # The most runs in progress at one moment (several instances share one runner).
        self.peak_running = 0
        self._running = 0
        self._lock = threading.Lock()

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        with self._lock:
            self.batches.append(x.copy())
            self._running += 1
            self.peak_running = max(self.peak_running, self._running)
        self.started.set()
        try:
            return self._compute(x)
        finally:
            with self._lock:
                self._running -= 1

    def _compute(self, x: np.ndarray) -> list[np.ndarray]:
        if self.gate is not None and not self.gate.wait(10):
            raise TimeoutError("test gate never opened")
        if (x == POISON).any():
            raise ValueError("poisoned row reached the model")
        return [x * 2, x.reshape(x.shape[0], -1).sum(axis=1)]


def rows(n: int, start: float = 0.0) -> np.ndarray:
    """n distinct rows of the fake model's input: row i is [start+i, start+i, start+i]."""
    return np.repeat(np.arange(start, start + n, dtype=np.float32)[:, None], 3, axis=1)


async def started(runner: FakeRunner, seconds: float = 10.0) -> None:
    """Waits until `runner` has started a batch; fails the test (not merely returns) if it never does."""
    assert await asyncio.to_thread(runner.started.wait, seconds), (
        f"{runner.name} started no batch in {seconds} s"
    )
