"""Redis that goes back in time (an older RDB snapshot, a lagging replica behind the same
address, FLUSHALL): no client is ever silently short of an event, and nothing still in the
outbox is lost. Real listener and gateway processes, real redis-servers."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import Callable

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from pgcast.keys import Layout
from tests.integration.listener_support import Listeners, capture_env, capturing
from tests.integration.rollback_support import (
    CHANNEL,
    Watcher,
    caught_up,
    check,
    check_offsets,
    drained,
    history_ns,
    publish,
    stack,
    until,
    watching,
)
from tests.redis_topology import RedisNode
from tests.tcpproxy import TcpProxy

SINGLE = Layout()  # the key names of one Redis (and Sentinel)


async def _went_back_in_time(
    database_url: str,
    redis_url: str,
    pg: asyncpg.Connection,
    snapshot: Callable[[], None],
    lose: Callable[[], None],
    come_back: Callable[[], None],
    capture: dict[str, str] | None = None,
) -> float:
    """The issue's scenario: 1-20, a snapshot of Redis (or a replica that stops following),
    21-40 (clients hold them), Redis goes back to the snapshot with 41-45 written to the
    outbox while it is down, then 46-60; a client resumes from 40, another subscribes
    fresh, 61-70 go to everyone."""
    redis = aioredis.Redis.from_url(redis_url)
    async with (
        contextlib.aclosing(redis),
        stack(database_url, redis_url, **(capture or {})) as running,
        aiohttp.ClientSession() as session,
    ):
        await capturing(pg, capture or {})
        live = Watcher(session, running.urls, sub="live")
        async with watching([live]):
            await until(lambda: live.notices, "the live client subscribed")
            await publish(pg, 1, 20)
            await until(lambda: live.has(20), "1-20 delivered")
            snapshot()
            await publish(pg, 21, 40)
            await until(lambda: live.has(40), "21-40 delivered")
            held = (live.epoch, live.offset)
            assert held[1] == 40
            lose()
            await publish(pg, 41, 45)  # Redis is down: these wait in the outbox
            come_back()
            await until(lambda: _reconnected(running.ports[0]), "the gateway relinked")
            await publish(pg, 46, 60)
            resumer = Watcher(session, running.urls, sub="resumer", epoch=held[0], offset=40)
            fresh = Watcher(session, running.urls, sub="fresh")
            async with watching([resumer, fresh]):
                await until(lambda: resumer.notices and fresh.notices, "both subscribed")
                await publish(pg, 61, 70)
                watchers = (live, resumer, fresh)
                await until(lambda: drained(pg), "the outbox drained")
                # (With WAL capture the outbox is empty all along: wait for the last event.)
                await until(lambda: _last_is(redis, 70), "70 in Redis")
                for watcher in watchers:
                    await until(lambda w=watcher: caught_up(w, redis), f"{watcher.sub} at the top")
        check(live, range(1, 71))
        check(resumer, range(41, 71))
        check(fresh, range(61, 71))
        check_offsets(live, resumer, fresh)
        for watcher in (live, resumer, fresh):
            assert watcher.ns[-10:] == list(range(61, 71)), watcher.log  # delivery goes on
        # The resume from 40 in the old epoch cannot be honoured: told, not silently short.
        assert resumer.notices[0][3] is False or resumer.ns[:1] == [41], resumer.log[:3]
        assert any(notice[3] is False for notice in live.notices[1:]), live.notices
        lost = running.listeners.started[0].metric("pgcast_listener_redis_history_lost_total")
        assert await history_ns(redis) == list(range(41, 71))  # the outbox's 41-45 included
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0
    return lost


async def _last_is(redis: aioredis.Redis, n: int) -> bool:
    return (await history_ns(redis))[-1:] == [n]


def _reconnected(port: int) -> bool:
    """Whether the gateway on ``port`` has re-established its pub/sub link at least once."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=2) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("pgcast_gateway_redis_reconnects_total "):
            return float(line.split()[-1]) >= 1
    return False


@pytest.mark.parametrize("mode", ["outbox", "wal"])
async def test_redis_restarted_from_an_older_snapshot_tells_every_client(
    database_url: str, pg: asyncpg.Connection, redis_node: Callable[..., RedisNode], mode: str
) -> None:
    """A crash of a Redis with RDB persistence restarts it from its last snapshot, 20
    events back: the watermark in Postgres starts a new epoch, clients are told, and the
    events written while Redis was down (to the outbox, or only to the WAL) are delivered."""
    redis = redis_node(persistence=True)
    lost = await _went_back_in_time(
        database_url,
        redis.url,
        pg,
        redis.save,
        redis.kill9,
        lambda: redis.start(),
        capture_env(mode, database_url),
    )
    assert lost == 1  # the listener saw Redis behind the watermark (E:20 < E:40)


