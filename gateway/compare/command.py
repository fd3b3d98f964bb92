"""The `gateway compare` command: start a local stack, compare the frameworks on it, write the report."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from gateway.compare.machine import machine_info
from gateway.compare.report import text_table, write_all
from gateway.compare.run import CompareOptions, compare
from gateway.local_stack import LocalStack, StackPorts


def default_out() -> Path:
    return Path(f"compare-{time.strftime('%Y%m%d-%H%M%S')}")


def run_compare(options: CompareOptions, out: Path | None, workdir: Path | None) -> int:
    """Start the stack (models exported into `workdir`, a temporary directory if None), measure, write
    into `out`; exit status 0, or 1 when a framework is missing."""
    out = out or default_out()
    started = time.gmtime()
    load_before = os.getloadavg()
    wall = time.monotonic()
    with contextlib.ExitStack() as held:
        if workdir is None:
            workdir = Path(held.enter_context(tempfile.TemporaryDirectory(prefix="gateway-compare-")))
        print(f"starting the stack in {workdir} (models exported on first use) ...", flush=True)
        stack = held.enter_context(LocalStack(workdir, StackPorts.ephemeral(), echo=False))
        try:
            result = compare(stack, options, log=lambda line: print(line, flush=True))
        except RuntimeError as exc:
            print(f"gateway compare: {exc}", file=sys.stderr)
            return 1
    result = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", started),
        "command": shlex.join(["gateway", *sys.argv[1:]]),
        "wall_s": round(time.monotonic() - wall, 1),
        "machine": machine_info(),
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        **result,
    }
    paths = write_all(result, out)
    print()
    print(text_table(result))
    print(f"\nTF Serving: {result['tfserving_server']}")
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0
