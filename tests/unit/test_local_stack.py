"""`ManagedProcess`, the child-process runner of `gateway up`, the integration tests and the benchmark."""

from __future__ import annotations

import sys
import time

import pytest

from gateway.local_stack import ManagedProcess


def test_ready_line_written_with_earlier_lines_is_seen_at_once() -> None:
    """A ready line that arrives in one write with other lines is found without waiting for more output."""
    script = "import sys, time; sys.stdout.write('loading\\nloading\\nchild ready now\\n'); time.sleep(30)"
    child = ManagedProcess("child", [sys.executable, "-c", script], "child ready")
    started = time.monotonic()
    try:
        assert child.start(timeout_s=10, echo=False) == "child ready now"
        assert time.monotonic() - started < 5
    finally:
        child.stop(timeout_s=1)


def test_child_that_exits_before_ready_fails_with_its_output() -> None:
    """A child that dies before its ready line raises at once, with its exit code and last output."""
    script = "print('boom'); raise SystemExit(3)"
    child = ManagedProcess("child", [sys.executable, "-c", script], "child ready")
    with pytest.raises(RuntimeError, match=r"(?s)exit code 3\).*boom"):
        child.start(timeout_s=10, echo=False)
