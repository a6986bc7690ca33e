"""Leader election under failure: one leader, takeover, SIGKILL storms, fencing."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from pgcast.cancellation import raise_if_cancelled
from pgcast.keys import Layout, decode_live
from tests.integration.listener_support import (
    LEADER_LOCK_SQL,
    Listener,
    Listeners,
    capture_env,
    capturing,
    history,
    leader_backend_pid,
    leader_of,
    wait_until,
)
from tests.tcpproxy import TcpProxy

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

CHANNELS = [f"chaos:{i}" for i in range(5)]
HOLD = 3.0  # seconds the frozen leader holds its batch (PGCAST_DEBUG_HOLD_BATCH); the
# test must see the hold and SIGSTOP before it ends, even on a loaded machine


@pytest.fixture
def listeners(database_url: str, redis_url: str) -> Iterator[Listeners]:
    made = Listeners(database_url, redis_url)
    yield made
    made.stop_all()


async def test_two_listeners_exactly_one_leader(
    listeners: Listeners, pg: asyncpg.Connection
) -> None:
    """Two listeners: one reports leader, one standby, and one backend holds the lock."""
    group = [listeners.start(), listeners.start()]
    leader = await leader_of(group)
    standby = next(item for item in group if item is not leader)
    await asyncio.sleep(0.5)  # several standby retry rounds: the roles must not flap
    assert (leader.role(), standby.role()) == ("leader", "standby")
    # objsubid 1: a bigint key (the leader lock); the wake lock's two-int key has objsubid 2.
    leader_locks = await pg.fetch(LEADER_LOCK_SQL.replace("granted", "granted AND objsubid = 1"))
    assert len(leader_locks) == 1


async def test_terminated_leader_backend_standby_takes_over(
    listeners: Listeners, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """pg_terminate_backend on the leader's connection: the standby leads with a newer epoch."""
    group = [listeners.start(), listeners.start()]
    old = await leader_of(group)
    old_epoch = orjson.loads(old.get("/healthz"))["epoch"]
    await pg.execute("SELECT pg_terminate_backend($1)", await leader_backend_pid(pg))
    await wait_until(lambda: old.role() == "standby", "the old leader steps down")
    new = await leader_of(group)
    assert orjson.loads(new.get("/healthz"))["epoch"] > old_epoch
    await pg.execute("SELECT pgcast.publish('after', '1')")

    async def delivered() -> bool:
        return await redis_client.xlen(SINGLE.channel_keys("after").history) == 1

    await wait_until(delivered, "an event published by the new leader")


async def _writer(dsn: str, first: int, count: int, seed: int, tail: asyncio.Event) -> None:
    """Publish events ``first .. first+count-1`` in small random transactions.

    The last 20 wait for ``tail``: on a slow machine the kills must still find writers busy.
    """
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    try:
        n = first
        while n < first + count:
            if n + 20 >= first + count:
                await tail.wait()
            ks = list(range(n, min(n + rng.randint(1, 20), first + count)))
            await conn.execute(
                "SELECT pgcast.publish('chaos:' || (k % 5), jsonb_build_object('k', k))"
                " FROM unnest($1::int[]) AS k",
                ks,
            )
            n += len(ks)
            await asyncio.sleep(rng.uniform(0.02, 0.06))
    finally:
        await conn.close()


async def _kill_leaders(
    listeners: Listeners,
    group: list[Listener],
    redis: aioredis.Redis,
    pg: asyncpg.Connection,
    kills: int,
    writing: list[asyncio.Task[None]],
) -> int:
    """SIGKILL the current leader ``kills`` times, each after it published something.

    Each round publishes a probe of its own (on a channel the checks leave out), so the new
    leader's progress shows whatever the writers are doing. Returns how many of the kills
    happened while writers were still publishing.
    """
    probe = SINGLE.channel_keys("chaos:probe").history
    done = during_writes = 0
    while done < kills:
        leader = await leader_of(group)
        await pg.execute("SELECT pgcast.publish('chaos:probe', $1::jsonb)", str(done))

        async def progressed(round_: int = done) -> bool:
            return await redis.xlen(probe) > round_

        await wait_until(progressed, "the new leader publishes", deadline_s=20)
        await asyncio.sleep(random.uniform(0.05, 0.3))
        during_writes += not all(task.done() for task in writing)
        leader.service.kill9()
        group.remove(leader)
        group.append(listeners.start(wait=False))
        done += 1
    return during_writes


async def _collect_live(pubsub: aioredis.client.PubSub, into: list[bytes]) -> None:
    while True:
        raise_if_cancelled()  # redis-py may swallow the cancel (pgcast.cancellation)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            into.append(message["data"])


