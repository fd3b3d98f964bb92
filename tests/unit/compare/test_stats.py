"""Percentiles of one run and the median with its spread over rounds."""

from __future__ import annotations

import pytest

from gateway.compare.stats import Spread, percentile, spread


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([3.0, 1.0, 2.0], 0.5, 2.0),  # unsorted input, odd count: the middle one
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),  # nearest rank: no interpolation between 2 and 3
        (list(map(float, range(1, 101))), 0.99, 99.0),  # p99 of 100: the second slowest
        (list(map(float, range(1, 101))), 1.0, 100.0),
        ([5.0], 0.99, 5.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    """`percentile` picks the smallest value with at least a share q at or below it."""
    assert percentile(values, q) == expected


@pytest.mark.parametrize("q", [0.0, 1.5])
def test_percentile_rejects_quantiles_out_of_range(q: float) -> None:
    """A quantile outside (0, 1] is a caller's mistake, not a figure."""
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_spread_is_median_min_max_over_rounds() -> None:
    """Three rounds give their median and the lowest and highest round; an even count averages the middle."""
    assert spread([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
    assert spread([4.0, 1.0, 2.0, 10.0]).as_dict() == {"median": 3.0, "min": 1.0, "max": 10.0, "n": 4}


def test_spread_of_nothing_is_an_error() -> None:
    """No rounds, no figure: an empty list raises instead of giving a made-up zero."""
    with pytest.raises(ValueError):
        spread([])
