"""`gateway compare`: the same model on the JAX runtime, TF Serving and TorchServe, through the gateway.

`compare(stack, options)` measures a running `LocalStack` (the CLI starts one; a test passes its own):

- `rounds` measurement rounds; in each, the frameworks in a rotated order (round r starts with the r-th):
  p50/p99 at concurrency 1 (the three interleaved call by call), then for each framework a closed-loop
  run at `concurrency` for `seconds`, reading the CPU time of the backend's process tree and of the
  gateway's before and after (CPU seconds per 1,000 requests), and the tree's RSS after the round;
- then, with `restarts`, `rounds` start-up rounds: each backend process is stopped and started again
  with the stack's own command on the same ports and model files, and its start-to-ready recorded
  (process start to its ready line; TorchServe's: to a healthy /ping). The JAX runtime starts twice:
  with an empty compilation cache directory (cold), then again on the cache that start filled (warm).
  Restarting one process is the cheapest correct way: a second stack would export and load everything
  again, and the gateway reconnects to a restarted backend by itself. Every framework must answer
  through the gateway again before a round ends, so the stack is left serving.

Figures are medians over rounds with the lowest and highest round (`stats.spread`).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np

from gateway.compare.load import Target, closed_loop, infer_body, latencies, wait_answering
from gateway.compare.procfs import tree_usage
from gateway.compare.report import FRAMEWORKS
from gateway.compare.stats import percentile, spread
from gateway.local_stack import TFSERVING_VERSION, TORCHSERVE_VERSION, LocalStack, ManagedProcess

VERSIONS: Final = {"jax": "", "tfserving": TFSERVING_VERSION, "torchserve": TORCHSERVE_VERSION}
ANSWER_TIMEOUT_S: Final = 120.0
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class CompareOptions:
    model: str = "mlp"
    rounds: int = 3
    seconds: float = 5.0  # each closed-loop throughput run
    requests: int = 300  # calls per framework in each latency run
    concurrency: int = 8
    rows: int = 2  # rows per request
    restarts: bool = True  # the start-up rounds (restart every backend process `rounds` times)
    warmup_s: float = 0.5  # closed loop before each throughput run, not counted


def _roots(stack: LocalStack) -> dict[str, int]:
    """The pid at the root of each backend's processes, and the gateway's."""
    procs = {name: process.proc if process else None for name, process in stack.processes.items()}
    missing = [name for name, proc in procs.items() if proc is None]
    if missing:
        raise RuntimeError(f"the stack runs without {', '.join(missing)}: nothing to compare")
    return {name: proc.pid for name, proc in procs.items() if proc is not None}


def targets(model: str, rows: int, seed: int = 0) -> dict[str, Target]:
    """The request for each framework: the example model's inputs (`rows` rows), same bytes but the
    version."""
    from runtimes.examples import SPECS, sample_inputs  # numpy only

    if model not in SPECS:
        raise ValueError(f"unknown model {model!r}; the example models are {', '.join(SPECS)}")
    spec = SPECS[model]
    arrays = sample_inputs(spec, np.random.default_rng(seed), rows)
    inputs = {t.name: a for t, a in zip(spec.inputs, arrays, strict=True)}
    return {f: Target(f, infer_body(model, VERSIONS[f], inputs)) for f in FRAMEWORKS}


def _order(round_index: int) -> list[str]:
    shift = round_index % len(FRAMEWORKS)
    return [*FRAMEWORKS[shift:], *FRAMEWORKS[:shift]]


async def _measure_round(
    roots: dict[str, int], channel: grpc.aio.Channel, reqs: dict[str, Target], o: CompareOptions, index: int
) -> dict[str, Any]:
    order = _order(index)
    timings = await latencies(channel, [reqs[f] for f in order], o.requests)
    figures: dict[str, dict[str, float | int]] = {}
    for framework in order:
        target = reqs[framework]
        await closed_loop(channel, target, o.warmup_s, o.concurrency)
        backend, gateway = tree_usage(roots[framework]), tree_usage(roots["gateway"])
        start = time.perf_counter()
        done = await closed_loop(channel, target, o.seconds, o.concurrency)
        elapsed = time.perf_counter() - start
        backend_after, gateway_after = tree_usage(roots[framework]), tree_usage(roots["gateway"])
        seconds = timings[framework]
        figures[framework] = {
            "p50_ms": percentile(seconds, 0.5) * 1e3,
            "p99_ms": percentile(seconds, 0.99) * 1e3,
            "throughput_rps": done / elapsed,
            "throughput_requests": done,
            "backend_cpu_s_per_1k": (backend_after.cpu_s - backend.cpu_s) / done * 1000,
            "gateway_cpu_s_per_1k": (gateway_after.cpu_s - gateway.cpu_s) / done * 1000,
            "rss_mib": backend_after.rss_bytes / MIB,
            "processes": backend_after.processes,
        }
    return {"round": index, "order": order, "frameworks": figures}


def _restarted(old: ManagedProcess | None, echo: bool, argv: list[str] | None = None) -> ManagedProcess:
    """`old` stopped and a new process of the same command (or `argv`) started and ready."""
    assert old is not None
    old.stop()
    new = ManagedProcess(old.name, list(old.argv) if argv is None else argv, ready_prefix=old.ready_prefix)
    new.start(echo=echo)
    return new


def _restart_jax(stack: LocalStack, cache: Path | None) -> float:
    """Stop the JAX runtime and start it again, on `cache` as its compilation cache if given."""
    assert stack.runtime is not None
    argv = list(stack.runtime.argv)
    if cache is not None:
        argv[argv.index("--compilation-cache") + 1] = str(cache)
    stack.runtime = _restarted(stack.runtime, stack.echo, argv)
    assert stack.runtime.ready_after_s is not None
    return stack.runtime.ready_after_s


def _restart_tfserving(stack: LocalStack) -> float:
    stack.tfserving = _restarted(stack.tfserving, stack.echo)
    assert stack.tfserving.ready_after_s is not None
    return stack.tfserving.ready_after_s


def _restart_torchserve(stack: LocalStack) -> float:
    """Stop TorchServe and start it again; seconds from its start until every model has a READY worker
    (`TorchServeProcess.start` waits for that, not only for `/ping`). TorchServe writes new keys at every
    start; the gateway reads them again at its first refusal."""
    from runtimes.torchserve.launcher import TorchServeProcess

    old = stack.torchserve
    assert old is not None
    old.stop()
    stack.torchserve = TorchServeProcess(
        old.command, old.inference_url, management_url=old.management_url, models=old.models
    ).start()
    assert stack.torchserve.started_in_s is not None
    return stack.torchserve.started_in_s


def _start_round(stack: LocalStack, index: int) -> dict[str, float]:
    cache = stack.workdir / "compare-xla-cache" / f"round-{index}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    steps: dict[str, Callable[[], dict[str, float]]] = {
        "jax": lambda: {"jax": _restart_jax(stack, cache), "jax_warm_cache": _restart_jax(stack, None)},
        "tfserving": lambda: {"tfserving": _restart_tfserving(stack)},
        "torchserve": lambda: {"torchserve": _restart_torchserve(stack)},
    }
    out: dict[str, float] = {}
    for framework in _order(index):
        out |= steps[framework]()
    return out


async def _all_answer(address: str, reqs: dict[str, Target]) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        for target in reqs.values():
            await wait_answering(channel, target, ANSWER_TIMEOUT_S)


def stack_start(stack: LocalStack) -> dict[str, float | None]:
    """Start-to-ready of each process as the stack started it (one figure each)."""
    return {
        "jax": stack.runtime.ready_after_s if stack.runtime else None,
        "tfserving": stack.tfserving.ready_after_s if stack.tfserving else None,
        "torchserve": stack.torchserve.started_in_s if stack.torchserve else None,
        "gateway": stack.gateway.ready_after_s if stack.gateway else None,
    }


def compare(stack: LocalStack, options: CompareOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the running `stack`; the figures of every round and their medians (see `figures.json`)."""
    roots = _roots(stack)  # every framework is there (raises if not)
    reqs = targets(options.model, options.rows)
    address = f"{stack.ports.host}:{stack.ports.gateway_grpc}"
    first_start = stack_start(stack)
    asyncio.run(_all_answer(address, reqs))

    async def measure() -> list[dict[str, Any]]:
        out = []
        async with grpc.aio.insecure_channel(address) as channel:
            for index in range(options.rounds):
                log(
                    f"round {index + 1}/{options.rounds}: latency and throughput ({', '.join(_order(index))})"
                )
                out.append(await _measure_round(roots, channel, reqs, options, index))
        return out

    rounds = asyncio.run(measure())
    starts: list[dict[str, float]] = []
    if options.restarts:
        for index in range(options.rounds):
            log(f"start-up round {index + 1}/{options.rounds}: restarting each backend")
            starts.append(_start_round(stack, index))
            asyncio.run(_all_answer(address, reqs))
    return {
        "options": asdict(options),
        "tfserving_server": tfserving_server(stack),
        "tfserving_real": tfserving_real(stack),
        "stack_start_s": first_start,
        "rounds": rounds,
        "start_rounds_s": starts,
        "medians": medians(rounds, starts),
    }


def tfserving_real(stack: LocalStack) -> bool:
    """Whether the stack's TF Serving is the real `tensorflow_model_server`, not the project's runtime."""
    return stack.tfserving is not None and Path(stack.tfserving.argv[0]).name == "tensorflow_model_server"


def tfserving_server(stack: LocalStack) -> str:
    if tfserving_real(stack):
        return "tensorflow_model_server (the real binary)"
    return "the project's TF Serving runtime (runtimes/tfserving, on TensorFlow), not tensorflow_model_server"


def medians(rounds: list[dict[str, Any]], starts: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    """For each framework and figure: median, min, max and n over the rounds."""
    out: dict[str, dict[str, Any]] = {}
    for framework in FRAMEWORKS:
        per_round = [r["frameworks"][framework] for r in rounds if framework in r["frameworks"]]
        figures = {
            key: spread([float(f[key]) for f in per_round]).as_dict()
            for key in (per_round[0] if per_round else {})
            if key not in ("throughput_requests", "processes")
        }
        for key, name in ((framework, "start_s"), (f"{framework}_warm_cache", "start_warm_cache_s")):
            values = [s[key] for s in starts if key in s]
            if values:
                figures[name] = spread(values).as_dict()
        out[framework] = figures
    return out
