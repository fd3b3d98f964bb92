"""Every Prometheus metric of the JAX runtime, defined once, in a registry of its own.

Labels are bounded: `model` and `version` come from the repository, never from a request, and a
request for an unknown model is counted under model="" (see `JaxInferenceServer`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.errors import ErrorCode

# Latency buckets from 0.1 ms (a tiny model on CPU) to 10 s (a large one on a busy accelerator).
_SECONDS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_COMPILE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_LABELS = ("model", "version")


class RuntimeMetrics:
    """The runtime's metrics; `registry` is what the metrics endpoint serves."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "jax_runtime_requests",
            "Inference requests by outcome (OK or an error code).",
            (*_LABELS, "code"),
            registry=r,
        )
        self.request_duration = Histogram(
            "jax_runtime_request_duration_seconds",
            "Time from a request's arrival in the runtime to its response, queueing included.",
            _LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "jax_runtime_queue_duration_seconds",
            "Time from a request's arrival in the batch queue until a replica started its batch.",
            _LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "jax_runtime_compute_duration_seconds",
            "Time one batch spent in the executable, host-device copies included.",
            _LABELS,
            buckets=_SECONDS,
            registry=r,
        )
        self.batch_size = Histogram(
            "jax_runtime_batch_size",
            "Rows in each batch run (before padding).",
            _LABELS,
            buckets=_BATCH_SIZES,
            registry=r,
        )
        self.padding_ratio = Histogram(
            "jax_runtime_padding_ratio",
            "Share of each batch's rows that were padding (bucket - rows) / bucket.",
            _LABELS,
            buckets=_RATIOS,
            registry=r,
        )
        self.compile_duration = Histogram(
            "jax_runtime_compile_duration_seconds",
            "XLA compile time of one batch-bucket executable (near zero on a compilation-cache hit).",
            _LABELS,
            buckets=_COMPILE_SECONDS,
            registry=r,
        )
        self.models_loaded = Gauge(
            "jax_runtime_models_loaded", "Model versions loaded and ready to serve.", registry=r
        )
        self.load_failures = Counter(
            "jax_runtime_model_load_failures", "Model versions that failed to load.", _LABELS, registry=r
        )
        self.transfer_bytes = Counter(
            "jax_runtime_transfer_bytes",
            "Request and response bytes on the wire.",
            ("model", "direction"),
            registry=r,
        )

        # Label children resolved once, not per request (`labels()` costs about as much as the rest of
        # the runtime's metrics work); a version's entries go with its series in `forget_version`.
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._bytes: dict[str, tuple[Any, Any]] = {}

    def batch_stats(self, model: str, version: str) -> VersionBatchStats:
        return VersionBatchStats(self, model, version)

    def observe_request(self, model: str, version: str, code: str, seconds: float | None) -> None:
        """Counts one answered request; `seconds` (None when no model resolved) goes to the histogram."""
        key = (model, version, code)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = self.requests.labels(*key)
        counter.inc()
        if seconds is not None:
            histogram = self._durations.get((model, version))
            if histogram is None:
                histogram = self._durations[(model, version)] = self.request_duration.labels(model, version)
            histogram.observe(seconds)

    def observe_transfer(self, model: str, bytes_in: int, bytes_out: int) -> None:
        counters = self._bytes.get(model)
        if counters is None:
            counters = self._bytes[model] = (
                self.transfer_bytes.labels(model, "in"),
                self.transfer_bytes.labels(model, "out"),
            )
        counters[0].inc(bytes_in)
        counters[1].inc(bytes_out)

    def observe_compile(self, model: str, version: str, seconds: float) -> None:
        self.compile_duration.labels(model, version).observe(seconds)

    def forget_version(self, model: str, version: str) -> None:
        """Drops an unloaded version's series, so the versions served over a process's life do not pile up.

        Load failures stay: an alert looks at them.
        """
        by_version = (
            self.request_duration,
            self.queue_duration,
            self.compute_duration,
            self.batch_size,
            self.padding_ratio,
            self.compile_duration,
        )
        # `remove` takes every label value (the request counter's codes are OK or an ErrorCode name);
        # older prometheus-client versions raise KeyError for a series that was never created.
        series: list[tuple[Histogram | Counter, tuple[str, ...]]] = [
            (m, (model, version)) for m in by_version
        ]
        series += [(self.requests, (model, version, code)) for code in ("OK", *ErrorCode.__members__)]
        for metric, labels in series:
            with contextlib.suppress(KeyError):
                metric.remove(*labels)
        self._durations.pop((model, version), None)
        for key in [k for k in self._counts if k[:2] == (model, version)]:
            del self._counts[key]


class VersionBatchStats:
    """A `batcher.BatchStats` with its labels resolved once, not on every batch."""

    def __init__(self, metrics: RuntimeMetrics, model: str, version: str) -> None:
        self._queue = metrics.queue_duration.labels(model, version)
        self._compute = metrics.compute_duration.labels(model, version)
        self._size = metrics.batch_size.labels(model, version)
        self._padding = metrics.padding_ratio.labels(model, version)

    def observe_batch(
        self, *, rows: int, bucket: int, queue_seconds: Sequence[float], compute_seconds: float
    ) -> None:
        for seconds in queue_seconds:
            self._queue.observe(seconds)
        self._compute.observe(compute_seconds)
        self._size.observe(rows)
        self._padding.observe((bucket - rows) / bucket)
