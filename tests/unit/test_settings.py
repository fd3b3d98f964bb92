"""Loading the configuration file: validation messages that name the key, and environment overrides."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from gateway.errors import ConfigError
from gateway.settings import GatewaySettings, V2BackendSettings, load_settings

VALID = """\
listeners:
  rest:    {host: 0.0.0.0, port: 8000}
  grpc:    {host: 0.0.0.0, port: 8001}
  metrics: {host: 127.0.0.1, port: 8002}
  max_request_bytes: 1048576
  workers: 2
backends:
  jax:
    kind: v2
    protocol: grpc
    endpoints: ["127.0.0.1:8011", "[::1]:8012", "jax-0.jax.svc:8011"]
    timeout_s: 5
    health_check_interval_s: 1
routes:
  - model: cnn
    backend: jax
  - model: cnn
    version: 2
    backend: jax
    backend_model: cnn_v2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ or {})
    return str(info.value)


def test_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    """A valid file loads; omitted fields take their defaults; a numeric version becomes a string."""
    settings = load_settings(write(tmp_path, VALID), {})
    assert settings.listeners.grpc.port == 8001
    assert settings.listeners.workers == 2
    backend = settings.backends["jax"]
    assert isinstance(backend, V2BackendSettings)
    assert backend.endpoints[1] == "[::1]:8012"
    assert backend.timeout_s == 5
    assert backend.health_check_timeout_s == 2.0
    assert [(r.model, r.version, r.backend_model) for r in settings.routes] == [
        ("cnn", "", ""),
        ("cnn", "2", "cnn_v2"),
    ]


@pytest.mark.parametrize(
    ("backend", "label"),
    [
        ("{kind: v2, endpoints: ['h:1']}", "oip"),
        ("{kind: tfserving, endpoints: ['h:1']}", "tensorflow"),
        ("{kind: torchserve, endpoints: ['h:1']}", "pytorch"),
        ("{kind: v2, endpoints: ['h:1'], framework: jax}", "jax"),
        ("{kind: tfserving, endpoints: ['h:1'], framework: tensorflow-2.17}", "tensorflow-2.17"),
    ],
)
def test_framework_label_is_configured_or_the_kinds(tmp_path: Path, backend: str, label: str) -> None:
    """A backend's metrics' framework label is its `framework`, else its kind's (an OIP server's: "oip")."""
    settings = load_settings(write(tmp_path, f"backends: {{b: {backend}}}\n"), {})
    assert settings.backends["b"].framework_label == label


def test_minimal_file_gets_default_listeners(tmp_path: Path) -> None:
    """Only backends are required; listeners default to ports 8000/8001/8002."""
    settings = load_settings(write(tmp_path, "backends: {jax: {kind: v2, endpoints: ['h:1']}}\n"), {})
    assert (settings.listeners.rest.port, settings.listeners.grpc.port, settings.listeners.metrics.port) == (
        8000,
        8001,
        8002,
    )
    assert settings.routes == []


