"""The CPU-per-request figure alone, quicker than `bench/bench.py`: the gateway against the bare proxy, or
against another checkout of the gateway, in front of the same JAX runtime, in one run.

    .venv/bin/python bench/cpu_ratio.py [--requests 800] [--rounds 11]
    .venv/bin/python bench/cpu_ratio.py --against /path/to/other/checkout   # this code / that code

Starts the stack with the JAX runtime only (`cnn`, ephemeral ports) and either `bench/bare_proxy.py`
or a second gateway run from `--against` (same configuration, other ports), then measures both with
`bench/cpu_per_request.py` (2-row `ModelInfer` requests, 8 in flight, alternating rounds; medians and the
median of the per-round ratios). With `--against`, "gateway" in the output is this checkout and "bare
proxy" the other one, so the ratio printed is this code's CPU per request over that code's: the way to
tell whether a change to the hot path shows in the running process, where the spread between rounds
(±20% on a shared 2-core machine) hides what separate runs would compare.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cpu_per_request import ROWS, Target, measure_cpu_per_request, start_bare_proxy  # noqa: E402

from bench import _grpc_request  # noqa: E402
from gateway.local_stack import LocalStack, ManagedProcess, StackPorts, free_ports  # noqa: E402


def _other_gateway(checkout: Path, config: dict[str, object], workdir: Path) -> tuple[ManagedProcess, int]:
    """A gateway running `checkout`'s code with `config` on fresh ports; its gRPC port."""
    listeners = config["listeners"]
    assert isinstance(listeners, dict)
    port, listeners["rest"]["port"], listeners["metrics"]["port"] = free_ports(3)
    listeners["grpc"]["port"] = port
    path = workdir / "other-gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    # `python -m gateway` would import this checkout's package first (the working directory); the
    # other checkout goes first on sys.path instead, and is checked to be what was imported.
    code = (
        f"import sys; sys.path.insert(0, {str(checkout)!r}); import gateway; "
        f"assert gateway.__file__.startswith({str(checkout)!r}), gateway.__file__; "
        "import runpy; sys.argv[0] = 'gateway'; runpy.run_module('gateway', run_name='__main__')"
    )
    process = ManagedProcess(
        "other-gateway",
        [sys.executable, "-c", code, "serve", "--config", str(path)],
        ready_prefix="gateway ready",
    )
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=800, help="requests a target a round")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--against", type=Path, help="another checkout of the project to compare with")
    args = parser.parse_args()
    image = np.random.default_rng(0).random((ROWS, 28, 28, 1), dtype=np.float32)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalStack(
            Path(tmp),
            StackPorts.ephemeral(),
            echo=False,
            models=("cnn",),
            with_tfserving=False,
            with_torchserve=False,
        ) as stack,
    ):
        if args.against is None:
            other, port = start_bare_proxy(f"127.0.0.1:{stack.ports.runtime_grpc}")
        else:
            config = yaml.safe_load(stack.config_path.read_text())
            other, port = _other_gateway(args.against.resolve(), config, Path(tmp))
            other.start(echo=False)
        try:
            assert stack.gateway is not None and stack.gateway.proc is not None and other.proc is not None
            measure_cpu_per_request(
                Target("gateway", f"127.0.0.1:{stack.ports.gateway_grpc}", stack.gateway.proc.pid),
                Target("bare proxy", f"127.0.0.1:{port}", other.proc.pid),
                stack.runtime.proc.pid,
                "cnn",
                _grpc_request("cnn", "image", image),
                args.requests,
                args.rounds,
            )
        finally:
            other.stop()


if __name__ == "__main__":
    main()
