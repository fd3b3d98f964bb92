"""CPU and RSS of a process tree from /proc: parsing, descent, process groups, and the real /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gateway.compare.procfs import PROC, ProcStat, parse_stat, read_all, tree_pids, tree_usage

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_line(pid: int, comm: str, ppid: int, pgrp: int, utime: int, stime: int, rss_pages: int) -> bytes:
    # Fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime priority nice threads itrealvalue starttime vsize rss ...
    rest = f"S {ppid} {pgrp} {pgrp} 0 -1 0 0 0 0 0 {utime} {stime} 7 7 20 0 3 0 100 12345 {rss_pages} 0 0"
    return f"{pid} ({comm}) {rest}\n".encode()


def _fake_proc(root: Path, rows: list[tuple[int, str, int, int, int, int, int]]) -> Path:
    for pid, comm, ppid, pgrp, utime, stime, rss in rows:
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_bytes(_stat_line(pid, comm, ppid, pgrp, utime, stime, rss))
    (root / "self").mkdir()  # not a pid: skipped
    (root / "stat").write_text("cpu 1 2 3\n")
    return root


def test_parse_stat_counts_fields_after_a_command_with_spaces_and_parentheses() -> None:
    """A command name like `a (b) c` does not shift the fields (they are counted from the last `)`)."""
    stat = parse_stat(_stat_line(42, "a (b) c", 7, 40, 150, 50, 10))
    assert stat == ProcStat(pid=42, ppid=7, pgrp=40, cpu_s=200 / TICK, rss_bytes=10 * PAGE)


def test_tree_of_a_group_leader_includes_its_group_and_descendants(tmp_path: Path) -> None:
    """TorchServe's shape: a launcher leading its group, the JVM its child, workers the JVM's children,
    one worker re-parented to init; a process outside both (another group, not a descendant) is left out."""
    proc = _fake_proc(
        tmp_path,
        [
            (1, "init", 0, 1, 0, 0, 1),
            (100, "python", 1, 100, 10, 10, 100),  # the launcher, leading group 100
            (101, "java", 100, 100, 300, 100, 1000),
            (102, "python", 101, 100, 50, 50, 200),  # a worker
            (103, "python", 1, 100, 20, 0, 200),  # a worker whose parent died
            (200, "python", 1, 200, 999, 999, 999),  # something else
        ],
    )
    table = read_all(proc)
    assert tree_pids(100, table) == {100, 101, 102, 103}
    usage = tree_usage(100, proc)
    assert usage.processes == 4
    assert usage.cpu_s == (20 + 400 + 100 + 20) / TICK
    assert usage.rss_bytes == (100 + 1000 + 200 + 200) * PAGE


def test_tree_of_a_process_in_our_group_is_its_descendants_only(tmp_path: Path) -> None:
    """A server started with a plain Popen shares our process group: counting the group would count us."""
    proc = _fake_proc(
        tmp_path,
        [
            (10, "pytest", 1, 10, 500, 500, 500),  # us, leading group 10
            (11, "jax-runtime", 10, 10, 30, 10, 300),
            (12, "helper", 11, 10, 5, 5, 50),
            (13, "gateway", 10, 10, 70, 70, 70),
        ],
    )
    assert tree_pids(11, read_all(proc)) == {11, 12}


def test_a_gone_root_has_no_usage(tmp_path: Path) -> None:
    """A pid that exited reads as an empty tree, not an error."""
    assert tree_usage(999, _fake_proc(tmp_path, [(1, "init", 0, 1, 0, 0, 1)])).processes == 0


def test_real_proc_counts_a_childs_cpu_and_memory() -> None:
    """On the real /proc, a child in its own session that burns CPU is in the tree of its parent's
    group; this process's own tree holds the child too, and the CPU reading grows as it runs."""
    burn = (
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while tree_usage(child.pid).cpu_s < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        usage = tree_usage(child.pid)
        assert usage.processes == 1
        assert usage.cpu_s >= 0.25
        assert usage.rss_bytes > 1024 * 1024
        assert child.pid in tree_pids(os.getpid(), read_all(PROC))
    finally:
        child.kill()
        child.wait()
