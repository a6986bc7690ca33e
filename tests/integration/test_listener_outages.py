"""Server outages under a running listener: Redis killed, Postgres restarted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout
from tests.integration.listener_support import Listeners, history, wait_until
from tests.servers import PgInstance, RedisInstance

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

OUTAGE = 3.0  # seconds Redis stays down


@pytest.fixture
def redis_down_listeners(
    database_url: str, private_redis: Callable[..., RedisInstance]
) -> Iterator[tuple[Listeners, RedisInstance]]:
    server = private_redis()
    made = Listeners(database_url, server.url)
    yield made, server
    made.stop_all()


@pytest.mark.slow
async def test_redis_killed_listener_keeps_consuming_wakeups_and_catches_up(
    redis_down_listeners: tuple[Listeners, RedisInstance], pg: asyncpg.Connection
) -> None:
    """Redis down for seconds: wake-ups keep flowing, nothing is lost, all lands afterwards."""
    listeners, server = redis_down_listeners
    # notify mode: the leader sleeps for good, so every publish sends a wake-up to consume.
    listener = listeners.start(PGCAST_POLL_INTERVAL="30", PGCAST_NOTIFY_MODE="notify")
    await wait_until(lambda: listener.role() == "leader", "the listener leads")
    await wait_until(lambda: listener.metric("pgcast_listener_awake") == 0, "the leader sleeps")
    server.kill9()
    killed_at = time.monotonic()
    wakeups = listener.metric("pgcast_listener_wakeups_total")
    for n in range(10):
        await pg.execute("SELECT pgcast.publish('outage', to_jsonb($1::int))", n)
    await wait_until(lambda: time.monotonic() - killed_at > OUTAGE, f"a {OUTAGE}s outage")
    for n in range(10, 20):
        await pg.execute("SELECT pgcast.publish('outage', to_jsonb($1::int))", n)
    # Every transaction's NOTIFY was read off the connection while Redis was down ...
    await wait_until(
        lambda: listener.metric("pgcast_listener_wakeups_total") >= wakeups + 20,
        "20 wake-ups consumed during the outage",
    )
    # ... with no transaction left open on the listening backend, and the rows kept.
    # Polled: the leader's liveness query makes the backend 'active' now and then; a
    # transaction left open would keep it 'idle in transaction' for good.
    idle_sql = "SELECT state = 'idle' FROM pg_stat_activity WHERE application_name = $1"
    await wait_until(lambda: pg.fetchval(idle_sql, "pgcast-listener"), "the backend idle")
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 20
    await wait_until(
        lambda: listener.metric("pgcast_listener_errors_total", 'server="redis"') >= 5,
        "several failed publish attempts",
    )
    server.start()  # same port, empty: the fence and the script are gone too
    client = aioredis.Redis.from_url(server.url)
    try:

        async def all_back() -> bool:
            return await client.xlen(SINGLE.channel_keys("outage").history) == 20

        await wait_until(all_back, "every event published after Redis returned")
        assert [data for _, data in await history(client, "outage")] == list(range(20))
        assert listener.role() == "leader"
    finally:
        await client.aclose()
    assert "Redis publishing works again" in listener.service.log()


@pytest.mark.slow
async def test_postgres_restart_listener_reconnects_and_leads_again(
    private_pg: Callable[..., PgInstance], redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Postgres restarted under the leader: it reconnects with backoff and publishes again."""
    server = private_pg()
    listeners = Listeners(server.dsn, redis_url)
    try:
        listener = listeners.start()
        await wait_until(lambda: listener.role() == "leader", "the listener leads")
        server.restart()
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute("SELECT pgcast.publish('restarted', '1')")

            async def delivered() -> bool:
                return await redis_client.xlen(SINGLE.channel_keys("restarted").history) == 1

            await wait_until(delivered, "the event after the restart", deadline_s=20)
        finally:
            await conn.close()
        assert listener.metric("pgcast_listener_leadership_acquired_total") >= 2
    finally:
        listeners.stop_all()
