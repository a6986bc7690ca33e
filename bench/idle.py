"""Idle capacity: RSS per idle, authenticated, subscribed connection on one server process.

N clients each authenticate (JWT) and subscribe to their own ``user:<i>``
channel (or all to one channel) on one server process, then stay idle. Per connection = (server RSS
with N connections - RSS before) / N. The kernel's socket memory (both ends,
loopback) is reported separately from /proc/meminfo's Slab.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.delivery import DeliverySpec, LoadGens
from bench.env import BenchEnv
from bench.procs import rss_kib
from bench.systems import System


def slab_kib() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return 0


async def run_idle(
    system: System, env: BenchEnv, *, clients: int, settle: float, mode: str = "per_user"
) -> dict[str, Any]:
    """``mode``: "per_user" (each on its own user:<i>, a channel each) or "broadcast"."""
    spec = DeliverySpec(mode, "idle", clients, rate=0, seconds=0)
    await env.prepare(system.ingest)
    targets = system.start(1)
    server = system.server_pids()[0]
    await asyncio.sleep(settle)
    rss0, slab0 = rss_kib(server), slab_kib()
    gens = LoadGens(system, spec, targets)
    try:
        start = time.monotonic()
        ready = await asyncio.to_thread(gens.ready)
        connect_s = time.monotonic() - start
        await asyncio.sleep(settle)
        rss1, slab1 = rss_kib(server), slab_kib()
        subscribed = sum(r["subscribed"] for r in ready)
    finally:
        gens.stop()
        system.stop()
    per_conn = (rss1 - rss0) / max(subscribed, 1)
    return {
        "system": system.name,
        "mode": mode,
        "clients": clients,
        "subscribed": subscribed,
        "connect_s": round(connect_s, 2),
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "rss_per_connection_kib": round(per_conn, 2),
        "kernel_slab_per_connection_kib": round((slab1 - slab0) / max(subscribed, 1) / 2, 2),
    }
