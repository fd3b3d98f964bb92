"""Every metric the gateway exports, defined once (`gateway.metrics.specs`), in a registry of its own.

Labels are bounded by configuration: `model` is a configured route's model name (or `_unknown`),
`version` is a configured route version (or ""), `backend` a configured backend name, `protocol` the
listener ("rest", "grpc"), `code` an `ErrorCode` name or "OK". Nothing a client sends verbatim
becomes a label, so a scanner probing model names cannot blow up the series count.

Per-request metrics go to one of two recorders with the same exposition. In one process,
`gateway.metrics.local` keeps them in plain Python and builds the families at scrape time (a tenth of
what prometheus_client's locked values cost per request). With several worker processes,
prometheus_client's multiprocess mode is used (see `gateway.app`): the values then live in files under
`PROMETHEUS_MULTIPROC_DIR`, written by prometheus_client's own metric objects (`_SharedRecorder`), and
the gauges' `multiprocess_mode` says how the parent sums them. `labels()` takes a lock and builds a key
on every call, so that recorder caches the label children used per request in plain dicts (safe: the
set of keys is bounded, and the event loop is single-threaded).
"""

from __future__ import annotations

import os
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.metrics.local import LocalCollector, LocalRecorder
from gateway.metrics.specs import (
    BACKEND_DURATION,
    IN_FLIGHT,
    LATENCY_BUCKETS,
    OVERHEAD_BUCKETS,
    OVERHEAD_DURATION,
    REQUEST_BYTES,
    REQUEST_DURATION,
    REQUESTS,
    RESPONSE_BYTES,
)

__all__ = ["LATENCY_BUCKETS", "OK", "OVERHEAD_BUCKETS", "UNKNOWN_MODEL", "GatewayMetrics"]

UNKNOWN_MODEL: Final = "_unknown"
"""The `model` label of requests for a model no route knows."""

OK: Final = "OK"
"""The `code` label of a successful request."""


class InFlightGauge(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...

    def dec(self, amount: float = 1.0) -> None: ...


class _Recorder(Protocol):
    def in_flight_gauge(self, protocol: str) -> InFlightGauge: ...

    def count(self, key: tuple[str, ...]) -> None: ...

    def observe(
        self, model: str, backend: str, protocol: str, total_s: float, backend_s: float | None
    ) -> None: ...

    def transfer(self, model: str, protocol: str, bytes_in: int, bytes_out: int) -> None: ...


class GatewayMetrics:
    """The gateway's metrics and the cheap ways to record them.

    Args:
        registry: Where the metrics are registered; a fresh `CollectorRegistry` when None, so two
            instances (two tests, say) never collide.
        multiprocess: Record through prometheus_client's metric objects, which write the multiprocess
            files; by default when `PROMETHEUS_MULTIPROC_DIR` is set (a worker process).
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess: bool | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if multiprocess is None:
            multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._recorder: _Recorder
        if multiprocess:
            self._recorder = _SharedRecorder(self.registry)
        else:
            local = LocalRecorder()
            self.registry.register(LocalCollector(local))
            self._recorder = local
        self.backend_up = Gauge(
            "gateway_backend_up",
            "1 when the endpoint's last readiness probe succeeded, else 0.",
            ["backend", "endpoint"],
            registry=self.registry,
            # With several workers, each probes on its own: the endpoint counts as up if any sees it up.
            multiprocess_mode="livemax",
        )

    def in_flight_gauge(self, protocol: str) -> InFlightGauge:
        """The `gateway_requests_in_flight` child of a listener protocol."""
        return self._recorder.in_flight_gauge(protocol)

    def observe_request(
        self,
        *,
        model: str,
        version: str,
        backend: str,
        protocol: str,
        code: str,
        total_s: float,
        backend_s: float | None,
    ) -> None:
        """Record one finished inference request.

        Args:
            model: The bounded model label (`UNKNOWN_MODEL` when no route matched).
            version: The configured route version, or "".
            backend: The backend label, "" when the request never reached routing's end.
            protocol: The listener's protocol.
            code: `OK` or the `ErrorCode` name of the failure.
            total_s: Seconds the whole request took in the DataPlane.
            backend_s: Seconds of the backend round trip; None when no backend call was made.
        """
        self._recorder.count((model, version, backend, protocol, code))
        self._recorder.observe(model, backend, protocol, total_s, backend_s)

    def observe_rejected(self, *, model: str, version: str, backend: str, protocol: str, code: str) -> None:
        """Count a request a listener refused before it reached the DataPlane (no latency to record)."""
        self._recorder.count((model, version, backend, protocol, code))

    def observe_transfer(self, *, model: str, protocol: str, bytes_in: int, bytes_out: int) -> None:
        """Add one request's wire sizes to the byte counters."""
        self._recorder.transfer(model, protocol, bytes_in, bytes_out)

    def set_backend_up(self, backend: str, endpoint: str, up: bool) -> None:
        """Record the outcome of an endpoint's readiness probe (not per request: no cache needed)."""
        self.backend_up.labels(backend, endpoint).set(1.0 if up else 0.0)


class _SharedRecorder:
    """The per-request metrics as prometheus_client's own objects (what multiprocess mode reads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(REQUESTS.name, REQUESTS.help, REQUESTS.labels, registry=r)
        self.request_duration, self.backend_duration, self.overhead_duration = (
            Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=r)
            for spec in (REQUEST_DURATION, BACKEND_DURATION, OVERHEAD_DURATION)
        )
        self.in_flight = Gauge(
            IN_FLIGHT.name, IN_FLIGHT.help, IN_FLIGHT.labels, registry=r, multiprocess_mode="livesum"
        )
        self.request_bytes = Counter(REQUEST_BYTES.name, REQUEST_BYTES.help, REQUEST_BYTES.labels, registry=r)
        self.response_bytes = Counter(
            RESPONSE_BYTES.name, RESPONSE_BYTES.help, RESPONSE_BYTES.labels, registry=r
        )
        self._requests: dict[tuple[str, ...], Counter] = {}
        self._durations: dict[tuple[str, str, str], tuple[Histogram, Histogram, Histogram]] = {}
        self._in_flight: dict[str, Gauge] = {}
        self._bytes: dict[tuple[str, str], tuple[Counter, Counter]] = {}

    def in_flight_gauge(self, protocol: str) -> Gauge:
        gauge = self._in_flight.get(protocol)
        if gauge is None:
            gauge = self._in_flight[protocol] = self.in_flight.labels(protocol)
        return gauge

    def count(self, key: tuple[str, ...]) -> None:
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(*key)
        counter.inc()

    def observe(
        self, model: str, backend: str, protocol: str, total_s: float, backend_s: float | None
    ) -> None:
        key = (model, backend, protocol)
        children = self._durations.get(key)
        if children is None:
            children = self._durations[key] = (
                self.request_duration.labels(*key),
                self.backend_duration.labels(model, backend),
                self.overhead_duration.labels(*key),
            )
        total, upstream, overhead = children
        total.observe(total_s)
        if backend_s is not None:
            upstream.observe(backend_s)
            overhead.observe(max(total_s - backend_s, 0.0))

    def transfer(self, model: str, protocol: str, bytes_in: int, bytes_out: int) -> None:
        key = (model, protocol)
        children = self._bytes.get(key)
        if children is None:
            children = self._bytes[key] = (
                self.request_bytes.labels(*key),
                self.response_bytes.labels(*key),
            )
        if bytes_in > 0:
            children[0].inc(bytes_in)
        if bytes_out > 0:
            children[1].inc(bytes_out)
