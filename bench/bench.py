"""Gateway-added latency and the JAX runtime's batched throughput, measured in one run.

    make bench                      # or: .venv/bin/python bench/bench.py [--seconds 5] [--requests 2000]

It starts the real stack (JAX runtime + gateway, ephemeral ports) and prints:

1. Gateway-added latency: the same batch-1 request sent alternately to the runtime directly and through
   the gateway, over gRPC and over REST (binary tensors), N times each; p50/p99 of both and the difference.
2. Batched throughput: C concurrent closed-loop clients sending requests of R rows to the runtime for T
   seconds (the runtime merges them into batches), as unary `ModelInfer` calls and pipelined on
   `ModelStreamInfer` streams, against `jax.jit` of the same model and weights called in-process at the
   max batch size. The same load is then sent through the gateway.
3. CPU per request (`bench/cpu_per_request.py`): a fixed number of 2-row gRPC requests, 8 at a time, sent
   through the gateway and through the bare proxy in alternating rounds; the CPU time each process spent
   (from /proc) per request, and the ratio gateway / proxy. With the gateway's own share of the added p50
   (from 1.) it is printed beside its target.

Only ratios taken in this one run are meaningful: the machines are shared and noisy. Clients send
pre-serialised request bytes (no per-request client-side encoding) so the client costs as little CPU as it
can; on a 2-core machine the client, gateway and runtime still share the cores with XLA. Where nghttp2's
`h2load` is installed (Debian `nghttp2-client`; `make bench` installs it), the unary runs are repeated
with it as the load generator: native code, several times cheaper per request than a Python client, so
more of the machine is left to the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu_per_request import (  # noqa: E402  # bench/, the script's own directory
    OWN_SHARE_TARGET_MS,
    ROWS,
    Target,
    measure_cpu_per_request,
    print_targets,
    start_bare_proxy,
)

from gateway.local_stack import LocalStack, StackPorts  # noqa: E402
from gateway.proto import inference_pb2 as pb  # noqa: E402
from runtimes.jax import export  # noqa: E402
from runtimes.jax.examples import EXAMPLES, ExampleModel, cnn_classifier  # noqa: E402

# The wide CNN has 8x the channels of the example CNN: a row costs more compute than a request costs
# the server, as with most real models, where the small one measures mostly per-request overhead.
WIDE = 8

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
# Closed-loop clients share this many `ModelStreamInfer` streams in the streaming runs.
STREAMS = 8


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _grpc_request(model: str, name: str, array: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
    request.raw_input_contents.append(array.tobytes())
    return request.SerializeToString()


def _rest_request(name: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    headers = {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + array.tobytes(), headers


def measure_latency(
    ports: StackPorts, proxy_port: int, model: str, name: str, sample: np.ndarray, n: int
) -> float | None:
    """Alternate the targets call by call so all see the same machine state.

    Over gRPC a third target, `bench/bare_proxy.py` in front of the same runtime, gives the floor: what
    one Python gRPC hop costs with no work in it. The gateway's added latency less the proxy's is the
    gateway's own share; it is returned (p50, ms).
    """
    own_share_ms: float | None = None
    print(f"\n== gateway-added latency: {model}, batch 1, {n} requests per target, sequential")
    grpc_body = _grpc_request(model, name, sample)
    rest_body, rest_headers = _rest_request(name, sample)
    channels = {
        "direct": grpc.insecure_channel(f"{ports.host}:{ports.runtime_grpc}"),
        "gateway": grpc.insecure_channel(f"{ports.host}:{ports.gateway_grpc}"),
        "bare proxy": grpc.insecure_channel(f"{ports.host}:{proxy_port}"),
    }
    grpc_calls = {k: c.unary_unary(INFER_METHOD) for k, c in channels.items()}
    rest_urls = {
        "direct": f"http://{ports.host}:{ports.runtime_http}/v2/models/{model}/infer",
        "gateway": f"http://{ports.host}:{ports.gateway_rest}/v2/models/{model}/infer",
    }
    with httpx.Client(timeout=30) as http:

        def rest_call(target: str) -> None:
            response = http.post(rest_urls[target], content=rest_body, headers=rest_headers)
            response.raise_for_status()

        transports: dict[str, tuple[Callable[[str], object], tuple[str, ...]]] = {
            "grpc": (lambda target: grpc_calls[target](grpc_body, timeout=30), tuple(grpc_calls)),
            "rest": (rest_call, tuple(rest_urls)),
        }
        for transport, (call, targets) in transports.items():
            samples: dict[str, list[float]] = {target: [] for target in targets}
            for _ in range(min(200, n)):  # warm-up: connections, caches, the batcher's threads
                for target in targets:
                    call(target)
            for _ in range(n):
                for target in targets:
                    start = time.perf_counter()
                    call(target)
                    samples[target].append(time.perf_counter() - start)
            ms50 = {t: _percentile(v, 0.5) * 1e3 for t, v in samples.items()}
            ms99 = {t: _percentile(v, 0.99) * 1e3 for t, v in samples.items()}
            print(
                f"{transport:5s} direct p50 {ms50['direct']:7.3f} ms p99 {ms99['direct']:7.3f} ms | "
                f"gateway p50 {ms50['gateway']:7.3f} ms p99 {ms99['gateway']:7.3f} ms | "
                f"added p50 {ms50['gateway'] - ms50['direct']:6.3f} ms "
                f"p99 {ms99['gateway'] - ms99['direct']:6.3f} ms"
            )
            if "bare proxy" in samples:
                own_share_ms = ms50["gateway"] - ms50["bare proxy"]
                print(
                    f"{transport:5s} bare grpc.aio proxy p50 {ms50['bare proxy']:7.3f} ms: a Python gRPC hop "
                    f"adds p50 {ms50['bare proxy'] - ms50['direct']:6.3f} ms; the gateway's own share p50 "
                    f"{own_share_ms:6.3f} ms (target ≤ {OWN_SHARE_TARGET_MS} ms)"
                )
    for channel in channels.values():
        channel.close()
    return own_share_ms


async def _closed_loop(target: str, body: bytes, concurrency: int, seconds: float) -> float:
    """`concurrency` clients each sending the next request as soon as the last answered; requests per
    second (warm-up excluded)."""
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(INFER_METHOD)
        for _ in range(concurrency):  # warm-up
            await call(body, timeout=30)
        start = time.perf_counter()
        stop = start + seconds

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await call(body, timeout=30)
                done += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def _closed_loop_streaming(target: str, body: bytes, concurrency: int, seconds: float) -> float:
    """The same closed loop over `STREAMS` `ModelStreamInfer` streams: `concurrency` requests in flight in
    all, each answer followed by the next request on its stream; requests per second."""
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        open_stream = channel.stream_stream(STREAM_METHOD)
        start = time.perf_counter()
        stop = start + seconds

        async def stream(window: int) -> None:
            nonlocal done
            call = open_stream(timeout=seconds + 30)
            for _ in range(window):
                await call.write(body)
            in_flight = window
            while in_flight:
                answer = await call.read()
                assert isinstance(answer, bytes)
                # A failed request's answer starts with field 1, `error_message` (tag 0x0a): cheaper to
                # check than to parse every answer.
                if answer[:1] == b"\n":
                    raise RuntimeError(pb.ModelStreamInferResponse.FromString(answer).error_message)
                in_flight -= 1
                if time.perf_counter() < stop:
                    done += 1
                    await call.write(body)
                    in_flight += 1
            await call.done_writing()

        windows = [concurrency // STREAMS + (i < concurrency % STREAMS) for i in range(STREAMS)]
        await asyncio.gather(*(stream(w) for w in windows if w))
    return done / (time.perf_counter() - start)


_H2LOAD_DONE = re.compile(r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", re.M)
# h2load's rate over the measured duration alone (its "finished in" time includes the warm-up).
_H2LOAD_RATE = re.compile(r"^finished in [0-9.]+m?s, ([0-9.]+) req/s", re.M)


def _h2load_unary(target: str, body: bytes, concurrency: int, seconds: float) -> float:
    """Unary `ModelInfer` calls from nghttp2's h2load: one HTTP/2 connection (as one gRPC channel)
    carrying `concurrency` calls at once, each gRPC-framed request body sent as is.

    h2load sees only HTTP statuses, and gRPC sends its errors as trailers of an HTTP 200: the caller
    checks the server's own error counters instead (`_error_count`). Returns h2load's own rate.
    """
    warm_up = min(1.0, seconds)
    with tempfile.NamedTemporaryFile(suffix=".grpc") as framed:
        framed.write(b"\0" + len(body).to_bytes(4, "big") + body)  # uncompressed flag, length, message
        framed.flush()
        done = subprocess.run(
            ["h2load", "--duration", f"{seconds * 1000:.0f}ms", "--warm-up-time", f"{warm_up * 1000:.0f}ms",
             "--clients", "1",
             "--threads", "1", "--max-concurrent-streams", str(concurrency),
             "--header", "content-type: application/grpc", "--header", "te: trailers",
             "--data", framed.name, f"http://{target}{INFER_METHOD}"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )  # fmt: skip
    found, rate = _H2LOAD_DONE.search(done.stdout), _H2LOAD_RATE.search(done.stdout)
    if found is None or rate is None:
        raise RuntimeError(f"h2load printed no request counts:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    finished, succeeded = int(found[1]), int(found[2])
    if succeeded != finished:
        raise RuntimeError(f"h2load: {finished - succeeded} of {finished} requests failed:\n{done.stdout}")
    return float(rate[1])


# (target, gRPC request body, concurrency, seconds) -> requests per second.
LoadGenerator = Callable[[str, bytes, int, float], float]


def _asyncio_client(
    client: Callable[[str, bytes, int, float], Coroutine[None, None, float]],
) -> LoadGenerator:
    return lambda target, body, concurrency, seconds: asyncio.run(client(target, body, concurrency, seconds))


CLIENTS: dict[str, LoadGenerator] = {
    "unary": _asyncio_client(_closed_loop),
    "stream": _asyncio_client(_closed_loop_streaming),
    "h2load": _h2load_unary,
}


def _model_samples(url: str, model: str) -> Iterator[Sample]:
    """The samples labelled with `model` in a server's `/metrics`."""
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        yield from (s for s in family.samples if s.labels.get("model") == model)


