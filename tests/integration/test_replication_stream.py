"""listener.replication against a real Postgres: frames, confirmed position, failures.

Each test makes its own table ``t``, publication ``stream_test`` and pgoutput slot; the
``database_url`` fixture drops the slot with the database, a private_pg dies whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from listener.replication import ReplicationStream
from listener.replication_wire import (
    ReplicationError,
    XLogData,
    classify,
    format_lsn,
    parse_lsn,
    start_command,
)
from tests.servers import PgInstance
from tests.waiting import eventually

# Not "pgcast": pgcast-migrate creates that one (tables join it in wal mode only).
PUBS = ["stream_test"]


def slot_for(dsn: str) -> str:
    return "s_" + urlsplit(dsn).path.lstrip("/")


async def make_slot(conn: asyncpg.Connection, slot: str) -> None:
    await conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    await conn.execute("CREATE PUBLICATION stream_test FOR TABLE t")
    await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)


async def read_transaction(stream: ReplicationStream, within: float = 5.0) -> list[XLogData]:
    """The frames up to and including the next Commit ('C')."""
    frames = []
    async with asyncio.timeout(within):
        while True:
            frames.append(await stream.read())
            if frames[-1].payload[:1] == b"C":
                return frames


async def confirmed_flush(conn: asyncpg.Connection, slot: str) -> int:
    text = await conn.fetchval(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot
    )
    return parse_lsn(text)


async def slot_at(conn: asyncpg.Connection, slot: str, lsn: int) -> bool:
    return await confirmed_flush(conn, slot) == lsn


async def expect_error(waiting: Awaitable[object], within: float) -> ReplicationError:
    with pytest.raises(ReplicationError) as caught:
        async with asyncio.timeout(within):
            await waiting
    return caught.value


@pytest.mark.parametrize(
    ("sqlstate", "message", "kind"),
    [
        ("55000", "logical decoding requires wal_level >= logical", "wal_level"),
        (
            "55000",
            'cannot read from logical replication slot "s" (DETAIL: This slot has '
            "been invalidated because it exceeded the maximum reserved size.)",
            "slot_invalidated",
        ),
        ("55000", 'can no longer get changes from replication slot "s"', "slot_invalidated"),
        ("55000", "something else", "other"),
        ("55006", 'replication slot "s" is active for PID 42', "slot_in_use"),
        ("42704", 'replication slot "s" does not exist', "slot_missing"),
        ("42704", 'publication "p" does not exist', "other"),
        ("42501", "permission denied to start WAL sender", "privilege"),
        (None, "FATAL:  must be superuser or replication role to start walsender", "privilege"),
        (None, "FATAL:  permission denied to start WAL sender", "privilege"),
        (None, "server closed the connection unexpectedly", "connection"),
        ("57P01", "terminating connection due to administrator command", "connection"),
        ("08006", "connection failure", "connection"),
    ],
)
def test_server_errors_map_to_kinds(sqlstate: str | None, message: str, kind: str) -> None:
    """Each SQLSTATE (and, where one code means several things, message) has its kind."""
    assert classify(sqlstate, message) == kind


@pytest.fixture
async def stream_db(database_url: str, pg: asyncpg.Connection) -> str:
    """``database_url`` with table t, publication stream_test and slot ``slot_for(url)``."""
    await make_slot(pg, slot_for(database_url))
    return database_url


def test_lsn_text_round_trips_and_identifiers_are_quoted() -> None:
    """LSNs format as Postgres prints them; slot and publication names are quoted."""
    assert format_lsn(0x1_6B374D48) == "1/6B374D48"
    assert parse_lsn("16/B374D848") == 0x16_B374D848
    assert parse_lsn(format_lsn(2**64 - 1)) == 2**64 - 1
    command = start_command('sl"ot', ["a'b", "c"], 0)
    assert command == (
        b'START_REPLICATION SLOT "sl""ot" LOGICAL 0/0 '
        b"(proto_version '1', publication_names '\"a''b\",\"c\"', messages 'true')"
    )


async def test_confirm_moves_the_slot_exactly_and_a_restart_resumes_there(
    stream_db: str, pg: asyncpg.Connection
) -> None:
    """Rows arrive as pgoutput frames; the slot moves to the confirmed LSN and no further,
    and a new stream from 0/0 starts after it: unconfirmed transactions come again."""
    slot = slot_for(stream_db)
    created = await confirmed_flush(pg, slot)
    stream = await ReplicationStream.start(stream_db, slot, PUBS)
    try:
        for i in range(3):
            await pg.execute("INSERT INTO t VALUES ($1, $2)", i, f"row-{i}")
        txs = [await read_transaction(stream) for _ in range(3)]
        assert [f.payload[:1] for f in txs[0]] == [b"B", b"R", b"I", b"C"]
        assert b"row-1" in txs[1][1].payload
        assert await confirmed_flush(pg, slot) == created  # nothing confirmed yet
        first_commit = txs[0][-1].wal_start
        stream.confirm(first_commit)
        stream.confirm(first_commit - 1)  # never backwards
        await eventually(lambda: slot_at(pg, slot, first_commit), 2.0, "slot at the LSN", 0.01)
    finally:
        await stream.close()
    assert await confirmed_flush(pg, slot) == first_commit  # close reported no more

    again = await ReplicationStream.start(stream_db, slot, PUBS)
    try:
        resent = await read_transaction(again)
        assert [f.payload[:1] for f in resent] == [b"B", b"R", b"I", b"C"]
        assert b"row-1" in resent[2].payload
        assert resent[-1].wal_start == txs[1][-1].wal_start
        assert b"row-2" in (await read_transaction(again))[1].payload
    finally:
        await again.close()


async def test_pending_returns_what_arrived_without_waiting(
    stream_db: str, pg: asyncpg.Connection
) -> None:
    """pending() hands out the frames already received and None when there are none."""
    stream = await ReplicationStream.start(stream_db, slot_for(stream_db), PUBS)
    try:
        assert stream.pending() is None
        await pg.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 50) AS g")
        first = await stream.read()
        assert first.payload[:1] == b"B"
        batch = [first]
        async with asyncio.timeout(5):
            while batch[-1].payload[:1] != b"C":
                frame = stream.pending()
                if frame is None:
                    frame = await stream.read()
                batch.append(frame)
        assert len(batch) == 53  # Begin, Relation, 50 Inserts, Commit
        assert stream.pending() is None
    finally:
        await stream.close()


async def test_keepalives_and_periodic_updates_keep_the_stream(
    private_pg: Callable[..., PgInstance],
) -> None:
    """wal_sender_timeout 2 s, 4 s of quiet: a stream in read() survives by answering
    keepalive requests, an unread one survives by its periodic status updates, and an
    unread one with neither is dropped. Waiting costs (next to) no CPU."""
    server = private_pg(wal_sender_timeout="'2s'")
    conn = await asyncpg.connect(server.dsn)
    async with contextlib.AsyncExitStack() as streams:
        streams.push_async_callback(conn.close)
        await make_slot(conn, "reader")
        for slot in ("ticking", "idle"):
            await conn.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot)

        async def start(slot: str, status_interval: float) -> ReplicationStream:
            stream = await ReplicationStream.start(
                server.dsn, slot, PUBS, status_interval=status_interval
            )
            streams.push_async_callback(stream.close)
            return stream

        reading, ticking, idle = (
            await start("reader", 60),
            await start("ticking", 0.5),
            await start("idle", 60),
        )
        cpu = time.process_time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(4):
                await reading.read()
        assert time.process_time() - cpu < 0.5
        await conn.execute("INSERT INTO t VALUES (1, 'after the quiet')")
        assert b"after the quiet" in (await read_transaction(reading))[2].payload
        assert b"after the quiet" in (await read_transaction(ticking))[2].payload
        error = await expect_error(idle.read(), 1.0)
        assert error.kind == "connection"


async def test_a_terminated_walsender_is_a_connection_error(
    stream_db: str, pg: asyncpg.Connection
) -> None:
    """pg_terminate_backend on the walsender fails read() at once; close() returns."""
    slot = slot_for(stream_db)
    stream = await ReplicationStream.start(stream_db, slot, PUBS)
    try:
        reading = asyncio.create_task(stream.read())
        pid = await pg.fetchval(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name=$1", slot
        )
        await pg.execute("SELECT pg_terminate_backend($1)", pid)
        error = await expect_error(reading, 3.0)
        assert error.kind == "connection"
        assert error.sqlstate == "57P01"
        assert "terminating connection due to administrator command" in str(error)
    finally:
        async with asyncio.timeout(3):
            await stream.close()


async def test_a_killed_server_is_a_connection_error(
    private_pg: Callable[..., PgInstance],
) -> None:
    """SIGKILL on the postmaster fails read() within seconds; close() returns."""
    server = private_pg()
    conn = await asyncpg.connect(server.dsn)
    try:
        await make_slot(conn, "killed")
    finally:
        await conn.close()
    stream = await ReplicationStream.start(server.dsn, "killed", PUBS)
    try:
        reading = asyncio.create_task(stream.read())
        await asyncio.to_thread(server.kill9)
        error = await expect_error(reading, 5.0)
        assert error.kind == "connection"
        with pytest.raises(ReplicationError):
            stream.pending()  # the failure sticks
    finally:
        async with asyncio.timeout(3):
            await stream.close()
    with pytest.raises(ReplicationError):
        await stream.read()
    with pytest.raises(ReplicationError) as refused:
        await ReplicationStream.start(server.dsn, "killed", PUBS, connect_timeout=2)
    assert refused.value.kind == "connection"


async def test_slot_errors_have_their_kinds(stream_db: str, pg: asyncpg.Connection) -> None:
    """A missing slot, a slot another stream holds and a role without REPLICATION."""
    slot = slot_for(stream_db)
    missing = await expect_error(ReplicationStream.start(stream_db, "nope", PUBS), 5)
    assert (missing.kind, missing.sqlstate) == ("slot_missing", "42704")
    assert str(missing) == 'replication slot "nope" does not exist'

    holder = await ReplicationStream.start(stream_db, slot, PUBS)
    try:
        busy = await expect_error(ReplicationStream.start(stream_db, slot, PUBS), 5)
        assert (busy.kind, busy.sqlstate) == ("slot_in_use", "55006")
        assert f'replication slot "{slot}" is active for PID' in str(busy)
    finally:
        await holder.close()

    role = "r_" + uuid.uuid4().hex[:12]
    await pg.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    try:
        parts = urlsplit(stream_db)
        url = urlunsplit(parts._replace(netloc=f"{role}:pw@{parts.hostname}:{parts.port}"))
        denied = await expect_error(ReplicationStream.start(url, slot, PUBS), 5)
        assert denied.kind == "privilege"
        assert "must be superuser or replication role to start walsender" in str(denied)
    finally:
        await pg.execute(f"DROP ROLE {role}")


async def test_wal_level_replica_is_its_own_kind(private_pg: Callable[..., PgInstance]) -> None:
    """wal_level=replica refuses logical decoding with kind "wal_level"."""
    server = private_pg(wal_level="replica")
    error = await expect_error(ReplicationStream.start(server.dsn, "any", PUBS), 5)
    assert (error.kind, error.sqlstate) == ("wal_level", "55000")
    assert str(error) == "logical decoding requires wal_level >= logical"


async def test_an_invalidated_slot_is_its_own_kind(private_pg: Callable[..., PgInstance]) -> None:
    """A slot that fell behind max_slot_wal_keep_size is lost: kind "slot_invalidated"."""
    server = private_pg(max_slot_wal_keep_size="1MB")
    conn = await asyncpg.connect(server.dsn)
    try:
        await make_slot(conn, "lost")
        started = time.monotonic()
        while (
            await conn.fetchval(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'lost'"
            )
            != "lost"
        ):
            assert time.monotonic() - started < 10, "the slot was never invalidated"
            await conn.execute(
                "INSERT INTO t SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) AS g"
            )
            await conn.execute("DELETE FROM t")
            await conn.execute("SELECT pg_switch_wal()")
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    error = await expect_error(ReplicationStream.start(server.dsn, "lost", PUBS), 5)
    assert (error.kind, error.sqlstate) == ("slot_invalidated", "55000")
    assert str(error) == (
        'cannot read from logical replication slot "lost" (DETAIL: This slot has been '
        "invalidated because it exceeded the maximum reserved size.)"
    )
