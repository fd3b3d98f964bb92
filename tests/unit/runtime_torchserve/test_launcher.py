"""TorchServeProcess.start leaves nothing running when it fails: a stand-in launcher (a shell whose child
plays Java) that exits early or never gets ready has its whole process group stopped."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from runtimes.torchserve.launcher import TorchServeCommand, TorchServeProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("exit 3", "TorchServe exited with 3"),  # the launcher dies, its child lives on
        ("wait", "not healthy after"),  # no key file is ever written
    ],
)
def test_a_failed_start_stops_the_process_group(tmp_path: Path, script: str, error: str) -> None:
    """The child of a launcher that exits early, or never serves, is stopped before start() raises."""
    (tmp_path / "logs").mkdir()
    argv = ["sh", "-c", f"sleep 60 & echo $! > child.pid; {script}"]
    command = TorchServeCommand(
        argv, dict(os.environ), tmp_path, tmp_path / "config.properties", tmp_path / "key_file.json"
    )
    process = TorchServeProcess(command, "http://127.0.0.1:9")
    try:
        with pytest.raises(RuntimeError, match=error):
            process.start(timeout_s=1.0)
        child = int((tmp_path / "child.pid").read_text())
        assert not _running(child), "the launcher's child outlived a failed start"
    finally:
        if (tmp_path / "child.pid").exists():
            try:
                os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
