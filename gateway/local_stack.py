"""The whole stack on one machine: example models exported, the JAX runtime, TF Serving and the gateway
started.

`gateway up` runs it in the foreground until Ctrl-C; the integration tests and the benchmark start the
same processes through `LocalStack`, so what a new user runs is what CI tests. The runtimes are separate
processes (they need JAX and TensorFlow; the gateway does not): `python -m runtimes.jax`, and TF
Serving as `runtimes.tfserving.launcher` picks it (the real `tensorflow_model_server` when it is on PATH,
the project's runtime of its API otherwise; skipped when TensorFlow is not installed).

Each example model is served by both frameworks with the same weights; a client picks the framework by
version: `cnn` (any version) is the JAX runtime's, version `tfserving` of `cnn` is TF Serving's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from runtimes.torchserve.launcher import TorchServeProcess

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
        self.ready_after_s: float | None = None  # from start to the ready line (the bench's cold start)
        self._started = 0.0

    def start(self, timeout_s: float = READY_TIMEOUT_S, echo: bool = True) -> str:
        """Start the process and return its ready line; raise RuntimeError if it dies or times out."""
        self._echo = echo
        self._started = time.monotonic()
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
                self.ready_after_s = time.monotonic() - self._started
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
    # TF Serving's own defaults are 8500 / 8501; these keep the stack's ports together.
    tfserving_grpc: int = 8020
    tfserving_rest: int = 8021
    # TorchServe's defaults are 8080-8082 and 7070-7071; management and metrics stay on loopback.
    torchserve_rest: int = 8030
    torchserve_grpc: int = 8031
    torchserve_management: int = 8032
    torchserve_metrics: int = 8033
    torchserve_grpc_management: int = 8034

    @classmethod
    def ephemeral(cls) -> StackPorts:
        """Every port a free one, all distinct (the host stays loopback)."""
        names = [f.name for f in fields(cls) if f.name != "host"]
        ports: dict[str, Any] = dict(zip(names, free_ports(len(names)), strict=True))
        return cls(**ports)


EXAMPLE_MODELS = ("cnn", "transformer", "mlp")


# The version under which a model is TF Serving's (its route pins TF Serving's version 1 of the model),
# and TorchServe's (version "1" of its archive).
TFSERVING_VERSION = "tfserving"
TORCHSERVE_VERSION = "torchserve"


def gateway_config(
    ports: StackPorts,
    models: tuple[str, ...] = EXAMPLE_MODELS,
    *,
    tfserving: tuple[str, ...] = (),
    torchserve: tuple[str, ...] = (),
    torchserve_key_file: Path | None = None,
) -> dict[str, object]:
    """The gateway configuration that routes `models` to the local JAX runtime, version "tfserving" of
    each model in `tfserving` to TF Serving and version "torchserve" of each in `torchserve` to
    TorchServe (whose inference key the gateway reads from `torchserve_key_file`)."""
    config: dict[str, Any] = {
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
                "framework": "jax",  # an OIP server: its metrics' framework label would be "oip"
            }
        },
        "routes": [{"model": m, "backend": "jax"} for m in models],
    }
    if tfserving:
        config["backends"]["tfserving"] = {
            "kind": "tfserving",
            "protocol": "grpc",
            "endpoints": [f"{ports.host}:{ports.tfserving_grpc}"],
            "timeout_s": 30,
        }
        config["routes"] += [
            {"model": m, "version": TFSERVING_VERSION, "backend": "tfserving", "options": {"version": 1}}
            for m in tfserving
        ]
    if torchserve:
        config["backends"]["torchserve"] = {
            "kind": "torchserve",
            "protocol": "grpc",
            "endpoints": [f"{ports.host}:{ports.torchserve_grpc}"],
            "timeout_s": 30,
            "inference_key_file": str(torchserve_key_file or ""),
        }
        config["routes"] += [
            {"model": m, "version": TORCHSERVE_VERSION, "backend": "torchserve", "options": {"version": "1"}}
            for m in torchserve
        ]
    return config


def tfserving_model_config(base: Path, models: tuple[str, ...]) -> str:
    """TF Serving's model config file (protobuf text format) serving `base/<model>/<version>/`."""
    entries = "".join(
        f"  config {{ name: '{m}' base_path: '{(base / m).resolve()}' model_platform: 'tensorflow' }}\n"
        for m in models
    )
    return f"model_config_list {{\n{entries}}}\n"


MONITORING_CONFIG = 'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n'


