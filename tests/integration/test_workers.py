"""The gateway with several worker processes: one port, requests served by all, metrics merged."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.local_stack import LocalStack, ManagedProcess, StackPorts, free_ports, gateway_config

pytestmark = pytest.mark.integration


@pytest.fixture
def two_worker_gateway(stack: LocalStack, tmp_path: Path) -> Iterator[tuple[StackPorts, int]]:
    """A second gateway, with `workers: 2`, routed to the session's JAX runtime."""
    rest, grpc_port, metrics = free_ports(3)
    ports = StackPorts(
        host="127.0.0.1",
        gateway_rest=rest,
        gateway_grpc=grpc_port,
        gateway_metrics=metrics,
        runtime_grpc=stack.ports.runtime_grpc,
    )
    config = gateway_config(ports)
    config["listeners"]["workers"] = 2  # type: ignore[index]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(path)]
    proc = ManagedProcess("gateway-2w", argv, "gateway ready")
    proc.start(timeout_s=120, echo=False)
    assert proc.proc is not None
    try:
        yield ports, proc.proc.pid
    finally:
        proc.stop()


def _requests_total(url: str) -> float:
    text = httpx.get(url, timeout=10).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_requests_total" and s.labels.get("model") == "transformer"
    )


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_workers_serve_and_merge_metrics(two_worker_gateway: tuple[StackPorts, int]) -> None:
    """Fresh connections to a 2-worker gateway all succeed and every request is counted once."""
    ports, parent = two_worker_gateway
    spawned = [pid for pid in _children(parent) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(spawned) == 2, f"expected 2 worker processes under {parent}, found {spawned}"
    tokens = np.arange(16, dtype=np.int32).reshape(1, 16)
    reference = None
    for i in range(12):  # new clients, new connections: the kernel spreads them over the workers
        if i % 2:
            client = httpclient.InferenceServerClient(url=f"127.0.0.1:{ports.gateway_rest}")
            tensor = httpclient.InferInput("tokens", [1, 16], "INT32")
        else:
            client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{ports.gateway_grpc}")
            tensor = grpcclient.InferInput("tokens", [1, 16], "INT32")
        tensor.set_data_from_numpy(tokens)
        got = client.infer("transformer", [tensor]).as_numpy("embedding")
        reference = got if reference is None else reference
        np.testing.assert_allclose(got, reference, rtol=1e-6)
        client.close()
    assert _requests_total(f"http://127.0.0.1:{ports.gateway_metrics}/metrics") == 12
