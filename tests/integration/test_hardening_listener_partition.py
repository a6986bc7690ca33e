"""Partition between the leader listener and Postgres: it steps down in bound, a standby leads.

The leader reaches Postgres through a TCP proxy that blackholes traffic (no FIN,
no RST); the standby connects directly. Writers keep committing through it all;
every event must reach Redis exactly once, in order per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout, offset_of_stream_id
from tests.soak.harness import FAST_LISTENER, Listener, RedisClient
from tests.tcpproxy import TcpProxy
from tests.waiting import eventually

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

CHANNEL = "partition"
WRITERS = 3
# The server-side bound the listener asks Postgres for (keepalive idle + interval * count).
SERVER_KEEPALIVE_BOUND = int(FAST_LISTENER["PGCAST_TCP_KEEPALIVE_IDLE"]) + int(
    FAST_LISTENER["PGCAST_TCP_KEEPALIVE_INTERVAL"]
) * int(FAST_LISTENER["PGCAST_TCP_KEEPALIVE_COUNT"])
NOTICE_BOUND = float(FAST_LISTENER["PGCAST_LIVENESS_INTERVAL"]) + float(
    FAST_LISTENER["PGCAST_LIVENESS_TIMEOUT"]
)


class Writers:
    """Concurrent writers committing numbered events until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.committed: list[tuple[int, int]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for writer in range(WRITERS):
                group.create_task(self._write(writer))

    async def _write(self, writer: int) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            i = 0
            while not self.stop.is_set():
                data = orjson.dumps({"w": writer, "i": i}).decode()
                await conn.execute("SELECT pgcast.publish($1, $2::jsonb)", CHANNEL, data)
                self.committed.append((writer, i))
                i += 1
                await asyncio.sleep(0.01)  # pacing: a bounded write rate on a 2-core machine
        finally:
            await conn.close()


async def history(client: RedisClient) -> list[tuple[int, tuple[int, int]]]:
    entries = await client.xrange(SINGLE.channel_keys(CHANNEL).history)
    out = []
    for entry_id, fields in entries:
        data = orjson.loads(fields[b"f"])["data"]
        out.append((offset_of_stream_id(entry_id), (data["w"], data["i"])))
    return out


@contextlib.asynccontextmanager
async def writing(dsn: str) -> AsyncIterator[Writers]:
    writers = Writers(dsn)
    task = asyncio.create_task(writers.run())
    try:
        yield writers
    finally:
        writers.stop.set()
        await asyncio.wait_for(task, 10)


@pytest.mark.slow
async def test_blackholed_leader_steps_down_and_standby_takes_over(
    database_url: str, redis_url: str
) -> None:
    """Leader partitioned from Postgres: notices within liveness bounds; no loss, no duplicate."""
    pg = urlsplit(database_url)
    assert pg.hostname is not None
    assert pg.port is not None
    proxy = TcpProxy(pg.hostname, pg.port).start()
    client: RedisClient = aioredis.Redis.from_url(redis_url)
    leader = Listener(proxy.url_for(database_url), redis_url)
    standby = Listener(database_url, redis_url)
    try:
        leader.start()
        await eventually(lambda: _is(leader, "leader"), 15, "first listener leads")
        standby.start()
        await eventually(lambda: _is(standby, "standby"), 15, "second listener stands by")
        async with writing(database_url) as writers:
            await eventually(lambda: _xlen_at_least(client, 60), 20, "events flow")
            proxy.blackhole(upstream_timeout=SERVER_KEEPALIVE_BOUND)
            noticed = await eventually(lambda: _is(leader, "standby"), 10, "leader steps down")
            took_over = noticed + await eventually(
                lambda: _is(standby, "leader"), 15, "standby takes over"
            )
            before = len(writers.committed)
            await eventually(
                lambda: _xlen_at_least(client, before + 60), 20, "events flow via the new leader"
            )
        proxy.heal()
        forwarded = proxy.bytes_forwarded
        total = len(writers.committed)
        await eventually(lambda: _xlen_at_least(client, total), 20, "every event published")
        entries = await history(client)
        assert sorted(event for _, event in entries) == sorted(writers.committed)
        assert [offset for offset, _ in entries] == list(range(1, total + 1))
        for writer in range(WRITERS):
            mine = [i for _, (w, i) in entries if w == writer]
            assert mine == sorted(mine), "one writer's commits are published in commit order"
        print(f"partition: leader stepped down in {noticed:.2f}s, standby led in {took_over:.2f}s")
        assert noticed <= NOTICE_BOUND + 1.0, f"leader noticed after {noticed:.2f}s"
        # The lock frees when Postgres drops the dead backend, then a standby retry wins it.
        assert took_over <= SERVER_KEEPALIVE_BOUND + 2.0, f"takeover after {took_over:.2f}s"
        await eventually(
            lambda: proxy.bytes_forwarded > forwarded, 10, "old leader reconnects after heal"
        )
        assert await leader.role() == "standby"
        for proc in (leader, standby):
            assert "Traceback" not in proc.log()
    finally:
        leader.stop()
        standby.stop()
        proxy.stop()
        await client.aclose()


async def _is(listener: Listener, role: str) -> bool:
    return await listener.role() == role


async def _xlen_at_least(client: RedisClient, n: int) -> bool:
    return int(await client.xlen(SINGLE.channel_keys(CHANNEL).history)) >= n
