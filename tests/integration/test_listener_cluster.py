"""The listener on a real Redis Cluster (3 masters, a replica each, started by the test).

Channels hash to partitions whose hash tags spread over every master; each channel's
history is numbered 1..n on the master that owns its partition's slot; a retried batch
is de-duplicated; an older leader is refused on every partition; controls reach the
control stream; a master SIGKILLed under load loses nothing silently: every channel
either continues its epoch with every event, in order, or starts a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from listener.publisher import Event, Publisher, ReplicasBehindError
from pgcast import redis_connect
from pgcast.keys import CONTROL_MARKER, Layout, key_slot, offset_of_stream_id
from pgcast.redis_url import parse_redis_url
from tests.integration.listener_support import Listeners, wait_until
from tests.redis_cluster import ClusterNode, RedisCluster

LAYOUT = Layout(64)
DISCONNECT = b'{"op":"disconnect","sub":"42","reason":"x"}'


@contextlib.asynccontextmanager
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[redis_connect.RedisCluster]:
    client = redis_connect.client(parse_redis_url(cluster.url), timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def listeners_on(cluster: RedisCluster, database_url: str) -> AsyncIterator[Listeners]:
    group = Listeners(database_url, cluster.url)
    try:
        yield group
    finally:
        group.stop_all()


def owner(cluster: RedisCluster, key: str) -> ClusterNode:
    return cluster.master_of_slot(key_slot(key))


async def histories(cluster: RedisCluster, channels: list[str]) -> dict[str, list[tuple[int, int]]]:
    """Each channel's history as (offset, n) pairs, read with a plain client from the master
    that owns its slot (no redirection followed: the entries must be there)."""
    by_master: dict[int, list[str]] = defaultdict(list)
    for channel in channels:
        by_master[owner(cluster, LAYOUT.channel_keys(channel).history).port].append(channel)
    found: dict[str, list[tuple[int, int]]] = {}
    for port, names in by_master.items():
        node = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)
        try:
            pipe = node.pipeline(transaction=False)
            for channel in names:
                pipe.xrange(LAYOUT.channel_keys(channel).history)
            for channel, entries in zip(names, await pipe.execute(), strict=True):
                found[channel] = [
                    (offset_of_stream_id(entry_id), orjson.loads(fields[b"f"])["data"]["n"])
                    for entry_id, fields in entries
                ]
        finally:
            await node.aclose()
    return found


async def epochs(client: redis_connect.RedisCluster, channels: list[str]) -> dict[str, str | None]:
    pipe = client.pipeline()
    for channel in channels:
        pipe.hget(LAYOUT.channel_keys(channel).meta, "e")
    replies = await pipe.execute()
    return {c: (r.decode() if r else None) for c, r in zip(channels, replies, strict=True)}


async def drained(pg: asyncpg.Connection) -> bool:
    return bool(await pg.fetchval("SELECT count(*) = 0 FROM pgcast.outbox"))


async def test_listener_numbers_1000_channels_on_the_masters_of_their_partitions(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """1,000 channels, 3 events each, through the real listener: every history is 1..3 in
    order on the master owning the channel's partition, the channels spread over all three
    masters, SPUBLISH reaches a shard subscriber, a control reaches the control stream and
    the leader wrote the partition count for gateways."""
    cluster = redis_cluster()
    channels = [f"user:{number}" for number in range(1000)]
    sample = channels[7]
    live = LAYOUT.live_channel(sample)
    node = owner(cluster, live)
    shard = aioredis.Redis(host="127.0.0.1", port=node.port)
    pubsub = shard.pubsub()
    await pubsub.ssubscribe(live)
    await pubsub.get_message(timeout=2.0)  # the ssubscribe confirmation
    async with listeners_on(cluster, database_url) as group:
        group.start()
        await pg.execute(
            """SELECT pgcast.publish('user:' || c, jsonb_build_object('n', n))
               FROM generate_series(1, 3) n, generate_series(0, 999) c ORDER BY n, c"""
        )
        await pg.execute("SELECT pgcast.disconnect('42', 'x')")
        await wait_until(lambda: drained(pg), "the outbox to drain", 30.0)
        found = await histories(cluster, channels)
        assert {c: h for c, h in found.items() if h != [(1, 1), (2, 2), (3, 3)]} == {}
        spread = Counter(owner(cluster, LAYOUT.channel_keys(c).history).port for c in channels)
        assert len(spread) == 3, spread
        assert min(spread.values()) >= 250, spread  # 64 partitions, evenly spaced tags
        got = [await pubsub.get_message(timeout=2.0) for _ in range(3)]
        frames = [orjson.loads(m["data"].split(b":", 2)[2]) for m in got if m]
        assert [f["data"]["n"] for f in frames] == [1, 2, 3]
        async with cluster_client(cluster) as client:
            stream, _, _ = LAYOUT.control_keys()
            entries = await client.xrange(stream)
            assert [orjson.loads(fields[b"f"])["op"] for _, fields in entries] == ["disconnect"]
            assert await client.get(LAYOUT.layout_key() or "") == b"64"
    await pubsub.aclose()
    await shard.aclose()


async def test_retry_is_deduplicated_and_an_older_leader_is_fenced_everywhere(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """A batch sent twice is published once; after a newer leader claimed, the older one
    is refused on every partition and for controls, and writes nothing."""
    cluster = redis_cluster()
    # one channel per partition: the fence copy of every partition is tried
    per_partition: dict[int, str] = {}
    number = 0
    while len(per_partition) < LAYOUT.partitions:
        per_partition.setdefault(LAYOUT.partition(f"c{number}"), f"c{number}")
        number += 1
    channels = list(per_partition.values())
    batch = [Event(c, b'{"n":1}', i + 1) for i, c in enumerate(channels)]
    batch.insert(10, Event(CONTROL_MARKER, DISCONNECT, 10_000))
    async with cluster_client(cluster) as client:
        old = Publisher(client, layout=LAYOUT)
        assert await old.claim_fence(1)
        first = await old.publish(1, batch)
        assert {r.status for r in first} == {"published"}
        again = await old.publish(1, batch)
        assert {r.status for r in again} == {"duplicate"}
        assert await Publisher(client, layout=LAYOUT).claim_fence(2)
        later = [Event(c, b'{"n":2}', 100 + i) for i, c in enumerate(channels)]
        later.append(Event(CONTROL_MARKER, DISCONNECT, 20_000))
        fenced = await old.publish(1, later)
        assert {r.status for r in fenced} == {"fenced"}
        assert not await Publisher(client, layout=LAYOUT).claim_fence(1)
        stream, _, _ = LAYOUT.control_keys()
        assert await client.xlen(stream) == 1
    found = await histories(cluster, channels)
    assert {c: h for c, h in found.items() if h != [(1, 1)]} == {}


class Writer:
    """Commits ``rate`` events/s over ``channels``, each channel's ``n`` counting 1, 2, 3..."""

    def __init__(self, pg: asyncpg.Connection, channels: list[str], rate: int) -> None:
        self.pg = pg
        self.channels = channels
        self.rate = rate
        self.sent: Counter[str] = Counter()

    async def run(self) -> None:
        tick = 0.02
        per_tick = max(1, int(self.rate * tick))
        turn = 0
        while True:
            names, ns = [], []
            for _ in range(per_tick):
                channel = self.channels[turn % len(self.channels)]
                turn += 1
                self.sent[channel] += 1
                names.append(channel)
                ns.append(self.sent[channel])
            await self.pg.execute(
                """SELECT pgcast.publish(c, jsonb_build_object('n', n))
                   FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS t(c, n, i) ORDER BY i""",
                names,
                ns,
            )
            await asyncio.sleep(tick)


