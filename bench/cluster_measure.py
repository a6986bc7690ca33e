"""bench/cluster.py's measurement: counters at one moment of a run (process CPU, Redis
CPU and bus, machine jiffies, deliveries) and the figures between two of them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench.cluster_load import LoadGen
from bench.cluster_rig import Rig
from bench.procs import cpu_of, descendants, every_process_cpu, machine_jiffies


@dataclass
class Snapshot:
    """Counters at one moment of a run."""

    at: float
    procs: dict[str, float]
    redis_cpu: dict[int, float]
    bus: dict[int, dict[str, int]]
    jiffies: tuple[int, int, int]
    deliveries: int
    ours: set[int]
    everyone: dict[int, float]


async def snapshot(run: Rig, gen: LoadGen) -> Snapshot:
    groups = process_groups(run, gen)
    deliveries = await gen.deliveries()
    return Snapshot(
        at=time.monotonic(),
        procs={name: cpu_of(pids) for name, pids in groups.items()},
        redis_cpu=await run.redis.cpu(),
        bus=await run.redis.bus(),
        jiffies=machine_jiffies(),
        deliveries=deliveries,
        ours={pid for pids in groups.values() for pid in pids},
        everyone=every_process_cpu(),
    )


def process_groups(run: Rig, gen: LoadGen) -> dict[str, list[int]]:
    return {
        "listener": [run.listener.pid] if run.listener is not None else [],
        "gateways": [proc.pid for proc, _ in run.gateways],
        "postgres": descendants(run.pg.postmaster_pid()),
        "redis": [node.pid for node in run.redis.nodes],
        "loadgen": [gen.proc.pid],
        "writer": [os.getpid()],  # this process: the writer (client side, not a server)
    }


def window_figures(run: Rig, a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Rates and CPU between two snapshots."""
    seconds = b.at - a.at
    delivered = b.deliveries - a.deliveries
    cpu = {name: b.procs[name] - a.procs.get(name, 0.0) for name in b.procs}
    server = cpu["listener"] + cpu["gateways"] + cpu["postgres"] + cpu["redis"]
    cores = os.cpu_count() or 1
    total = max(1, b.jiffies[1] - a.jiffies[1])
    busy = (b.jiffies[0] - a.jiffies[0]) / total * cores
    irq = (b.jiffies[2] - a.jiffies[2]) / total * cores
    ours = a.ours | b.ours
    others = sum(
        cpu_now - a.everyone.get(pid, 0.0) for pid, cpu_now in b.everyone.items() if pid not in ours
    )
    nodes = []
    for node in run.redis.nodes:
        used = b.redis_cpu[node.port] - a.redis_cpu[node.port]
        row: dict[str, Any] = {
            "role": node.role,
            "port": node.port,
            "cpu_pct": round(used / seconds * 100, 1),
            "cpu_us_per_delivery": round(used * 1e6 / max(delivered, 1), 2),
        }
        if b.bus:
            before, after = a.bus[node.port], b.bus[node.port]
            row["bus_sent"] = after.get("sent", 0) - before.get("sent", 0)
            row["bus_received"] = after.get("received", 0) - before.get("received", 0)
        nodes.append(row)
    return {
        "seconds": round(seconds, 2),
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / seconds),
        "cpu_cores": {name: round(used / seconds, 3) for name, used in cpu.items()},
        "server_cpu_cores": round(server / seconds, 3),
        "server_cpu_us_per_delivery": round(server * 1e6 / max(delivered, 1), 2),
        "cpu_us_per_delivery": {
            name: round(used * 1e6 / max(delivered, 1), 2) for name, used in cpu.items()
        },
        "redis_nodes": nodes,
        "machine_busy_cores": round(busy, 2),
        # Busy, less this run's processes: other work (other engineers' processes, visible
        # here or in other containers) and the kernel's interrupt work.
        "other_work_cores": round(
            max(0.0, busy - (server + cpu["loadgen"] + cpu["writer"]) / seconds), 2
        ),
        # Kernel interrupt work (loopback TCP's softirq): no process is charged for it.
        "irq_cores": round(irq, 2),
        # Of that, the processes this machine's /proc shows that are not this run's.
        "other_processes_cores": round(others / seconds, 2),
    }
