"""CPU by process group during one write-path run (bench.pipeline_writepath): Postgres as a
whole (its finished children too, reaped into the postmaster's time), the listener's
backend, the walsender, background processes, and named processes alive throughout."""

from __future__ import annotations

import collections
import os
from pathlib import Path

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def _ticks(pid: int, children: bool = False) -> int:
    """utime + stime (+ reaped children's) of ``pid``, in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    used = int(fields[11]) + int(fields[12])
    return used + int(fields[13]) + int(fields[14]) if children else used


def _children(ppid: int) -> dict[int, str]:
    """Live child pids of ``ppid`` -> their command line (postgres names its processes)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == ppid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return {pid: cmd.decode(errors="replace") for pid, cmd in found.items()}


def _machine() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine: other work on it shows here."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds by process group between start() and stop(); finished children count too
    (the postmaster reaps them into its children's time)."""

    def __init__(self, postmaster: int, listener_backend: int | None, others: dict[str, int]):
        self.postmaster = postmaster
        self.listener_backend = listener_backend
        self.others = others  # name -> pid of a process alive throughout

    def _snapshot(self) -> dict[str, int]:
        snap = collections.Counter({"postgres_total": _ticks(self.postmaster, children=True)})
        for pid, cmd in _children(self.postmaster).items():
            ticks = _ticks(pid)
            snap["postgres_total"] += ticks
            if pid == self.listener_backend:
                snap["pg_listener_backend"] += ticks
            elif "walsender" in cmd:  # the WAL variant's decoding (counted in the total)
                snap["pg_walsender"] += ticks
            elif "postgres: postgres" not in cmd:  # walwriter, checkpointer, autovacuum...
                snap["pg_background"] += ticks
        for name, pid in self.others.items():
            snap[name] = _ticks(pid)
        snap["machine_busy"], snap["machine_total"] = _machine()
        return dict(snap)

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        delta = {k: (after.get(k, 0) - self.before.get(k, 0)) * TICK for k in after}
        delta["machine_busy"] = delta["machine_busy"] / TICK  # jiffies: keep as a ratio below
        delta["machine_total"] = delta["machine_total"] / TICK
        return delta
