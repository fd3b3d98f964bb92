"""Where the gateway's CPU per request goes that the bare grpc.aio proxy's does not: /proc, perf, py-spy.

    .venv/bin/pip install py-spy            # a profiler, not a dependency of the project
    .venv/bin/python bench/profile_gateway.py [--requests 4000] [--rate 200] [--save DIR] [--workdir DIR]

Starts the stack (JAX runtime + gateway, as `bench/bench.py` does, ephemeral ports) and
`bench/bare_proxy.py` in front of the same runtime, then for each of the two: warms up and sends
`--requests` gRPC `ModelInfer` requests of 2 rows, 8 at a time (the load of `bench/cpu_per_request.py`)
twice. In the first window it reads every thread's CPU time from /proc and, where Linux `perf` is
installed, samples the process on-CPU (`perf record -e cpu-clock`); in the second py-spy samples its
Python stacks (native frames included). It prints, in core-ms per request:

1. By thread (/proc, user + system): the main thread runs the event loop and all the Python (grpc.aio's
   Cython, our code, protobuf's C); `grpc.aio poller` is grpc.aio's Python thread that waits on the
   completion queue; the rest are grpc's C-core threads.
2. By shared library (perf): true on-CPU time. `libpython` is the interpreter running Python code, ours
   and grpc.aio's `.py` alike; `cygrpc` grpc's Cython and C-core; `kernel` the syscalls (loopback TCP,
   epoll, thread wake-ups).
3. The main thread's user-mode time by library of the sampled frame (py-spy): the frame a sample is
   charged to is the deepest one that is not the interpreter, libc or the standard library (those are
   charged to their caller: `contextlib` under `InFlightLimit.admit`, `asyncio.timeout` under
   `DataPlane.infer`, ...).
4. Our functions (gateway/...): inclusive (the function and everything under it), then "own + library"
   (the deepest gateway/ frame of a sample: its own lines plus the library calls it makes itself, split by
   that library).

Why py-spy's samples are scaled, not counted: on a busy 2-core machine a thread waiting for a core counts
as active to py-spy, so samples follow wall time, not CPU; they pile up in syscalls that wake another
thread (the kernel switches to it there). Samples whose leaf is a syscall or a wait are therefore set
aside, and the rest are scaled to the thread's measured user time (user-mode preemption falls at random
points, so those stay proportional to CPU). `--save DIR` keeps py-spy's collapsed stacks (flamegraph.pl
and speedscope read them) and perf's data.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from cpu_per_request import CONCURRENCY, INFER_METHOD, ROWS, process_cpu_s, send_requests, start_bare_proxy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.local_stack import LocalStack, StackPorts  # noqa: E402
from gateway.proto import inference_pb2 as pb  # noqa: E402

_CLK_TCK = os.sysconf("SC_CLK_TCK")
MAIN_THREAD = "main (event loop)"
# A py-spy frame: "function (file:line)" for Python, "symbol (library)" for native frames.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<where>[^()]*)\)$")
OURS = "gateway/ (ours)"
_LOOP = r"uvloop|libuv|asyncio/(runners|base_events|events)\.py"
# Library of a frame, first match wins (full paths, or native symbols and their libraries).
_LIBRARIES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (OURS, re.compile(r"/gateway/")),
    ("prometheus_client", re.compile(r"prometheus_client")),
    ("protobuf", re.compile(r"google/protobuf|google/_upb|libprotobuf")),
    ("grpc", re.compile(r"grpc")),
    ("event loop (uvloop, asyncio's runner)", re.compile(_LOOP)),
    ("numpy", re.compile(r"numpy")),
    ("bench/", re.compile(r"/bench/")),
)
# Frames charged to their caller: the interpreter, libc, and the standard library outside the event loop
# (contextlib, abc, dataclasses' generated `__init__`, asyncio.timeout, ...).
_CHARGED_TO_CALLER = re.compile(
    r"libc\.so|libpython|\.h:|/Include/|^<frozen|^<string>|^$"
    r"|/lib/python3\.[0-9]+/(?!site-packages|asyncio/(runners|base_events|events)\.py)"
)
_UNCHARGED = "interpreter, libc, stdlib (no caller found)"
# Leaves that are a syscall or a wait: kernel time or no CPU at all (see the module docstring).
_SYSCALL_OR_WAIT = re.compile(
    r"^(epoll_p?wait|sendmsg|recvmsg|sendto|recvfrom|send|recv|write|writev|read|readv|syscall|poll|ppoll"
    r"|select|pselect6?|nanosleep|clock_nanosleep|getpid|futex|__futex\w*|pthread_cond_\w*wait\w*"
    r"|sem_\w*wait|__lll_lock_wait\w*|eventfd_(read|write)|accept4?|connect|0x[0-9a-f]+)$"
)
# perf's shared objects, by what runs in them.
_DSOS: tuple[tuple[str, str], ...] = (
    ("libpython", "CPython (runs all Python: ours, grpc.aio's .py, stdlib)"),
    ("cygrpc", "grpc (Cython and C-core)"),
    ("[kernel", "kernel (syscalls: sockets, epoll, wake-ups)"),
    ("libc.so", "libc (malloc, memcpy, syscall stubs)"),
    ("_message", "protobuf (upb)"),
    ("loop.cpython", "uvloop"),
    ("_asyncio", "asyncio's C accelerator"),
    ("_multiarray", "numpy"),
)


def thread_cpu_s(pid: int) -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of each live thread of `pid`, by a readable label (summed per label)."""
    found: dict[str, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_bytes()
        except OSError:  # the thread ended meanwhile
            continue
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode(errors="replace")
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(task.name) == pid:
            label = MAIN_THREAD
        elif comm.startswith("python"):
            label = "grpc.aio poller (Python thread)"
        else:
            label = f"grpc C-core: {re.sub(r'[0-9]+$', '', comm)}"
        user, system = found.get(label, (0.0, 0.0))
        found[label] = (user + int(fields[11]) / _CLK_TCK, system + int(fields[12]) / _CLK_TCK)
    return found


def _locate(frame: str) -> tuple[str, str]:
    """(function, where) of a py-spy frame."""
    found = _FRAME.match(frame)
    return (found["function"], found["where"]) if found else (frame, "")


def _library(where: str) -> str:
    return next((name for name, pattern in _LIBRARIES if pattern.search(where)), _UNCHARGED)


class Profile:
    """py-spy's collapsed stacks (`--threads`) of a process's main thread, user-mode samples aggregated."""

    def __init__(self, text: str) -> None:
        self.total = 0  # user-mode samples of the main thread
        self.set_aside = 0  # main-thread samples in a syscall or a wait
        self.by_library: collections.Counter[str] = collections.Counter()
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.deepest_ours: collections.Counter[str] = collections.Counter()
        # deepest gateway/ function -> library of the sampled frame under it -> samples
        self.deepest_split: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for line in text.splitlines():
            stack, _, count_text = line.rpartition(" ")
            thread, *frames = stack.split(";")
            # "thread (TID): NAME" with --threads; only the event loop's thread runs our code.
            if not frames or not count_text.isdigit() or not thread.endswith(": MainThread"):
                continue
            count = int(count_text)
            located = [_locate(frame) for frame in frames]
            if "libc.so" in located[-1][1] and _SYSCALL_OR_WAIT.match(located[-1][0]):
                self.set_aside += count
                continue
            self.total += count
            charged = next((w for _, w in reversed(located) if not _CHARGED_TO_CALLER.search(w)), "")
            library = _library(charged) if charged else _UNCHARGED
            self.by_library[library] += count
            # Our frames from the event loop down: the entry chain above it (`python -m gateway`, cli,
            # app.serve, run_in_loop) holds every sample and says nothing.
            loop = next((i for i, (_, where) in enumerate(located) if "asyncio/runners.py" in where), -1)
            seen: set[str] = set()
            deepest = None
            for function, where in located[loop + 1 :]:
                if _library(where) == OURS:
                    name = f"{function} ({where.rsplit(':', 1)[0].removeprefix(f'{ROOT}/')})"
                    if name not in seen:
                        seen.add(name)
                        self.inclusive[name] += count
                    deepest = name
            if deepest is not None:
                self.deepest_ours[deepest] += count
                self.deepest_split[deepest][library] += count


@dataclass
class Measured:
    """One process under the load, per request: CPU (ms) by thread and by library, and its py-spy profile."""

    name: str
    cpu_ms: float = 0.0
    threads: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (user, system) ms
    dsos: dict[str, float] = field(default_factory=dict)  # perf: library -> ms
    profile: Profile | None = None

    def main_user_ms(self) -> float:
        return self.threads.get(MAIN_THREAD, (0.0, 0.0))[0]


def _perf_by_dso(data: Path) -> dict[str, float]:
    """Share of perf's on-CPU samples per library (`perf report --sort dso`)."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "--no-children", "-g", "none"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    shares: dict[str, float] = collections.defaultdict(float)
    for line in report.stdout.splitlines():
        found = re.match(r"^\s+([0-9.]+)%\s+(\S+)", line)
        if found is not None:
            label = next((name for key, name in _DSOS if key in found[2]), "other")
            shares[label] += float(found[1]) / 100
    return shares


async def _drive(address: str, body: bytes, requests: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await send_requests(channel.unary_unary(INFER_METHOD), body, requests, CONCURRENCY)


def _stop(process: subprocess.Popen[str], tool: str) -> None:
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    if process.returncode not in (0, -signal.SIGINT):
        raise RuntimeError(f"{tool} failed:\n{output}")


def measure(name: str, address: str, pid: int, body: bytes, args: argparse.Namespace) -> Measured:
    """The two windows of one process (see the module docstring)."""
    result = Measured(name)
    n = args.requests
    asyncio.run(_drive(address, body, min(n, 1000)))  # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        perf_data, stacks = Path(tmp) / "perf.data", Path(tmp) / "stacks.txt"
        perf = None
        if args.perf:
            perf = subprocess.Popen(
                ["perf", "record", "-e", "cpu-clock", "-F", "999", "-p", str(pid), "-o", str(perf_data)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            time.sleep(0.5)  # attached
        threads, cpu = thread_cpu_s(pid), process_cpu_s(pid)
        asyncio.run(_drive(address, body, n))
        after, result.cpu_ms = thread_cpu_s(pid), (process_cpu_s(pid) - cpu) * 1e3 / n
        result.threads = {
            label: (
                (u - threads.get(label, (0.0, 0.0))[0]) * 1e3 / n,
                (s - threads.get(label, (0.0, 0.0))[1]) * 1e3 / n,
            )
            for label, (u, s) in after.items()
        }
        if perf is not None:
            _stop(perf, "perf record")
            result.dsos = {k: v * result.cpu_ms for k, v in _perf_by_dso(perf_data).items()}

        spy = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(pid), "--rate", str(args.rate), "--format", "raw",
             "--output", str(stacks), "--threads", "--full-filenames", "--native"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        time.sleep(1.0)  # attached
        asyncio.run(_drive(address, body, n))
        _stop(spy, "py-spy")
        result.profile = Profile(stacks.read_text())
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            stem = name.replace(" ", "_")
            shutil.copy(stacks, args.save / f"{stem}.collapsed.txt")
            if perf is not None:
                shutil.copy(perf_data, args.save / f"{stem}.perf.data")
    return result


def _rows(title: str, values: dict[str, tuple[float, float]], threshold: float = 0.0015) -> None:
    print(f"\n== {title}: gateway / bare proxy / difference (core-ms per request)")
    for label, (g, p) in sorted(values.items(), key=lambda item: -item[1][0]):
        if max(g, p) >= threshold:
            print(f"  {label:58s} {g:6.3f} / {p:6.3f} / {g - p:+6.3f}")


def report(gateway: Measured, proxy: Measured, top: int) -> None:
    g_threads, p_threads = gateway.threads, proxy.threads
    _rows(
        "CPU by thread, user + system (/proc)",
        {
            f"{label} ({'user' if i == 0 else 'system'})": (
                g_threads.get(label, (0.0, 0.0))[i],
                p_threads.get(label, (0.0, 0.0))[i],
            )
            for label in {*g_threads, *p_threads}
            for i in (0, 1)
        },
    )
    ratio = gateway.cpu_ms / proxy.cpu_ms if proxy.cpu_ms else float("nan")
    print(f"  {'whole process':58s} {gateway.cpu_ms:6.3f} / {proxy.cpu_ms:6.3f}: {ratio:.2f}x")
    if gateway.dsos:
        _rows(
            "on-CPU time by library (perf, all threads)",
            {k: (gateway.dsos.get(k, 0.0), proxy.dsos.get(k, 0.0)) for k in {*gateway.dsos, *proxy.dsos}},
        )
    assert gateway.profile is not None and proxy.profile is not None
    scale = {
        m.name: m.main_user_ms() / m.profile.total if m.profile and m.profile.total else 0.0
        for m in (gateway, proxy)
    }
    _rows(
        "main thread's user time by library of the sampled frame (py-spy samples scaled to it)",
        {
            lib: (
                gateway.profile.by_library[lib] * scale[gateway.name],
                proxy.profile.by_library[lib] * scale[proxy.name],
            )
            for lib in {*gateway.profile.by_library, *proxy.profile.by_library}
        },
    )
    for m in (gateway, proxy):
        assert m.profile is not None
        print(
            f"  ({m.name}: {m.profile.total} user-mode samples of the main thread; "
            f"{m.profile.set_aside} in a syscall or a wait set aside)"
        )
    s, whole, profile = scale[gateway.name], gateway.cpu_ms, gateway.profile
    print("\n== gateway: our functions, inclusive (the function and all it calls): core-ms per request, % of "
          "the process's CPU")  # fmt: skip
    for function, count in profile.inclusive.most_common(top):
        print(f"  {count * s:6.3f} {100 * count * s / whole:5.1f}%  {function}")
    print(
        "\n== gateway: our functions, own + library (the deepest gateway/ frame of a sample: its own lines "
        "and the library calls it makes itself), split by the library of the sampled frame"
    )
    for function, count in profile.deepest_ours.most_common(top):
        under = profile.deepest_split[function].most_common()
        split = ", ".join(f"{library.split(' ')[0]} {n * s:.3f}" for library, n in under)
        print(f"  {count * s:6.3f} {100 * count * s / whole:5.1f}%  {function}: {split}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=4000, help="requests per window and process")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    parser.add_argument("--save", type=Path, default=None, help="keep py-spy's stacks and perf's data here")
    parser.add_argument("--workdir", type=Path, default=None, help="models and XLA cache (reused if there)")
    parser.add_argument("--no-perf", dest="perf", action="store_false", help="skip perf even if installed")
    parser.add_argument(
        "--py-spy", default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    )
    args = parser.parse_args()
    if shutil.which(args.py_spy) is None:
        parser.error("py-spy not found: .venv/bin/pip install py-spy")
    args.perf = args.perf and shutil.which("perf") is not None

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    request = pb.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="image", datatype="FP32", shape=[ROWS, 28, 28, 1])
    request.raw_input_contents.append(
        np.random.default_rng(0).random((ROWS, 28, 28, 1), np.float32).tobytes()
    )
    body = request.SerializeToString()
    stack = LocalStack(
        workdir=workdir,
        ports=StackPorts.ephemeral(),
        echo=False,
        models=("cnn",),
        with_tfserving=False,  # idle servers would only take CPU from the two processes compared
        with_torchserve=False,
    )
    with stack:
        host = stack.ports.host
        proxy, proxy_port = start_bare_proxy(f"{host}:{stack.ports.runtime_grpc}")
        try:
            assert stack.gateway and stack.gateway.proc and proxy.proc
            print(
                f"profiling: {args.requests} {ROWS}-row ModelInfer requests per window, {CONCURRENCY} at a "
                f"time; {'perf and ' if args.perf else ''}py-spy at {args.rate} Hz"
            )
            gateway = measure(
                "gateway", f"{host}:{stack.ports.gateway_grpc}", stack.gateway.proc.pid, body, args
            )
            bare = measure("bare proxy", f"{host}:{proxy_port}", proxy.proc.pid, body, args)
        finally:
            proxy.stop()
    report(gateway, bare, args.top)


if __name__ == "__main__":
    main()
