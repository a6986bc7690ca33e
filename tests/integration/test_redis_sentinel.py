"""Redis Sentinel: listener and gateways follow the primary across SIGKILL failovers under
load (nothing lost silently; with PGCAST_REDIS_MIN_REPLICAS nothing lost and nobody told),
a frozen replica stalls or degrades as configured, and bad Redis settings exit 2 at start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from pgcast import redis_connect
from pgcast.redis_url import parse_redis_url
from tests.gateway_support import SECRET
from tests.integration.rollback_support import (
    CHANNEL,
    SINGLE,
    Stack,
    Watcher,
    caught_up,
    check,
    check_offsets,
    drained,
    stack,
    until,
    watching,
)
from tests.integration.test_gateway_failover import status
from tests.redis_topology import SentinelGroup
from tests.servers import RedisInstance, free_port

RATE = 200  # events per second, each its own transaction
ROUND = 10.0  # seconds of load per failover round


class Writer:
    """Publishes {"n": 1, 2, ...} to the channel at RATE per second until stopped."""

    def __init__(self, pg: asyncpg.Connection) -> None:
        self.pg = pg
        self.n = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            self.n += 1
            await self.pg.execute(
                "SELECT pgcast.publish('feed', jsonb_build_object('n', $1::int))", self.n
            )
            ahead = started + self.n / RATE - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing: RATE events per second


async def _round(
    group: SentinelGroup, writer: Writer, all_have: Callable[[int], bool], stalls: bool
) -> float:
    """One failover round under load; returns the kill -> delivery-everywhere time."""
    began = time.monotonic()
    await until(lambda: all_have(writer.n - 50), "events flow everywhere", 30)
    killed = group.kill_primary()
    at, mark = time.monotonic(), writer.n
    await asyncio.to_thread(group.wait_failover, killed.port)
    if stalls:  # the only replica is the new primary: WAIT needs it back
        await asyncio.to_thread(group.restart_as_replica, killed)
    await until(lambda: all_have(mark + 1), "delivery resumed", 30)
    recovery = time.monotonic() - at
    if not stalls:
        await asyncio.to_thread(group.restart_as_replica, killed)
    # The rounds: 10 s of load each, the kill inside.
    await asyncio.sleep(max(0.0, began + ROUND - time.monotonic()))
    return recovery


async def _stuck(watcher: Watcher, redis: aioredis.Redis, running: Stack) -> str:
    """Why a client did not reach the top: its state, Redis', and the services' logs."""
    meta = await redis.hgetall(SINGLE.channel_keys(CHANNEL).meta)
    logs = "\n".join(
        s.log()[-3000:]
        for s in (*running.gateways, *(one.service for one in running.listeners.started))
    )
    return (
        f"{watcher.sub} at {watcher.epoch}:{watcher.offset}, Redis {meta}, "
        f"{watcher.connects} connects, errors {watcher.errors[-3:]}, "
        f"last {watcher.log[-5:]}\n{logs}"
    )


async def _failovers(
    database_url: str,
    pg: asyncpg.Connection,
    group: SentinelGroup,
    rounds: int,
    **listener_env: str,
) -> tuple[list[Watcher], list[float]]:
    """``rounds`` times, 10 s each: 200 events/s, SIGKILL the primary, wait for the
    failover, restart the old primary as a replica; returns the clients and each round's
    time from the kill to the first event delivered to every client through the new primary
    (with WAIT on the one replica, the old primary's return as the new replica included)."""
    redis = redis_connect.client(parse_redis_url(group.url), timeout=2.0)
    stalls = "PGCAST_REDIS_MIN_REPLICAS" in listener_env
    recoveries: list[float] = []
    # History must cover the longest outage a client should cross without a gap: here a
    # failover plus, with WAIT on the one replica, its return (about 1,000 events at 200/s),
    # published at once when the replica is back.
    env = {"PGCAST_HISTORY_SIZE": "20000", **listener_env}
    async with (
        contextlib.aclosing(redis),
        stack(database_url, group.url, gateways=2, **env) as running,
        aiohttp.ClientSession() as session,
    ):
        # Six stay connected; two resume every 1.5 s on the other gateway, failovers or not.
        watchers = [
            Watcher(
                session,
                running.urls[i % 2 :] + running.urls[: i % 2],
                sub=f"w{i}",
                churn=1.5 if i >= 6 else None,
            )
            for i in range(8)
        ]
        writer = Writer(pg)

        def all_have(n: int) -> bool:
            return all(w.has(n) or w.offset >= n for w in watchers)

        async with watching(watchers):
            await until(lambda: all(w.notices for w in watchers), "all subscribed")
            writing = asyncio.create_task(writer.run())
            try:
                for _ in range(rounds):
                    recoveries.append(await _round(group, writer, all_have, stalls))
            finally:
                writer.stop.set()
                await writing
            await until(lambda: drained(pg), "the outbox drained", 30)
            for watcher in watchers:
                try:
                    await until(lambda w=watcher: caught_up(w, redis), f"{watcher.sub} at the top")
                except TimeoutError as stuck:
                    raise TimeoutError(await _stuck(watcher, redis, running)) from stuck
    for watcher in watchers:
        check(watcher, range(1, writer.n + 1))
    check_offsets(*watchers)
    return watchers, recoveries


async def test_sigkill_of_the_primary_under_load_loses_nothing_silently(
    database_url: str, pg: asyncpg.Connection, sentinel_group: Callable[..., SentinelGroup]
) -> None:
    """Replication is asynchronous: a failover may lose the newest writes. Every client
    still ends with every event once, in order, or was told (recovered:false)."""
    watchers, recoveries = await _failovers(database_url, pg, sentinel_group(), rounds=2)
    assert all(w.ns for w in watchers)
    print(f"failover, kill -> delivery through the new primary: {recoveries}")


async def test_with_min_replicas_five_failovers_lose_nothing_and_tell_nobody(
    database_url: str, pg: asyncpg.Connection, sentinel_group: Callable[..., SentinelGroup]
) -> None:
    """PGCAST_REDIS_MIN_REPLICAS=1: a row leaves the outbox only once the replica has its
    events, so the promoted replica lacks at most the batch in flight, which the leader
    publishes again at the same offsets: five SIGKILLs, every event to every client
    (connected, or resuming every 1.5 s), once, in order, and never a recovered:false."""
    group = sentinel_group()
    watchers, recoveries = await _failovers(
        database_url, pg, group, rounds=5, PGCAST_REDIS_MIN_REPLICAS="1"
    )
    for watcher in watchers:
        recovered = [notice[3] for notice in watcher.notices]
        assert recovered[0] is False  # the first subscribe
        assert all(recovered[1:]), watcher.notices  # every resume recovered, every notice
        assert watcher.ns == list(range(1, len(watcher.ns) + 1))
    assert sum(w.connects for w in watchers[6:]) > 20  # the resumers really resumed
    print(f"failover with WAIT, kill -> delivery: {recoveries}")


async def test_frozen_replica_stalls_the_leader_and_it_says_so(
    database_url: str, pg: asyncpg.Connection, sentinel_group: Callable[..., SentinelGroup]
) -> None:
    """SIGSTOP the only replica with PGCAST_REDIS_MIN_REPLICAS=1: the leader keeps the rows
    (policy stall), /healthz and the metrics say replicas_behind; SIGCONT: it goes on."""
    group = sentinel_group()
    async with stack(
        database_url,
        group.url,
        PGCAST_REDIS_MIN_REPLICAS="1",
        PGCAST_REDIS_REPLICA_TIMEOUT="0.2",
    ) as running:
        listener = running.listeners.started[0]
        await pg.execute("SELECT pgcast.publish('feed', '{\"n\": 1}')")
        await until(lambda: drained(pg), "published while the replica answers")
        replica = group.replica()
        replica.sigstop()
        try:
            await pg.execute("SELECT pgcast.publish('feed', '{\"n\": 2}')")

            def stalled() -> bool:
                return orjson.loads(listener.get("/healthz"))["status"] == "replicas_behind"

            await until(stalled, "/healthz says replicas_behind")
            assert listener.metric("pgcast_listener_redis_replicas_short") == 1
            assert listener.metric("pgcast_listener_errors_total", 'server="replicas"') >= 1
            assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 1  # kept
        finally:
            replica.sigcont()
        await until(lambda: drained(pg), "published once the replica is back")
        assert orjson.loads(listener.get("/healthz"))["status"] == "ok"
        assert listener.metric("pgcast_listener_redis_replicas_acked") == 1


async def test_frozen_replica_with_policy_degrade_goes_on_and_counts(
    database_url: str, pg: asyncpg.Connection, sentinel_group: Callable[..., SentinelGroup]
) -> None:
    """Policy degrade: the rows go although the replica did not acknowledge; counted."""
    group = sentinel_group()
    async with stack(
        database_url,
        group.url,
        PGCAST_REDIS_MIN_REPLICAS="1",
        PGCAST_REDIS_REPLICA_TIMEOUT="0.1",
        PGCAST_REDIS_REPLICA_POLICY="degrade",
    ) as running:
        listener = running.listeners.started[0]
        replica = group.replica()
        replica.sigstop()
        try:
            await pg.execute("SELECT pgcast.publish('feed', '{\"n\": 1}')")
            await until(lambda: drained(pg), "published without the replica")
            assert listener.metric("pgcast_listener_redis_unreplicated_batches_total") >= 1
        finally:
            replica.sigcont()


def _exit_of(kind: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    module = {"listener": "listener.cli", "gateway": "gateway.cli"}[kind]
    return subprocess.run(
        [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2, and the reason is one line (log lines before it are fine, a traceback not)."""
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    reasons = [line for line in lines if "configuration error: " in line]
    assert reasons == lines[-1:], lines
    for word in words:
        assert word in reasons[0], reasons[0]
    assert len(reasons[0]) < 400, reasons[0]


@pytest.mark.parametrize("kind", ["listener", "gateway"])
def test_bad_redis_settings_exit_2_with_one_line(
    kind: str,
    database_url: str,
    sentinel_group: Callable[..., SentinelGroup],
    private_redis: Callable[..., RedisInstance],
) -> None:
    """A malformed Sentinel URL, Sentinels that do not answer, a master no Sentinel knows,
    a wrong password: one line naming the problem, exit 2."""
    group = sentinel_group()
    locked = private_redis("--requirepass", "right-password")
    base = {
        "DATABASE_URL": database_url,
        "PGCAST_JWT_SECRET": SECRET,
        "PGCAST_PORT": str(free_port()),
        "PGCAST_LISTENER_PORT": str(free_port()),
        "PGCAST_STARTUP_TIMEOUT": "1",
        "PGCAST_LOG_FORMAT": "text",
    }
    nowhere = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/pgcast"
    unknown = group.url.replace("/pgcast/", "/no-such-master/")
    cases = [
        ("redis+sentinel://127.0.0.1:26379", ("REDIS_URL", "master")),
        ("redis+sentinel://127.0.0.1:99999/pgcast", ("REDIS_URL", "port")),
        (nowhere, ("cannot reach", "Sentinel")),
        (unknown, ("no-such-master",)),
        (f"redis://:wrong@127.0.0.1:{locked.port}/0", ("refused",)),
    ]
    for url, words in cases:
        started = time.monotonic()
        _one_line_exit_2(_exit_of(kind, {**base, "REDIS_URL": url}), *words)
        assert time.monotonic() - started < 20, url


async def test_a_sentinel_client_follows_the_primary(
    sentinel_group: Callable[..., SentinelGroup],
) -> None:
    """The kernel's client of a Sentinel URL writes to whichever node is primary now."""
    group = sentinel_group()
    client: aioredis.Redis = redis_connect.client(parse_redis_url(group.url), timeout=1.0)
    try:
        await client.set("k", "1")
        killed = group.kill_primary()
        await asyncio.to_thread(group.wait_failover, killed.port)

        async def written() -> bool:
            try:
                return bool(await client.set("k", "2"))
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                return False

        await until(written, "a write through the new primary")
        assert group.primary().port != killed.port
    finally:
        await client.aclose()


async def test_without_sentinels_or_primary_the_gateway_retries_and_is_honestly_unready(
    database_url: str, sentinel_group: Callable[..., SentinelGroup]
) -> None:
    """While running: with every Sentinel gone the gateway's link to the primary still works
    (ready, truthfully); once the primary dies too, /readyz turns 503 within the heartbeat
    bound and the gateway keeps retrying with backoff instead of exiting."""
    group = sentinel_group()
    async with stack(database_url, group.url) as running:
        readyz = f"http://127.0.0.1:{running.ports[0]}/readyz"
        gateway = running.gateways[0]
        primary = group.primary()
        # The heartbeat's pooled connection is open after a first round (a new connection
        # needs a Sentinel to name the primary; an open one does not).
        await asyncio.sleep(1.0)
        await asyncio.to_thread(group.kill_sentinels)
        await asyncio.sleep(2.0)  # more than the heartbeat timeout (1.5 s)
        assert status(readyz) == 200, gateway.log()[-3000:]
        primary.kill9()
        await until(lambda: status(readyz) == 503, "/readyz red", 10)
        await until(lambda: gateway.log().count("retry in") >= 3, "retries with backoff", 15)
        assert gateway.proc is not None
        assert gateway.proc.poll() is None  # still running, still trying
