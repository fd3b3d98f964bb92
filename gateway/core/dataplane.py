"""The DataPlane: the transport-free heart of the gateway that both listeners call.

For an inference it matches the route, applies the deadline, validates the request against the model's
metadata (cached), renames the model toward the backend, picks an endpoint of the backend's cluster,
calls the backend, renames the model back, and records the request's metrics exactly once, failures
included. Errors leave as `GatewayError`s; an unexpected exception is logged with its traceback and
reported as an opaque INTERNAL error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterator, Mapping

from gateway.core.cluster import Cluster, Endpoint
from gateway.core.model_config import derive_config
from gateway.core.routing import Route, Router
from gateway.core.validation import validate_request
from gateway.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    ModelNotFound,
    Unimplemented,
    clip,
)
from gateway.metrics import OK, UNKNOWN_MODEL, GatewayMetrics
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    RequestContext,
    ServerMetadata,
)

log = logging.getLogger(__name__)

SERVER_NAME = "serving-gateway"
EXTENSIONS = ("binary_tensor_data", "model_configuration")

_INTERNAL = ErrorCode.INTERNAL.name
_DEADLINE = ErrorCode.DEADLINE_EXCEEDED.name

# Cache entries: (expiry on the DataPlane's clock, metadata or None when the backend has none to give,
# the time until which the entry may serve stale while refreshes fail).
_CacheEntry = tuple[float, ModelMetadata | None, float]
# Keys hold the version the client asked for, so the cache must not grow with what clients send: past
# this many entries the oldest fetch is dropped (routes times real versions stay far below it).
_METADATA_CACHE_ENTRIES = 1024
# After a background refresh of stale metadata failed, the stale entry serves this long before the next
# refresh is tried: often enough to recover soon, not a fetch (and a warning) per request.
_REFRESH_RETRY_S = 5.0
# How long past its TTL an entry may serve while refreshes keep failing; then requests wait for a fetch
# again (and fail with it), rather than being validated for ever against what the backend said long ago.
_MAX_STALE_S = 300.0


def _package_version() -> str:
    try:
        return importlib.metadata.version(SERVER_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


class DataPlane:
    """Implements `gateway.server.InferenceServer` by routing to backend clusters.

    Args:
        router: Matches (model, version) to a route.
        clusters: The cluster of each backend named by a route.
        metrics: Where request metrics go.
        validate_requests: Check requests against the model's metadata before calling the backend.
        clock: Monotonic seconds; the clock of `RequestContext.deadline`.
    """

    def __init__(
        self,
        router: Router,
        clusters: Mapping[str, Cluster],
        metrics: GatewayMetrics,
        *,
        validate_requests: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = {r.backend for r in router.routes} - set(clusters)
        if missing:
            raise ValueError(f"routes name backends without a cluster: {', '.join(sorted(missing))}")
        self._router = router
        self._clusters = dict(clusters)
        self._metrics = metrics
        self._validate = validate_requests
        self._clock = clock
        self._metadata_cache: dict[tuple[Route, str], _CacheEntry] = {}
        self._metadata_pending: dict[tuple[Route, str], asyncio.Task[ModelMetadata | None]] = {}
        self._server_metadata = ServerMetadata(SERVER_NAME, _package_version(), list(EXTENSIONS))
        self._serving = False

    def start_serving(self) -> None:
        """The listeners are up: from now on the gateway reports itself ready."""
        self._serving = True

    def stop_serving(self) -> None:
        """Shutdown began: report not ready, so load balancers stop sending before the listeners close."""
        self._serving = False

    async def live(self) -> bool:
        """The process is up and serving; backends do not matter."""
        return True

    async def ready(self) -> bool:
        """This gateway can serve: its configuration is loaded and its listeners are up (between
        `start_serving` and `stop_serving`).

        Backends do not matter here: one framework down must not take every gateway replica, and with it
        every healthy model, out of service (a Kubernetes readinessProbe reads this). Whether a model can
        be served is `model_ready`, asked of the model's own backend.
        """
        return self._serving

    async def server_metadata(self) -> ServerMetadata:
        """The gateway's own name, version and protocol extensions."""
        return self._server_metadata

    async def model_ready(self, name: str, version: str = "") -> bool:
        """Whether a routed model is ready on one of its backend's endpoints.

        Raises:
            ModelNotFound: No route takes the model, or its backend does not know the version asked for
                (as the backend itself would answer).
        """
        route = self._router.match(name, version)
        cluster = self._clusters[route.backend]
        with self._internal_errors(name, version):
            try:
                async with asyncio.timeout(cluster.timeout_s):
                    return await cluster.backend.model_ready(
                        route.backend_model, version, cluster.pick().address, options=route.options
                    )
            except (GatewayError, TimeoutError) as exc:
                if isinstance(exc, GatewayError) and exc.code is ErrorCode.NOT_FOUND:
                    raise  # a version the backend does not know: 404, as the backend answers
                # Unreachable, failing, too slow: all mean "not ready" to the asker.
                log.debug("model '%s' not ready: %r", name, exc)
                return False

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """The model's metadata under its client-facing name (cached for the backend's metadata TTL).

        Raises:
            ModelNotFound: No route takes the model.
            Unimplemented: The backend does not serve metadata.
        """
        route = self._router.match(name, version)
        cluster = self._clusters[route.backend]
        entry = self._usable_entry(route, version, cluster)
        if entry is not None:  # the hot path of fronts that type requests by it: no timer, no await
            metadata = entry[1]
        else:
            with self._internal_errors(name, version):
                async with asyncio.timeout(cluster.timeout_s):
                    metadata = await self._cached_metadata(route, version, cluster)
        if metadata is None:
            raise Unimplemented(f"backend '{route.backend}' serves no metadata for model '{clip(name)}'")
        return metadata

    async def model_config(self, name: str, version: str = "") -> ModelConfig:
        """The model's Triton-style configuration under its client-facing name, derived from its metadata
        and what its backend says of batching (`gateway.core.model_config`).

        Raises:
            ModelNotFound: No route takes the model.
            Unimplemented: The backend serves no metadata.
        """
        metadata = await self.model_metadata(name, version)
        route = self._router.match(name, version)
        cluster = self._clusters[route.backend]
        with self._internal_errors(name, version):
            async with asyncio.timeout(cluster.timeout_s):
                batching = await cluster.backend.batching(
                    route.backend_model, version, cluster.pick().address, options=route.options
                )
        return derive_config(metadata, batching)

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
        """Route, validate and run one inference.

        `request.model_name` is switched to the backend's name for the duration of the backend call
        (no copy on the hot path) and restored afterwards.

        The deadline is the earlier of the client's (`context.deadline`) and now plus the backend's
        `timeout_s`. `context.model_label` / `version_label` / `framework_label` are set to the bounded
        metric labels.

        Raises:
            ModelNotFound: No route takes the model.
            InvalidRequest: The request does not fit the model's metadata.
            DeadlineExceeded: The deadline passed.
            GatewayError: The backend's failure, mapped by the backend; INTERNAL for anything unexpected.
        """
        start = self._clock()
        # The listener's decoding counts as the gateway's own time; the deadline runs from now.
        received = context.received_at if context.received_at is not None else start
        protocol = context.protocol
        in_flight = self._metrics.in_flight_gauge(protocol)
        in_flight.inc()
        model, version, backend, framework, code = UNKNOWN_MODEL, "", "", "", OK
        backend_s: float | None = None
        context.model_label = UNKNOWN_MODEL
        try:
            route = self._router.match(request.model_name, request.model_version)
            model, version, backend = route.model, route.version, route.backend
            cluster = self._clusters[backend]
            framework = cluster.framework
            context.model_label, context.version_label, context.framework_label = model, version, framework
            deadline = start + cluster.timeout_s
            if context.deadline is not None and context.deadline < deadline:
                deadline = context.deadline
                if deadline <= start:
                    raise DeadlineExceeded(f"deadline passed before model '{model}' was called")
            metadata: ModelMetadata | None = None
            if self._validate or cluster.backend.needs_metadata:
                entry = self._usable_entry(route, request.model_version, cluster)
                if entry is not None:
                    metadata = entry[1]
                else:
                    # Only a cache miss waits on the network here; the backend call below is bounded by
                    # the backend itself (the `Backend.infer` contract), so no timer is armed per request.
                    async with asyncio.timeout(deadline - start):
                        metadata = await self._cached_metadata(route, request.model_version, cluster)
                if metadata is not None and self._validate:
                    validate_request(request, metadata)
            request.model_name = route.backend_model
            sent = self._clock()
            try:
                response = await self._send(cluster, route, request, deadline, metadata)
            finally:
                backend_s = self._clock() - sent
                request.model_name = model  # the caller's request is left as it came
            response.model_name = model
            return response
        except GatewayError as exc:
            code = exc.code.name
            if exc.code is ErrorCode.NOT_FOUND and backend:
                # The backend's message names its own model name; answer in the client's terms.
                raise ModelNotFound(request.model_name, request.model_version) from None
            raise
        except TimeoutError:
            code = _DEADLINE
            raise DeadlineExceeded(f"model '{model}' did not answer within the deadline") from None
        except asyncio.CancelledError:
            code = context.cancelled_code(self._clock()).name  # a gRPC deadline, or the client left
            raise
        except Exception:
            code = _INTERNAL
            log.exception("inference of model '%s' failed unexpectedly", model)
            raise GatewayError("internal error", code=ErrorCode.INTERNAL) from None
        finally:
            in_flight.dec()
            self._metrics.observe_request(
                model=model,
                version=version,
                backend=backend,
                framework=framework,
                protocol=protocol,
                code=code,
                total_s=self._clock() - received,
                backend_s=backend_s,
            )

    async def _send(
        self,
        cluster: Cluster,
        route: Route,
        request: InferenceRequest,
        deadline: float,
        metadata: ModelMetadata | None,
    ) -> InferenceResponse:
        """Call an endpoint; if it cannot be reached, eject it and try one other endpoint, once.

        Retrying UNAVAILABLE is safe for inference (no side effects), and it hides a replica that just
        died from clients until the health checks catch up. A replica that sheds load (RESOURCE_EXHAUSTED:
        its queue is full, it ran nothing) is not ejected, but the call moves to another one the same
        way. The retry shares the request's deadline.
        """
        failed: Endpoint | None = None
        while True:
            left = deadline - self._clock()
            if left <= 0:  # (request.model_name is the backend's name here: name the backend instead)
                raise DeadlineExceeded(f"the deadline passed before backend '{cluster.name}' answered")
            endpoint = cluster.pick(excluding=failed)
            endpoint.in_flight += 1
            try:
                return await cluster.backend.infer(
                    request, endpoint.address, left, options=route.options, metadata=metadata
                )
            except GatewayError as exc:
                unreachable = isinstance(exc, BackendUnavailable)
                if unreachable:
                    cluster.eject(endpoint)
                # Unreachable, or shedding load: either way nothing ran there, so another may take it.
                movable = unreachable or exc.code is ErrorCode.RESOURCE_EXHAUSTED
                if not movable or failed is not None or len(cluster.endpoints) < 2:
                    raise
                failed = endpoint
                # An unreachable endpoint is ejected, so rare; shedding may happen on every call of a rush.
                (log.info if unreachable else log.debug)(
                    "backend '%s' endpoint %s %s; retrying on another",
                    cluster.name,
                    endpoint.address,
                    "unreachable" if unreachable else "shed the call",
                )
            finally:
                endpoint.in_flight -= 1

    def observe_rejected(
        self, model: str, context: RequestContext, error: GatewayError, version: str = ""
    ) -> None:
        """Count an infer call a listener refused, under the labels of the route `infer` would have taken
        (the client's version picks it: version "tfserving" of a model is another backend's)."""
        try:
            route = self._router.match(model, version)
        except GatewayError:
            label, version, backend, framework = UNKNOWN_MODEL, "", "", ""
        else:
            label, version, backend = route.model, route.version, route.backend
            framework = self._clusters[backend].framework
        context.model_label, context.version_label, context.framework_label = label, version, framework
        self._metrics.observe_rejected(
            model=label,
            version=version,
            backend=backend,
            framework=framework,
            protocol=context.protocol,
            code=error.code.name,
        )

    def observe_transfer(self, context: RequestContext, bytes_in: int, bytes_out: int) -> None:
        """Count one request's wire sizes under the model and framework labels `infer` resolved."""
        self._metrics.observe_transfer(
            model=context.model_label or UNKNOWN_MODEL,
            framework=context.framework_label,
            protocol=context.protocol,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
        )

    def _usable_entry(self, route: Route, version: str, cluster: Cluster) -> _CacheEntry | None:
        """The route's cache entry, fresh or stale (read without awaiting anything), else None.

        A stale entry is served while one refresh runs in the background (stale-while-revalidate): once a
        model's metadata is known, its expiry never holds requests up. It matters most where metadata
        comes through the model's own queue (TorchServe answers it from the handler, behind the
        inferences already waiting): a blocking refresh under load would stall every request of the model
        behind one that waits its turn, and fail them all if it timed out. A failed refresh keeps the stale
        entry (see `_fetched`), for at most `_MAX_STALE_S` past its TTL. With a TTL of 0 (no cache)
        nothing stale is served.
        """
        key = (route, version)
        entry = self._metadata_cache.get(key)
        now = self._clock()
        if entry is None or entry[0] > now:
            return entry
        if entry[2] <= now:
            return None
        if key not in self._metadata_pending:
            self._start_fetch(key, route, version, cluster)
        return entry

    async def _cached_metadata(self, route: Route, version: str, cluster: Cluster) -> ModelMetadata | None:
        """The route's metadata when `_usable_entry` had none: one fetch however many requests ask at once
        (a pending one is joined)."""
        key = (route, version)
        task = self._metadata_pending.get(key)
        if task is None:
            task = self._start_fetch(key, route, version, cluster)
        # Shielded: one caller's deadline must not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    def _start_fetch(
        self, key: tuple[Route, str], route: Route, version: str, cluster: Cluster
    ) -> asyncio.Task[ModelMetadata | None]:
        """The one fetch of a route's metadata, shared by all who wait for it (see `_fetched`)."""
        task = asyncio.get_running_loop().create_task(self._fetch_metadata(route, version, cluster))
        self._metadata_pending[key] = task
        task.add_done_callback(lambda t: self._fetched(key, t))
        return task

    async def _fetch_metadata(self, route: Route, version: str, cluster: Cluster) -> ModelMetadata | None:
        endpoint = cluster.pick()
        try:
            async with asyncio.timeout(cluster.timeout_s):
                metadata = await cluster.backend.model_metadata(
                    route.backend_model, version, endpoint.address, options=route.options
                )
        except BackendUnavailable:
            cluster.eject(endpoint)
            raise
        except Unimplemented:
            metadata = None  # a backend without metadata: requests go unvalidated
        if metadata is not None:
            metadata = dataclasses.replace(metadata, name=route.model)
        if cluster.metadata_ttl_s <= 0:  # no cache: nothing is kept, so nothing stale can serve
            return metadata
        cache = self._metadata_cache
        cache.pop((route, version), None)  # re-inserted last: the order is the age of each fetch
        if len(cache) >= _METADATA_CACHE_ENTRIES:
            del cache[next(iter(cache))]
        expiry = self._clock() + cluster.metadata_ttl_s
        cache[(route, version)] = (expiry, metadata, expiry + _MAX_STALE_S)
        return metadata

    def _fetched(self, key: tuple[Route, str], task: asyncio.Task[ModelMetadata | None]) -> None:
        """A fetch ended. If it failed where a stale entry was serving (a background refresh), that entry
        goes on serving until the next try, `_REFRESH_RETRY_S` away (within its `_MAX_STALE_S`); unless
        the backend no longer has the model (NOT_FOUND), which drops it, so requests meet the backend's
        own answer. Without a cache (TTL 0) no entry is kept, so there is nothing to keep serving."""
        self._metadata_pending.pop(key, None)
        if task.cancelled():
            return
        error = task.exception()  # retrieved: the waiters got it; no "never retrieved" warning
        stale = self._metadata_cache.get(key)
        if error is None or stale is None or stale[2] <= self._clock():
            return  # nothing stale serving, or no longer allowed to: requests fetch (and fail) themselves
        if isinstance(error, GatewayError) and error.code is ErrorCode.NOT_FOUND:
            del self._metadata_cache[key]
            return
        log.warning(
            "refreshing the metadata of model '%s' failed (%r); the cached metadata serves meanwhile",
            key[0].model,
            error,
        )
        self._metadata_cache[key] = (self._clock() + _REFRESH_RETRY_S, stale[1], stale[2])

    @contextlib.contextmanager
    def _internal_errors(self, model: str, version: str) -> Iterator[None]:
        """Pass `GatewayError`s (NOT_FOUND in the client's terms), timeouts become DEADLINE_EXCEEDED and
        anything else INTERNAL."""
        try:
            yield
        except GatewayError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                raise ModelNotFound(model, version) from None  # not the backend's name for it
            raise
        except TimeoutError:
            raise DeadlineExceeded("the backend did not answer within its timeout") from None
        except Exception:
            log.exception("unexpected error")
            raise GatewayError("internal error", code=ErrorCode.INTERNAL) from None
