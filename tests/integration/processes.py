"""A gateway process of a test's own, for tests that need backends or routes other than the stack's."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from gateway.local_stack import ManagedProcess, free_ports


@contextlib.contextmanager
def gateway_process(
    tmp_path: Path, backends: dict[str, Any], routes: list[dict[str, Any]]
) -> Iterator[tuple[str, str]]:
    """A gateway process of its own with these backends and routes; yields its REST and gRPC addresses."""
    rest, grpc_port, metrics = free_ports(3)
    config = {
        "listeners": {
            "rest": {"host": "127.0.0.1", "port": rest},
            "grpc": {"host": "127.0.0.1", "port": grpc_port},
            "metrics": {"host": "127.0.0.1", "port": metrics},
        },
        "backends": backends,
        "routes": routes,
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = ManagedProcess(
        "gateway", [sys.executable, "-m", "gateway", "serve", "--config", str(path)], "gateway ready"
    )
    proc.start(timeout_s=60, echo=False)
    try:
        yield f"127.0.0.1:{rest}", f"127.0.0.1:{grpc_port}"
    finally:
        proc.stop()
