"""The command that starts a TF Serving: the real `tensorflow_model_server` where it is installed, this
runtime otherwise, with the same flags. Imports nothing heavy: the gateway's local stack may use it.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

BINARY: Final = "tensorflow_model_server"
# What each prints once it serves: this runtime's ready line (it names the bound ports), or the real
# server's last start-up line (REST on: "Exporting HTTP/REST API at:..."; gRPC only: "Running gRPC
# ModelServer at ..."). The real server cannot report a port it picked, so pass it fixed ports.
RUNTIME_READY_PREFIX: Final = "tfserving-runtime ready"
BINARY_READY_REST: Final = "Exporting HTTP/REST API at:"
BINARY_READY_GRPC: Final = "Running gRPC ModelServer at"


@dataclass(frozen=True, slots=True)
class TFServingCommand:
    """The argv to start, the output line that says it is ready, and which server it is."""

    argv: list[str]
    ready_prefix: str
    real_binary: bool


def tfserving_command(
    *,
    grpc_port: int,
    rest_port: int | None = None,
    model_name: str | None = None,
    model_base_path: Path | None = None,
    model_config_file: Path | None = None,
    monitoring_config_file: Path | None = None,
    batching_parameters_file: Path | None = None,
    enable_batching: bool = False,
    extra_flags: tuple[str, ...] = (),
    prefer_binary: bool = True,
) -> TFServingCommand:
    """The command line for a TF Serving serving one model (name + base path) or a config file.

    `prefer_binary=False` always picks this runtime. The ready line is written to stdout by this
    runtime and to stderr by the real server: read both (as `gateway.local_stack.ManagedProcess` does).
    """
    if (model_config_file is None) == (model_base_path is None):
        raise ValueError("pass model_config_file or model_base_path (with model_name), not both")
    flags = [f"--port={grpc_port}"]
    if rest_port is not None:
        flags.append(f"--rest_api_port={rest_port}")
    if model_config_file is not None:
        flags.append(f"--model_config_file={model_config_file}")
    else:
        flags += [f"--model_name={model_name or 'default'}", f"--model_base_path={model_base_path}"]
    if monitoring_config_file is not None:
        flags.append(f"--monitoring_config_file={monitoring_config_file}")
    if enable_batching:
        flags.append("--enable_batching=true")
        if batching_parameters_file is not None:
            flags.append(f"--batching_parameters_file={batching_parameters_file}")
    flags += extra_flags
    binary = shutil.which(BINARY) if prefer_binary else None
    if binary is not None:
        ready = BINARY_READY_REST if rest_port is not None else BINARY_READY_GRPC
        return TFServingCommand([binary, *flags], ready, True)
    return TFServingCommand([sys.executable, "-m", "runtimes.tfserving", *flags], RUNTIME_READY_PREFIX, False)
