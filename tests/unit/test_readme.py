"""The README's config reference is a config the gateway accepts, so the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import TFServingRouteOptions, TorchServeRouteOptions, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_config_reference_loads(tmp_path: Path) -> None:
    """The YAML block under "Config reference" validates, with every field the README documents."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Config reference") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    path = tmp_path / "gateway.yaml"
    path.write_text(block.group(1))
    settings = load_settings(path, environ={})
    assert settings.listeners.shutdown_grace_s == 10
    assert settings.listeners.grpc_max_connection_age_s == 300
    assert settings.listeners.max_in_flight == 0
    assert [r.model for r in settings.routes] == ["cnn", "transformer", "cnn", "mlp"]
    assert settings.route_options(3) == TorchServeRouteOptions(version="1")
    assert settings.backends["torchserve"].kind == "torchserve"
    canary = settings.route_options(2)
    assert (settings.backends["tfserving"].kind, canary) == (
        "tfserving",
        TFServingRouteOptions(signature_name="serving_default", version_label="canary"),
    )
    assert settings.backends["jax"].metadata_ttl_s == 30
    assert [b.framework_label for b in settings.backends.values()] == ["jax", "tensorflow", "pytorch"]
