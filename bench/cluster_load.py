"""bench/cluster.py's load: the paced writer (multi-row transactions through the real
ingest trigger) and the load generator holding every connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from bench import native
from bench.cluster_redis import HOST
from bench.cluster_rig import Rig
from bench.systems import Proc, python_module

PAD = "x" * 100  # as bench/writer.py: an event body of about 150 bytes
INSERT = (
    "INSERT INTO bench_event (channel, body) "
    "SELECT c, b::jsonb FROM unnest($1::text[], $2::text[]) AS t(c, b)"
)


# -- the writer: paced multi-row transactions -----------------------------------------------
@dataclass
class Written:
    counts: list[int]
    failed: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts) - sum(self.failed.values())

    def expected(self, names: list[str]) -> dict[str, int]:
        return {names[i]: n - self.failed.get(i, 0) for i, n in enumerate(self.counts) if n}


async def write_events(
    dsn: str, rate: float, seconds: float, channels: int, batch: int, concurrency: int = 8
) -> Written:
    """``rate`` events/s for ``seconds``, round-robin over ``user:0..channels-1``, ``batch``
    rows per transaction (open loop: transaction j is due at start + j * batch / rate)."""
    names = [f"user:{i}" for i in range(channels)]
    written = Written([0] * channels)
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    slots = asyncio.Semaphore(concurrency)
    total = int(rate * seconds)

    async def one(rows: list[int], bodies: list[str]) -> None:
        try:
            await pool.execute(INSERT, [names[i] for i in rows], bodies)
        except (asyncpg.PostgresError, OSError):
            for i in rows:
                written.failed[i] = written.failed.get(i, 0) + 1
        finally:
            slots.release()

    try:
        start = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for j, first in enumerate(range(0, total, batch)):
                delay = start + j * batch / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                rows, bodies = [], []
                now = time.time()
                for k in range(first, min(total, first + batch)):
                    i = k % channels
                    written.counts[i] += 1
                    rows.append(i)
                    bodies.append(f'{{"bseq":{written.counts[i]},"bts":{now},"pad":"{PAD}"}}')
                tasks.create_task(one(rows, bodies))
        written.seconds = time.monotonic() - start
    finally:
        await pool.close()
    return written


# -- the load generator ------------------------------------------------------------------------
class LoadGen:
    """One load generator process holding every connection (per_user mode)."""

    def __init__(self, run: Rig, connections: int) -> None:
        self.kind = "native" if native.binary() is not None else "python"
        config = {
            "protocol": "pgcast",
            "targets": [(HOST, port) for _, port in run.gateways],
            "connections": connections,
            "first_index": 0,
            "mode": "per_user",
            "secret": run.secret,
            "native": self.kind == "native",
            "ready_timeout": 180.0,
        }
        self.proc = Proc(python_module("bench.loadgen", orjson.dumps(config).decode()))

    def ready(self) -> dict[str, Any]:
        answer: dict[str, Any] = orjson.loads(self.proc.readline(240))
        return answer

    async def ask(self, cmd: str, limit: float = 60, **extra: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.proc.command, {"cmd": cmd, **extra}, limit)

    async def deliveries(self) -> int:
        return int((await self.ask("stats"))["deliveries"])


async def drain(gen: LoadGen, expected: int, limit: float) -> float:
    """Until every event arrived, or nothing moved for 2 s, or ``limit`` s."""
    start = time.monotonic()
    last, still = -1, time.monotonic()
    while time.monotonic() - start < limit:
        now = await gen.deliveries()
        if now >= expected:
            break
        if now != last:
            last, still = now, time.monotonic()
        elif time.monotonic() - still > 2.0:
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start