def test_listener_given_in_part_keeps_its_default_port(tmp_path: Path) -> None:
    """A listener with only its host, in the file or by one environment override, keeps its default port."""
    path = write(
        tmp_path, "listeners: {rest: {host: 127.0.0.1}}\nbackends: {jax: {kind: v2, endpoints: ['h:1']}}\n"
    )
    settings = load_settings(path, {"GATEWAY_LISTENERS__METRICS__HOST": "::"})
    assert (settings.listeners.rest.host, settings.listeners.rest.port) == ("127.0.0.1", 8000)
    assert (settings.listeners.metrics.host, settings.listeners.metrics.port) == ("::", 8002)
    assert settings.listeners.grpc.port == 8001


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  workers: 2\n",
            "  workers: 2\n  wrokers: 3\n",
            "gateway.yaml: listeners.wrokers: extra keys not permitted",
        ),
        (
            "    timeout_s: 5\n",
            "    timeout_s: 5\n    retries: 3\n",
            "gateway.yaml: backends.jax.retries: extra keys not permitted",
        ),
        (
            "    backend: jax\n  - model",
            "    backend: jxa\n  - model",
            "gateway.yaml: routes.0.backend: unknown backend 'jxa'",
        ),
        ("version: 2", "version: ''", "gateway.yaml: routes.1: duplicate route for model 'cnn' version ''"),
        (
            '"[::1]:8012"',
            '"jax"',
            "gateway.yaml: backends.jax.endpoints.1: expected host:port (port 1..65535), got 'jax'",
        ),
        ('"[::1]:8012"', '"h:70000"', "backends.jax.endpoints.1: expected host:port"),
        (
            "port: 8001",
            "port: 70000",
            "gateway.yaml: listeners.grpc.port: Input should be less than or equal to 65535",
        ),
        (
            "kind: v2",
            "kind: tfserving2",
            "gateway.yaml: backends.jax.kind: unknown backend kind 'tfserving2'",
        ),
        ("protocol: grpc", "protocol: http", "gateway.yaml: backends.jax.protocol:"),
        (
            'endpoints: ["127.0.0.1:8011", "[::1]:8012", "jax-0.jax.svc:8011"]',
            "endpoints: []",
            "backends.jax.endpoints:",
        ),
        (
            "    timeout_s: 5\n",
            "    timeout_s: 5\n    framework: JAX 0.4\n",
            "backends.jax.framework: String",
        ),
    ],
    ids=[
        "unknown-listener-key",
        "unknown-backend-key",
        "unknown-backend-reference",
        "duplicate-route",
        "endpoint-format",
        "endpoint-port",
        "port-range",
        "unknown-kind",
        "bad-protocol",
        "no-endpoints",
        "framework-label",
    ],
)
def test_invalid_file_names_the_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    """Each invalid setting is reported as `file: dotted.key.path: message`."""
    assert old in VALID
    message = error_of(write(tmp_path, VALID.replace(old, new, 1)))
    assert expected in message
    assert "Traceback" not in message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line."""
    message = error_of(write(tmp_path, "listeners:\n  rest: {port: 1\nbackends: {}\n"))
    assert message.endswith("gateway.yaml:3: invalid YAML: expected ',' or '}', but got ':'")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    """A file that is a list, not a mapping, is refused."""
    assert "top level must be a mapping" in error_of(write(tmp_path, "- a\n- b\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable file is a ConfigError naming it."""
    assert "nope.yaml: cannot read" in error_of(tmp_path / "nope.yaml")


def test_env_overrides_nested_key(tmp_path: Path) -> None:
    """GATEWAY_LISTENERS__GRPC__PORT overrides listeners.grpc.port."""
    settings = load_settings(write(tmp_path, VALID), {"GATEWAY_LISTENERS__GRPC__PORT": "9000"})
    assert settings.listeners.grpc.port == 9000


def test_env_overrides_from_process_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, os.environ is read; backend names match case-insensitively."""
    monkeypatch.setenv("GATEWAY_BACKENDS__JAX__TIMEOUT_S", "1.5")
    monkeypatch.setenv("GATEWAY_BACKENDS__JAX__ENDPOINTS", '["a:1", "b:2"]')
    monkeypatch.setenv("GATEWAY_UNRELATED", "ignored")  # not a config section: left alone
    settings = load_settings(write(tmp_path, VALID))
    backend = settings.backends["jax"]
    assert backend.timeout_s == 1.5
    assert backend.endpoints == ["a:1", "b:2"]


def test_env_override_list_item_and_error_names_variable(tmp_path: Path) -> None:
    """List items are addressed by index, and an invalid override names its variable."""
    path = write(tmp_path, VALID)
    settings = load_settings(path, {"GATEWAY_BACKENDS__JAX__ENDPOINTS__0": "10.0.0.1:8011"})
    assert settings.backends["jax"].endpoints[0] == "10.0.0.1:8011"
    message = error_of(path, {"GATEWAY_LISTENERS__REST__PORT": "http"})
    assert "listeners.rest.port" in message
    assert "(set by GATEWAY_LISTENERS__REST__PORT)" in message
    assert "no such list item" in error_of(path, {"GATEWAY_ROUTES__9__MODEL": "x"})


def test_every_field_is_documented() -> None:
    """Every settings field carries a description (the file format's reference)."""
    pending: list[type] = [GatewaySettings]
    seen: set[type] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            assert info.description, f"{model.__name__}.{name} has no description"
            types: list[object] = [info.annotation]
            while types:  # walk into dict[...], list[...], Annotated[...] and unions
                candidate = types.pop()
                types.extend(get_args(candidate))
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    pending.append(candidate)
    assert V2BackendSettings in seen
