"""Every metric the gateway exports, defined once, in a registry of its own.

Labels are bounded by configuration: `model` is a configured route's model name (or `_unknown`),
`version` is a configured route version (or ""), `backend` a configured backend name, `protocol` the
listener ("rest", "grpc"), `code` an `ErrorCode` name or "OK". Nothing a client sends verbatim
becomes a label, so a scanner probing model names cannot blow up the series count.

`labels()` takes a lock and builds a key on every call, so the label children used per request are
cached in plain dicts (safe: the set of keys is bounded, and the event loop is single-threaded).

With several worker processes, prometheus_client's multiprocess mode is used (see `gateway.app`):
the values then live in files under `PROMETHEUS_MULTIPROC_DIR`, and the gauges' `multiprocess_mode`
below says how the parent sums them.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

UNKNOWN_MODEL: Final = "_unknown"
"""The `model` label of requests for a model no route knows."""

OK: Final = "OK"
"""The `code` label of a successful request."""

# 100 µs .. 30 s: a cached small model answers in well under a millisecond, a big batch in seconds.
LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# The gateway's own share targets <= 1 ms, so resolution goes finer at the low end.
OVERHEAD_BUCKETS: Final = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0,
)  # fmt: skip


class GatewayMetrics:
    """The gateway's metrics and the cheap ways to record them.

    Args:
        registry: Where the metrics are registered; a fresh `CollectorRegistry` when None, so two
            instances (two tests, say) never collide.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Inference requests answered, by outcome (code is an ErrorCode name or OK).",
            ["model", "version", "backend", "protocol", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "gateway_request_duration_seconds",
            "Whole inference request inside the gateway, from the listener having the request (before"
            " decoding it) to the DataPlane's answer; encoding the response is not included.",
            ["model", "backend", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_duration = Histogram(
            "gateway_backend_duration_seconds",
            "Round trip of one inference call to a backend, encoding and decoding included.",
            ["model", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_duration = Histogram(
            "gateway_overhead_duration_seconds",
            "The gateway's own share of a request (decoding, routing, validation): whole request minus"
            " the backend round trip.",
            ["model", "backend", "protocol"],
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Inference requests being processed.",
            ["protocol"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.request_bytes = Counter(
            "gateway_request_bytes_total",
            "Bytes of inference requests as received on the wire.",
            ["model", "protocol"],
            registry=r,
        )
        self.response_bytes = Counter(
            "gateway_response_bytes_total",
            "Bytes of inference responses as sent on the wire.",
            ["model", "protocol"],
            registry=r,
        )
        self.backend_up = Gauge(
            "gateway_backend_up",
            "1 when the endpoint's last readiness probe succeeded, else 0.",
            ["backend", "endpoint"],
            registry=r,
            # With several workers, each probes on its own: the endpoint counts as up if any sees it up.
            multiprocess_mode="livemax",
        )
        self._requests: dict[tuple[str, ...], Counter] = {}
        self._durations: dict[tuple[str, str, str], tuple[Histogram, Histogram, Histogram]] = {}
        self._in_flight: dict[str, Gauge] = {}
        self._bytes: dict[tuple[str, str], tuple[Counter, Counter]] = {}

    def in_flight_gauge(self, protocol: str) -> Gauge:
        """The `gateway_requests_in_flight` child of a listener protocol."""
        gauge = self._in_flight.get(protocol)
        if gauge is None:
            gauge = self._in_flight[protocol] = self.in_flight.labels(protocol)
        return gauge

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
        self._count(model, version, backend, protocol, code)
        dkey = (model, backend, protocol)
        children = self._durations.get(dkey)
        if children is None:
            children = self._durations[dkey] = (
                self.request_duration.labels(*dkey),
                self.backend_duration.labels(model, backend),
                self.overhead_duration.labels(*dkey),
            )
        total, upstream, overhead = children
        total.observe(total_s)
        if backend_s is not None:
            upstream.observe(backend_s)
            overhead.observe(max(total_s - backend_s, 0.0))

    def observe_rejected(self, *, model: str, version: str, backend: str, protocol: str, code: str) -> None:
        """Count a request a listener refused before it reached the DataPlane (no latency to record)."""
        self._count(model, version, backend, protocol, code)

    def _count(self, *key: str) -> None:
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(*key)
        counter.inc()

    def observe_transfer(self, *, model: str, protocol: str, bytes_in: int, bytes_out: int) -> None:
        """Add one request's wire sizes to the byte counters."""
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

    def set_backend_up(self, backend: str, endpoint: str, up: bool) -> None:
        """Record the outcome of an endpoint's readiness probe (not per request: no cache needed)."""
        self.backend_up.labels(backend, endpoint).set(1.0 if up else 0.0)
