"""The gateway's per-request metrics, each named and described once; both recorders build from these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# 100 µs .. 30 s: a cached small model answers in well under a millisecond, a big batch in seconds.
LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# The gateway's own share targets <= 1 ms, so resolution goes finer at the low end.
OVERHEAD_BUCKETS: Final = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 1.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's kind ("counter", "gauge" or "histogram"), name (with its `_total` for counters), help
    text, label names and, for a histogram, its bucket bounds."""

    kind: str
    name: str
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


REQUESTS: Final = MetricSpec(
    "counter",
    "gateway_requests_total",
    "Inference requests answered, by outcome (code is an ErrorCode name or OK).",
    ("model", "version", "backend", "framework", "protocol", "code"),
)
REQUEST_DURATION: Final = MetricSpec(
    "histogram",
    "gateway_request_duration_seconds",
    "Whole inference request inside the gateway, from the listener having the request (before"
    " decoding it) to the DataPlane's answer; encoding the response is not included.",
    ("model", "backend", "framework", "protocol"),
    LATENCY_BUCKETS,
)
BACKEND_DURATION: Final = MetricSpec(
    "histogram",
    "gateway_backend_duration_seconds",
    "Round trip of one inference call to a backend, encoding and decoding included.",
    ("model", "backend", "framework"),
    LATENCY_BUCKETS,
)
OVERHEAD_DURATION: Final = MetricSpec(
    "histogram",
    "gateway_overhead_duration_seconds",
    "The gateway's own share of a request (decoding, routing, validation): whole request minus"
    " the backend round trip.",
    ("model", "backend", "framework", "protocol"),
    OVERHEAD_BUCKETS,
)
IN_FLIGHT: Final = MetricSpec(
    "gauge",
    "gateway_requests_in_flight",
    "Inference requests being processed, by listener protocol only: a request is counted before its"
    " route (and so its model, backend and framework) is known.",
    ("protocol",),
)
REQUEST_BYTES: Final = MetricSpec(
    "counter",
    "gateway_request_bytes_total",
    "Bytes of inference requests as received on the wire.",
    ("model", "framework", "protocol"),
)
RESPONSE_BYTES: Final = MetricSpec(
    "counter",
    "gateway_response_bytes_total",
    "Bytes of inference responses as sent on the wire.",
    ("model", "framework", "protocol"),
)

PER_REQUEST: Final = (
    REQUESTS,
    REQUEST_DURATION,
    BACKEND_DURATION,
    OVERHEAD_DURATION,
    IN_FLIGHT,
    REQUEST_BYTES,
    RESPONSE_BYTES,
)
"""Every per-request metric, in the order they are exported."""
