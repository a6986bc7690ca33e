"""PGCAST_CAPTURE=wal, the slot's life: confirmed as Redis has the events; kept across a
spell of outbox capture or handed back to it; invalidated by Postgres (replaced, every
channel told); Postgres restarted under load; what retrying cannot fix exits 2 with one
line. What the capture delivers: test_listener_wal.py."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from pgcast.keys import Layout, encode_reset
from tests.gateway_support import gateway_env
from tests.integration.listener_support import (
    Listeners,
    capturing,
    history,
    history_length,
    wait_until,
    wal_env,
    wal_listeners,
)
from tests.integration.rollback_support import Watcher
from tests.integration.test_listener_config import assert_one_line_error, run_listener
from tests.processes import Service
from tests.servers import PgInstance, free_port

SINGLE = Layout()
__all__ = ["wal_env", "wal_listeners"]  # fixtures, imported


async def test_slot_lag_is_reported_and_the_slot_is_confirmed_as_redis_has_the_events(
    wal_listeners: Listeners,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    listener = wal_listeners.start()
    await capturing(pg, wal_env)
    slot = wal_env["PGCAST_WAL_SLOT"]
    await pg.execute("SELECT pgcast.publish('lag', to_jsonb(n)) FROM generate_series(1, 10) n")
    # The insert position: with synchronous_commit off the commit may not be written yet.
    written = await pg.fetchval("SELECT pg_current_wal_insert_lsn()")

    async def confirmed() -> bool:
        return bool(
            await pg.fetchval(
                "SELECT confirmed_flush_lsn >= $2 FROM pg_replication_slots WHERE slot_name = $1",
                slot,
                written,
            )
        )

    await wait_until(confirmed, "the slot confirmed past the events")
    assert await history_length(redis_client, "lag") == 10
    assert listener.metric("pgcast_listener_wal_lag_bytes") >= 0
    assert listener.metric("pgcast_listener_wal_lag_seconds") >= 0


async def test_back_to_outbox_the_slot_is_published_then_dropped(
    database_url: str,
    redis_url: str,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    """A WAL leader dies; the deployment goes back to outbox capture. The new (outbox)
    leader publishes what only the WAL holds, in order, before the outbox, then drops the
    slot (a forgotten one would keep every WAL segment) and turns the triggers back on."""
    wal = Listeners(database_url, redis_url, env=wal_env)
    outbox = Listeners(database_url, redis_url, env={"PGCAST_WAL_SLOT": wal_env["PGCAST_WAL_SLOT"]})
    try:
        await pg.execute("""
            CREATE TABLE items (id int PRIMARY KEY);
            SELECT pgcast.watch('items', ARRAY['back'], ARRAY['INSERT']);
        """)
        dead = wal.start()
        await capturing(pg, wal_env)
        await pg.execute("SELECT pgcast.publish('back', '1')")

        async def first() -> bool:
            return await history_length(redis_client, "back") == 1

        await wait_until(first, "the first event")
        dead.service.kill9()
        await pg.execute("SELECT pgcast.publish('back', '2'); INSERT INTO items VALUES (3)")
        assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 0  # only in the WAL
        outbox.start()
        await wait_until(
            lambda: pg.fetchval("SELECT mode = 'outbox' FROM pgcast.capture"), "outbox mode"
        )
        await pg.execute("SELECT pgcast.publish('back', '4')")

        async def all_four() -> bool:
            return await history_length(redis_client, "back") == 4

        await wait_until(all_four, "four events")
        assert [d for _, d in await history(redis_client, "back")] == [
            1,
            2,
            {"table": "items", "op": "INSERT", "id": 3},
            4,
        ]
        slots = await pg.fetchval(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            wal_env["PGCAST_WAL_SLOT"],
        )
        assert slots == 0
        assert await pg.fetchval(
            "SELECT tgenabled = 'O' FROM pg_trigger WHERE tgname = 'pgcast_watch'"
        )
    finally:
        wal.stop_all()
        outbox.stop_all()


async def test_a_slot_kept_across_an_outbox_spell_publishes_nothing_twice(
    database_url: str,
    redis_url: str,
    pg: asyncpg.Connection,
    redis_client: aioredis.Redis,
    wal_env: dict[str, str],
) -> None:
    """A WAL leader's slot outlives a spell of outbox capture (an outbox leader with another
    PGCAST_WAL_SLOT did not finish it): the next WAL leader decodes the outbox rows of that
    spell again, far more than Redis' ids zset remembers, and publishes none of them twice
    (a row leaves the outbox only once published)."""
    wal = Listeners(database_url, redis_url, env=wal_env)
    outbox = Listeners(database_url, redis_url, env={"PGCAST_WAL_SLOT": "some_other_slot"})
    meta = SINGLE.channel_keys("spell").meta

    async def top(n: int) -> bool:
        return await redis_client.hget(meta, "s") == str(n).encode()

    try:
        first = wal.start()
        await capturing(pg, wal_env)
        first.service.terminate(10)  # the slot stays, confirmed up to now
        outbox.start()
        await wait_until(
            lambda: pg.fetchval("SELECT mode = 'outbox' FROM pgcast.capture"), "outbox mode"
        )
        await pg.execute(
            "SELECT pgcast.publish('spell', to_jsonb(n)) FROM generate_series(1, 1500) n"
        )
        await wait_until(lambda: top(1500), "1,500 events through the outbox")
        outbox.stop_all()
        listener = wal.start()
        await capturing(pg, wal_env)
        await pg.execute("SELECT pgcast.publish('spell', '1501')")
        await wait_until(lambda: top(1501), "the next event")
        await asyncio.sleep(0.3)
        assert await top(1501)  # nothing of the 1,500 again
        assert listener.metric("pgcast_listener_events_total", 'result="duplicate"') == 1500
    finally:
        wal.stop_all()
        outbox.stop_all()


# -- what Postgres does to the slot ---------------------------------------------------
@contextlib.asynccontextmanager
async def _connected(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_an_invalidated_slot_is_replaced_and_every_channel_starts_a_new_epoch(
    private_pg: Callable[..., PgInstance], redis_url: str, redis_client: aioredis.Redis
) -> None:
    """max_slot_wal_keep_size exceeded while the listener was down: the next leader logs it,
    makes a new slot, resets every channel (live: the '!r' notice; a client connected to a
    gateway all along is told recovered:false at once) and captures again."""
    server = private_pg(max_slot_wal_keep_size="1MB", wal_keep_size="0", max_wal_size="32MB")
    env = {"PGCAST_CAPTURE": "wal", "PGCAST_WAL_SLOT": "pgcast_lost"}
    listeners = Listeners(server.dsn, redis_url, env=env)
    port = free_port()
    gateway = Service("gateway", gateway_env(redis_url, port)).start()
    try:
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
        async with (
            _connected(server.dsn) as pg,
            aiohttp.ClientSession() as session,
        ):
            client = Watcher(session, [f"ws://127.0.0.1:{port}/ws"], channel="lost")
            follow = asyncio.create_task(client.run())
            first = listeners.start()
            await capturing(pg, env)
            await pg.execute(
                "SELECT pgcast.publish('lost', jsonb_build_object('n', n))"
                " FROM generate_series(1, 3) n"
            )

            async def three() -> bool:
                return await history_length(redis_client, "lost") == 3

            await wait_until(three, "three events before the outage")
            old_epoch = (await redis_client.hget(SINGLE.channel_keys("lost").meta, "e")).decode()
            first.service.terminate(10)
            await pg.execute("CREATE TABLE filler (t text)")

            async def lost() -> bool:
                await pg.execute(
                    "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000);"
                    " SELECT pg_switch_wal(); CHECKPOINT"
                )
                status = await pg.fetchval(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgcast_lost'"
                )
                return status == "lost"

            await wait_until(lost, "Postgres invalidates the slot", interval=0.2)
            pubsub = redis_client.pubsub()
            await pubsub.subscribe(SINGLE.channel_keys("lost").live)
            second = listeners.start()
            await capturing(pg, env)
            message = None
            async with asyncio.timeout(10):
                while message is None:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            await pubsub.aclose()
            meta = await redis_client.hgetall(SINGLE.channel_keys("lost").meta)
            assert meta[b"e"].decode() != old_epoch
            assert meta[b"s"] == b"0"
            assert message["data"] == encode_reset(meta[b"e"].decode())
            assert second.metric("pgcast_listener_wal_slot_invalidations_total") == 1
            assert "was invalidated" in second.service.log()
            await pg.execute("""SELECT pgcast.publish('lost', '{"n": 4}')""")

            async def continued() -> bool:
                return await history(redis_client, "lost") == [(1, {"n": 4})]

            await wait_until(continued, "capture continues in the new epoch")
            await wait_until(lambda: client.has(4), "the client gets the next event")
            client.stop.set()
            follow.cancel()
            new_epoch = meta[b"e"].decode()
            assert client.ns == [1, 2, 3, 4]
            assert client.notices[-1] == ("sub", new_epoch, 0, False)
            assert client.log[-1] == ("msg", new_epoch, 1, 4)
            assert client.connects == 1  # told on its connection, no reconnect needed
    finally:
        gateway.stop()
        listeners.stop_all()


async def test_postgres_restarted_under_load_loses_and_repeats_nothing(
    private_pg: Callable[..., PgInstance], redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Writers publish while Postgres restarts twice (fast, then SIGKILL): every committed
    event exactly once, offsets contiguous."""
    server = private_pg(synchronous_commit="on")  # a commit acknowledged survives SIGKILL
    env = {"PGCAST_CAPTURE": "wal", "PGCAST_WAL_SLOT": "pgcast_restart"}
    listeners = Listeners(server.dsn, redis_url, env=env)
    committed: list[int] = []
    stop = asyncio.Event()

    async def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                async with _connected(server.dsn) as conn:
                    while not stop.is_set():
                        await conn.execute("SELECT pgcast.publish('restart', to_jsonb($1::int))", n)
                        committed.append(n)
                        n += 1
                        await asyncio.sleep(0.002)
            except (
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
            ):
                await asyncio.sleep(0.1)  # the server is down: the uncommitted n is skipped

    try:
        async with _connected(server.dsn) as pg:
            listeners.start(PGCAST_HISTORY_SIZE="100000")
            await capturing(pg, env)
        writer = asyncio.create_task(write())
        for restart in (lambda: server.restart(), lambda: (server.kill9(), server.start())):
            await wait_until(lambda: len(committed) > 200, "events flowing")
            await asyncio.to_thread(restart)
            size = len(committed)
            await wait_until(lambda s=size: len(committed) > s + 200, "writes resumed", 30)
        stop.set()
        await writer

        async def all_there() -> bool:
            return await history_length(redis_client, "restart") >= len(committed)

        await wait_until(all_there, f"{len(committed)} events in Redis", 60)
        entries = await history(redis_client, "restart")
        assert [offset for offset, _ in entries] == list(range(1, len(entries) + 1))
        # A commit whose answer the kill cut off may be there too: never twice, in order.
        got = [data for _, data in entries]
        assert sorted(set(got)) == got, "duplicates or out of order"
        assert set(committed) <= set(got), f"lost: {sorted(set(committed) - set(got))[:20]}"
    finally:
        stop.set()
        listeners.stop_all()


