"""The key relay: a sidecar beside TorchServe in each Kubernetes pod (docs/architecture.md, "TorchServe's
inference key").

TorchServe draws its own keys at start, so every pod has different ones; the gateway holds one key, a
Kubernetes Secret's. The relay listens on the pod's address, admits callers bearing the Secret's key
(compared in constant time; the Secret is a mounted file, read again when it changes) and forwards their
calls to TorchServe on loopback with the pod's own inference key (`podkey.PodKey`: read from
`key_file.json`, renewed before it expires). It forwards TorchServe's inference API only:
- REST: `POST`/`PUT /predictions/...`, `GET /ping`; any other path is 404 (`_relay_rest`);
- gRPC: `InferenceAPIsService` Predictions, Ping and StreamPredictions; StreamPredictions2 and any other
  method are UNIMPLEMENTED (`_relay_grpc`).
A caller without the Secret's key is refused as TorchServe refuses a bad key (HTTP 400
`InvalidKeyException`, gRPC PERMISSION_DENIED), so the gateway's read-the-key-again-and-retry applies.
When TorchServe refuses the pod's key the relay reads the key file again or renews the key, and retries
once; if that fails the call is TorchServe's failure (503 / UNAVAILABLE), never the caller's key.
`GET /relay/ready` (no key: the kubelet's probe) is 200 when TorchServe's `/ping` says Healthy through
loopback with the pod's key; `GET /relay/live` is 200 while the relay runs.

No torch here, nor TorchServe: the relay runs in the project's image beside the official TorchServe one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import httpx
import uvicorn

from gateway.backends.credentials import BearerKey
from runtimes.common.lifecycle import signals_set
from runtimes.torchserve.podkey import PodKey

log = logging.getLogger(__name__)

# TorchServe's own words for a refused key (its TokenAuthorizationHandler and GRPCInterceptor).
KEY_REFUSED: Final = "Token Authorization failed. Token either incorrect, expired, or not provided correctly"
PREVIOUS_KEY_GRACE_S: Final = 120.0
REFUSED_LOOK_S: Final = 1.0  # a refused key makes the relay look at the Secret file at most this often
_BEARER: Final = re.compile(r"Bearer\s+(\S+)")


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """Where the relay listens, where TorchServe is, and the two keys' files."""

    secret_file: Path  # the key callers must bear (the mounted Secret): the key alone, or a key file
    key_file: Path  # TorchServe's key_file.json
    host: str = "0.0.0.0"
    rest_port: int = 8080
    grpc_port: int = 7070
    upstream_rest: str = "http://127.0.0.1:8080"
    upstream_grpc: str = "127.0.0.1:7070"
    management_url: str = "http://127.0.0.1:8081"
    token_expiration_min: float = 60.0
    max_request_bytes: int = 64 << 20
    timeout_s: float = 130.0  # above TorchServe's default responseTimeout (120 s)
    previous_key_grace_s: float = PREVIOUS_KEY_GRACE_S
    shutdown_grace_s: float = 10.0


