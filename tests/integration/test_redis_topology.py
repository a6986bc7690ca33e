"""The Redis failure-test infrastructure itself, against real redis-server processes.

Snapshots and restarts, replication on and off, freezing, and Sentinel failovers
(tests/redis_node.py, tests/redis_topology.py), so that a failure test built on
them fails because of the code under test, not because of its scaffolding.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from redis.sentinel import Sentinel

from tests.redis_topology import RedisNode, SentinelGroup, wait_until


@contextlib.contextmanager
def discovered_master(url: str) -> Iterator[redis.Redis]:
    """A client for the master that the Sentinels named in a redis+sentinel:// URL report."""
    parts = urlsplit(url)
    hosts = [item.rsplit(":", 1) for item in parts.netloc.split(",")]
    sentinel = Sentinel([(host, int(port)) for host, port in hosts], socket_timeout=1.0)
    try:
        master = sentinel.master_for(
            parts.path.split("/")[1], socket_timeout=1.0, decode_responses=True
        )
        with master:
            yield master
    finally:
        sentinel.close()


def test_persistent_node_goes_back_to_its_last_snapshot(
    redis_node: Callable[..., RedisNode],
) -> None:
    """A node with persistence killed after a write comes back with the last SAVEd value."""
    node = redis_node(persistence=True)
    with node.client() as client:
        client.set("k", "1")
        node.save()
        client.set("k", "2")
    node.kill9()
    node.restart()
    with node.client() as client:
        assert client.get("k") == "1"


def test_replica_syncs_then_stops_following(redis_node: Callable[..., RedisNode]) -> None:
    """A synced replica has the primary's data, and none of its writes after REPLICAOF NO ONE."""
    primary = redis_node()
    with primary.client() as client:
        client.set("before", "1")
    replica = redis_node(False, primary.address)
    replica.wait_synced()
    assert replica.role() == "slave"
    with replica.client() as client:
        assert client.get("before") == "1"

    replica.replicaof_no_one()
    assert replica.role() == "master"
    with primary.client() as client:
        # Once the primary has no replica left, no later write can reach the old one.
        wait_until(
            lambda: client.info("replication")["connected_slaves"] == 0,
            5,
            "the primary to drop its replica",
        )
        client.set("after", "1")
    with replica.client() as client:
        assert client.get("before") == "1"
        assert client.get("after") is None


def test_node_without_persistence_restarts_empty(redis_node: Callable[..., RedisNode]) -> None:
    """A former replica without persistence restarts empty, not from the RDB its full sync left."""
    primary = redis_node()
    with primary.client() as client:
        client.set("k", "1")
    replica = redis_node(False, primary.address)
    replica.wait_synced()
    replica.replicaof_no_one()
    replica.restart()
    assert replica.role() == "master"
    with replica.client() as client:
        assert client.dbsize() == 0


def test_frozen_replica_answers_nothing_then_catches_up(
    redis_node: Callable[..., RedisNode],
) -> None:
    """A SIGSTOPped replica times out on PING, and after SIGCONT syncs what it missed."""
    primary = redis_node()
    replica = redis_node(False, primary.address)
    replica.wait_synced()
    replica.sigstop()
    try:
        with replica.client(timeout=0.3) as client, pytest.raises(redis.RedisError):
            client.ping()
        with primary.client() as client:
            client.set("k", "written-while-frozen")
    finally:
        replica.sigcont()
    replica.wait_synced()
    with replica.client() as client:
        assert client.get("k") == "written-while-frozen"


def test_sentinel_group_fails_over_and_back(sentinel_group: Callable[..., SentinelGroup]) -> None:
    """Twice: a killed primary is replaced within 15 s and rejoins as a synced replica."""
    group = sentinel_group()
    for round_no in range(2):
        with discovered_master(group.url) as master:
            assert master.info("server")["tcp_port"] == group.primary().port
            master.set("round", round_no)
            # Replication is asynchronous: make sure the write is on the replica before the kill.
            assert master.wait(1, 2000) == 1
        killed_at = time.monotonic()
        old = group.kill_primary()
        new = group.wait_failover(old.port, timeout=15)
        assert time.monotonic() - killed_at < 15
        assert new is not old
        assert group.primary() is new
        with new.client() as client:
            assert client.get("round") == str(round_no)
            client.set("after", round_no)
        group.restart_as_replica(old)
        assert old.role() == "slave"
        assert group.replica() is old
        with old.client() as client:
            assert client.get("after") == str(round_no)
