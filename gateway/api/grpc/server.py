"""Start the gRPC listener: the OIP service (and optionally TF Serving's and TorchServe's), `grpc.health.v1`
and server reflection on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from gateway.api.admission import InFlightLimit
from gateway.api.grpc.servicer import SERVICE_NAME, InferenceServicer, add_inference_service
from gateway.api.grpc.tfserving import SERVICE_NAMES as TFSERVING_SERVICES
from gateway.api.grpc.tfserving import TFServingServicer, add_tfserving_services
from gateway.api.grpc.torchserve import SERVICE_NAME as TORCHSERVE_SERVICE
from gateway.api.grpc.torchserve import TorchServeServicer, add_torchserve_service
from gateway.proto import inference_pb2
from gateway.proto.tfserving.tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
from gateway.proto.torchserve import inference_pb2 as torchserve_pb2
from gateway.server import InferenceServer

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CONNECTION_AGE_S = 300.0
MAX_CONNECTION_AGE_GRACE_S = 30.0
HEALTH_POLL_S = 1.0


@dataclass(eq=False, frozen=True, slots=True)
class GrpcListener:
    """A started gRPC listener: its server, and the task keeping `grpc.health.v1` in step with readiness."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    health_task: asyncio.Task[None]


def _reflection_pool(tfserving: bool, torchserve: bool = False) -> descriptor_pool.DescriptorPool:
    """A pool holding every service we expose; ours live in private pools (see scripts/gen_proto.py)."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    modules = [inference_pb2, health_pb2, reflection_pb2]
    if tfserving:
        modules += [prediction_service_pb2, model_service_pb2]
    if torchserve:
        modules.append(torchserve_pb2)
    for module in modules:
        _add_file(pool, module.DESCRIPTOR, added)
    return pool


def _add_file(pool: descriptor_pool.DescriptorPool, file: FileDescriptor, added: set[str]) -> None:
    """Add `file` to `pool` after the files it imports (a pool refuses a file whose imports it lacks)."""
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add_file(pool, dependency, added)
    pool.AddSerializedFile(file.serialized_pb)
    added.add(file.name)


async def _track_health(
    server: InferenceServer, servicer: health.aio.HealthServicer, services: tuple[str, ...]
) -> None:
    """Keep `grpc.health.v1` in step with the server's readiness (overall and for each service)."""
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    while True:
        try:
            status = serving if await server.ready() else not_serving
        except Exception:
            log.exception("readiness check failed")
            status = not_serving
        for name in ("", *services):
            await servicer.set(name, status)
        await asyncio.sleep(HEALTH_POLL_S)


async def start_grpc_server(
    server: InferenceServer,
    host: str,
    port: int,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    reuse_port: bool = False,
    max_connection_age_s: float = DEFAULT_MAX_CONNECTION_AGE_S,
    limit: InFlightLimit | None = None,
    tfserving: bool = False,
    torchserve: bool = False,
) -> GrpcListener:
    """Start a grpc.aio server for `server`; `stop_grpc_server` stops it.

    Requests over `max_message_bytes` are refused by gRPC itself with RESOURCE_EXHAUSTED. Responses are
    not limited: the answer was already computed (and bounded by the backend's own message limit), and
    refusing it would report the client's request as too large. `reuse_port` lets several worker
    processes share the port. `host` is an address as written in the settings (IPv6 unbracketed).
    After `max_connection_age_s` (0: never) clients are told to reconnect, which makes them re-resolve
    DNS: new replicas behind a headless Service start taking traffic. Calls in flight get
    `MAX_CONNECTION_AGE_GRACE_S` to finish; a stream still open then is cut. Inference requests (calls
    and stream messages) that `limit` refuses get RESOURCE_EXHAUSTED; health and metadata calls do not
    count. `tfserving` adds TF Serving's PredictionService and ModelService
    (`gateway.api.grpc.tfserving`), `torchserve` TorchServe's InferenceAPIsService
    (`gateway.api.grpc.torchserve`), under the same limits.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ]
    if max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", round(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", round(MAX_CONNECTION_AGE_GRACE_S * 1000)),
        ]
    grpc_server = grpc.aio.server(options=options)
    servicer = InferenceServicer(server, limit=limit)
    add_inference_service(servicer, grpc_server)
    services: tuple[str, ...] = (SERVICE_NAME,)
    if tfserving:
        add_tfserving_services(TFServingServicer(server, limit=limit), grpc_server)
        services += TFSERVING_SERVICES
    if torchserve:
        add_torchserve_service(TorchServeServicer(server, limit=limit), grpc_server)
        services += (TORCHSERVE_SERVICE,)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    reflection.enable_server_reflection(
        (*services, health.SERVICE_NAME, reflection.SERVICE_NAME),
        grpc_server,
        pool=_reflection_pool(tfserving, torchserve),
    )
    # gRPC parses "host:port" as a URI authority: an IPv6 host needs its brackets.
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        grpc_server.add_insecure_port(target)
    except RuntimeError:  # grpcio's "Failed to bind": an OSError to callers, as for the other listeners
        raise OSError(f"cannot bind the gRPC listener on {target} (address in use or unavailable)") from None
    await grpc_server.start()
    task = asyncio.get_running_loop().create_task(_track_health(server, health_servicer, services))
    return GrpcListener(grpc_server, health_servicer, task)


async def stop_grpc_server(listener: GrpcListener, grace_s: float = 5.0) -> None:
    """Report NOT_SERVING, stop accepting calls, and let in-flight ones finish for up to `grace_s`."""
    listener.health_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener.health_task
    # Health watchers (load balancers, Kubernetes gRPC probes) see the drain before the port closes.
    await listener.health.enter_graceful_shutdown()
    await listener.server.stop(grace_s)
