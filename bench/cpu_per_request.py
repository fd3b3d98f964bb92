"""CPU per request of the gateway and of the bare grpc.aio proxy, read from /proc, in one run.

`bench/bench.py` calls `measure_cpu_per_request` while both are up in front of the same runtime. A fixed
number of the same gRPC `ModelInfer` requests (`ROWS` rows each, `CONCURRENCY` closed-loop callers on one
channel per target) is sent through each in turn, and the process's CPU time (utime + stime of all its
threads, /proc/<pid>/stat, so grpc's C-core threads count too) is read before and after: core-ms per
request. Rounds alternate the order (gateway first, then proxy first, ...) so slow drift on a shared
machine hits both alike; the medians are reported, and the ratio is the median of the per-round ratios.

The figure is CPU spent, not wall time, so it moves less with the machine's load than latency does, but
it does move: on a 2-core machine shared with other work the per-round ratios spread by up to ±20%, and the
line of context says how many cores other processes kept busy meanwhile. The client runs in the
benchmark's process and is not counted. Background work of the gateway (health
probes every few seconds, the gRPC health poll) falls into the windows too, a fraction of a percent at
this request rate. Resolution: one clock tick (10 ms on Linux) per reading, so a round needs some
hundreds of requests to mean anything (`bench/bench.py` sends 1000 a round, 5 rounds).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from gateway.compare.procfs import process_cpu_s
from gateway.local_stack import ManagedProcess, free_port

__all__ = ["process_cpu_s", "start_bare_proxy"]  # process_cpu_s: the other benchmarks import it from here

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# The load the targets are judged under (issue 7 item 6): 2-row requests, 8 callers at once.
ROWS = 2
CONCURRENCY = 8
# Targets of the gateway against the bare proxy measured in the same run.
OWN_SHARE_TARGET_MS = 0.3
CPU_RATIO_TARGET = 1.25

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores of the machine have spent busy (user, nice, system, irq, softirq) since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / _CLK_TCK


def start_bare_proxy(upstream: str) -> tuple[ManagedProcess, int]:
    """`bench/bare_proxy.py` started before `upstream` (host:port) on a free port: the process, its port."""
    port = free_port()
    command = [
        sys.executable,
        str(Path(__file__).with_name("bare_proxy.py")),
        "--port",
        str(port),
        "--upstream",
        upstream,
    ]
    proxy = ManagedProcess("bare-proxy", command, ready_prefix="bare-proxy ready")
    proxy.start(echo=False)
    return proxy, port


@dataclass
class Target:
    """A server under measurement: its gRPC address and the process whose CPU is read."""

    name: str
    address: str
    pid: int
    core_ms: list[float] = field(default_factory=list)  # one figure per round
    behind_ms: list[float] = field(default_factory=list)  # the runtime's, in the same windows
    rates: list[float] = field(default_factory=list)  # requests/s, for context only
    others: list[float] = field(default_factory=list)  # cores other processes kept busy meanwhile


async def send_requests(
    call: grpc.aio.UnaryUnaryMultiCallable, body: bytes, requests: int, concurrency: int
) -> None:
    """`requests` calls, `concurrency` at a time, each caller sending its next as soon as one answers."""
    remaining = requests

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call(body, timeout=30)  # an error status raises: no failed call is counted

    await asyncio.gather(*(caller() for _ in range(concurrency)))


async def _rounds(targets: list[Target], runtime_pid: int, body: bytes, requests: int, rounds: int) -> None:
    # Every process of the measurement, this one (the client) included: the rest of the machine's busy
    # time is other processes', the noise this figure cannot remove.
    ours = [os.getpid(), runtime_pid, *(t.pid for t in targets)]
    channels = [grpc.aio.insecure_channel(t.address) for t in targets]
    try:
        calls = [c.unary_unary(INFER_METHOD) for c in channels]
        for call in calls:  # warm-up: connections, the gateway's metadata cache, the runtime's batcher
            await send_requests(call, body, max(CONCURRENCY, min(500, requests)), CONCURRENCY)
        for index in range(rounds):
            order = list(zip(targets, calls, strict=True))
            for target, call in order if index % 2 == 0 else reversed(order):
                cpu, behind = process_cpu_s(target.pid), process_cpu_s(runtime_pid)
                busy, ours_before = machine_busy_s(), sum(map(process_cpu_s, ours))
                start = time.perf_counter()
                await send_requests(call, body, requests, CONCURRENCY)
                elapsed = time.perf_counter() - start
                target.core_ms.append((process_cpu_s(target.pid) - cpu) * 1e3 / requests)
                target.behind_ms.append((process_cpu_s(runtime_pid) - behind) * 1e3 / requests)
                target.rates.append(requests / elapsed)
                others = machine_busy_s() - busy - (sum(map(process_cpu_s, ours)) - ours_before)
                target.others.append(max(others, 0.0) / elapsed)
    finally:
        for channel in channels:
            await channel.close()


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def measure_cpu_per_request(
    gateway: Target, proxy: Target, runtime_pid: int, model: str, body: bytes, requests: int, rounds: int
) -> float:
    """Print the gateway's and the bare proxy's CPU per request; returns the ratio gateway / proxy.

    `body` is a serialised `ModelInferRequest` of `ROWS` rows for `model`.
    """
    print(
        f"\n== CPU per request: {model}, {ROWS}-row ModelInfer requests over gRPC, concurrency "
        f"{CONCURRENCY}, {requests} requests a target a round, {rounds} rounds alternating (medians)"
    )
    asyncio.run(_rounds([gateway, proxy], runtime_pid, body, requests, rounds))
    ratios = [_ratio(g, p) for g, p in zip(gateway.core_ms, proxy.core_ms, strict=True)]
    ratio = float("nan") if any(r != r for r in ratios) else statistics.median(ratios)
    print(
        f"grpc  CPU per request: gateway {statistics.median(gateway.core_ms):6.3f} core-ms, bare grpc.aio "
        f"proxy {statistics.median(proxy.core_ms):6.3f} core-ms: gateway/proxy {ratio:.2f}x "
        f"(target ≤ {CPU_RATIO_TARGET}x); per round {' '.join(f'{r:.2f}' for r in ratios)}"
    )
    behind = [statistics.median(t.behind_ms) for t in (gateway, proxy)]
    rates = [statistics.median(t.rates) for t in (gateway, proxy)]
    others = max(gateway.others + proxy.others)
    print(
        f"grpc  the same windows, gateway / bare proxy: the runtime behind them {behind[0]:6.3f} / "
        f"{behind[1]:6.3f} core-ms a request; {rates[0]:.0f} / {rates[1]:.0f} requests/s; other processes "
        f"on the machine kept up to {others:.2f} of its {os.cpu_count()} cores busy"
    )
    return ratio


def print_targets(own_share_ms: float | None, cpu_ratio: float | None) -> None:
    """The two figures the gateway is judged by against the bare proxy, on one line beside their targets."""
    share = "not measured" if own_share_ms is None else f"{own_share_ms:6.3f} ms"
    ratio = "not measured" if cpu_ratio is None else f"{cpu_ratio:.2f}x"
    print(
        f"\n== the gateway against the bare grpc.aio proxy (same run): own share of the added p50 {share} "
        f"(target ≤ {OWN_SHARE_TARGET_MS} ms); CPU per request {ratio} the proxy's "
        f"(target ≤ {CPU_RATIO_TARGET}x)"
    )
