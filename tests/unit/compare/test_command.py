"""`gateway compare` on the command line: its options and their checks (no stack is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser, main


def test_compare_defaults() -> None:
    """mlp, 3 rounds, 5 s throughput runs, 300 latency calls; the output folder and workdir chosen later."""
    args = build_parser().parse_args(["compare"])
    assert (args.model, args.rounds, args.seconds, args.requests) == ("mlp", 3, 5.0, 300)
    assert args.out is None and args.workdir is None and not args.no_restarts


@pytest.mark.parametrize("flag", [["--rounds", "0"], ["--seconds", "0"], ["--requests", "-1"]])
def test_compare_rejects_non_positive_settings(
    flag: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A round count, duration or call count below one is refused before any process starts."""
    assert main(["compare", *flag, "--out", str(tmp_path / "out")]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
