"""The key relay between a real gateway and a real TorchServe 0.12.0, as in a Kubernetes pod: TorchServe
with token authorization on loopback, the relay in front of it admitting the key of a "Secret" file, the
gateway's `torchserve` backends (gRPC and REST) pointing at the relay with that file as their key file.
Predictions pass; a wrong key at the relay is refused as TorchServe refuses it; rotating the Secret file
keeps them passing; renewing TorchServe's key through its token API works and the relay follows it."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from gateway.local_stack import ManagedProcess, free_ports
from gateway.proto.torchserve import inference_pb2 as pb
from runtimes.examples.specs import SPECS, sample_inputs
from runtimes.torchserve.config import ModelEntry, TorchServeConfig
from runtimes.torchserve.examples import export_examples
from runtimes.torchserve.launcher import TorchServeProcess, torchserve_command
from runtimes.torchserve.podkey import PodKey
from runtimes.torchserve.relay import REFUSED_LOOK_S
from tests.integration.processes import gateway_process

pytest.importorskip("torch")
pytest.importorskip("ts")

pytestmark = pytest.mark.integration

SERVICE = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"


@dataclass
class Pod:
    torchserve: TorchServeProcess
    config: TorchServeConfig
    secret: Path
    relay_rest: str
    relay_grpc: str
    gateway_rest: str


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """TorchServe serving the mlp example, the relay (a process of its own) and a gateway, on free ports."""
    root = tmp_path_factory.mktemp("ts-relay")
    export_examples(root / "store")
    ports = free_ports(7)
    config = TorchServeConfig(
        model_store=root / "store",
        models=(ModelEntry("mlp", "mlp.mar"),),
        inference_port=ports[0],
        management_port=ports[1],
        metrics_port=ports[2],
        grpc_inference_port=ports[3],
        grpc_management_port=ports[4],
        heap_mb=128,
    )
    secret = root / "secret" / "inference-key"
    secret.parent.mkdir()
    secret.write_text("gateway-key-1\n")
    torchserve = TorchServeProcess(torchserve_command(config, root / "work"), config.inference_url())
    relay_rest, relay_grpc = f"127.0.0.1:{ports[5]}", f"127.0.0.1:{ports[6]}"
    relay = ManagedProcess(
        "relay",
        [
            sys.executable,
            "-m",
            "runtimes.torchserve",
            "relay",
            f"--secret-file={secret}",
            f"--key-file={torchserve.command.key_file}",
            "--host=127.0.0.1",
            f"--rest-port={ports[5]}",
            f"--grpc-port={ports[6]}",
            f"--upstream-rest={config.inference_url()}",
            f"--upstream-grpc=127.0.0.1:{config.grpc_inference_port}",
            f"--management-url={config.management_url()}",
            "--previous-key-grace-s=2",
        ],
        "relay ready",
    )
    backends: dict[str, Any] = {
        "ts-grpc": {"kind": "torchserve", "endpoints": [relay_grpc], "inference_key_file": str(secret)},
        "ts-rest": {
            "kind": "torchserve",
            "protocol": "rest",
            "endpoints": [relay_rest],
            "inference_key_file": str(secret),
        },
    }
    routes = [
        {"model": "mlp", "backend": "ts-grpc", "options": {"version": "1"}},
        {"model": "mlp", "version": "rest", "backend": "ts-rest", "options": {"version": "1"}},
    ]
    torchserve.start(timeout_s=120)
    try:
        relay.start(timeout_s=30, echo=False)
        try:
            with gateway_process(root, backends, routes) as (gateway_rest, _grpc):
                yield Pod(torchserve, config, secret, relay_rest, relay_grpc, gateway_rest)
        finally:
            relay.stop()
    finally:
        torchserve.stop()


def _infer(pod: Pod, version: str = "") -> np.ndarray:
    (features,) = sample_inputs(SPECS["mlp"], np.random.default_rng(5), 4)
    tensor = httpclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    client = httpclient.InferenceServerClient(pod.gateway_rest)
    out: np.ndarray = client.infer("mlp", [tensor], model_version=version).as_numpy("logits")
    return out


def _relay_ping(pod: Pod, key: str) -> httpx.Response:
    return httpx.get(f"http://{pod.relay_rest}/ping", headers={"authorization": f"Bearer {key}"}, timeout=10)


def test_predictions_pass_through_the_relay_over_grpc_and_rest(pod: Pod) -> None:
    """The gateway, holding only the Secret's key, gets the same answers through the relay on both
    transports; the relay is ready (TorchServe healthy with the pod's key)."""
    over_grpc = _infer(pod)
    assert over_grpc.shape == (4, 4)
    np.testing.assert_array_equal(_infer(pod, "rest"), over_grpc)
    assert httpx.get(f"http://{pod.relay_rest}/relay/ready", timeout=10).json() == {"status": "Healthy"}
    assert httpclient.InferenceServerClient(pod.gateway_rest).is_model_ready("mlp")


def test_a_wrong_key_is_refused_at_the_relay_as_torchserve_refuses_it(pod: Pod) -> None:
    """REST: 400 InvalidKeyException; gRPC: PERMISSION_DENIED; the Secret's key is no key of TorchServe's."""
    reply = _relay_ping(pod, "not-the-key")
    assert reply.status_code == 400 and reply.json()["type"] == "InvalidKeyException"
    assert httpx.get(f"http://{pod.relay_rest}/ping", timeout=10).status_code == 400
    with grpc.insecure_channel(pod.relay_grpc) as channel:
        request = pb.PredictionsRequest(model_name="mlp", input={"data": b""}).SerializeToString()
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary(SERVICE + "Predictions")(
                request, metadata=(("authorization", "Bearer not-the-key"),), timeout=10
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    direct = httpx.get(
        f"{pod.config.inference_url()}/ping",
        headers={"authorization": f"Bearer {pod.secret.read_text().strip()}"},
        timeout=10,
    )
    assert direct.status_code == 400


def test_rotating_the_secret_keeps_predictions_passing(pod: Pod) -> None:
    """A new key in the Secret file: the relay admits it at once, the gateway picks it up, answers keep
    coming; the old key is admitted only for the grace period (2 s here)."""
    old = pod.secret.read_text().strip()
    # A refused key makes the relay look at the Secret at most once a second: let the last test's
    # refusals age, so the first refusal of the new key is the one that makes it look.
    time.sleep(REFUSED_LOOK_S)
    pod.secret.write_text("gateway-key-2-rotated\n")
    assert _relay_ping(pod, "gateway-key-2-rotated").status_code == 200
    assert _relay_ping(pod, old).status_code == 200  # within the grace period
    assert _infer(pod).shape == (4, 4) and _infer(pod, "rest").shape == (4, 4)
    time.sleep(2.2)
    assert _relay_ping(pod, old).status_code == 400
    assert _infer(pod).shape == (4, 4) and _infer(pod, "rest").shape == (4, 4)


def test_renewing_torchserves_key_works_and_the_relay_follows(pod: Pod) -> None:
    """PodKey.renew against the real token API: a new inference key in key_file.json, the old one refused
    by TorchServe; the relay, still holding the old key, is refused once, reads the file and carries on."""

    async def renew() -> tuple[str, str]:
        async with httpx.AsyncClient() as client:
            key = PodKey(
                pod.torchserve.command.key_file, pod.config.management_url(), lifetime_s=3600, client=client
            )
            await key.load()
            before = key.header()
            await key.renew()
            return before, key.header()

    before, after = asyncio.run(renew())
    assert before != after and after.startswith("Bearer ")
    ping = f"{pod.config.inference_url()}/ping"
    assert httpx.get(ping, headers={"authorization": before}, timeout=10).status_code == 400
    assert httpx.get(ping, headers={"authorization": after}, timeout=10).status_code == 200
    assert _infer(pod).shape == (4, 4) and _infer(pod, "rest").shape == (4, 4)
    assert httpx.get(f"http://{pod.relay_rest}/relay/ready", timeout=10).status_code == 200
