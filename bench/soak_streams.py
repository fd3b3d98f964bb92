"""Soak the ModelStreamInfer path: many short streams, bad messages, cancelled streams; RSS sampled.

    .venv/bin/python bench/soak_streams.py [--seconds 60] [--workers 16]

Starts the real stack (as `make up` does, ephemeral ports) and runs `--workers` loops that each open a
stream to the gateway or to the runtime (at random), write 1 to 40 messages (3 in 5 valid, the others an
unknown input name or an unknown model), then either half-close and read every answer, checking there is
exactly one per message, or cancel the stream (1 in 5). It prints the answers counted, the RSS of both
processes every 5 s, and any ERROR or traceback lines in their logs. A leak shows as RSS that keeps
growing; a lost or duplicated answer, or an error in a log, fails the run (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.local_stack import LocalStack, StackPorts  # noqa: E402
from gateway.proto import inference_pb2 as pb  # noqa: E402

STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"


def _request(model: str, input_name: str, rows: int) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="FP32", shape=[rows, 28, 28, 1])
    request.raw_input_contents.append(np.zeros((rows, 28, 28, 1), np.float32).tobytes())
    return request.SerializeToString()


GOOD = _request("cnn", "image", 2)
BODIES = [GOOD, GOOD, GOOD, _request("cnn", "no_such_input", 1), _request("no_such_model", "image", 1)]


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


async def _one_stream(target: str, counts: dict[str, int]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_stream(STREAM_METHOD)(timeout=60)
        sent = random.randint(1, 40)
        for _ in range(sent):
            await call.write(random.choice(BODIES))
        if random.random() < 0.2:
            call.cancel()
            counts["cancelled streams"] += 1
            return
        await call.done_writing()
        answered = 0
        async for answer in call:
            assert isinstance(answer, bytes)
            answered += 1
            # A failed request's answer starts with field 1, `error_message` (tag 0x0a).
            counts["error answers" if answer[:1] == b"\n" else "ok answers"] += 1
        if answered != sent:
            raise SystemExit(f"a stream of {sent} requests got {answered} answers")


async def soak(stack: LocalStack, seconds: float, workers: int) -> None:
    assert stack.gateway is not None and stack.gateway.proc is not None
    assert stack.runtime is not None and stack.runtime.proc is not None
    ports = stack.ports
    pids = {"gateway": stack.gateway.proc.pid, "runtime": stack.runtime.proc.pid}
    targets = [f"{ports.host}:{ports.gateway_grpc}", f"{ports.host}:{ports.runtime_grpc}"]
    counts = {"ok answers": 0, "error answers": 0, "cancelled streams": 0}
    stop = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < stop:
            await _one_stream(random.choice(targets), counts)

    async def sample() -> None:
        while True:
            print("RSS MiB:", ", ".join(f"{name} {_rss_mib(pid)}" for name, pid in pids.items()), flush=True)
            if time.monotonic() >= stop:
                return
            await asyncio.sleep(min(5.0, max(0.0, stop - time.monotonic())))

    await asyncio.gather(sample(), *(worker() for _ in range(workers)))
    print(", ".join(f"{name}: {n}" for name, n in counts.items()))
    output = stack.gateway.output + stack.runtime.output
    errors = [line for line in output if " ERROR " in line or "Traceback" in line]
    print(f"ERROR or traceback lines in the logs: {len(errors)}")
    for line in errors[:10]:
        print("  ", line)
    if errors:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None, help="keep models and XLA cache here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    with LocalStack(workdir=workdir, ports=StackPorts.ephemeral(), echo=False) as stack:
        asyncio.run(soak(stack, args.seconds, args.workers))


if __name__ == "__main__":
    main()
