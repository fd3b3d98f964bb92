"""A cluster: a named backend's endpoints, their health, their load, and the policy to call them.

Health comes from two sources. Active: every `health_check_interval_s` each endpoint is probed with the
backend's `ready()`; the result marks it up or down and sets `gateway_backend_up`. Passive: when a call
finds an endpoint unreachable, the DataPlane ejects it at once, so traffic leaves it before the next
probe (which brings it back if it recovers). Ejection never takes out the last healthy endpoint: with
nowhere else to go it would only turn one failed call into a not-ready gateway until the next probe.
Endpoints start down until the first probe, which `gateway.app` runs before announcing readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.backends.base import Backend
from gateway.core.balancer import Balancer, PowerOfTwoChoices
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Endpoint:
    """One replica of a backend and what the balancer knows of it."""

    address: str
    healthy: bool = False
    in_flight: int = 0


class Cluster:
    """The endpoints of one backend.

    Args:
        name: The backend's name (metric label, error messages).
        backend: The client that reaches the endpoints.
        endpoints: The replicas' "host:port" addresses.
        timeout_s: Default per-request deadline toward this backend.
        health_check_interval_s: Seconds between two probe rounds.
        health_check_timeout_s: A probe slower than this counts as failed.
        metadata_ttl_s: How long the DataPlane may reuse model metadata fetched from this backend.
        balancer: Picks the endpoint of each call; power of two choices by default.
        metrics: Where `gateway_backend_up` is recorded; nothing is recorded when None.
        framework: The backend's `framework` metric label (the DataPlane's per-request metrics carry it
            too); "" when unknown.
    """

    def __init__(
        self,
        name: str,
        backend: Backend,
        endpoints: Sequence[str],
        *,
        timeout_s: float = 30.0,
        health_check_interval_s: float = 5.0,
        health_check_timeout_s: float = 2.0,
        metadata_ttl_s: float = 30.0,
        balancer: Balancer | None = None,
        metrics: GatewayMetrics | None = None,
        framework: str = "",
    ) -> None:
        if not endpoints:
            raise ValueError(f"cluster '{name}' has no endpoints")
        self.name = name
        self.framework = framework
        self.backend = backend
        self.endpoints = tuple(Endpoint(address) for address in endpoints)
        self.timeout_s = timeout_s
        self.health_check_interval_s = health_check_interval_s
        self.health_check_timeout_s = health_check_timeout_s
        self.metadata_ttl_s = metadata_ttl_s
        self._balancer = balancer if balancer is not None else PowerOfTwoChoices()
        self._metrics = metrics

    def pick(self, excluding: Endpoint | None = None) -> Endpoint:
        """The endpoint for the next call (the caller counts it in flight while the call runs).

        `excluding` leaves out one endpoint (the one a retry is moving away from) when others exist.
        """
        if excluding is None or len(self.endpoints) < 2:
            return self._balancer.pick(self.endpoints)
        return self._balancer.pick([e for e in self.endpoints if e is not excluding])

    def mark(self, endpoint: Endpoint, up: bool) -> None:
        """Set an endpoint's health, logging transitions only (a dead replica must not flood the log)."""
        if endpoint.healthy != up:
            if up:
                log.info("backend '%s' endpoint %s is up", self.name, endpoint.address)
            else:
                log.warning("backend '%s' endpoint %s is down", self.name, endpoint.address)
        endpoint.healthy = up
        if self._metrics is not None:
            self._metrics.set_backend_up(self.name, endpoint.address, up, framework=self.framework)

    def eject(self, endpoint: Endpoint) -> None:
        """Take an endpoint that just failed a call out of rotation, unless it is the last healthy one."""
        if endpoint.healthy and any(e.healthy for e in self.endpoints if e is not endpoint):
            self.mark(endpoint, False)

    async def check_health(self) -> None:
        """Probe every endpoint once, concurrently, and record the results."""
        await asyncio.gather(*(self._probe(e) for e in self.endpoints))

    async def run_health_checks(self) -> None:
        """Probe forever, every `health_check_interval_s`; cancel the task to stop."""
        while True:
            await asyncio.sleep(self.health_check_interval_s)
            await self.check_health()

    async def _probe(self, endpoint: Endpoint) -> None:
        try:
            async with asyncio.timeout(self.health_check_timeout_s):
                up = await self.backend.ready(endpoint.address)
        except TimeoutError:
            up = False
        except Exception as exc:
            # A probe's failure is the endpoint's state, not an error of the gateway.
            log.debug("probe of backend '%s' endpoint %s failed: %r", self.name, endpoint.address, exc)
            up = False
        self.mark(endpoint, up)