def _error_count(url: str, counter: str, model: str) -> float:
    """Requests for `model` answered with an error code (`counter` is the requests counter's name,
    `_total` included). CANCELLED is the client's doing, not an error: h2load resets the calls still in
    flight when its time is up."""
    return sum(
        s.value
        for s in _model_samples(url, model)
        if s.name == counter and s.labels.get("code") not in ("OK", "CANCELLED")
    )


def _histogram(url: str, name: str, model: str) -> tuple[float, float]:
    """Sum and count of a histogram over all the model's label sets."""
    total = count = 0.0
    for s in _model_samples(url, model):
        if s.name == f"{name}_sum":
            total += s.value
        elif s.name == f"{name}_count":
            count += s.value
    return total, count


def _rate(load: LoadGenerator, address: str, metrics_url: str, counter: str, model: str, body: bytes,
          args: argparse.Namespace) -> float:  # fmt: skip
    """Requests per second of one load run, refused if the server counted any error meanwhile."""
    errors = _error_count(metrics_url, counter, model)
    rate = load(address, body, args.concurrency, args.seconds)
    if _error_count(metrics_url, counter, model) != errors:
        raise RuntimeError(f"{address} answered errors during the run: see its log")
    return rate


def _example(model: str) -> ExampleModel:
    return cnn_classifier(0, width=WIDE, name=model) if model == "cnn_wide" else EXAMPLES[model](0)