@pytest.mark.slow
@pytest.mark.parametrize("capture", ["outbox", "wal"])
async def test_sigkill_leader_repeatedly_every_event_exactly_once(
    listeners: Listeners,
    database_url: str,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    capture: str,
) -> None:
    """5,000 events from 4 writers while the leader is SIGKILLed 6 times: each lands once.
    In wal mode each standby that takes over resumes the slot where the killed leader's
    confirmations left it, and what it decodes again is de-duplicated."""
    total, writers = 5000, 4
    env = {"PGCAST_BATCH_SIZE": "50", "PGCAST_HISTORY_SIZE": "5000"}
    listeners.env.update(capture_env(capture, database_url))
    group = [listeners.start(**env), listeners.start(**env)]
    await capturing(pg, listeners.env)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(*(SINGLE.channel_keys(c).live for c in CHANNELS))
    live: list[bytes] = []
    async with asyncio.TaskGroup() as tg:
        collector = tg.create_task(_collect_live(pubsub, live))
        share = total // writers
        kills_done = asyncio.Event()
        writing = [
            tg.create_task(_writer(database_url, w * share, share, w, kills_done))
            for w in range(writers)
        ]
        try:
            kills_during_writes = await _kill_leaders(
                listeners, group, redis_client, pg, kills=6, writing=writing
            )
        finally:
            kills_done.set()
        await asyncio.gather(*writing)

        async def all_published() -> bool:
            return (
                sum([await redis_client.xlen(SINGLE.channel_keys(c).history) for c in CHANNELS])
                >= total
            )

        await wait_until(all_published, f"{total} events in Redis", deadline_s=60)
        await wait_until(lambda: len(live) >= total, f"{total} live messages", deadline_s=10)
        await asyncio.sleep(0.5)  # a late duplicate would show up here
        collector.cancel()
    await pubsub.aclose()
    assert kills_during_writes == 6
    seen: list[int] = []
    for channel in CHANNELS:
        entries = await history(redis_client, channel)
        assert [offset for offset, _ in entries] == list(range(1, len(entries) + 1))
        seen += [data["k"] for _, data in entries]  # type: ignore[index]
    assert sorted(seen) == list(range(total))
    live_keys = sorted(orjson.loads(decode_live(p).frame)["data"]["k"] for p in live)
    assert live_keys == list(range(total))


async def test_frozen_leader_is_fenced_after_takeover(
    listeners: Listeners, database_url: str, pg: asyncpg.Connection, redis_client: aioredis.Redis
) -> None:
    """SIGSTOP a leader holding a batch, a standby takes over, SIGCONT: its publish is refused."""
    host_port = database_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    with TcpProxy(host, int(port)) as proxy:
        # Slow liveness: the resumed leader must reach its publish before noticing anything.
        frozen = listeners.start(
            DATABASE_URL=proxy.url_for(database_url),
            PGCAST_DEBUG_HOLD_BATCH=str(HOLD),
            PGCAST_LIVENESS_INTERVAL="5",
            PGCAST_LIVENESS_TIMEOUT="10",
        )
        await wait_until(lambda: frozen.role() == "leader", "the first listener leads")
        standby = listeners.start()
        await pg.execute("""SELECT pgcast.publish('fenced', '{"n": 1}')""")
        await wait_until(lambda: "holding a batch" in frozen.service.log(), "a batch in hand")
        frozen.service.signal(signal.SIGSTOP)
        held_until = time.monotonic() + HOLD
        # A partition hides the server's side from the frozen leader: it will not notice.
        proxy.blackhole()
        await pg.execute("SELECT pg_terminate_backend($1)", await leader_backend_pid(pg))
        await wait_until(lambda: standby.role() == "leader", "the standby takes over")

        async def published_once() -> bool:
            return await history(redis_client, "fenced") == [(1, {"n": 1})]

        await wait_until(published_once, "the new leader publishes the event")
        # Resume only once the hold is over, so the publish is the first thing it does.
        await wait_until(lambda: time.monotonic() > held_until, "the hold time to pass")
        frozen.service.signal(signal.SIGCONT)
        await wait_until(
            lambda: frozen.metric("pgcast_listener_events_total", 'result="fenced"') >= 1,
            "the resumed leader's publish is refused as fenced",
        )
        assert "publish refused: fenced" in frozen.service.log()
        await pg.execute("""SELECT pgcast.publish('fenced', '{"n": 2}')""")

        async def second_delivered() -> bool:
            return len(await history(redis_client, "fenced")) == 2

        await wait_until(second_delivered, "the new leader keeps publishing")
        assert await history(redis_client, "fenced") == [(1, {"n": 1}), (2, {"n": 2})]
        await wait_until(lambda: frozen.role() == "standby", "the fenced leader steps down")
