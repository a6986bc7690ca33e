"""The whole pipeline on a real Redis Cluster (3 masters, a replica each, on loopback):
Postgres (pgcast.publish) -> the real pgcast-listener -> the cluster -> two real
pgcast-gateway processes -> WebSocket clients, each subscribed to many channels.

- 1,000 channels spread over the three masters: every event exactly once, in order.
- CLUSTER FAILOVER, then SIGKILL of a master, under ~500 events/s: nothing lost silently
  (per channel: contiguous offsets in one epoch, or a ``subscribed`` recovered:false with
  a new position), and delivery resumes within a bound (measured and printed).
- A partition's slot moved to another master under load: zero loss (resumes across the
  move included), the gateways subscribed on the new owner (PUBSUB SHARDNUMSUB there).
- A node added to the cluster and a partition's slot moved onto it: used by the listener
  and the gateways without a restart of either.
- A master emptied (redis-cli --cluster rebalance, weight 0), forgotten and stopped under
  load: zero loss, its channels subscribed on their new owners, no gateway link to it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import asyncpg
import pytest

from tests.integration.cluster_nodes_support import (
    gateway_links,
    history_ns,
    in_partition,
    live_slot,
    owners,
    shard_subscribers,
)
from tests.integration.cluster_support import (
    LAYOUT,
    RESUME_BOUND,
    Writer,
    check_channel,
    check_exact,
    delays,
    drained,
    readers_on,
    stack_on,
    wait_caught_up,
    writing,
)
from tests.redis_cluster import ClusterNode, RedisCluster
from tests.waiting import eventually

pytestmark = [pytest.mark.slow]


async def test_1000_channels_over_three_masters_every_event_once_in_order(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """1,000 channels whose partitions spread over all three masters; 2 gateways, 4
    connections on each with 250 channels apiece (every channel on both gateways); 3
    events per channel from SQL: every client gets each channel's 1, 2, 3 exactly once,
    in order, at offsets 1, 2, 3."""
    cluster = redis_cluster()
    channels = [f"wide:{number}" for number in range(1000)]
    spread = Counter(owners(cluster, channels).values())
    assert len(spread) == 3, spread
    assert min(spread.values()) >= 250, spread  # 64 evenly spaced partitions
    async with (
        stack_on(cluster, database_url) as stack,
        readers_on(stack.urls, channels, per_gateway=4) as readers,
    ):
        started = time.monotonic()
        await pg.execute(
            """SELECT pgcast.publish('wide:' || c, jsonb_build_object('n', n))
               FROM generate_series(1, 3) n, generate_series(0, 999) c ORDER BY n, c"""
        )
        took = await wait_caught_up(readers, Counter(dict.fromkeys(channels, 3)), 30.0)
        for reader in readers:
            for channel in reader.channels:
                check_exact(reader, channel, 3)
        assert sum(len(r.channels) for r in readers) == 2000
        print(
            f"\n1,000 channels on masters {dict(spread)}: 3,000 events, 6,000 deliveries to"
            f" 8 connections on 2 gateways in {took:.2f}s"
            f" (commit -> last delivery {time.monotonic() - started:.2f}s)"
        )


async def test_failover_and_sigkill_of_a_master_under_load_lose_nothing_silently(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """~500 events/s over 120 channels, each followed on both gateways. CLUSTER FAILOVER of
    one shard, then SIGKILL of another shard's master: every client, on every channel,
    sees contiguous offsets in one epoch or a ``subscribed`` recovered:false where it
    lost continuity, never a silent gap; the gateways subscribe on the promoted replicas;
    every event committed during either switch reaches every client within RESUME_BOUND
    seconds of its commit (measured and printed). Two more clients leave their gateway
    every second and resume 40 channels on the other one, throughout."""
    cluster = redis_cluster()
    channels = [f"fo:{number}" for number in range(120)]
    async with (
        stack_on(cluster, database_url) as stack,
        readers_on(stack.urls, channels, per_gateway=2) as readers,
        readers_on(stack.urls, channels[:40], 1, churn=1.0, prefix="churn") as churners,
    ):
        writer = Writer(pg, channels, rate=500)
        async with writing(writer):
            await eventually(lambda: writer.total() >= 1500, 20.0, "1,500 events written")
            # 1. CLUSTER FAILOVER: a replica takes over its master's slots, coordinated.
            master = cluster.masters()[0]
            replica = cluster.replicas_of(master)[0]
            shard = [c for c, port in owners(cluster, channels).items() if port == master.port]
            start = time.monotonic()
            await asyncio.to_thread(cluster.failover, replica)
            switched, total = time.monotonic(), writer.total()
            await eventually(lambda: writer.total() >= total + 1000, 20.0, "1,000 more events")
            # 2. SIGKILL of another shard's master; its replica is promoted.
            victim = next(m for m in cluster.masters() if m.port not in (master.port, replica.port))
            shard2 = [c for c, port in owners(cluster, channels).items() if port == victim.port]
            start2 = time.monotonic()
            await asyncio.to_thread(cluster.kill_master, victim)
            promoted_node = await asyncio.to_thread(cluster.wait_failover, victim.port)
            promoted, total = time.monotonic(), writer.total()
            await eventually(lambda: writer.total() >= total + 1000, 20.0, "1,000 more events")
        rate = writer.achieved()
        await eventually(lambda: drained(pg), 30.0, "the outbox to drain")
        await wait_caught_up(readers + churners, writer.sent, 30.0)
        notices = Counter[str]()
        for reader in readers + churners:
            for channel in reader.channels:
                if check_channel(reader, channel, writer.sent[channel]):
                    disturbed = "kill" if channel in shard2 else "failover"
                    notices[disturbed if channel in shard + shard2 else "other"] += 1
        # A coordinated failover loses no acknowledged write; the third shard is untouched.
        assert notices["failover"] == notices["other"] == 0, notices
        assert set((await shard_subscribers(replica, shard)).values()) == {2}
        assert set((await shard_subscribers(promoted_node, shard2)).values()) == {2}
        before = delays(readers, writer, channels, start - 2.0, start)
        during = delays(readers, writer, shard, start, switched + 0.5)
        during2 = delays(readers, writer, shard2, start2, promoted + 0.5)
        print(
            f"\n{writer.total()} events (~{rate:.0f}/s) over {len(channels)} channels,"
            f" 4 clients on 2 gateways; commit -> delivery before: {before}"
            f"\n  CLUSTER FAILOVER ({len(shard)} channels): switched in {switched - start:.2f}s;"
            f" events committed meanwhile: {during}"
            f"\n  SIGKILL ({len(shard2)} channels): replica promoted in {promoted - start2:.2f}s;"
            f" events committed meanwhile: {during2}"
            f"\n  (client, channel) pairs told recovered:false mid-stream: {dict(notices)};"
            f" 2 more clients resumed 40 channels on the other gateway every second"
            f" ({sum(c.connects for c in churners)} connections, refusals"
            f" {Counter(e.get('code') for r in readers + churners for e in r.errors)})"
        )
        assert during.worst < RESUME_BOUND, during
        assert during.missing == 0, during
        assert during2.worst < RESUME_BOUND, during2


async def test_a_slot_moved_under_load_zero_loss_resubscribed_on_the_new_owner(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """~500 events/s over 100 channels, 20 of them in one partition; that partition's slot
    moves (SETSLOT + MIGRATE) to another master meanwhile: every client gets every event
    of every channel once, in order, in one epoch (so do two clients that resume the moved
    channels on the other gateway every 0.5 s), and the gateways' subscriptions of the
    moved channels live on the new owner (none left on the old)."""
    cluster = redis_cluster()
    partition = LAYOUT.partition("mv:0")
    moved = in_partition("mv", partition, 20)
    others = [f"mv-other:{n}" for n in range(80)]
    channels = moved + others
    slot = live_slot(moved[0])
    source = cluster.master_of_slot(slot)
    target = next(m for m in cluster.masters() if m.port != source.port)
    async with (
        stack_on(cluster, database_url) as stack,
        readers_on(stack.urls, channels, per_gateway=2) as readers,
        readers_on(stack.urls, moved, 1, churn=0.5, prefix="churn") as churners,
    ):
        assert set((await shard_subscribers(source, moved)).values()) == {2}
        writer = Writer(pg, channels, rate=500)
        async with writing(writer):
            await eventually(lambda: writer.total() >= 1000, 20.0, "1,000 events written")
            start = time.monotonic()
            keys = await asyncio.to_thread(cluster.move_slot, slot, target)
            done, total = time.monotonic(), writer.total()
            await eventually(lambda: writer.total() >= total + 1000, 20.0, "1,000 more events")
        await eventually(lambda: drained(pg), 30.0, "the outbox to drain")
        await wait_caught_up(readers + churners, writer.sent, 30.0)
        for reader in readers + churners:
            for channel in reader.channels:
                check_exact(reader, channel, writer.sent[channel])
        on_target = await shard_subscribers(target, moved)
        on_source = await shard_subscribers(source, moved)
        assert set(on_target.values()) == {2}, on_target  # one link per gateway
        assert set(on_source.values()) == {0}, on_source
        before = delays(readers, writer, channels, start - 2.0, start)
        during = delays(readers, writer, moved, start, done + 0.5)
        print(
            f"\nslot {slot} ({len(moved)} channels, {keys} keys) moved {source.port} ->"
            f" {target.port} in {done - start:.2f}s under ~{writer.achieved():.0f} events/s;"
            f" commit -> delivery before: {before}; moved channels' events committed"
            f" meanwhile: {during}; {writer.total()} events, zero loss, also for 2 clients"
            f" that resumed the moved channels on the other gateway every 0.5 s"
            f" ({sum(c.connects for c in churners)} connections)"
        )
        assert during.worst < RESUME_BOUND, during


async def test_a_node_added_and_given_a_partition_is_used_without_restarts(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """Under ~300 events/s, a fourth master joins the running cluster and a partition's
    slot (20 subscribed channels) moves onto it: the listener publishes there (the new
    node's history of those channels grows to the last event), the gateways subscribe
    there, and every client gets every event once, in order, with no process restarted."""
    cluster = redis_cluster()
    partition = LAYOUT.partition("add:0")
    moved = in_partition("add", partition, 20)
    channels = moved + [f"add-other:{n}" for n in range(40)]
    slot = live_slot(moved[0])
    async with (
        stack_on(cluster, database_url) as stack,
        readers_on(stack.urls, channels, per_gateway=1) as readers,
    ):
        pids = [s.pid for s in stack.gateways] + [
            listener.service.pid for listener in stack.listeners.started
        ]
        writer = Writer(pg, channels, rate=300)
        async with writing(writer):
            await eventually(lambda: writer.total() >= 600, 20.0, "600 events written")
            joined = time.monotonic()
            node = await asyncio.to_thread(cluster.add_master)
            start, sent = time.monotonic(), Counter(writer.sent)
            await asyncio.to_thread(cluster.move_slot, slot, node)
            done, total = time.monotonic(), writer.total()
            await eventually(lambda: writer.total() >= total + 600, 20.0, "600 more events")
        await eventually(lambda: drained(pg), 30.0, "the outbox to drain")
        await wait_caught_up(readers, writer.sent, 30.0)
        for reader in readers:
            for channel in reader.channels:
                check_exact(reader, channel, writer.sent[channel])
        assert cluster.master_of_slot(slot) is node
        for channel in moved:
            # On the new node itself: the whole history, the events after the move included.
            assert await history_ns(node, channel) == list(range(1, writer.sent[channel] + 1))
            assert writer.sent[channel] > sent[channel]
        assert set((await shard_subscribers(node, moved)).values()) == {2}
        assert all(s.proc is not None and s.proc.poll() is None for s in stack.gateways)
        assert pids == [s.pid for s in stack.gateways] + [
            listener.service.pid for listener in stack.listeners.started
        ]
        during = delays(readers, writer, moved, start, done + 0.5)
        after = delays(readers, writer, moved, done + 0.5, time.monotonic())
        print(
            f"\nnode {node.port} joined in {start - joined:.2f}s; slot {slot} ({len(moved)}"
            f" channels) moved onto it in {done - start:.2f}s under ~{writer.achieved():.0f}"
            f" events/s; events committed during the move: {during}; after: {after};"
            f" {writer.total()} events, zero loss, no restart"
        )
        assert during.worst < RESUME_BOUND, during


async def test_a_master_emptied_and_removed_loses_no_event_and_is_no_longer_used(
    redis_cluster: Callable[..., RedisCluster], database_url: str, pg: asyncpg.Connection
) -> None:
    """Under ~300 events/s over 120 channels (about 40 on the master to remove), every slot
    of one master moves to the other two (redis-cli --cluster rebalance, weight 0), then the
    node is forgotten by every other node (CLUSTER FORGET) and stopped by PID: every client
    gets every event of every channel once, in order, in one epoch; the gateways drop their
    pub/sub links to the node once it serves nothing (CLIENT LIST there, before it stops),
    subscribe its channels on their new owners, and log nothing about it after it is gone."""
    cluster = redis_cluster()
    channels = [f"rm:{number}" for number in range(120)]
    removed = cluster.masters()[0]
    shard = [c for c, port in owners(cluster, channels).items() if port == removed.port]
    assert len(shard) >= 20, len(shard)
    async with (
        stack_on(cluster, database_url) as stack,
        readers_on(stack.urls, channels, per_gateway=2) as readers,
    ):
        assert set((await shard_subscribers(removed, shard)).values()) == {2}
        assert len(await gateway_links(removed)) == 2  # one link per gateway
        writer = Writer(pg, channels, rate=300)
        async with writing(writer):
            await eventually(lambda: writer.total() >= 600, 20.0, "600 events written")
            start = time.monotonic()
            await asyncio.to_thread(cluster.empty_master, removed)
            emptied = time.monotonic()
            unused = await eventually(
                lambda: _no_links(removed), 15.0, "the gateways to leave the emptied node"
            )
            await asyncio.to_thread(cluster.remove_node, removed)
            gone = time.monotonic()
            logs_at = [len(service.log()) for service in stack.gateways]
            total = writer.total()
            # Past a periodic read of the slot map (hub.TOPOLOGY_EVERY = 5 s): the gateways
            # must not try the removed node again.
            await asyncio.sleep(5.5)
            assert writer.total() >= total + 300
        await eventually(lambda: drained(pg), 30.0, "the outbox to drain")
        await wait_caught_up(readers, writer.sent, 30.0)
        for reader in readers:
            for channel in reader.channels:
                check_exact(reader, channel, writer.sent[channel])
        new_owners = owners(cluster, shard)
        assert removed.port not in new_owners.values()
        for port in set(new_owners.values()):
            mine = [c for c in shard if new_owners[c] == port]
            assert set((await shard_subscribers(cluster.node_at(port), mine)).values()) == {2}
        mentions = [
            line
            for service, at in zip(stack.gateways, logs_at, strict=True)
            for line in service.log()[at:].splitlines()
            if f":{removed.port}" in line
        ]
        assert not mentions, mentions[:10]
        assert all(s.proc is not None and s.proc.poll() is None for s in stack.gateways)
        during = delays(readers, writer, shard, start, emptied + 0.5)
        after = delays(readers, writer, channels, gone, time.monotonic())
        print(
            f"\nmaster {removed.port} ({len(shard)} of {len(channels)} channels) emptied by"
            f" rebalance in {emptied - start:.2f}s under ~{writer.achieved():.0f} events/s;"
            f" the gateways' links to it gone {unused:.2f}s later; forgotten and stopped;"
            f" its channels' events committed during the move: {during}; after the removal:"
            f" {after}; {writer.total()} events, zero loss; nothing logged about the node"
            f" in the {time.monotonic() - gone:.0f}s after it was gone"
        )
        assert during.worst < RESUME_BOUND, during


async def _no_links(node: ClusterNode) -> bool:
    return not await gateway_links(node)