class CallerKey:
    """The key a caller must bear: the Secret file's (`BearerKey`, looked at again at most once a second,
    and when a caller's key does not match: at once, unless a refused key already made it look within
    the last second, so a caller sending bad keys cannot turn each one into a stat of the file or a
    warning in the log).

    A rotated Secret reaches each pod's mount at its own time (the kubelet's sync period), so for
    `previous_key_grace_s` after the relay sees a new key it still admits the one before: a gateway pod
    whose mount is not updated yet keeps working. (A gateway that sees the new key before this relay
    does is refused until this relay's mount is updated.)

    Args:
        path: The Secret file.
        previous_key_grace_s: How long the key before a rotation is still admitted.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        path: Path,
        *,
        previous_key_grace_s: float = PREVIOUS_KEY_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = BearerKey("key relay", path=str(path), clock=clock)
        self._grace_s = previous_key_grace_s
        self._clock = clock
        self._current = self._key.header().encode()
        self._previous = b""
        self._previous_until = -math.inf
        self._refused_look = -math.inf  # when a refused key last made it look at the file

    def __repr__(self) -> str:
        return "CallerKey(<hidden>)"

    def _observe(self, header: str) -> bytes:
        current = header.encode()
        if current != self._current:
            if self._current:
                self._previous, self._previous_until = self._current, self._clock() + self._grace_s
            self._current = current
        return current

    def admits(self, authorization: str | None) -> bool:
        """Whether an `Authorization` value (`Bearer <key>`, as TorchServe parses it) bears the key."""
        match = _BEARER.fullmatch(authorization or "")
        if match is None:
            return False
        presented = f"Bearer {match.group(1)}".encode()
        current = self._observe(self._key.header())
        if current and hmac.compare_digest(presented, current):
            return True
        if self._previous and self._clock() < self._previous_until:
            if hmac.compare_digest(presented, self._previous):
                return True
        now = self._clock()
        if now - self._refused_look < REFUSED_LOOK_S:
            return False
        self._refused_look = now
        if self._key.refresh():  # rotated since the last look
            current = self._observe(self._key.header())
            return bool(current) and hmac.compare_digest(presented, current)
        return False


async def serve(
    settings: RelaySettings,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the relay until `stop` is set (default: SIGINT or SIGTERM); ports 0 pick free ones."""
    from gateway.api.serving import RestServer, bind_socket, start_rest_server
    from runtimes.torchserve._relay_grpc import start_grpc_relay
    from runtimes.torchserve._relay_rest import RestRelay

    signals = contextlib.ExitStack()
    if stop is None:
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():  # signal handlers need the main thread
            signals.enter_context(signals_set(stop))
    caller = CallerKey(settings.secret_file, previous_key_grace_s=settings.previous_key_grace_s)
    timeout = httpx.Timeout(settings.timeout_s, connect=5.0)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30.0)
    client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
    pod = PodKey(
        settings.key_file,
        settings.management_url,
        lifetime_s=settings.token_expiration_min * 60.0,
        client=client,
    )
    renewals: asyncio.Task[None] | None = None
    rest: RestServer | None = None
    rest_task: asyncio.Task[None] | None = None
    grpc_server: grpc.aio.Server | None = None
    channel: grpc.aio.Channel | None = None
    rest_sock = bind_socket(settings.host, settings.rest_port)
    try:
        await pod.load()
        renewals = asyncio.get_running_loop().create_task(pod.run_renewals(), name="relay:renewals")
        app = RestRelay(
            caller, pod, settings.upstream_rest, client, max_request_bytes=settings.max_request_bytes
        )
        config = uvicorn.Config(
            app,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        )
        rest, rest_task = await start_rest_server(config, rest_sock)
        grpc_server, grpc_port, channel = await start_grpc_relay(
            caller, pod, settings.upstream_grpc, settings.host, settings.grpc_port, settings.max_request_bytes
        )
        line = (
            f"relay ready: rest {settings.host}:{rest_sock.getsockname()[1]} grpc {settings.host}:{grpc_port}"
            f" -> TorchServe {settings.upstream_rest} and {settings.upstream_grpc}"
        )
        (on_ready or (lambda text: print(text, flush=True)))(line)
        stopped = asyncio.get_running_loop().create_task(stop.wait())
        await asyncio.wait({stopped, rest_task, renewals}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if renewals.done() and not renewals.cancelled() and renewals.exception() is not None:
            log.error("the key renewal loop failed; stopping", exc_info=renewals.exception())
        elif rest_task.done():
            log.error("the REST listener stopped unexpectedly; stopping")
    finally:
        if rest is not None:
            rest.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(settings.shutdown_grace_s)
        if rest_task is not None:
            await asyncio.gather(rest_task, return_exceptions=True)
        if channel is not None:
            await channel.close()
        if renewals is not None:
            renewals.cancel()
            await asyncio.gather(renewals, return_exceptions=True)
        await client.aclose()
        rest_sock.close()
        signals.close()
