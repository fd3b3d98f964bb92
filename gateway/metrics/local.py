"""Per-request metrics recorded in plain Python and exported at scrape time: the single-process recorder.

prometheus_client guards every value with a lock, and a histogram observation walks its buckets in
Python: recording one request (a counter, three histograms, the in-flight gauge up and down, two byte
counters) costs about 10 µs that way, as much as decoding the request. Here a request adds to floats
and lists under the event loop's single thread, and `LocalCollector.collect` builds the metric families
when Prometheus scrapes, from the same `MetricSpec`s prometheus_client's objects are built from, so the
exposition is the same. Only for one process: worker processes must write prometheus_client's
multiprocess files (`gateway.metrics.collectors` picks the recorder).

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

from gateway.metrics.specs import PER_REQUEST, MetricSpec


class LocalValue:
    """One label set's counter or gauge, with prometheus_client's `inc` / `dec`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount


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


class LocalRecorder(Collector):
    """Hands out the label children of the per-request metrics and exports them when scraped."""

    def __init__(self) -> None:
        self._values: dict[MetricSpec, dict[tuple[str, ...], LocalValue]] = {}
        self._histograms: dict[MetricSpec, dict[tuple[str, ...], LocalHistogram]] = {}

    def value(self, spec: MetricSpec, labels: tuple[str, ...]) -> LocalValue:
        """The counter or gauge child of `spec` for `labels`, created at zero on first use."""
        children = self._values.setdefault(spec, {})
        child = children.get(labels)
        if child is None:
            child = children[labels] = LocalValue()
        return child

    def histogram(self, spec: MetricSpec, labels: tuple[str, ...]) -> LocalHistogram:
        """The histogram child of `spec` for `labels`, created empty on first use."""
        children = self._histograms.setdefault(spec, {})
        child = children.get(labels)
        if child is None:
            child = children[labels] = LocalHistogram(spec.buckets)
        return child

    def collect(self) -> Iterator[Metric]:
        for spec in PER_REQUEST:
            if spec.kind == "histogram":
                yield _histogram_family(spec, self._histograms.get(spec, {}))
            else:
                yield _value_family(spec, self._values.get(spec, {}))

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing up front: the registry then learns the names from `collect`


def _value_family(spec: MetricSpec, children: dict[tuple[str, ...], LocalValue]) -> Metric:
    family: CounterMetricFamily | GaugeMetricFamily
    if spec.kind == "counter":
        family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    else:
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    for labels, child in list(children.items()):
        family.add_metric(labels, child.value)
    return family


def _histogram_family(spec: MetricSpec, children: dict[tuple[str, ...], LocalHistogram]) -> Metric:
    family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    bounds = [floatToGoString(b) for b in spec.buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
    for labels, histogram in list(children.items()):
        counts, total = list(histogram.counts), histogram.sum
        family.add_metric(labels, list(zip(bounds, accumulate(counts), strict=True)), total)
    return family
