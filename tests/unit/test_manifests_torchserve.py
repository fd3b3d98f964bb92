"""The Kubernetes manifests of TorchServe and its key relay, and the NetworkPolicy of every backend: they
agree with the gateway's config, with the project's TorchServe config and with each other.

Static checks always run; those of rendered output need kustomize or kubectl (see test_manifests.py).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

from gateway.settings import TorchServeBackendSettings, load_settings
from runtimes.examples import SPECS
from runtimes.torchserve.config import ModelEntry, TorchServeConfig, render
from tests.unit.test_manifests import (
    BASE,
    BUILDS,
    K8S,
    Obj,
    _base_objects,
    _container,
    _find,
    _flag,
    _gateway_config,
    _kustomization,
    _pod,
    _ports,
    _render,
    _selects,
)

SECRET = "torchserve-inference-key"
BACKEND_SERVICES = ("jax-runtime", "tfserving", "torchserve")


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def _torchserve_properties() -> dict[str, str]:
    generator = next(
        gen for gen in _kustomization(BASE)["configMapGenerator"] if gen["name"] == "torchserve-config"
    )
    files: dict[str, str] = dict(entry.split("=", 1) for entry in generator["files"])
    return _props((BASE / files["config.properties"]).read_text())


def _torchserve() -> tuple[Obj, Obj, Obj]:
    deployment = _find(_base_objects(), "Deployment", "torchserve")
    return deployment, _container(deployment, "torchserve"), _container(deployment, "key-relay")


def _mount(container: Obj, path: str) -> Obj:
    """The volume mount holding `path` (the deepest mount path above it)."""
    mounts = [m for m in container["volumeMounts"] if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert mounts, f"{path} is on no volume of {container['name']}"
    return max(mounts, key=lambda m: len(m["mountPath"]))


def _volume(deployment: Obj, name: str) -> Obj:
    return next(v for v in _pod(deployment)["volumes"] if v["name"] == name)


def test_torchserve_config_is_what_the_project_renders() -> None:
    """config.properties is the project's config module's output for the example models (token auth on,
    management on loopback, model API off), with the inference API on loopback beside the relay."""
    props = _torchserve_properties()
    expected = TorchServeConfig(
        model_store=Path("/models"),
        models=tuple(ModelEntry(name, f"{name}.mar") for name in SPECS),
        inference_port=8090,
        grpc_inference_port=7090,
        metrics_host="0.0.0.0",
        heap_mb=512,
    )
    assert props == _props(render(expected))
    assert props["disable_token_authorization"] == "false" and props["enable_model_api"] == "false"
    for key in ("inference_address", "management_address"):
        assert urlsplit(props[key]).hostname == "127.0.0.1", key
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"


def test_torchserve_runs_the_mounted_config_from_the_shared_workdir() -> None:
    """TorchServe starts in the foreground with the ConfigMap's file and the model store the initContainer
    fills; its working directory (key_file.json) is the emptyDir the relay reads, in memory."""
    deployment, server, relay = _torchserve()
    args = server["args"]
    assert {"--start", "--foreground"} <= set(args)
    config = _flag(args, "--ts-config")
    assert _volume(deployment, _mount(server, config)["name"])["configMap"]["name"] == "torchserve-config"
    store = _flag(args, "--model-store")
    assert store == _torchserve_properties()["model_store"]
    init = next(c for c in _pod(deployment)["initContainers"] if c["name"] == "export-examples")
    assert init["command"][-1] == "runtimes.torchserve.examples" and init["args"] == [store]
    assert _mount(init, store)["name"] == _mount(server, store)["name"]
    assert init["image"] == relay["image"] == "serving-gateway-torchserve-runtime"
    key_file = PurePosixPath(_flag(relay["args"], "--key-file"))
    assert key_file.name == "key_file.json" and str(key_file.parent) == server["workingDir"]
    workdir = _mount(server, server["workingDir"])
    assert _mount(relay, str(key_file))["name"] == workdir["name"]
    assert _mount(relay, str(key_file))["readOnly"] is True
    assert _volume(deployment, workdir["name"])["emptyDir"]["medium"] == "Memory"


def test_relay_forwards_to_torchserves_loopback_ports_and_serves_the_services() -> None:
    """The relay's upstreams are the config's loopback addresses; its ports are the Service's serving ports,
    the gateway's endpoint is the Service's gRPC port, and readiness is the relay's ready endpoint."""
    deployment, server, relay = _torchserve()
    args, props = relay["args"], _torchserve_properties()
    assert args[0] == "relay"
    assert _flag(args, "--upstream-rest") == props["inference_address"]
    assert _flag(args, "--upstream-grpc") == f"127.0.0.1:{props['grpc_inference_port']}"
    assert _flag(args, "--management-url") == props["management_address"]
    assert float(_flag(args, "--token-expiration-min")) == float(props["token_expiration_min"])
    ports = _ports(relay)
    assert ports == {"http": int(_flag(args, "--rest-port")), "grpc": int(_flag(args, "--grpc-port"))}
    assert _ports(server) == {"metrics": int(urlsplit(props["metrics_address"]).port or 0)}
    service = _find(_base_objects(), "Service", "torchserve")
    assert service["spec"]["clusterIP"] == "None"
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for name, port in {**ports, **_ports(server)}.items():
        assert service_ports[name]["targetPort"] == name and service_ports[name]["port"] == port
    assert service_ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    backend = _gateway_config()["backends"]["torchserve"]
    assert backend["kind"] == "torchserve" and backend["protocol"] == "grpc"
    assert backend["endpoints"] == [f"torchserve:{service_ports['grpc']['port']}"]
    assert relay["readinessProbe"]["httpGet"] == {"path": "/relay/ready", "port": "http"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(_ports(server)["metrics"])


def test_the_secret_is_mounted_where_the_config_and_the_relay_read_it() -> None:
    """The gateway's inference_key_file and the relay's --secret-file are the same key of the same Secret,
    mounted as a directory (a subPath mount would never see a rotation)."""
    settings = load_settings(BASE / "gateway.yaml", environ={})
    backend = settings.backends["torchserve"]
    assert isinstance(backend, TorchServeBackendSettings)
    gateway = _find(_base_objects(), "Deployment", "gateway")
    deployment, _, relay = _torchserve()
    paths = {
        "gateway": (gateway, _container(gateway, "gateway"), backend.inference_key_file),
        "relay": (deployment, relay, _flag(relay["args"], "--secret-file")),
    }
    keys = set()
    for who, (owner, container, path) in paths.items():
        mount = _mount(container, path)
        assert "subPath" not in mount and mount["readOnly"] is True, who
        secret = _volume(owner, mount["name"])["secret"]
        assert secret["secretName"] == SECRET, who
        assert secret["defaultMode"] & 0o040, f"{who}: the fsGroup must be able to read it"
        keys.add(str(PurePosixPath(path).relative_to(mount["mountPath"])))
    assert len(keys) == 1, keys
    assert not any(obj["kind"] == "Secret" for obj in _base_objects()), "the operator creates the Secret"


def _policy_rules(policy: Obj) -> tuple[set[str], set[str]]:
    """The ports the gateway's pods may reach, and the ports anything else may reach."""
    gateway_ports: set[str] = set()
    other_ports: set[str] = set()
    for rule in policy["spec"]["ingress"]:
        ports = {str(port["port"]) for port in rule["ports"]}
        sources = rule["from"]
        if sources == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "gateway"}}}]:
            gateway_ports |= ports
        else:
            other_ports |= ports
    return gateway_ports, other_ports