@dataclass
class LocalStack:
    """Export the example models (once), start the runtime, then the gateway routed to it."""

    workdir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    echo: bool = True
    gateway_workers: int = 1
    # Models the gateway routes to the runtime; the runtime serves whatever the repository holds.
    models: tuple[str, ...] = EXAMPLE_MODELS
    # Start TF Serving too (where TensorFlow is installed), serving the example models among `models`.
    with_tfserving: bool = True
    # Start TorchServe too (where torch and TorchServe are installed), likewise.
    with_torchserve: bool = True
    runtime: ManagedProcess | None = None
    tfserving: ManagedProcess | None = None
    torchserve: TorchServeProcess | None = None
    gateway: ManagedProcess | None = None

    @property
    def model_repository(self) -> Path:
        return self.workdir / "models"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.yaml"

    @property
    def tfserving_models(self) -> Path:
        return self.workdir / "tfserving-models"

    @property
    def example_models_served(self) -> tuple[str, ...]:
        """The models TF Serving and TorchServe serve: the example models (built for every framework)
        among `models`."""
        return tuple(m for m in self.models if m in EXAMPLE_MODELS)

    def _start_torchserve(self) -> TorchServeProcess | None:
        """TorchServe on the example archives (token authorization on), when torch and TorchServe are
        installed; else None. Its management and metrics APIs stay on loopback."""
        from runtimes.torchserve.config import ModelEntry, TorchServeConfig
        from runtimes.torchserve.launcher import TorchServeProcess, torchserve_command

        served = self.example_models_served  # the example models, which every framework has
        if not self.with_torchserve or not served:
            return None
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("ts") is None:
            print("torch or TorchServe is not installed: the stack runs without TorchServe", flush=True)
            return None
        if shutil.which("java") is None:
            print("TorchServe needs Java 17 (no `java` on PATH): the stack runs without it", flush=True)
            return None
        store = self.workdir / "torchserve-models"
        missing = [m for m in served if not (store / f"{m}.mar").is_file()]
        if missing:
            raise RuntimeError(f"TorchServe archives missing under {store}: {', '.join(missing)}")
        p = self.ports
        config = TorchServeConfig(
            model_store=store,
            models=tuple(ModelEntry(m, f"{m}.mar", batch_size=8, max_batch_delay_ms=2) for m in served),
            inference_host=p.host,
            inference_port=p.torchserve_rest,
            management_port=p.torchserve_management,
            metrics_port=p.torchserve_metrics,
            grpc_inference_port=p.torchserve_grpc,
            grpc_management_port=p.torchserve_grpc_management,
            # TorchServe's keys expire (60 min by default) and on one machine nothing renews them (in
            # Kubernetes the key relay does): a week outlasts any `make up` session.
            token_expiration_min=7 * 24 * 60,
        )
        command = torchserve_command(config, self.workdir / "torchserve")
        process = TorchServeProcess(
            command, config.inference_url(), management_url=config.management_url(), models=served
        )
        process.start()
        if self.echo:
            print(
                f"[torchserve] ready in {process.started_in_s:.1f} s; logs in {process.log_path}", flush=True
            )
        return process

    def _start_tfserving(self) -> ManagedProcess | None:
        """TF Serving on the TF models, when they were built (TensorFlow installed); else None."""
        from runtimes.tfserving.launcher import tfserving_command

        if not self.with_tfserving or not self.example_models_served:
            return None
        if importlib.util.find_spec("tensorflow") is None:
            print("TensorFlow is not installed: the stack runs without TF Serving", flush=True)
            return None
        missing = [m for m in self.example_models_served if not (self.tfserving_models / m).is_dir()]
        if missing:  # the build ran with TensorFlow there, so it failed: say so rather than skip
            raise RuntimeError(f"TF models missing under {self.tfserving_models}: {', '.join(missing)}")
        model_config = self.workdir / "tfserving-models.config"
        model_config.write_text(tfserving_model_config(self.tfserving_models, self.example_models_served))
        monitoring = self.workdir / "tfserving-monitoring.config"
        monitoring.write_text(MONITORING_CONFIG)
        command = tfserving_command(
            grpc_port=self.ports.tfserving_grpc,
            rest_port=self.ports.tfserving_rest,
            model_config_file=model_config,
            monitoring_config_file=monitoring,
        )
        process = ManagedProcess("tfserving", command.argv, ready_prefix=command.ready_prefix)
        process.start(echo=self.echo)
        return process

    def export_models(self) -> None:
        # Weights once under workdir/weights, then the JAX models into workdir/models (the repository
        # above) and, where TensorFlow is installed, TF Serving's into workdir/tfserving-models, each in a
        # process of its own (the gateway imports neither); models already there are left as they are.
        subprocess.run([sys.executable, "-m", "runtimes.examples", str(self.workdir)], check=True)

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
        try:
            self._start_the_rest()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_the_rest(self) -> None:
        """TF Serving and TorchServe (where they are to run), then the gateway in front of them all."""
        p = self.ports
        self.tfserving = self._start_tfserving()
        self.torchserve = self._start_torchserve()
        config = gateway_config(
            p,
            self.models,
            tfserving=self.example_models_served if self.tfserving is not None else (),
            torchserve=self.example_models_served if self.torchserve is not None else (),
            torchserve_key_file=self.torchserve.command.key_file if self.torchserve is not None else None,
        )
        config["listeners"]["workers"] = self.gateway_workers  # type: ignore[index]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.gateway = ManagedProcess(
            "gateway",
            [sys.executable, "-m", "gateway", "serve", "--config", str(self.config_path)],
            ready_prefix="gateway ready",
        )
        self.gateway.start(echo=self.echo)

    @property
    def processes(self) -> dict[str, ManagedProcess | TorchServeProcess | None]:
        """The stack's processes by role, in the order they start (None: not running)."""
        return {
            "jax": self.runtime,
            "tfserving": self.tfserving,
            "torchserve": self.torchserve,
            "gateway": self.gateway,
        }

    def stop(self) -> None:
        for proc in reversed(self.processes.values()):
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


