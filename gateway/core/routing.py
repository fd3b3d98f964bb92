"""Route matching: which backend serves a client's (model, version), and under what name.

A route either pins one version (`version: "2"`) or takes any version (`version: ""`). For a request
naming a version, the exact route wins over the any-version one; a request without a version takes only
the any-version route (a pinned route is never a guess at "latest"). The version itself is forwarded
to the backend unchanged. Matching is two dict lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.errors import ConfigError, ModelNotFound
from gateway.settings import NO_OPTIONS, GatewaySettings, RouteOptions


@dataclass(frozen=True, slots=True)
class Route:
    """One configured route.

    Attributes:
        model: The model name clients use (also the `model` metric label).
        version: The version this route is pinned to, "" for any (also the `version` metric label).
        backend: The name of the backend (and of its cluster) that serves the model.
        backend_model: The model name toward the backend.
        options: The backend kind's options for this route (signature, version label, ...), handed to
            every backend call of the route.
    """

    model: str
    version: str
    backend: str
    backend_model: str
    options: RouteOptions = NO_OPTIONS


class Router:
    """Matches (model, version) to a `Route`.

    Args:
        routes: The routes; two with the same (model, version) are a `ConfigError`.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self._table: dict[tuple[str, str], Route] = {}
        for route in routes:
            key = (route.model, route.version)
            if key in self._table:
                raise ConfigError(f"duplicate route for model '{route.model}' version '{route.version}'")
            self._table[key] = route

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Router:
        """The router of a configuration; an empty `backend_model` means the client's model name."""
        return cls(
            Route(r.model, r.version, r.backend, r.backend_model or r.model, settings.route_options(i))
            for i, r in enumerate(settings.routes)
        )

    @property
    def routes(self) -> list[Route]:
        """Every route, in configuration order."""
        return list(self._table.values())

    def match(self, model: str, version: str = "") -> Route:
        """The route for a request.

        Raises:
            ModelNotFound: No route takes this model and version.
        """
        if version:
            route = self._table.get((model, version))
            if route is not None:
                return route
        route = self._table.get((model, ""))
        if route is None:
            raise ModelNotFound(model, version)
        return route