# -- what retrying cannot fix ---------------------------------------------------------
def test_wal_level_not_logical_exits_2(private_pg: Callable[..., PgInstance]) -> None:
    server = private_pg(wal_level="replica")
    result = run_listener({"DATABASE_URL": server.dsn, "PGCAST_CAPTURE": "wal"})
    assert_one_line_error(result, "wal_level = logical", "'replica'")


async def test_a_role_without_replication_exits_2(
    database_url: str, pg: asyncpg.Connection
) -> None:
    role = "nrepl_" + database_url.rsplit("/", 1)[1]
    await pg.execute(
        f"CREATE ROLE {role} LOGIN NOREPLICATION; GRANT USAGE ON SCHEMA pgcast TO {role}"
    )
    try:
        dsn = database_url.replace("postgres@", f"{role}@", 1)
        result = await asyncio.to_thread(
            run_listener, {"DATABASE_URL": dsn, "PGCAST_CAPTURE": "wal"}
        )
        assert_one_line_error(result, "REPLICATION")
    finally:
        await pg.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_a_slot_another_application_streams_from_exits_2(
    database_url: str, pg: asyncpg.Connection, wal_env: dict[str, str], redis_url: str
) -> None:
    slot = wal_env["PGCAST_WAL_SLOT"]
    await pg.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)
    other = subprocess.Popen(  # noqa: ASYNC220 - a child process the test owns
        [
            "pg_recvlogical",
            "-d",
            database_url,
            "--slot",
            slot,
            "--start",
            "-f",
            "/dev/null",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=pgcast",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_until(
            lambda: pg.fetchval(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot
            ),
            "pg_recvlogical streams",
        )
        result = await asyncio.to_thread(
            run_listener, {"DATABASE_URL": database_url, "REDIS_URL": redis_url, **wal_env}
        )
        assert_one_line_error(
            result, f"replication slot '{slot}' is in use by PID", "pg_recvlogical"
        )
    finally:
        other.terminate()
        other.wait(10)
