"""Prometheus metrics of the gateway; every metric is defined once, in `collectors`."""

from __future__ import annotations

from gateway.metrics.collectors import (
    LATENCY_BUCKETS,
    OK,
    OVERHEAD_BUCKETS,
    UNKNOWN_MODEL,
    GatewayMetrics,
)

__all__ = ["LATENCY_BUCKETS", "OK", "OVERHEAD_BUCKETS", "UNKNOWN_MODEL", "GatewayMetrics"]
