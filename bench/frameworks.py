"""TF Serving and the JAX runtime side by side on the same model (same weights), direct and through the
gateway, in one run.

    make bench-frameworks          # or: .venv/bin/python bench/frameworks.py [--seconds 5] [--requests 400]

It starts the local stack (JAX runtime, TF Serving, gateway; ephemeral ports; models exported first)
and prints, for each path to the example CNN (2-row FP32 requests, pre-serialised by the client):

    tfs direct          TF Serving's Predict, to TF Serving
    tfs via gw (TFS)    the same Predict bytes to the gateway's TF Serving front, routed to TF Serving
    tfs via gw (OIP)    OIP ModelInfer to the gateway, version "tfserving": routed to TF Serving
    jax direct          OIP ModelInfer to the JAX runtime
    jax via gw          OIP ModelInfer to the gateway, routed to the JAX runtime

- p50 / p99 at concurrency 1 (`--requests` calls, paths interleaved call by call so they see the same
  machine), and the gateway's added p50 over the direct path;
- throughput at concurrency 8 (`--seconds` each, closed loop);
- CPU seconds per 1,000 requests of each server process (gateway, TF Serving, JAX runtime) during each
  throughput run, read from /proc;
- start-to-ready of each process (from its start to its ready line; models already on disk).

Which TF Serving it measures is printed: the real `tensorflow_model_server` where it is on PATH, the
project's runtime of its API (on TensorFlow) otherwise; the two differ, so say which with any figure.
Only ratios within one run mean anything: the machine is shared and noisy, and on 2 cores the client and
all three servers share them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu_per_request import process_cpu_s  # noqa: E402  # bench/, the script's own directory

from gateway.codecs.tfserving.predict import predict_request  # noqa: E402
from gateway.compare.load import infer_body  # noqa: E402
from gateway.compare.run import tfserving_server  # noqa: E402
from gateway.compare.stats import percentile  # noqa: E402
from gateway.local_stack import TFSERVING_VERSION, LocalStack, StackPorts  # noqa: E402
from gateway.types import InferenceRequest, Tensor  # noqa: E402

MODEL = "cnn"
ROWS = 2
CONCURRENCY = 8
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Path_:
    """One way to the model: the address, the gRPC method and the request bytes."""

    name: str
    address: str
    method: str
    body: bytes


def _bodies(image: np.ndarray) -> tuple[bytes, bytes, bytes]:
    """Predict for TF Serving itself, Predict with the gateway's "tfserving" label, OIP ModelInfer."""
    tensor = Tensor("image", "FP32", image.shape, image)
    direct = predict_request(InferenceRequest(MODEL, [tensor])).SerializeToString()
    labelled = predict_request(InferenceRequest(MODEL, [tensor], model_version=TFSERVING_VERSION))
    return direct, labelled.SerializeToString(), infer_body(MODEL, "", {"image": image})


def paths(ports: StackPorts, image: np.ndarray) -> list[Path_]:
    host = ports.host
    direct, labelled, oip = _bodies(image)
    tfs_oip = infer_body(MODEL, TFSERVING_VERSION, {"image": image})
    gateway = f"{host}:{ports.gateway_grpc}"
    return [
        Path_("tfs direct", f"{host}:{ports.tfserving_grpc}", PREDICT, direct),
        Path_("tfs via gw (TFS)", gateway, PREDICT, labelled),
        Path_("tfs via gw (OIP)", gateway, MODEL_INFER, tfs_oip),
        Path_("jax direct", f"{host}:{ports.runtime_grpc}", MODEL_INFER, oip),
        Path_("jax via gw", gateway, MODEL_INFER, oip),
    ]


async def latencies(routes: list[Path_], requests: int) -> dict[str, list[float]]:
    """Concurrency 1, the paths interleaved call by call; seconds per call."""
    channels = {p.address: grpc.aio.insecure_channel(p.address) for p in routes}
    calls = {p.name: channels[p.address].unary_unary(p.method) for p in routes}
    out: dict[str, list[float]] = {p.name: [] for p in routes}
    try:
        for p in routes:  # warm-up: connections, caches, the first batch bucket
            for _ in range(10):
                await calls[p.name](p.body, timeout=30)
        for _ in range(requests):
            for p in routes:
                start = time.perf_counter()
                await calls[p.name](p.body, timeout=30)
                out[p.name].append(time.perf_counter() - start)
    finally:
        for channel in channels.values():
            await channel.close()
    return out


