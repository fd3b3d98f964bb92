"""The `gateway` command line."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.cli import build_parser, main


def test_config_error_exits_2_with_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway serve` with an invalid file prints the file and key to stderr and exits 2."""
    config = tmp_path / "gateway.yaml"
    config.write_text("backends: {jax: {kind: v2, endpoints: ['h:1'], colour: red}}\n")
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "gateway.yaml: backends.jax.colour: extra keys not permitted" in err
    assert "Traceback" not in err


def test_serve_requires_config() -> None:
    """`gateway serve` without --config is a usage error (argparse exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["serve"])
    assert info.value.code == 2


def test_subcommands_are_registered() -> None:
    """The parser offers `serve` and `up`."""
    parser = build_parser()
    assert parser.parse_args(["serve", "-c", "x.yaml"]).command == "serve"
    assert parser.parse_args(["up"]).command == "up"


def test_grpc_port_in_use_exits_1_with_message_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gateway serve` whose gRPC port is taken says it cannot start and exits 1, as for the REST port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "listeners:\n"
            "  rest: {host: 127.0.0.1, port: 0}\n"
            f"  grpc: {{host: 127.0.0.1, port: {port}}}\n"
            "  metrics: {host: 127.0.0.1, port: 0}\n"
            "backends: {b: {kind: v2, endpoints: ['127.0.0.1:9'], health_check_timeout_s: 0.1}}\n"
        )
        assert main(["serve", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"gateway: cannot start: cannot bind the gRPC listener on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
