"""CPU time and resident memory of a process tree, read from /proc (Linux).

A backend is more than one process: TorchServe's launcher starts a JVM which starts one Python worker per
model worker, all in the launcher's own process group (it runs in a session of its own). `tree_pids`
takes a root pid and returns it, its descendants (parent links in /proc/<pid>/stat) and, where the root
leads its own process group, every member of that group (a worker re-parented to init when its parent
died still belongs). A root that shares its group with us (the JAX runtime, TF Serving: started with a
plain `Popen`) is counted by descent only, so this process is never counted with it.

CPU is utime + stime of every thread of each live process (a process that exited between two readings
takes its time with it: the figures are a floor, and nothing in a steady serving run exits). RSS summed
over processes counts shared pages (libraries, a forked worker's untouched memory) once per process: an
upper bound of what the tree holds. Everything takes `proc` (default /proc) so tests can use a fake tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")
PROC: Final = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this module uses."""

    pid: int
    ppid: int
    pgrp: int
    cpu_s: float  # utime + stime, all threads
    rss_bytes: int


def parse_stat(text: bytes) -> ProcStat:
    """One /proc/<pid>/stat line. The command name is parenthesised and may hold spaces or parentheses,
    so fields are counted from its last `)`: state is field 3, ppid 4, pgrp 5, utime 14, stime 15, rss 24."""
    head, _, rest = text.rpartition(b")")
    pid = int(head.split(b"(", 1)[0])
    fields = rest.split()  # fields[0] is the state (field 3)
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        cpu_s=(int(fields[11]) + int(fields[12])) / _CLK_TCK,
        rss_bytes=int(fields[21]) * _PAGE,
    )


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads, dead ones included) `pid` has used so far."""
    return parse_stat((PROC / str(pid) / "stat").read_bytes()).cpu_s


def read_all(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every process visible under `proc` (ones that exit while it reads are skipped)."""
    out: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = parse_stat((entry / "stat").read_bytes())
        except (OSError, ValueError, IndexError):
            continue
        out[stat.pid] = stat
    return out


def tree_pids(root: int, table: dict[int, ProcStat]) -> set[int]:
    """`root`, its descendants and, if `root` leads its own process group, the group's members."""
    if root not in table:
        return set()
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found = {root}
    if table[root].pgrp == root:
        found |= {s.pid for s in table.values() if s.pgrp == root}
    pending = list(found)
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """What a process tree has used so far: CPU seconds, resident bytes now, and how many processes."""

    cpu_s: float
    rss_bytes: int
    processes: int


def tree_usage(root: int, proc: Path = PROC) -> TreeUsage:
    """CPU seconds and RSS summed over `tree_pids(root)`; zeros if `root` is gone."""
    table = read_all(proc)
    pids = tree_pids(root, table)
    return TreeUsage(
        cpu_s=sum(table[p].cpu_s for p in pids),
        rss_bytes=sum(table[p].rss_bytes for p in pids),
        processes=len(pids),
    )