def in_process_rows_per_s(model: str, batch: int, seconds: float, callers: int = 1) -> float:
    """`jax.jit` of the example model's function and weights, called in this process at `batch` rows by
    `callers` threads at once (the reference is one caller, as a user's loop would call it)."""
    import jax

    example = _example(model)
    fn = jax.jit(example.fn)
    params = jax.device_put(example.params)
    x = np.repeat(example.example_inputs[0][:1], batch, axis=0)
    x_dev = jax.device_put(x)
    for _ in range(10):
        np.asarray(fn(params, x_dev))
    runs = [0] * callers
    stop = time.perf_counter() + seconds

    def caller(index: int) -> None:
        while time.perf_counter() < stop:
            # Host->device copy and device->host result, as a server pays them.
            np.asarray(fn(params, jax.device_put(x)))
            runs[index] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))
    return sum(runs) * batch / (time.perf_counter() - start)


def measure_throughput(
    ports: StackPorts, model: str, name: str, row: np.ndarray, args: argparse.Namespace
) -> None:
    """Closed-loop clients against the runtime (and the gateway), then `jax.jit` in-process, one run.

    The in-process figure at the max batch is taken before and after the served runs, and the higher of
    the two is the reference: a noisy moment cannot flatter the ratio.
    """
    metrics_url = f"http://{ports.host}:{ports.runtime_metrics}/metrics"
    gateway_metrics_url = f"http://{ports.host}:{ports.gateway_metrics}/metrics"
    before_runs = in_process_rows_per_s(model, args.max_batch_size, args.seconds)
    print(
        f"\n== batched throughput: {model}, {args.concurrency} concurrent clients, {args.seconds:.0f} s a run"
    )
    results = []
    for rows in args.request_rows:
        body = _grpc_request(model, name, np.repeat(row, rows, axis=0))
        for mode in args.clients:
            load = CLIENTS[mode]
            before = _histogram(metrics_url, "jax_runtime_batch_size", model)
            served = rows * _rate(
                load, f"{ports.host}:{ports.runtime_grpc}", metrics_url, "jax_runtime_requests_total",
                model, body, args,
            )  # fmt: skip
            after = _histogram(metrics_url, "jax_runtime_batch_size", model)
            batches = after[1] - before[1]
            mean_batch = (after[0] - before[0]) / batches if batches else float("nan")
            via_gateway = rows * _rate(
                load, f"{ports.host}:{ports.gateway_grpc}", gateway_metrics_url, "gateway_requests_total",
                model, body, args,
            )  # fmt: skip
            results.append((rows, mode, served, mean_batch, via_gateway))
    after_runs = in_process_rows_per_s(model, args.max_batch_size, args.seconds)
    two_callers = in_process_rows_per_s(model, args.max_batch_size, args.seconds, callers=2)
    at_max = max(before_runs, after_runs)
    print(
        f"jax.jit in-process, batch {args.max_batch_size:<3d}: {at_max:9.1f} rows/s "
        f"(before the runs {before_runs:.0f}, after {after_runs:.0f}; for comparison only, two "
        f"threads calling it at once: {two_callers:.0f})"
    )
    for rows, mode, served, mean_batch, via_gateway in results:
        print(
            f"requests of {rows:>2d} rows, {mode:6s}: runtime {served:9.1f} rows/s "
            f"(mean batch {mean_batch:4.1f}) = {served / at_max:.2f}x in-process at batch "
            f"{args.max_batch_size}; through the gateway {via_gateway:9.1f} rows/s "
            f"({via_gateway / served:.2f}x direct)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="latency samples per target and transport")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument(
        "--instances-per-device", type=int, default=2, help="batches the runtime runs at once per device"
    )
    parser.add_argument(
        "--request-rows", type=int, nargs="+", default=[1, 8], help="rows per request in the throughput runs"
    )
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=sorted(CLIENTS),
        default=["unary", "stream", "h2load"] if shutil.which("h2load") else ["unary", "stream"],
        help="load generators: unary ModelInfer calls and requests pipelined on ModelStreamInfer streams "
        "from Python (grpc.aio), unary calls from h2load (the default where it is installed)",
    )
    parser.add_argument(
        "--cpu-requests",
        type=int,
        default=1000,
        help="requests per target and round in the CPU-per-request measurement (0: skip it)",
    )
    parser.add_argument(
        "--cpu-rounds", type=int, default=5, help="alternating rounds of it (the median is reported)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep models and XLA cache here")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    models = workdir / "models"
    if not models.is_dir():
        subprocess.run(
            [sys.executable, "-m", "runtimes.jax", "export-examples", str(models),
             "--max-batch-size", str(args.max_batch_size),
             "--instances-per-device", str(args.instances_per_device)],
            check=True,
        )  # fmt: skip
    if not (models / "cnn_wide").is_dir():
        wide = _example("cnn_wide")
        export(
            wide.fn,
            wide.params,
            wide.example_inputs,
            models / "cnn_wide" / "1",
            input_names=wide.input_names,
            output_names=wide.output_names,
            max_batch_size=args.max_batch_size,
            instances_per_device=args.instances_per_device,
        )
    image = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    stack = LocalStack(
        workdir=workdir,
        ports=StackPorts.ephemeral(),
        echo=False,
        models=("cnn", "transformer", "cnn_wide"),
        with_tfserving=False,  # bench/frameworks.py and `gateway compare` compare them; here they
        with_torchserve=False,  # would only take CPU
    )
    with stack:
        print(f"stack up (workdir {workdir}); python {sys.version.split()[0]}")
        proxy, proxy_port = start_bare_proxy(f"{stack.ports.host}:{stack.ports.runtime_grpc}")
        cpu_ratio: float | None = None
        try:
            own_share_ms = measure_latency(stack.ports, proxy_port, "cnn", "image", image, args.requests)
            if args.cpu_requests > 0:
                assert stack.gateway and stack.gateway.proc and stack.runtime and stack.runtime.proc
                assert proxy.proc is not None
                host = stack.ports.host
                cpu_ratio = measure_cpu_per_request(
                    Target("gateway", f"{host}:{stack.ports.gateway_grpc}", stack.gateway.proc.pid),
                    Target("bare proxy", f"{host}:{proxy_port}", proxy.proc.pid),
                    stack.runtime.proc.pid,
                    "cnn",
                    _grpc_request("cnn", "image", np.repeat(image, ROWS, axis=0)),
                    args.cpu_requests,
                    args.cpu_rounds,
                )
        finally:
            proxy.stop()
        for model in ("cnn", "cnn_wide"):
            measure_throughput(stack.ports, model, "image", image, args)
    print_targets(own_share_ms, cpu_ratio)


if __name__ == "__main__":
    main()
