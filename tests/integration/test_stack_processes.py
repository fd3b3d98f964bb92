"""`make up`'s stack leaves no process behind: every process it started (the runtimes, TorchServe's JVM
and its Python workers, the gateway) is gone once it stops."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.local_stack import LocalStack, StackPorts

pytestmark = pytest.mark.integration


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid`, as `ps` would list them (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"  # a zombie has exited


def test_stopping_the_stack_leaves_no_process(tmp_path: Path) -> None:
    """Start every framework the machine has, then stop: none of the processes started survives."""
    before = _descendants(os.getpid())
    stack = LocalStack(tmp_path, StackPorts.ephemeral(), echo=False, models=("mlp",))
    stack.start()
    try:
        started = _descendants(os.getpid()) - before
        # The JAX runtime and the gateway always; TF Serving and TorchServe (JVM + worker) where installed.
        assert len(started) >= 2 + (stack.tfserving is not None) + 2 * (stack.torchserve is not None)
    finally:
        stack.stop()
    survivors = sorted(pid for pid in started if _alive(pid))
    assert survivors == [], f"processes left behind: {survivors}"
