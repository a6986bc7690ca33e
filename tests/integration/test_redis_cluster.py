"""The Redis Cluster test infrastructure itself, against six real redis-server processes.

Keys and shard channels spread over the three masters, sharded pub/sub through redis-py's
cluster clients and a plain connection, SIGKILL and CLUSTER FAILOVER of a master, and a
slot moved with its keys (tests/redis_cluster.py), so that a cluster test built on them
fails because of the code under test, not because of its scaffolding.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClientNode
from redis.asyncio.cluster import RedisCluster as AsyncClusterClient
from redis.cluster import ClusterNode as ClientNode
from redis.cluster import RedisCluster as ClusterClient
from redis.exceptions import MovedError

from tests.redis_cluster import ClusterNode, RedisCluster

# Failure detection is node-timeout (1 s); the replica then waits 0.5-1 s and is elected.
FAILOVER_BOUND_S = 6.0


@contextlib.contextmanager
def cluster_client(cluster: RedisCluster) -> Iterator[ClusterClient]:
    # redis-py 8.2 leaves the sync ClusterNode's __init__ unannotated.
    nodes = [ClientNode(host, port) for host, port in cluster.startup_nodes]  # type: ignore[no-untyped-call]
    client = ClusterClient(startup_nodes=nodes, decode_responses=True, socket_timeout=2.0)
    with client:
        yield client


@contextlib.asynccontextmanager
async def async_cluster_client(cluster: RedisCluster) -> AsyncIterator[AsyncClusterClient]:
    nodes = [AsyncClientNode(host, port) for host, port in cluster.startup_nodes]
    client = AsyncClusterClient(startup_nodes=nodes, decode_responses=True, socket_timeout=2.0)
    try:
        yield client
    finally:
        await client.aclose()


def name_on(cluster: RedisCluster, master: ClusterNode, prefix: str) -> str:
    """The first ``prefix:N`` whose slot ``master`` serves (a key, a tag or a shard channel)."""
    for number in range(10_000):
        name = f"{prefix}:{number}"
        if cluster.master_of_slot(cluster.key_slot(name)) is master:
            return name
    raise LookupError(f"no {prefix}:N served by port {master.port}")


def test_cluster_serves_keys_spread_over_every_master(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """Three masters with a replica each serve writes and reads, the keys on every master."""
    cluster = redis_cluster()
    masters = cluster.masters()
    assert len(masters) == 3
    assert sorted(len(cluster.replicas_of(master)) for master in masters) == [1, 1, 1]
    assert len(cluster.replicas()) == 3
    assert cluster.url == "redis+cluster://" + ",".join(
        f"{host}:{port}" for host, port in cluster.startup_nodes
    )
    keys = [f"key:{number}" for number in range(300)]
    with cluster_client(cluster) as client:
        for key in keys:
            client.set(key, key)
        assert [client.get(key) for key in keys] == keys

    expected = Counter(cluster.master_of_slot(cluster.key_slot(key)).port for key in keys)
    assert set(expected) == {master.port for master in masters}
    assert min(expected.values()) >= 50, expected
    for master in masters:
        with master.client() as direct:
            assert direct.dbsize() == expected[master.port]
            for key in ("key:1", "{user:7}:history", "{user:7}:offset"):
                assert direct.execute_command("CLUSTER", "KEYSLOT", key) == cluster.key_slot(key)


async def test_sharded_pubsub_reaches_subscribers_on_each_master(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """SPUBLISH reaches SSUBSCRIBErs through redis-py's asyncio ClusterPubSub and a plain
    connection to the owning node; a node that does not own the slot answers MOVED."""
    cluster = redis_cluster()
    masters = cluster.masters()
    channels = {master.port: name_on(cluster, master, "chan") for master in masters}
    async with async_cluster_client(cluster) as client:
        pubsub = client.pubsub()
        try:
            await pubsub.ssubscribe(*channels.values())
            for channel in channels.values():
                assert await client.spublish(channel, f"to {channel}") == 1
            got: set[tuple[str, str]] = set()
            async with asyncio.timeout(5):
                while len(got) < len(channels):
                    message = await pubsub.get_sharded_message(
                        ignore_subscribe_messages=True, timeout=0.5
                    )
                    if message is not None:
                        got.add((message["channel"], message["data"]))
            assert got == {(channel, f"to {channel}") for channel in channels.values()}
        finally:
            await pubsub.aclose()

        channel = channels[masters[0].port]
        owner = cluster.master_of_slot(cluster.key_slot(channel))
        plain = aioredis.Redis(host=owner.address[0], port=owner.port, decode_responses=True)
        async with plain, plain.pubsub() as direct:
            await direct.ssubscribe(channel)
            assert await client.spublish(channel, "direct") == 1
            async with asyncio.timeout(5):
                while (message := await direct.get_message(True, timeout=0.5)) is None:
                    pass
            assert (message["type"], message["channel"], message["data"]) == (
                "smessage",
                channel,
                "direct",
            )

    other = next(master for master in masters if master is not owner)
    with other.client() as wrong, pytest.raises(MovedError) as moved:
        wrong.spublish(channel, "lost")
    assert moved.value.node_addr == owner.address


def test_sigkill_of_a_master_promotes_its_replica_and_the_node_rejoins(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """A SIGKILLed master's replica serves its slots with its acknowledged writes within a
    bound; the killed node, restarted, rejoins as the new master's replica."""
    cluster = redis_cluster()
    victim = cluster.masters()[0]
    (replica,) = cluster.replicas_of(victim)
    tag = "{" + name_on(cluster, victim, "tag") + "}"
    with victim.client() as direct:
        for number in range(100):
            direct.set(f"{tag}:{number}", number)
        assert direct.wait(1, 2000) == 1  # the replica has every write before the kill

    started = time.monotonic()
    cluster.kill_master(victim)
    promoted = cluster.wait_failover(victim.port, timeout=FAILOVER_BOUND_S + 5)
    took = time.monotonic() - started
    assert promoted is replica
    assert took < FAILOVER_BOUND_S, f"failover took {took:.1f}s"
    print(f"SIGKILL -> replica promoted, cluster ok: {took:.2f}s")

    with cluster_client(cluster) as client:
        assert client.get(f"{tag}:99") == "99"
        client.set(f"{tag}:after", "1")

    cluster.restart(victim)
    assert victim.role() == "slave"
    assert cluster.replicas_of(promoted) == [victim]
    assert victim.info_replication()["master_port"] == str(promoted.port)
    assert len(cluster.masters()) == 3


