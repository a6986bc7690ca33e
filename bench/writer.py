"""The application: an open-loop writer inserting events at a fixed rate into ``bench_event``.

Event ``k`` is due at ``start + k / rate`` whether or not earlier inserts have
finished (open loop, up to ``concurrency`` in flight), round-robin over the
channels, each carrying its channel's sequence number ``bseq`` and ``bts``, the
wall-clock time taken just before its INSERT. The ingest trigger (bench/env.py) runs
at COMMIT and replaces ``bts`` with the database's clock there, so latency measured at
the client is commit -> receive, the commit's WAL flush included; ``commit_latencies``
is the writer's own INSERT start -> commit acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import asyncpg
import orjson

PAD = "x" * 100
INSERT = "INSERT INTO bench_event (channel, body) VALUES ($1, $2::jsonb)"


@dataclass
class WriteResult:
    counts: dict[str, int] = field(default_factory=dict)
    commit_latencies: list[float] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def expected(self) -> dict[str, int]:
        """Events per channel that committed (a failed INSERT is not an event)."""
        return {ch: n - self.failed.get(ch, 0) for ch, n in self.counts.items()}


class Writer:
    """A pool of connections and the per-channel sequence numbers."""

    def __init__(self, dsn: str, concurrency: int = 16) -> None:
        self.dsn, self.concurrency = dsn, concurrency
        self.pool: asyncpg.Pool | None = None

    async def __aenter__(self) -> Writer:
        self.pool = await asyncpg.create_pool(
            self.dsn, min_size=self.concurrency, max_size=self.concurrency
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def run(self, rate: float, seconds: float, channels: list[str]) -> WriteResult:
        assert self.pool is not None
        pool, result = self.pool, WriteResult()
        slots = asyncio.Semaphore(self.concurrency)

        async def one(channel: str, seq: int) -> None:
            try:
                body = orjson.dumps({"bseq": seq, "bts": time.time(), "pad": PAD}).decode()
                t0 = time.perf_counter()
                await pool.execute(INSERT, channel, body)
                result.commit_latencies.append(time.perf_counter() - t0)
            except (asyncpg.PostgresError, OSError):
                result.failed[channel] = result.failed.get(channel, 0) + 1
            finally:
                slots.release()

        total = int(rate * seconds)
        start = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            for k in range(total):
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await slots.acquire()
                channel = channels[k % len(channels)]
                seq = result.counts[channel] = result.counts.get(channel, 0) + 1
                tasks.create_task(one(channel, seq))
        result.seconds = time.monotonic() - start
        return result
