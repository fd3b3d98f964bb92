"""TF Serving's Prometheus metrics, under its own names (PROTOCOLS.md §2.6).

TensorFlow's metric names turn into Prometheus names with every character outside `[a-zA-Z0-9_]`
replaced by ':' (so `/tensorflow/serving/request_count` is `:tensorflow:serving:request_count`), and
TensorFlow's counters carry no `_total` suffix. prometheus_client adds one to a counter's samples and
its HELP/TYPE lines, so the request counter is written here by hand; the latency samplers are ordinary
histograms (µs, TensorFlow's exponential buckets 10 x 1.8^i, 33 of them).
"""

from __future__ import annotations

import threading
from typing import Final

from prometheus_client import CollectorRegistry, Histogram, generate_latest

REQUEST_COUNT: Final = ":tensorflow:serving:request_count"
REQUEST_LATENCY: Final = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY: Final = ":tensorflow:serving:runtime_latency"
_BUCKETS_US: Final = tuple(10.0 * 1.8**i for i in range(33))
# TF Serving labels the classic SavedModel runtime "TF1" (also for TF2 SavedModels).
_RUNTIME: Final = "TF1"


class _RequestCounts:
    """`request_count{model_name, status}`: a counter without prometheus_client's `_total` suffix."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], float] = {}

    def inc(self, model: str, status: str) -> None:
        with self._lock:
            key = (model, status)
            self._counts[key] = self._counts.get(key, 0.0) + 1.0

    def exposition(self) -> bytes:
        with self._lock:
            counts = sorted(self._counts.items())
        lines = [f"# HELP {REQUEST_COUNT} The total number of requests.", f"# TYPE {REQUEST_COUNT} counter"]
        for (model, status), value in counts:
            lines.append(
                f'{REQUEST_COUNT}{{model_name="{_escape(model)}",status="{_escape(status)}"}} {value}'
            )
        return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class ServingMetrics:
    """Every metric of the runtime, in its own registry (nothing else of the process is exported)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counts = _RequestCounts()
        self._request_latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=_BUCKETS_US,
            registry=self.registry,
        )
        self._runtime_latency = Histogram(
            RUNTIME_LATENCY,
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
            buckets=_BUCKETS_US,
            registry=self.registry,
        )

    def request(self, model: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """One request answered: `entrypoint` is "GRPC" or "REST"; `status` a code name ("OK", ...)."""
        self._counts.inc(model, status)
        self._request_latency.labels(model, api, entrypoint).observe(seconds * 1e6)

    def runtime_latency(self, model: str, api: str, seconds: float) -> None:
        self._runtime_latency.labels(model, api, _RUNTIME).observe(seconds * 1e6)

    def exposition(self) -> bytes:
        return self._counts.exposition() + generate_latest(self.registry)