def test_cluster_failover_switches_roles_without_losing_writes(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """CLUSTER FAILOVER on a replica makes it master with every write its master took."""
    cluster = redis_cluster()
    master = cluster.masters()[0]
    (replica,) = cluster.replicas_of(master)
    tag = "{" + name_on(cluster, master, "tag") + "}"
    with master.client() as direct:
        for number in range(200):
            direct.set(f"{tag}:{number}", number)  # no WAIT: the failover itself catches up

    assert cluster.failover(replica) is master
    assert (replica.role(), master.role()) == ("master", "slave")
    assert cluster.master_of_slot(cluster.key_slot(tag)) is replica
    with replica.client() as direct:
        assert direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", cluster.key_slot(tag)) == 200


def test_moved_slot_carries_its_keys_and_the_old_owner_answers_moved(
    redis_cluster: Callable[..., RedisCluster],
) -> None:
    """A slot moved to another master takes its keys along (in batches); the old owner
    answers MOVED to the new one, which redis-py's cluster client follows."""
    cluster = redis_cluster()
    tag = "{moving}"
    slot = cluster.key_slot(tag)
    source = cluster.master_of_slot(slot)
    target = next(master for master in cluster.masters() if master is not source)
    with cluster_client(cluster) as client:
        for number in range(250):
            client.set(f"{tag}:{number}", number)

        started = time.monotonic()
        assert cluster.move_slot(slot, target) == 250
        print(f"slot {slot} with 250 keys moved: {time.monotonic() - started:.3f}s")

        assert cluster.master_of_slot(slot) is target
        with target.client() as direct:
            assert direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
        with source.client() as direct:
            assert direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
            with pytest.raises(MovedError) as moved:
                direct.get(f"{tag}:0")
        assert (moved.value.slot_id, moved.value.node_addr) == (slot, target.address)
        assert client.get(f"{tag}:249") == "249"  # its slot map is stale: it follows MOVED
