"""Choosing the endpoint of a cluster that serves the next request.

`PowerOfTwoChoices` is the "power of two random choices" algorithm (Mitzenmacher, 2001; the default of
Envoy's least-request balancer and of Ray Serve's replica router): draw two distinct endpoints at random
and send the request to the one with fewer requests in flight. Compared with picking the global minimum
it needs no sorted structure and avoids herding, where every caller that reads the same counts piles onto
the same "least loaded" endpoint; compared with round robin it steers away from a slow replica, whose
in-flight count grows.

Caveats:
- In-flight counts are this process's own. With several gateway workers each balances on what it sees;
  the replicas' total load is not known to any of them.
- Counting requests treats every request alike: a batch of 64 and a batch of 1 weigh the same.
- With one candidate there is no choice; with two, both are always drawn and the rule is plain
  least-in-flight (ties go to a random one of the two).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    """What a balancer reads of an endpoint."""

    @property
    def healthy(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...


E = TypeVar("E", bound=Candidate)


class Balancer(Protocol):
    """Picks one of a cluster's endpoints."""

    def pick(self, endpoints: Sequence[E]) -> E:
        """One of `endpoints` (non-empty)."""
        ...


class PowerOfTwoChoices:
    """Least-in-flight of two random healthy endpoints (see the module docstring for caveats).

    If no endpoint is marked healthy the choice is made among all of them: a health check that is
    wrong, or not yet run, must not turn into a total outage, and a request to a dead endpoint fails
    fast with UNAVAILABLE anyway.

    Args:
        rng: The source of randomness; inject a seeded or fake `random.Random` in tests.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def pick(self, endpoints: Sequence[E]) -> E:
        """Pick an endpoint.

        Raises:
            ValueError: `endpoints` is empty.
        """
        if not endpoints:
            raise ValueError("no endpoints to choose from")
        candidates = [e for e in endpoints if e.healthy] or endpoints
        n = len(candidates)
        if n == 1:
            return candidates[0]
        # Two distinct indices, uniformly: draw the second from the n-1 others.
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        first, second = candidates[i], candidates[j]
        return second if second.in_flight < first.in_flight else first