async def test_sigkill_of_a_master_under_load_loses_nothing_silently(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """~500 events/s over 300 channels; a master is SIGKILLed, its replica takes over: every
    channel keeps its epoch with every event at offsets 1..n, or (only on the killed shard)
    starts a new epoch whose history is a gapless suffix; the other shards keep theirs."""
    cluster = redis_cluster()
    channels = [f"load:{number}" for number in range(300)]
    victim = cluster.masters()[0]
    async with listeners_on(cluster, database_url) as group, cluster_client(cluster) as client:
        leader = group.start()
        writer = Writer(pg, channels, rate=500)
        task = asyncio.create_task(writer.run())
        try:
            await wait_until(lambda: sum(writer.sent.values()) >= 1000, "1,000 events", 20.0)
            before = await epochs(client, channels)
            on_victim = {
                c for c in channels if owner(cluster, LAYOUT.channel_keys(c).history) is victim
            }
            await asyncio.to_thread(cluster.kill_master, victim)
            await asyncio.to_thread(cluster.wait_failover, victim.port)
            sent_at_failover = sum(writer.sent.values())
            await wait_until(
                lambda: sum(writer.sent.values()) >= sent_at_failover + 1000, "1,000 more", 20.0
            )
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await wait_until(lambda: drained(pg), "the outbox to drain after the failover", 30.0)
        assert leader.role() == "leader"
    async with cluster_client(cluster) as client:  # a fresh one: the old one met the kill
        after = await epochs(client, channels)
    found = await histories(cluster, channels)
    renewed = []
    for channel in channels:
        history, sent = found[channel], writer.sent[channel]
        offsets, ns = [o for o, _ in history], [n for _, n in history]
        assert offsets == list(range(1, len(history) + 1)), (channel, history)
        if after[channel] == before[channel]:
            assert ns == list(range(1, sent + 1)), (channel, "kept its epoch", history)
        else:
            renewed.append(channel)
            assert ns == list(range(ns[0], sent + 1)), (channel, "new epoch", history)
    # Only the killed master's shard may have gone back: the others keep their epochs.
    assert set(renewed) <= on_victim, sorted(set(renewed) - on_victim)


async def test_wait_asks_every_master_that_took_a_write(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """PGCAST_REDIS_MIN_REPLICAS on a cluster: WAIT on each master written; one replica
    each acknowledges, two cannot (ReplicasBehindError, the rows are kept)."""
    cluster = redis_cluster()
    batch = [Event(f"w:{n}", b'{"n":1}', n + 1) for n in range(200)]
    async with cluster_client(cluster) as client:
        one = Publisher(client, layout=LAYOUT, min_replicas=1, replica_timeout=2.0)
        assert await one.claim_fence(1)
        assert {r.status for r in await one.publish(1, batch)} == {"published"}
        two = Publisher(client, layout=LAYOUT, min_replicas=2, replica_timeout=0.1)
        with pytest.raises(ReplicasBehindError):
            await two.publish(1, [Event("w:x", b'{"n":1}', 1000)])
