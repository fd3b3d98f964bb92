"""Power-of-two-choices balancer, with scripted randomness."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from gateway.core.balancer import PowerOfTwoChoices
from gateway.core.cluster import Endpoint


class ScriptedRandom(random.Random):
    """Returns the scripted values from randrange, in order."""

    def __init__(self, values: Iterable[int]) -> None:
        super().__init__(0)
        self.values = list(values)
        self.bounds: list[int] = []

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        self.bounds.append(start)
        return self.values.pop(0)


def endpoints(*in_flight: int, healthy: bool = True) -> list[Endpoint]:
    return [Endpoint(f"h:{i}", healthy=healthy, in_flight=n) for i, n in enumerate(in_flight)]


def test_picks_the_less_loaded_of_two_draws() -> None:
    """Of the two drawn endpoints, the one with fewer requests in flight wins."""
    eps = endpoints(5, 0, 9, 1)
    assert PowerOfTwoChoices(ScriptedRandom([2, 2])).pick(eps) is eps[3]  # draws 2 and 3 (2nd index shifted)
    assert PowerOfTwoChoices(ScriptedRandom([0, 1])).pick(eps) is eps[0]  # draws 0 and 2: 5 < 9


def test_two_draws_are_distinct() -> None:
    """The second draw skips the first index, so both picks are different endpoints."""
    rng = ScriptedRandom([1, 1])
    eps = endpoints(3, 3, 0)
    assert PowerOfTwoChoices(rng).pick(eps) is eps[2]
    assert rng.bounds == [3, 2]


def test_tie_keeps_the_first_draw() -> None:
    """Equal load keeps the first (random) draw."""
    eps = endpoints(1, 1, 1)
    assert PowerOfTwoChoices(ScriptedRandom([2, 0])).pick(eps) is eps[2]


def test_unhealthy_endpoints_are_skipped() -> None:
    """Only healthy endpoints are candidates; a single one needs no randomness."""
    eps = endpoints(0, 0, 0)
    eps[0].healthy = eps[2].healthy = False
    rng = ScriptedRandom([])
    assert PowerOfTwoChoices(rng).pick(eps) is eps[1]
    assert rng.bounds == []


def test_falls_back_to_all_when_none_healthy() -> None:
    """With no healthy endpoint every endpoint is a candidate again."""
    eps = endpoints(4, 2, healthy=False)
    assert PowerOfTwoChoices(ScriptedRandom([0, 0])).pick(eps) is eps[1]


def test_empty_is_an_error() -> None:
    """Picking from nothing raises ValueError."""
    with pytest.raises(ValueError):
        PowerOfTwoChoices().pick([])


def test_steers_away_from_a_slow_endpoint() -> None:
    """A replica that finishes slowly accumulates in-flight requests and gets a small share of traffic."""
    eps = endpoints(0, 0, 0)
    balancer = PowerOfTwoChoices(random.Random(7))
    counts = {e.address: 0 for e in eps}
    for tick in range(3000):
        chosen = balancer.pick(eps)
        chosen.in_flight += 1
        counts[chosen.address] += 1
        for fast in eps[1:]:
            fast.in_flight = 0  # fast replicas answer before the next request
        if tick % 10 == 0:
            eps[0].in_flight = max(0, eps[0].in_flight - 1)  # the slow one finishes one per 10 ticks
    assert counts["h:0"] < 0.15 * 3000
    assert min(counts["h:1"], counts["h:2"]) > 0.4 * 3000