# The same tokens in TF Serving's row format (for its API on the gateway's front).
_TFS_BODY = '{"instances": [[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]]}'


def how_to_call(ports: StackPorts, tfserving: bool = False, torchserve: bool = False) -> str:
    rest = f"http://{ports.host}:{ports.gateway_rest}"
    ts = (
        f"""  TorchServe      grpc {ports.host}:{ports.torchserve_grpc}  REST http://{ports.host}:{ports.torchserve_rest}
                  (token authorization on; models as version "{TORCHSERVE_VERSION}" through the gateway)
"""
        if torchserve
        else ""
    )
    ts_try = (
        f"""  curl -s -X POST {rest}/v2/models/transformer/versions/{TORCHSERVE_VERSION}/infer \\
       -H 'content-type: application/json' -d '{_SAMPLE_BODY}'
"""
        if torchserve
        else ""
    )
    tfs = (
        f"""  TF Serving      grpc {ports.host}:{ports.tfserving_grpc}  REST http://{ports.host}:{ports.tfserving_rest}
                  (models as version "{TFSERVING_VERSION}" through the gateway)
"""
        if tfserving
        else ""
    )
    tfs_try = (
        f"""  curl -s -X POST {rest}/v2/models/transformer/versions/{TFSERVING_VERSION}/infer \\
       -H 'content-type: application/json' -d '{_SAMPLE_BODY}'
  curl -s -X POST {rest}/v1/models/transformer/labels/{TFSERVING_VERSION}:predict -d '{_TFS_BODY}'
"""
        if tfserving
        else ""
    )
    return f"""
The stack is up.
  gateway REST    {rest}        (Open Inference Protocol, KServe v2)
  gateway gRPC    {ports.host}:{ports.gateway_grpc}
  gateway metrics http://{ports.host}:{ports.gateway_metrics}/metrics
  JAX runtime     http://{ports.host}:{ports.runtime_http}  grpc {ports.host}:{ports.runtime_grpc}  \
metrics http://{ports.host}:{ports.runtime_metrics}/metrics
{tfs}{ts}
Try:
  curl {rest}/v2/models/transformer
  curl -s -X POST {rest}/v2/models/transformer/infer -H 'content-type: application/json' -d '{_SAMPLE_BODY}'
  .venv/bin/python examples/client_tritonclient.py --url {ports.host}:{ports.gateway_grpc} --protocol grpc
{tfs_try}{ts_try}
Ctrl-C stops them all.
"""


def run_foreground(workdir: Path, *, tfserving: bool = True, torchserve: bool = True) -> int:
    """`gateway up`: start everything on the default ports and wait for Ctrl-C."""
    stack = LocalStack(workdir=workdir, with_tfserving=tfserving, with_torchserve=torchserve)
    try:
        stack.start()
        print(
            how_to_call(
                stack.ports, tfserving=stack.tfserving is not None, torchserve=stack.torchserve is not None
            ),
            flush=True,
        )
        processes = stack.processes.values()
        while all(p.proc is not None and p.proc.poll() is None for p in processes if p):
            time.sleep(0.5)
        print("a process of the stack exited; stopping", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
        return 0
    finally:
        stack.stop()
