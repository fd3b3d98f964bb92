"""TorchServe's `config.properties` with the project's security and sizing defaults.

Defaults, and why:
- token authorization on (`disable_token_authorization=false`): TorchServe writes `key_file.json` in its
  working directory at start, and every inference and management call needs `Authorization: Bearer`;
- the management API (REST and gRPC) on 127.0.0.1 only, and model registration over it off
  (`enable_model_api=false`): the models served are the ones in this file, nothing else can add one;
- `install_py_dep_per_model=false`: no pip install from an archive's requirements at load time;
- `metrics_mode=prometheus`, so `/metrics` on the metrics address has TorchServe's counters;
- one worker per model (TorchServe's default is one per CPU, too many on a small machine) and a bounded
  JVM heap (`vmargs`; the default is a quarter of RAM), `-XX:+ExitOnOutOfMemoryError` so a supervisor
  restarts a frontend that ran out instead of one that limps on.
Logs, metrics logs and TorchServe's temp files (PID file, unpacked archives, worker sockets) are moved
under the workdir by the launcher's environment (`LOG_LOCATION`, `METRICS_LOCATION`, `TEMP`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

FILENAME: Final = "config.properties"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One archive in the model store and how TorchServe runs it."""

    name: str
    mar: str  # file name in the model store
    version: str = "1"
    workers: int = 1
    batch_size: int = 1  # > 1: TorchServe hands the handler up to this many requests at once
    max_batch_delay_ms: int = 5  # how long TorchServe waits to fill a batch
    response_timeout_s: int = 120


@dataclass(frozen=True, slots=True)
class TorchServeConfig:
    """Where TorchServe listens and what it serves. Ports 0 are not allowed: TorchServe cannot report one."""

    model_store: Path
    models: tuple[ModelEntry, ...]
    inference_host: str = "127.0.0.1"
    inference_port: int = 8080
    management_port: int = 8081
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    heap_mb: int = 256
    token_expiration_min: int = 60
    job_queue_size: int = 100
    netty_threads: int = 0  # 0: TorchServe's default (one per CPU)
    max_request_bytes: int = 64 << 20
    extra: dict[str, str] = field(default_factory=dict)  # any other key, written last (overrides)

    def inference_url(self) -> str:
        return f"http://{self.inference_host}:{self.inference_port}"

    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"


def render(config: TorchServeConfig) -> str:
    """The text of `config.properties` for `config`."""
    models = {
        m.name: {
            m.version: {
                "defaultVersion": True,
                "marName": m.mar,
                "minWorkers": m.workers,
                "maxWorkers": m.workers,
                "batchSize": m.batch_size,
                "maxBatchDelay": m.max_batch_delay_ms,
                "responseTimeout": m.response_timeout_s,
            }
        }
        for m in config.models
    }
    props: dict[str, str] = {
        "inference_address": config.inference_url(),
        "management_address": config.management_url(),
        "metrics_address": f"http://{config.metrics_host}:{config.metrics_port}",
        "grpc_inference_address": config.inference_host,
        "grpc_inference_port": str(config.grpc_inference_port),
        "grpc_management_address": "127.0.0.1",
        "grpc_management_port": str(config.grpc_management_port),
        "disable_token_authorization": "false",
        "token_expiration_min": str(config.token_expiration_min),
        "enable_model_api": "false",
        "enable_envvars_config": "false",
        "install_py_dep_per_model": "false",
        "metrics_mode": "prometheus",
        "default_workers_per_model": "1",
        "job_queue_size": str(config.job_queue_size),
        "max_request_size": str(config.max_request_bytes),
        "max_response_size": str(config.max_request_bytes),
        "vmargs": f"-Xmx{config.heap_mb}m -XX:+ExitOnOutOfMemoryError",
        "model_store": str(config.model_store),
        "load_models": ",".join(f"{m.name}={m.mar}" for m in config.models) or "",
        "models": json.dumps(models, separators=(",", ":")),
    }
    if config.netty_threads:
        props["number_of_netty_threads"] = str(config.netty_threads)
        props["netty_client_threads"] = str(config.netty_threads)
    props.update(config.extra)
    lines = ["# Written by runtimes.torchserve.config: the project's defaults (see its docstring)."]
    lines += [f"{key}={value}" for key, value in props.items() if value != ""]
    return "\n".join(lines) + "\n"


def write_config(config: TorchServeConfig, path: Path) -> Path:
    """Writes `render(config)` to `path` (a file, or a directory to hold `config.properties`)."""
    if path.is_dir():
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(config))
    return path
