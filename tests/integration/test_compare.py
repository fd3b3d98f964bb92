"""`gateway compare`'s measurement on the session stack: all three frameworks measured through the
gateway, restarted for their start-to-ready, and the stack left serving (tiny settings; no speed is
asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.compare.report import write_all
from gateway.compare.run import FRAMEWORKS, CompareOptions, compare
from gateway.local_stack import LocalStack

pytestmark = pytest.mark.integration


def test_compare_measures_every_framework_and_writes_the_report(stack: LocalStack, tmp_path: Path) -> None:
    """One round: each framework has positive latency, throughput, CPU and RSS figures and a start-to-ready
    from its restart (the JAX runtime's with a cold and a warm cache); the files are written."""
    if stack.tfserving is None or stack.torchserve is None:
        pytest.skip("the stack runs without TF Serving or TorchServe on this machine")
    options = CompareOptions(model="mlp", rounds=1, seconds=1.0, requests=20, warmup_s=0.2)
    lines: list[str] = []
    result = compare(stack, options, log=lines.append)
    paths = write_all(result, tmp_path / "report")
    figures = json.loads(paths[0].read_text())
    assert set(figures["medians"]) == set(FRAMEWORKS)
    for framework in FRAMEWORKS:
        medians = figures["medians"][framework]
        for key in ("p50_ms", "p99_ms", "throughput_rps", "backend_cpu_s_per_1k", "rss_mib", "start_s"):
            assert medians[key]["median"] > 0, (framework, key, medians)
        assert medians["p99_ms"]["median"] >= medians["p50_ms"]["median"]
        assert figures["rounds"][0]["frameworks"][framework]["throughput_requests"] > 0
    assert figures["medians"]["jax"]["start_warm_cache_s"]["median"] > 0
    # TorchServe's tree is the launcher, the JVM and one worker per model; the others one process each.
    assert figures["rounds"][0]["frameworks"]["torchserve"]["processes"] >= 3
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert len(lines) == 2  # one measurement round, one start-up round
