"""The comparison's table and files from a result dict (no stack needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.compare.report import markdown_table, text_table, write_all
from gateway.compare.run import medians


def _result() -> dict[str, Any]:
    def figures(scale: float) -> dict[str, float]:
        return {
            "p50_ms": 2.0 * scale,
            "p99_ms": 5.0 * scale,
            "throughput_rps": 1000.0 / scale,
            "throughput_requests": 1000,
            "backend_cpu_s_per_1k": 0.5 * scale,
            "gateway_cpu_s_per_1k": 0.4,
            "rss_mib": 300.0 * scale,
            "processes": 1,
        }

    rounds = [
        {
            "round": i,
            "order": [],
            "frameworks": {"jax": figures(1 + i), "tfserving": figures(2), "torchserve": figures(4)},
        }
        for i in range(3)
    ]
    starts = [{"jax": 6.0 + i, "jax_warm_cache": 2.0, "tfserving": 4.0, "torchserve": 8.0} for i in range(3)]
    options = {
        "model": "mlp",
        "rounds": 3,
        "seconds": 1.0,
        "requests": 10,
        "concurrency": 8,
        "rows": 2,
        "restarts": True,
        "warmup_s": 0.5,
    }
    return {
        "options": options,
        "tfserving_server": "the project's TF Serving runtime",
        "tfserving_real": False,
        "stack_start_s": {"jax": 6.0, "tfserving": 4.0, "torchserve": 2.0, "gateway": 1.0},
        "rounds": rounds,
        "start_rounds_s": starts,
        "medians": medians(rounds, starts),
    }


def test_medians_take_every_round_and_leave_counts_out() -> None:
    """Medians per framework over rounds, with min and max; request and process counts are not figures;
    the warm-cache start is the JAX runtime's only."""
    m = _result()["medians"]
    assert m["jax"]["p50_ms"] == {"median": 4.0, "min": 2.0, "max": 6.0, "n": 3}
    assert m["jax"]["start_s"] == {"median": 7.0, "min": 6.0, "max": 8.0, "n": 3}
    assert "start_warm_cache_s" in m["jax"] and "start_warm_cache_s" not in m["torchserve"]
    assert "throughput_requests" not in m["tfserving"] and "processes" not in m["tfserving"]


def test_table_shows_median_and_spread_per_framework() -> None:
    """Each cell is "median (min-max)", or the median alone when the rounds agree, or n/a."""
    text = text_table(_result())
    assert "JAX runtime" in text.splitlines()[0] and "TorchServe" in text.splitlines()[0]
    line = next(row for row in text.splitlines() if row.startswith("p50"))
    assert "4.00 (2.00-6.00)" in line
    warm = next(row for row in markdown_table(_result()).splitlines() if "warm" in row)
    assert warm == "| start-to-ready, warm XLA cache (s) | 2.0 | n/a | n/a |"


def test_write_all_writes_json_markdown_and_a_png(tmp_path: Path) -> None:
    """figures.json round-trips the result, report.md holds the table and links the chart, chart.png is a
    PNG."""
    result = _result()
    paths = write_all(result, tmp_path / "out")
    assert [p.name for p in paths] == ["figures.json", "report.md", "chart.png"]
    assert json.loads(paths[0].read_text()) == result
    report = paths[1].read_text()
    assert markdown_table(result) in report and "](chart.png)" in report
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