async def throughput(route: Path_, seconds: float, pids: dict[str, int]) -> tuple[float, dict[str, float]]:
    """Requests/s at `CONCURRENCY` in a closed loop, and each process's CPU seconds per 1,000 requests."""
    done = 0
    async with grpc.aio.insecure_channel(route.address) as channel:
        call = channel.unary_unary(route.method)
        for _ in range(CONCURRENCY):
            await call(route.body, timeout=30)
        before = {name: process_cpu_s(pid) for name, pid in pids.items()}
        start = time.perf_counter()
        stop = start + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await call(route.body, timeout=30)
                done += 1

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - start
        after = {name: process_cpu_s(pid) for name, pid in pids.items()}
    per_1000 = {name: (after[name] - before[name]) / done * 1000 for name in pids}
    return done / elapsed, per_1000


def _pct(values: list[float], q: float) -> float:
    """Milliseconds at quantile `q`: the nearest rank, as `gateway compare` reports it."""
    return percentile(values, q) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput run (default 5)")
    parser.add_argument("--requests", type=int, default=400, help="latency calls per path (default 400)")
    args = parser.parse_args()
    image = np.random.default_rng(0).random((ROWS, 28, 28, 1), dtype=np.float32)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(Path(tmp), StackPorts.ephemeral(), echo=False) as stack,
    ):
        if stack.tfserving is None or stack.runtime is None or stack.gateway is None:
            raise SystemExit("TF Serving did not start (TensorFlow missing?): nothing to compare")
        which = tfserving_server(stack)
        print(f"model {MODEL}, {ROWS}-row FP32 requests; TF Serving is {which}\n")
        print("start-to-ready (s):", ", ".join(
            f"{p.name} {p.ready_after_s:.1f}" for p in (stack.runtime, stack.tfserving, stack.gateway)
            if p.ready_after_s is not None
        ))  # fmt: skip
        routes = paths(stack.ports, image)
        timings = asyncio.run(latencies(routes, args.requests))
        print(f"\nconcurrency 1, {args.requests} calls per path, interleaved")
        for p in routes:
            p50, p99 = _pct(timings[p.name], 0.5), _pct(timings[p.name], 0.99)
            print(f"  {p.name:18s} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms")
        p50s = {name: _pct(values, 0.5) for name, values in timings.items()}
        tfs50, jax50 = p50s["tfs direct"], p50s["jax direct"]
        print(f"  gateway adds p50: TF Serving {p50s['tfs via gw (TFS)'] - tfs50:+.3f} ms (TFS API), "
              f"{p50s['tfs via gw (OIP)'] - tfs50:+.3f} ms (OIP); "
              f"JAX runtime {p50s['jax via gw'] - jax50:+.3f} ms")  # fmt: skip
        print(f"  TF Serving / JAX runtime p50, direct: {tfs50 / jax50:.2f}x")
        pids = {
            "gateway": stack.gateway.proc.pid,  # type: ignore[union-attr]
            "tfserving": stack.tfserving.proc.pid,  # type: ignore[union-attr]
            "jax-runtime": stack.runtime.proc.pid,  # type: ignore[union-attr]
        }
        print(
            f"\nconcurrency {CONCURRENCY}, {args.seconds:.0f} s per path; CPU s per 1,000 requests by process"
        )
        rates: dict[str, float] = {}
        for p in routes:
            rate, cpu = asyncio.run(throughput(p, args.seconds, pids))
            rates[p.name] = rate
            shown = "  ".join(f"{name} {seconds:6.3f}" for name, seconds in cpu.items() if seconds >= 0.0005)
            print(f"  {p.name:18s} {rate:8.1f} req/s   {shown}")
        tfs = rates["tfs direct"]
        print(f"  through the gateway / direct: TF Serving {rates['tfs via gw (TFS)'] / tfs:.2f}x (TFS API), "
              f"{rates['tfs via gw (OIP)'] / tfs:.2f}x (OIP); "
              f"JAX runtime {rates['jax via gw'] / rates['jax direct']:.2f}x")  # fmt: skip
        print(
            f"  TF Serving / JAX runtime throughput, direct: {rates['tfs direct'] / rates['jax direct']:.2f}x"
        )


if __name__ == "__main__":
    main()
