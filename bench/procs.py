"""What the benchmark reads from /proc: CPU seconds and RSS of process trees, and machine load.

CPU per delivered message is the CPU of every server-side process (gateways or
peer servers, listener/emitter, Redis, Postgres backends) over a window,
divided by the deliveries in it. A process that exits inside the window loses
its share, so every measured process stays alive through the window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU of one process (0 when it is gone); ``reaped``: with that of its
    children that exited and were waited for (cutime, cstime)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK_TCK


def rss_kib(pid: int) -> int:
    """Resident set size of one process in KiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (e.g. a postmaster and its backends)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_of(pids: list[int]) -> float:
    """CPU seconds of these processes, all threads, in ns resolution (schedstat's time on
    CPU; /proc/<pid>/stat counts 10 ms ticks, too coarse for a few ms per refresh)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, total, irq + softirq) jiffies of all CPUs so far (/proc/stat). Loopback TCP
    runs much of its work in softirq, which no process's CPU time includes."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values), values[5] + values[6]


def every_process_cpu() -> dict[int, float]:
    """utime + stime of every process on the machine (10 ms ticks), by PID."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            out[int(entry)] = cpu_seconds(int(entry))
    return out


PidSource = Callable[[], Iterable[int]]


@dataclass
class CpuMeter:
    """CPU seconds per named group of processes between :meth:`start` and :meth:`stop`."""

    groups: dict[str, PidSource]

    def snapshot(self) -> dict[str, dict[int, float]]:
        # With each process' exited children: a Postgres backend that closes before the
        # meter stops (the writer's pool) is reaped into the postmaster's time, not lost.
        return {
            name: {pid: cpu_seconds(pid, reaped=True) for pid in src()}
            for name, src in self.groups.items()
        }

    def start(self) -> None:
        self._before = self.snapshot()
        self._t0 = time.monotonic()

    def stop(self) -> tuple[dict[str, float], float]:
        """CPU seconds used per group since :meth:`start`, and the elapsed wall time."""
        after = self.snapshot()
        elapsed = time.monotonic() - self._t0
        used: dict[str, float] = {}
        for name, pids in after.items():
            before = self._before.get(name, {})
            used[name] = sum(cpu - before.get(pid, 0.0) for pid, cpu in pids.items())
        return used, elapsed


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as fh:
        one, five, fifteen = fh.read().split()[:3]
    return float(one), float(five), float(fifteen)


def busy_fraction(seconds: float = 2.0) -> float:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(
    max_wait: float, threshold: float = 0.25, log: Callable[[str], None] = print
) -> dict[str, object]:
    """Wait (bounded) until the machine is mostly idle; returns what was seen.

    Other engineers' test runs share these cores: a measurement taken while they
    run measures them too. Quiet = under ``threshold`` of all CPUs busy for 3 s.
    """
    if max_wait <= 0:
        return {"busy_before": None, "waited_s": 0.0, "loadavg": loadavg()}
    deadline = time.monotonic() + max_wait
    waited = 0.0
    busy = busy_fraction(3.0)
    while busy > threshold and time.monotonic() < deadline:
        log(f"machine busy ({busy:.0%} of CPUs); waiting for a quieter moment")
        waited += 3.0
        busy = busy_fraction(3.0)
    return {"busy_before": round(busy, 3), "waited_s": waited, "loadavg": loadavg()}
