"""The command line: TF Serving's flags exactly, no abbreviations, and our request limit."""

from __future__ import annotations

import pytest

from runtimes.tfserving.cli import build_parser
from runtimes.tfserving.service import DEFAULT_MAX_REQUEST_BYTES


@pytest.mark.parametrize(
    "argv",
    [
        ["--model_base=/models/m"],  # an abbreviation of --model_base_path
        ["--rest_api_p=8501"],  # of --rest_api_port
        ["--no_such_flag=1"],
        ["--max_request_bytes=0"],
    ],
)
def test_unknown_abbreviated_and_bad_flags_are_errors(argv: list[str]) -> None:
    """argparse would take a unique prefix for the flag; TF Serving does not, nor do we."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_full_flags_parse() -> None:
    args = build_parser().parse_args(["--model_base_path=/models/m", "--rest_api_port=0"])
    assert args.model_base_path == "/models/m" and args.rest_api_port == 0
    assert args.max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
