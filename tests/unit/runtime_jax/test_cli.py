"""`python -m runtimes.jax`: exporting the examples, and serving a repository until SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.local_stack import free_ports
from runtimes.jax.cli import build_parser, main
from runtimes.jax.repository import WEIGHTS_FILE, VersionPolicy, scan

ROOT = Path(__file__).resolve().parents[3]


def test_export_examples_writes_a_servable_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """export-examples writes every example model as version 1, and may be run again over them, then from
    weight files (which it writes, drawn from the same seed: the exported weights do not change)."""
    repo = tmp_path / "models"
    assert main(["export-examples", str(repo), "--max-batch-size", "2"]) == 0
    drawn = {name: dict(np.load(repo / name / "1" / WEIGHTS_FILE)) for name in ("cnn", "transformer", "mlp")}
    weights = tmp_path / "weights"
    assert main(["export-examples", str(repo), "--max-batch-size", "2", "--weights", str(weights)]) == 0
    models = scan(repo)
    assert sorted(models) == ["cnn", "mlp", "transformer"]
    assert all(list(m.versions) == [1] for m in models.values())
    assert sorted(p.name for p in weights.iterdir()) == ["cnn.npz", "mlp.npz", "transformer.npz"]
    for name, arrays in drawn.items():
        loaded = np.load(repo / name / "1" / WEIGHTS_FILE)
        assert sorted(loaded.files) == sorted(arrays)
        assert all(loaded[key].tobytes() == array.tobytes() for key, array in arrays.items()), name
    out, err = capsys.readouterr()
    assert str(repo / "cnn" / "1") in out
    progress = [line.split() for line in err.splitlines() if line.startswith("jax ")][-3:]
    assert [(words[1], words[-1]) for words in progress] == [
        (name, str(repo / name / "1")) for name in ("cnn", "transformer", "mlp")
    ]


def test_serve_flags_parse_with_defaults() -> None:
    """serve's defaults are the documented ports, a 2 s poll and latest:1; a bad policy is refused."""
    args = build_parser().parse_args(
        ["serve", "--model-repository", "repo", "--version-policy", "specific:1,2"]
    )
    assert (args.host, args.http_port, args.grpc_port, args.metrics_port) == ("127.0.0.1", 8010, 8011, 8012)
    assert args.poll_interval_s == 2.0 and args.compilation_cache is None
    assert args.version_policy == VersionPolicy("specific", versions=frozenset({1, 2}))
    assert args.max_in_flight == 0 and args.grpc_max_connection_age_s == 300.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model-repository", "repo", "--version-policy", "newest"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--model-repository", "repo", "--max-in-flight=-1"])


def test_serve_answers_oip_and_stops_cleanly_on_sigterm(example_repo: Path, tmp_path: Path) -> None:
    """serve prints its ready line once listening, answers REST and metrics, and exits 0 on SIGTERM."""
    pytest.importorskip("gateway.api.rest.app")
    http, grpc, metrics = free_ports(3)
    command = [
        sys.executable, "-m", "runtimes.jax", "serve", "--model-repository", str(example_repo),
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--compilation-cache", str(tmp_path / "cache"), "--poll-interval-s", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    stdout: queue.Queue[str] = queue.Queue()
    # Drain both pipes: a chatty log can never fill one and stall the server, and a hung server fails
    # the test at the timeout below instead of blocking a read forever.
    threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True).start()
    threading.Thread(target=lambda: [stdout.put(x) for x in proc.stdout or []], daemon=True).start()
    try:
        try:
            line = stdout.get(timeout=120)
        except queue.Empty:
            line = ""
        assert line.startswith("jax-runtime ready"), "".join(stderr)[-3000:]
        host = "127.0.0.1"
        assert line.split() == [
            "jax-runtime", "ready", f"http={host}:{http}", f"grpc={host}:{grpc}", f"metrics={host}:{metrics}"
        ]  # fmt: skip
        base = f"http://127.0.0.1:{http}"
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
        body = {
            "inputs": [{"name": "tokens", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}]
        }
        answer = httpx.post(f"{base}/v2/models/transformer/infer", json=body)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 32]
        scrape = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
        assert 'jax_runtime_requests_total{code="OK",model="transformer",version="1"} 1.0' in scrape
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(stderr)[-3000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