@pytest.mark.parametrize("name", BACKEND_SERVICES)
def test_each_backend_admits_only_the_gateway_to_its_serving_ports(name: str) -> None:
    """A NetworkPolicy per backend selects its pods; the port the gateway's config calls is reachable from
    the gateway's pods only; anything else (Prometheus) reaches the scraped port alone."""
    objects = _base_objects()
    policy = _find(objects, "NetworkPolicy", name)
    deployment = _find(objects, "Deployment", name)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _selects(
        policy["spec"]["podSelector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    container_ports = {p: n for c in _pod(deployment)["containers"] for p, n in _ports(c).items()}
    gateway_ports, other_ports = _policy_rules(policy)
    assert gateway_ports | other_ports <= set(container_ports), "policies name the containers' ports"
    service = _find(objects, "Service", name)
    endpoints = [e for b in _gateway_config()["backends"].values() for e in b["endpoints"]]
    called = {p["targetPort"] for p in service["spec"]["ports"] if f"{name}:{p['port']}" in endpoints}
    assert called and called <= gateway_ports and not called & other_ports
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    scraped = {n for n, port in container_ports.items() if str(port) == annotations["prometheus.io/port"]}
    assert other_ports <= scraped


@pytest.mark.parametrize("directory", BUILDS, ids=lambda path: str(path.relative_to(K8S)))
def test_every_build_keeps_a_policy_per_backend(directory: Path) -> None:
    """Every overlay renders each backend's NetworkPolicy, selecting that backend's pods and no other."""
    objects = _render(directory)
    deployments = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Deployment"}
    for name in BACKEND_SERVICES:
        selector = _find(objects, "NetworkPolicy", name)["spec"]["podSelector"]["matchLabels"]
        selected = [
            d
            for d, obj in deployments.items()
            if _selects(selector, obj["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected == [name], (name, selected)


def test_gpu_overlay_runs_torchserve_on_a_gpu_with_the_gpu_image() -> None:
    """gpu: TorchServe asks for nvidia.com/gpu and runs the -gpu build of the same release; not the relay."""
    objects, base = _render(K8S / "overlays" / "gpu"), _render(BASE)
    deployment = _find(objects, "Deployment", "torchserve")
    server, relay = _container(deployment, "torchserve"), _container(deployment, "key-relay")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in relay["resources"]["limits"]
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in _pod(deployment)["tolerations"])
    base_image = _container(_find(base, "Deployment", "torchserve"), "torchserve")["image"]
    assert base_image == "serving-gateway-torchserve:0.1.0"
    assert server["image"] == "serving-gateway-torchserve:0.1.0-cuda"
