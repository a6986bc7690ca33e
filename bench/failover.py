"""Failover under load: SIGKILL the leader listener while events flow; time and loss.

Two ``pgcast-listener`` processes (the first becomes leader, the second waits
as standby), one gateway, clients on one channel, the writer at a steady
rate. Mid-run the leader gets SIGKILL. Failover time = from the kill to the
first client receipt of an event INSERTed after the kill (so necessarily
published by the new leader; an upper bound). Loss is counted over all clients.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

from bench.contenders import HOST, Pgcast
from bench.delivery import DeliverySpec, LoadGens, drain
from bench.env import BenchEnv
from bench.systems import Proc
from bench.writer import Writer

LEADER_LINE = 'pgcast_listener_role{role="leader"} 1.0'


def is_leader(proc: Proc) -> bool:
    url = f"http://{HOST}:{proc.port}/metrics"  # type: ignore[attr-defined]
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return LEADER_LINE in resp.read().decode()
    except OSError:
        return False


async def wait_leader(proc: Proc, limit: float) -> float:
    start = time.monotonic()
    while not await asyncio.to_thread(is_leader, proc):
        if time.monotonic() - start > limit:
            raise TimeoutError(f"listener {proc.pid} never became leader:\n{proc.tail()}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def run_failover(
    env: BenchEnv, *, clients: int, rate: float, seconds: float, kill_at: float, **listener_env: str
) -> dict[str, Any]:
    system = Pgcast(env)
    spec = DeliverySpec("broadcast", "failover", clients, rate, seconds)
    await env.prepare(system.ingest)
    targets = system.start(1, listener_env=listener_env)
    leader = system.feeders[0]
    await wait_leader(leader, 30)
    standby = system.listener(**listener_env)
    system.feeders.append(standby)
    gens = LoadGens(system, spec, targets, trace_index=0)
    try:
        await asyncio.to_thread(gens.ready)
        async with Writer(env.dsn) as writer:
            writing = asyncio.create_task(writer.run(rate, seconds, spec.channels()))
            await asyncio.sleep(kill_at)
            killed_at = time.time()
            leader.kill9()
            promoted = await wait_leader(standby, 30)
            written = await writing
        await drain(gens, written.total * clients, 15)
        reports = await gens.ask({"cmd": "report", "expected": written.expected}, limit=120)
    finally:
        gens.stop()
        system.stop()
    trace = sorted(tuple(t) for r in reports for t in r["trace"])
    after = [recv for recv, sent, _seq in trace if sent > killed_at]
    before = [recv for recv, _sent, _seq in trace if recv <= killed_at]
    return {
        "system": "pgcast",
        "listener_env": listener_env,
        "clients": clients,
        "rate": rate,
        "events_written": written.total,
        "standby_promoted_s": round(promoted, 3),
        "first_new_event_s": round(min(after) - killed_at, 3) if after else None,
        "receipts_before_kill": len(before),
        "lost": sum(r["lost"] for r in reports),
        "duplicated": sum(r["duplicated"] for r in reports),
    }
