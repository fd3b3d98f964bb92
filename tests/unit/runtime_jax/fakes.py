"""Fakes implementing the runtime's real interfaces, so reloading and serving are tested without XLA
(the batcher's own fakes are in `tests.unit.runtime_common.fakes`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from runtimes.common.batching import BatchingConfig, default_buckets
from runtimes.jax.config import ModelVersionConfig, TensorSpec
from runtimes.jax.repository import VERSION_FILES, VersionDir
from tests.unit.runtime_common.fakes import FakeRunner


def fake_config(max_batch_size: int = 4, delay_ms: float = 1.0, instances: int = 1) -> ModelVersionConfig:
    """The signature FakeRunner computes: "x" FP32 [-1, 3] -> "doubled" [-1, 3], "total" [-1]."""
    return ModelVersionConfig(
        inputs=(TensorSpec("x", "FP32", (-1, 3)),),
        outputs=(TensorSpec("doubled", "FP32", (-1, 3)), TensorSpec("total", "FP32", (-1,))),
        batching=BatchingConfig(max_batch_size, default_buckets(max_batch_size), delay_ms),
        instances_per_device=instances,
    )


class FakeLoaded:
    """A `manager.LoadedModel` made of FakeRunners."""

    def __init__(self, config: ModelVersionConfig | None = None, replicas: int = 1) -> None:
        self.config = config or fake_config()
        self.replicas = [FakeRunner(f"fake{i}") for i in range(replicas)]
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """A `manager.Loader` that records loads, can fail chosen versions, and can hold a load open."""

    def __init__(
        self, config: ModelVersionConfig | None = None, runner_gate: threading.Event | None = None
    ) -> None:
        self.config = config
        self.runner_gate = runner_gate  # given to every runner: a test holds batches open
        self.loads: list[tuple[str, int]] = []
        self.loaded: dict[tuple[str, int], list[FakeLoaded]] = {}
        self.fail: set[tuple[str, int]] = set()
        self.gates: dict[tuple[str, int], threading.Event] = {}

    def __call__(self, source: VersionDir) -> FakeLoaded:
        key = (source.model, source.version)
        self.loads.append(key)
        gate = self.gates.get(key)
        if gate is not None and not gate.wait(10):
            raise TimeoutError("test gate never opened")
        if key in self.fail:
            raise ValueError(f"cannot load {key}")
        loaded = FakeLoaded(self.config)
        for runner in loaded.replicas:
            runner.gate = self.runner_gate
        self.loaded.setdefault(key, []).append(loaded)
        return loaded


def make_version(root: Path, model: str, version: int | str) -> Path:
    """A version directory with the three files present (their contents matter only to real loaders)."""
    path = root / model / str(version)
    path.mkdir(parents=True)
    for name in VERSION_FILES:
        (path / name).write_text("{}")
    return path


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Waits until `condition()` holds; fails the test after `seconds` rather than hanging."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - the conditions are plain state, with no event to await
            await asyncio.sleep(0.01)
