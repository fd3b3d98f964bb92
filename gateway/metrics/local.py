"""Per-request metrics recorded in plain Python and exported at scrape time: the single-process recorder.

prometheus_client guards every value with a lock, and a histogram observation walks its buckets in
Python: recording one request (a counter, three histograms, the in-flight gauge up and down, two byte
counters) costs about 10 µs that way, as much as decoding the request. Here a request adds to floats
and lists under the event loop's single thread, and `LocalCollector.collect` builds the metric families
when Prometheus scrapes, from the same `MetricSpec`s the shared recorder uses, so the exposition is the
same. Only for one process: worker processes must write prometheus_client's multiprocess files
(`gateway.metrics.collectors` picks the recorder).

Scrapes run on prometheus_client's HTTP thread: the dicts are copied (one C-level call each, under the
GIL) before they are read, so a scrape sees each series whole, at worst one request behind.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.metrics.specs import (
    BACKEND_DURATION,
    IN_FLIGHT,
    OVERHEAD_DURATION,
    REQUEST_BYTES,
    REQUEST_DURATION,
    REQUESTS,
    RESPONSE_BYTES,
    MetricSpec,
)


class LocalHistogram:
    """One label set's histogram: counts per bucket (the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, Prometheus' `le` (a value equal to a bound counts in it).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class LocalGauge:
    """One label set's gauge, with the `inc` / `dec` of prometheus_client's."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


class LocalRecorder:
    """The per-request metrics of `gateway.metrics.collectors.GatewayMetrics`, in plain Python."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, ...], float] = {}
        # Keyed as the histograms' label sets; a request's three are looked up once, by (model, backend,
        # protocol), in `_by_request` (the backend histogram is shared by the protocols, as its labels are).
        self.request_duration: dict[tuple[str, ...], LocalHistogram] = {}
        self.backend_duration: dict[tuple[str, ...], LocalHistogram] = {}
        self.overhead_duration: dict[tuple[str, ...], LocalHistogram] = {}
        self._by_request: dict[
            tuple[str, str, str], tuple[LocalHistogram, LocalHistogram, LocalHistogram]
        ] = {}
        self.in_flight: dict[str, LocalGauge] = {}
        self.request_bytes: dict[tuple[str, ...], float] = {}
        self.response_bytes: dict[tuple[str, ...], float] = {}

    def in_flight_gauge(self, protocol: str) -> LocalGauge:
        gauge = self.in_flight.get(protocol)
        if gauge is None:
            gauge = self.in_flight[protocol] = LocalGauge()
        return gauge

    def count(self, key: tuple[str, ...]) -> None:
        self.requests[key] = self.requests.get(key, 0.0) + 1.0

    def observe(
        self, model: str, backend: str, protocol: str, total_s: float, backend_s: float | None
    ) -> None:
        histograms = self._by_request.get((model, backend, protocol))
        if histograms is None:
            histograms = self._by_request[(model, backend, protocol)] = (
                _child(self.request_duration, (model, backend, protocol), REQUEST_DURATION),
                _child(self.backend_duration, (model, backend), BACKEND_DURATION),
                _child(self.overhead_duration, (model, backend, protocol), OVERHEAD_DURATION),
            )
        total, upstream, overhead = histograms
        total.observe(total_s)
        if backend_s is not None:
            upstream.observe(backend_s)
            overhead.observe(max(total_s - backend_s, 0.0))

    def transfer(self, model: str, protocol: str, bytes_in: int, bytes_out: int) -> None:
        key = (model, protocol)  # both series exist from a model's first request, as zero if need be
        self.request_bytes[key] = self.request_bytes.get(key, 0.0) + max(bytes_in, 0)
        self.response_bytes[key] = self.response_bytes.get(key, 0.0) + max(bytes_out, 0)


def _child(
    children: dict[tuple[str, ...], LocalHistogram], key: tuple[str, ...], spec: MetricSpec
) -> LocalHistogram:
    histogram = children.get(key)
    if histogram is None:
        histogram = children[key] = LocalHistogram(spec.buckets)
    return histogram


class LocalCollector(Collector):
    """Exports a `LocalRecorder` as the metric families its specs describe."""

    def __init__(self, recorder: LocalRecorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        r = self._recorder
        yield _counter(REQUESTS, r.requests)
        yield _histograms(REQUEST_DURATION, r.request_duration)
        yield _histograms(BACKEND_DURATION, r.backend_duration)
        yield _histograms(OVERHEAD_DURATION, r.overhead_duration)
        gauge = GaugeMetricFamily(IN_FLIGHT.name, IN_FLIGHT.help, labels=IN_FLIGHT.labels)
        for protocol, value in list(r.in_flight.items()):
            gauge.add_metric((protocol,), value.value)
        yield gauge
        yield _counter(REQUEST_BYTES, r.request_bytes)
        yield _counter(RESPONSE_BYTES, r.response_bytes)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing up front: the registry then learns the names from `collect`


def _counter(spec: MetricSpec, values: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    for labels, value in list(values.items()):
        family.add_metric(labels, value)
    return family


def _histograms(spec: MetricSpec, children: dict[tuple[str, ...], LocalHistogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    bounds = [floatToGoString(b) for b in spec.buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
    for labels, histogram in list(children.items()):
        counts, total = list(histogram.counts), histogram.sum
        family.add_metric(labels, list(zip(bounds, accumulate(counts), strict=True)), total)
    return family