async def test_failover_to_a_replica_that_stopped_following_tells_every_client(
    database_url: str, pg: asyncpg.Connection, redis_node: Callable[..., RedisNode]
) -> None:
    """The issue's report: a replica synced 1-20 and stopped following; the primary died
    and its address (a proxy here, a DNS name or VIP in production) served the replica.
    (Who notices first varies: the listener, or a gateway that finds the channel gone.)"""
    primary = redis_node()
    replica = redis_node(False, primary.address)
    replica.wait_synced()
    proxy = TcpProxy(*primary.address).start()
    try:

        def promote() -> None:
            proxy.upstream = replica.address
            proxy.reset()

        await _went_back_in_time(
            database_url,
            proxy.url_for(primary.url),
            pg,
            replica.replicaof_no_one,
            primary.kill9,
            promote,
        )
    finally:
        proxy.stop()


async def test_flushall_under_load_tells_clients_and_loses_nothing_in_the_outbox(
    database_url: str, pg: asyncpg.Connection, redis_node: Callable[..., RedisNode]
) -> None:
    """FLUSHALL while events flow: clients get a new epoch (told), every event of the
    outbox still reaches Redis, and delivery goes on."""
    redis = redis_node()
    async with stack(database_url, redis.url, gateways=2) as running:
        async with aiohttp.ClientSession() as session:
            watchers = [
                Watcher(session, running.urls[i % 2 :] + running.urls[: i % 2], sub=f"w{i}")
                for i in range(4)
            ]
            async with watching(watchers):
                await until(lambda: all(w.notices for w in watchers), "all subscribed")
                writer = asyncio.create_task(publish(pg, 1, 300))
                await until(lambda: any(w.has(100) for w in watchers), "100 delivered")
                redis.command("FLUSHALL")
                await writer
                await publish(pg, 301, 310)
                await until(lambda: drained(pg), "the outbox drained")
                redis_client = aioredis.Redis.from_url(redis.url)
                for watcher in watchers:
                    await until(lambda w=watcher: caught_up(w, redis_client), "at the top")
                tail = await history_ns(redis_client)
                await redis_client.aclose()
        for watcher in watchers:
            check(watcher, range(1, 311))
            assert any(notice[3] is False for notice in watcher.notices[1:]), watcher.notices
            assert watcher.ns[-10:] == list(range(301, 311))  # delivery goes on
        check_offsets(*watchers)
        assert tail == list(range(tail[0], 311))
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0


async def test_a_new_leader_on_another_redis_renews_the_waiting_channels(
    database_url: str, pg: asyncpg.Connection, redis_node: Callable[..., RedisNode]
) -> None:
    """The leader changed and Redis restarted (from a snapshot that looks whole) in between:
    the predecessor's batch in flight may be lost and could be numbered anew in another
    order, so the channels of the rows waiting start new epochs; with the same Redis, a new
    leader goes on in the same epoch."""
    redis = redis_node(persistence=True)
    client = aioredis.Redis.from_url(redis.url)
    listeners = Listeners(database_url, redis.url)
    try:
        first = listeners.start()
        await publish(pg, 1, 5)
        await until(lambda: drained(pg), "1-5 published")
        epoch = (await client.hget(SINGLE.channel_keys(CHANNEL).meta, "e") or b"").decode()
        first.service.stop()
        recorded = await pg.fetchval("SELECT redis_identity FROM pgcast.leader")
        assert recorded
        assert recorded.split("/")[0] == (await client.info("server"))["run_id"]
        await publish(pg, 6, 8)  # waiting for the next leader
        redis.save()
        await client.aclose()
        redis.restart()  # the same data, another process: a new run id
        client = aioredis.Redis.from_url(redis.url)
        second = listeners.start()
        await until(lambda: drained(pg), "6-8 published by the new leader")
        renewed = (await client.hget(SINGLE.channel_keys(CHANNEL).meta, "e") or b"").decode()
        assert renewed != epoch
        assert await history_ns(client) == [6, 7, 8]
        assert second.metric("pgcast_listener_redis_history_lost_total") == 1
        assert "not the one the last leader published to" in second.service.log()
        second.service.stop()
        third = listeners.start()  # the same Redis: no renewal
        await publish(pg, 9, 9)
        await until(lambda: drained(pg), "9 published")
        assert (
            await client.hget(SINGLE.channel_keys(CHANNEL).meta, "e") or b""
        ).decode() == renewed
        assert await history_ns(client) == [6, 7, 8, 9]
        assert third.metric("pgcast_listener_redis_history_lost_total") == 0
    finally:
        listeners.stop_all()
        await client.aclose()
