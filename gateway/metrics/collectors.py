"""Every metric the gateway exports, defined once (`gateway.metrics.specs`), in a registry of its own.

Labels are bounded by configuration: `model` is a configured route's model name (or `_unknown`),
`version` is a configured route version (or ""), `backend` a configured backend name, `framework` that
backend's framework (`framework` in its settings, else one per kind: "tensorflow", "pytorch", "oip"), so
one model served by several frameworks can be compared side by side, `protocol` the listener ("rest",
"grpc"; TF Serving's API on them: "tfserving_rest", "tfserving_grpc"), `code` an `ErrorCode` name or
"OK". A request no route took has backend and framework "". Nothing a client sends verbatim becomes a
label, so a scanner probing model names cannot blow up the series count.

Per-request metrics go to one of two recorders with the same exposition. In one process,
`gateway.metrics.local` keeps them in plain Python and builds the families at scrape time (a tenth of
what prometheus_client's locked values cost per request). With several worker processes,
prometheus_client's multiprocess mode is used (see `gateway.app`): the values then live in files under
`PROMETHEUS_MULTIPROC_DIR`, written by prometheus_client's own metric objects (`_SharedRecorder`), and
the gauges' `multiprocess_mode` says how the parent sums them. Either recorder only hands out label
children; what is recorded per request is written once, in `GatewayMetrics`.
"""

from __future__ import annotations

import os
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.metrics.local import LocalRecorder
from gateway.metrics.specs import (
    BACKEND_DURATION,
    IN_FLIGHT,
    LATENCY_BUCKETS,
    OVERHEAD_BUCKETS,
    OVERHEAD_DURATION,
    PER_REQUEST,
    REQUEST_BYTES,
    REQUEST_DURATION,
    REQUESTS,
    RESPONSE_BYTES,
    MetricSpec,
)

__all__ = ["LATENCY_BUCKETS", "OK", "OVERHEAD_BUCKETS", "UNKNOWN_MODEL", "GatewayMetrics"]

UNKNOWN_MODEL: Final = "_unknown"
"""The `model` label of requests for a model no route knows."""

OK: Final = "OK"
"""The `code` label of a successful request."""


class Counting(Protocol):
    """A counter or gauge child: prometheus_client's, or a `LocalValue`."""

    def inc(self, amount: float = 1.0) -> None: ...

    def dec(self, amount: float = 1.0) -> None: ...


class Observing(Protocol):
    """A histogram child: prometheus_client's, or a `LocalHistogram`."""

    def observe(self, amount: float) -> None: ...


class _Recorder(Protocol):
    """Where the label children of the per-request metrics come from."""

    def value(self, spec: MetricSpec, labels: tuple[str, ...]) -> Counting: ...

    def histogram(self, spec: MetricSpec, labels: tuple[str, ...]) -> Observing: ...


class GatewayMetrics:
    """The gateway's metrics and the cheap ways to record them.

    `labels()` takes a lock and builds a key on every call, so the label children used per request are
    cached here in plain dicts (safe: the set of keys is bounded, and the event loop is single-threaded).

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
            self.registry.register(local)
            self._recorder = local
        self.backend_up = Gauge(
            "gateway_backend_up",
            "1 when the endpoint's last readiness probe succeeded, else 0.",
            ["backend", "framework", "endpoint"],
            registry=self.registry,
            # With several workers, each probes on its own: the endpoint counts as up if any sees it up.
            multiprocess_mode="livemax",
        )
        self._requests: dict[tuple[str, ...], Counting] = {}
        self._durations: dict[tuple[str, str, str, str], tuple[Observing, Observing, Observing]] = {}
        self._in_flight: dict[str, Counting] = {}
        self._bytes: dict[tuple[str, str, str], tuple[Counting, Counting]] = {}

    def in_flight_gauge(self, protocol: str) -> Counting:
        """The `gateway_requests_in_flight` child of a listener protocol."""
        gauge = self._in_flight.get(protocol)
        if gauge is None:
            gauge = self._in_flight[protocol] = self._recorder.value(IN_FLIGHT, (protocol,))
        return gauge

    def observe_request(
        self,
        *,
        model: str,
        version: str,
        backend: str,
        framework: str,
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
            framework: The backend's framework label, "" with the backend's.
            protocol: The listener's protocol.
            code: `OK` or the `ErrorCode` name of the failure.
            total_s: Seconds the whole request took in the DataPlane.
            backend_s: Seconds of the backend round trip; None when no backend call was made.
        """
        self._count(model, version, backend, framework, protocol, code)
        dkey = (model, backend, framework, protocol)
        children = self._durations.get(dkey)
        if children is None:
            histogram = self._recorder.histogram
            children = self._durations[dkey] = (
                histogram(REQUEST_DURATION, dkey),
                histogram(BACKEND_DURATION, (model, backend, framework)),
                histogram(OVERHEAD_DURATION, dkey),
            )
        total, upstream, overhead = children
        total.observe(total_s)
        if backend_s is not None:
            upstream.observe(backend_s)
            overhead.observe(max(total_s - backend_s, 0.0))

    def observe_rejected(
        self, *, model: str, version: str, backend: str, framework: str, protocol: str, code: str
    ) -> None:
        """Count a request a listener refused before it reached the DataPlane (no latency to record)."""
        self._count(model, version, backend, framework, protocol, code)

    def _count(self, *key: str) -> None:
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self._recorder.value(REQUESTS, key)
        counter.inc()

    def observe_transfer(
        self, *, model: str, framework: str, protocol: str, bytes_in: int, bytes_out: int
    ) -> None:
        """Add one request's wire sizes to the byte counters."""
        key = (model, framework, protocol)
        children = self._bytes.get(key)
        if children is None:
            children = self._bytes[key] = (
                self._recorder.value(REQUEST_BYTES, key),
                self._recorder.value(RESPONSE_BYTES, key),
            )
        if bytes_in > 0:
            children[0].inc(bytes_in)
        if bytes_out > 0:
            children[1].inc(bytes_out)

    def set_backend_up(self, backend: str, endpoint: str, up: bool, *, framework: str) -> None:
        """Record the outcome of an endpoint's readiness probe (not per request: no cache needed)."""
        self.backend_up.labels(backend, framework, endpoint).set(1.0 if up else 0.0)


class _SharedRecorder:
    """The per-request metrics as prometheus_client's own objects (what multiprocess mode reads)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._metrics: dict[MetricSpec, Counter | Gauge | Histogram] = {}
        for spec in PER_REQUEST:
            if spec.kind == "counter":
                self._metrics[spec] = Counter(spec.name, spec.help, spec.labels, registry=registry)
            elif spec.kind == "gauge":
                self._metrics[spec] = Gauge(
                    spec.name, spec.help, spec.labels, registry=registry, multiprocess_mode="livesum"
                )
            else:
                self._metrics[spec] = Histogram(
                    spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=registry
                )

    def value(self, spec: MetricSpec, labels: tuple[str, ...]) -> Counting:
        child: Counting = self._metrics[spec].labels(*labels)  # type: ignore[assignment]  # Counter/Gauge
        return child

    def histogram(self, spec: MetricSpec, labels: tuple[str, ...]) -> Observing:
        child: Observing = self._metrics[spec].labels(*labels)  # type: ignore[assignment]  # Histogram
        return child
