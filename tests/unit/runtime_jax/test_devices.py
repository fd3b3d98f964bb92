"""Several devices and the persistent compilation cache, in subprocesses with two forced CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtimes.jax.examples import cnn_classifier
from runtimes.jax.exporter import export

ROOT = Path(__file__).resolve().parents[3]


def _probe(repo: Path, cache: Path) -> dict[str, Any]:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "tests.unit.runtime_jax._device_probe", str(repo), str(cache)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two runs of the same model against one cache directory: a cold start, then a restart."""
    repo = tmp_path_factory.mktemp("devices")
    model = cnn_classifier(0)
    export(
        model.fn, model.params, model.example_inputs, repo / "cnn" / "1",
        input_names=model.input_names, output_names=model.output_names, max_batch_size=2, platforms=None,
    )  # fmt: skip
    cache = repo / "xla-cache"
    return _probe(repo, cache), _probe(repo, cache)


def test_one_replica_per_device(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """With two devices the model loads one replica on each."""
    cold, _ = runs
    assert cold["devices"] == 2 and len(cold["replica_devices"]) == 2


def test_batches_are_spread_over_replicas(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Queued batches go to whichever replica is idle, so both devices run, with the same results."""
    cold, _ = runs
    assert all(n >= 1 for n in cold["batches_per_replica"]) and sum(cold["batches_per_replica"]) == 6
    assert cold["outputs_agree"]


def test_compilation_cache_is_populated_and_reused(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The first start writes executables to the cache directory; a restart reads them back."""
    cold, warm = runs
    assert cold["cache_files"] > 0 and cold["cache_misses"] > 0
    assert warm["cache_hits"] > 0 and warm["cache_misses"] == 0
