"""Run in a subprocess by test_devices.py: jax's device count and cache directory are fixed per process.

Usage: python -m tests.unit.runtime_jax._device_probe REPO CACHE_DIR. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class Counting:
    """Counts the batches a replica runs (a BatchRunner wrapping a real one)."""

    def __init__(self, replica: object) -> None:
        self.replica = replica
        self.name = str(getattr(replica, "name", ""))
        self.batches = 0
        self._lock = threading.Lock()

    def run(self, inputs: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        with self._lock:
            self.batches += 1
        return self.replica.run(inputs)  # type: ignore[attr-defined, no-any-return]


async def _serve(runners: list[Counting], model: object, x: np.ndarray) -> list[np.ndarray]:
    from runtimes.common.batching import DynamicBatcher

    batcher = DynamicBatcher("probe", runners, model.config.batching)  # type: ignore[attr-defined]
    # Six full batches queued at once: with two replicas idle, the second batch cannot wait for the first.
    results = await asyncio.gather(*(batcher.submit([x]) for _ in range(6)))
    await batcher.close()
    return [r[0] for r in results]


def main(repo: Path, cache: Path) -> None:
    from runtimes.jax.compiled import enable_compilation_cache

    enable_compilation_cache(cache)
    import jax

    events: dict[str, int] = {}
    jax.monitoring.register_event_listener(
        lambda name, **_: events.__setitem__(name, events.get(name, 0) + 1)
    )

    from runtimes.jax.compiled import CompiledModel

    model = CompiledModel.load(repo / "cnn" / "1")
    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    runners = [Counting(r) for r in model.replicas]
    outputs = asyncio.run(_serve(runners, model, x))
    (reference,) = model.replicas[0].run([x])
    report = {
        "devices": len(jax.devices()),
        "replica_devices": sorted({str(r.device) for r in model.replicas}),
        "batches_per_replica": [r.batches for r in runners],
        "outputs_agree": all(bool(np.allclose(o, reference, rtol=1e-5)) for o in outputs),
        "cache_files": sum(1 for p in cache.rglob("*") if p.is_file()),
        "cache_hits": events.get("/jax/compilation_cache/cache_hits", 0),
        "cache_misses": events.get("/jax/compilation_cache/cache_misses", 0),
    }
    model.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
