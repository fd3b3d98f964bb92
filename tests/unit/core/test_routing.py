"""Router matching table."""

from __future__ import annotations

import pytest

from gateway.core.routing import Route, Router
from gateway.errors import ConfigError, ModelNotFound
from gateway.settings import GatewaySettings

ANY = Route("cnn", "", "jax", "cnn")
PINNED = Route("cnn", "2", "tf", "cnn_v2")
ONLY_PINNED = Route("bert", "1", "jax", "bert")
ROUTER = Router([ANY, PINNED, ONLY_PINNED])


@pytest.mark.parametrize(
    ("model", "version", "expected"),
    [
        ("cnn", "", ANY),
        ("cnn", "2", PINNED),  # exact version beats any-version
        ("cnn", "3", ANY),  # unknown version falls back to any-version
        ("bert", "1", ONLY_PINNED),
    ],
)
def test_match(model: str, version: str, expected: Route) -> None:
    """Exact (model, version) wins, then the any-version route of the model."""
    assert ROUTER.match(model, version) is expected


@pytest.mark.parametrize(("model", "version"), [("nope", ""), ("nope", "1"), ("bert", ""), ("bert", "2")])
def test_no_match_is_model_not_found(model: str, version: str) -> None:
    """Unknown models, and versions no route takes, raise ModelNotFound."""
    with pytest.raises(ModelNotFound):
        ROUTER.match(model, version)


def test_duplicate_route_is_a_config_error() -> None:
    """Two routes for the same (model, version) are refused."""
    with pytest.raises(ConfigError):
        Router([ANY, Route("cnn", "", "other", "x")])


def test_from_settings_defaults_backend_model_to_model() -> None:
    """An empty backend_model keeps the client's model name toward the backend."""
    settings = GatewaySettings.model_validate(
        {
            "backends": {"jax": {"kind": "v2", "endpoints": ["h:1"]}},
            "routes": [
                {"model": "cnn", "backend": "jax"},
                {"model": "enc", "backend": "jax", "backend_model": "e"},
            ],
        }
    )
    router = Router.from_settings(settings)
    assert router.match("cnn").backend_model == "cnn"
    assert router.match("enc").backend_model == "e"
