"""The whole stack on one machine: example models exported, the JAX runtime and the gateway started.

`gateway up` runs it in the foreground until Ctrl-C; the integration tests and the benchmark start the
same processes through `LocalStack`, so what a new user runs is what CI tests. The runtime is a separate
process (it needs JAX; the gateway does not), started with `python -m runtimes.jax`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

READY_TIMEOUT_S = 300.0


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports nothing listens on right now (the OS picks them, all held at once so none repeats;
    a race with other processes is possible)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (see `free_ports`)."""
    return free_ports(1, host)[0]


class ManagedProcess:
    """A child process that prints one line starting with `ready_prefix` once it serves.

    Its output is passed through to ours (prefixed with `name`) so a failure is visible, and it is
    stopped with SIGINT (graceful), then SIGKILL if it does not exit in time. One thread reads the
    output from start to exit, so the child never blocks on a full pipe and no line goes unseen (a
    `select` on the pipe would miss lines that an earlier `readline` already pulled into its buffer).
    """

    def __init__(self, name: str, argv: list[str], ready_prefix: str, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.ready_prefix = ready_prefix
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._pump: threading.Thread | None = None
        self._echo = True
        self._ready_line = ""
        self._ready = threading.Event()

    def start(self, timeout_s: float = READY_TIMEOUT_S, echo: bool = True) -> str:
        """Start the process and return its ready line; raise RuntimeError if it dies or times out."""
        self._echo = echo
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, bufsize=1
        )
        self._pump = threading.Thread(target=self._read_output, name=f"{self.name}-output", daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None:
                self._pump.join(1.0)  # let the last lines it wrote be read
                break
            if time.monotonic() > deadline:
                break
        if self._ready.is_set():
            return self._ready_line
        self.stop()
        tail = "".join(self.output[-40:])
        raise RuntimeError(f"{self.name} did not become ready (exit code {self.proc.returncode}):\n{tail}")

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if self._echo:
                sys.stdout.write(f"[{self.name}] {line}")
            self.output.append(line)
            del self.output[:-500]
            if not self._ready.is_set() and line.startswith(self.ready_prefix):
                self._ready_line = line.strip()
                self._ready.set()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT (graceful), SIGKILL after `timeout_s`; then release the output pipe."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)  # reaches EOF once the process has exited
        if self.proc.stdout is not None and (self._pump is None or not self._pump.is_alive()):
            self.proc.stdout.close()


@dataclass
class StackPorts:
    host: str = "127.0.0.1"
    gateway_rest: int = 8000
    gateway_grpc: int = 8001
    gateway_metrics: int = 8002
    runtime_http: int = 8010
    runtime_grpc: int = 8011
    runtime_metrics: int = 8012

    @classmethod
    def ephemeral(cls) -> StackPorts:
        rest, grpc, metrics, runtime_http, runtime_grpc, runtime_metrics = free_ports(6)
        return cls(
            gateway_rest=rest,
            gateway_grpc=grpc,
            gateway_metrics=metrics,
            runtime_http=runtime_http,
            runtime_grpc=runtime_grpc,
            runtime_metrics=runtime_metrics,
        )


EXAMPLE_MODELS = ("cnn", "transformer")


def gateway_config(ports: StackPorts, models: tuple[str, ...] = EXAMPLE_MODELS) -> dict[str, object]:
    """The gateway configuration that routes the example models to the local JAX runtime."""
    return {
        "listeners": {
            "rest": {"host": ports.host, "port": ports.gateway_rest},
            "grpc": {"host": ports.host, "port": ports.gateway_grpc},
            "metrics": {"host": ports.host, "port": ports.gateway_metrics},
        },
        "backends": {
            "jax": {
                "kind": "v2",
                "protocol": "grpc",
                "endpoints": [f"{ports.host}:{ports.runtime_grpc}"],
                "timeout_s": 30,
            }
        },
        "routes": [{"model": m, "backend": "jax"} for m in models],
    }


@dataclass
class LocalStack:
    """Export the example models (once), start the runtime, then the gateway routed to it."""

    workdir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    echo: bool = True
    gateway_workers: int = 1
    # Models the gateway routes to the runtime; the runtime serves whatever the repository holds.
    models: tuple[str, ...] = EXAMPLE_MODELS
    runtime: ManagedProcess | None = None
    gateway: ManagedProcess | None = None

    @property
    def model_repository(self) -> Path:
        return self.workdir / "models"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.yaml"

    def export_models(self) -> None:
        if all((self.model_repository / m).is_dir() for m in EXAMPLE_MODELS):
            return
        subprocess.run(
            [sys.executable, "-m", "runtimes.jax", "export-examples", str(self.model_repository)], check=True
        )

    def start(self) -> LocalStack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.export_models()
        p = self.ports
        self.runtime = ManagedProcess(
            "jax-runtime",
            [
                sys.executable,
                "-m",
                "runtimes.jax",
                "serve",
                "--model-repository",
                str(self.model_repository),
                "--host",
                p.host,
                "--http-port",
                str(p.runtime_http),
                "--grpc-port",
                str(p.runtime_grpc),
                "--metrics-port",
                str(p.runtime_metrics),
                "--compilation-cache",
                str(self.workdir / "xla-cache"),
            ],
            ready_prefix="jax-runtime ready",
        )
        self.runtime.start(echo=self.echo)
        config = gateway_config(p, self.models)
        config["listeners"]["workers"] = self.gateway_workers  # type: ignore[index]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.gateway = ManagedProcess(
            "gateway",
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)],
            ready_prefix="gateway ready",
        )
        try:
            self.gateway.start(echo=self.echo)
        except BaseException:
            self.runtime.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self.gateway, self.runtime):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


_SAMPLE_BODY = (
    '{"inputs":[{"name":"tokens","shape":[1,16],"datatype":"INT32",'
    '"data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
)


def how_to_call(ports: StackPorts) -> str:
    rest = f"http://{ports.host}:{ports.gateway_rest}"
    return f"""
The stack is up.
  gateway REST    {rest}        (Open Inference Protocol, KServe v2)
  gateway gRPC    {ports.host}:{ports.gateway_grpc}
  gateway metrics http://{ports.host}:{ports.gateway_metrics}/metrics
  JAX runtime     http://{ports.host}:{ports.runtime_http}  grpc {ports.host}:{ports.runtime_grpc}  \
metrics http://{ports.host}:{ports.runtime_metrics}/metrics

Try:
  curl {rest}/v2/models/transformer
  curl -s -X POST {rest}/v2/models/transformer/infer -H 'content-type: application/json' -d '{_SAMPLE_BODY}'
  .venv/bin/python examples/client_tritonclient.py --url {ports.host}:{ports.gateway_grpc} --protocol grpc

Ctrl-C stops both.
"""


def run_foreground(workdir: Path) -> int:
    """`gateway up`: start everything on the default ports and wait for Ctrl-C."""
    stack = LocalStack(workdir=workdir)
    try:
        stack.start()
        print(how_to_call(stack.ports), flush=True)
        while all(p.proc is not None and p.proc.poll() is None for p in (stack.runtime, stack.gateway) if p):
            time.sleep(0.5)
        print("a process of the stack exited; stopping", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    finally:
        stack.stop()
