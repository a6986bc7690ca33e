"""sql/006: capture modes. pgcast.watched declarations, pgcast.set_capture('wal' | 'outbox')
(triggers disabled and tables published, or the reverse; refused with every offending table
named), capture_problem, and pgcast.publish() as a logical message in wal mode."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import pytest

SQL = Path(__file__).resolve().parents[2] / "sql"


async def declaration(pg: asyncpg.Connection, table: str) -> tuple[list[str], list[str]] | None:
    row = await pg.fetchrow(
        "SELECT channels, events FROM pgcast.watched WHERE rel = $1::regclass", table
    )
    return None if row is None else (list(row["channels"]), list(row["events"]))


async def trigger_states(pg: asyncpg.Connection, table: str) -> list[str]:
    """tgenabled of the table's pgcast_watch trigger and of its partitions' clones."""
    rows = await pg.fetch(
        "SELECT t.tgenabled::text FROM pgcast.capture_tree($1::regclass) AS pt"
        " JOIN pg_trigger AS t ON t.tgrelid = pt.relid AND t.tgname = 'pgcast_watch'"
        " ORDER BY pt.level, pt.relid",
        table,
    )
    return [str(r["tgenabled"]) for r in rows]


async def published(pg: asyncpg.Connection) -> list[str]:
    rows = await pg.fetch(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = 'pgcast' ORDER BY 1"
    )
    return [r["tablename"] for r in rows]


async def mode(pg: asyncpg.Connection) -> str:
    return str(await pg.fetchval("SELECT mode FROM pgcast.capture"))


async def outbox_count(pg: asyncpg.Connection) -> int:
    return int(await pg.fetchval("SELECT count(*) FROM pgcast.outbox"))


async def make_slot(pg: asyncpg.Connection) -> str:
    """A pgoutput slot of this test's database (dropped with it by the fixture). Decoding
    stops at the flushed WAL: this session's commits flush (the test server's default is
    synchronous_commit = off)."""
    await pg.execute("SET synchronous_commit = on")
    name = "t_capture_" + uuid.uuid4().hex[:12]
    await pg.execute("SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name)
    return name


async def changes(pg: asyncpg.Connection, slot: str) -> bytes:
    """Everything pgoutput v1 sends for both publications, messages included, concatenated."""
    rows = await pg.fetch(
        "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL,"
        " 'proto_version', '1', 'publication_names', 'pgcast,pgcast_outbox',"
        " 'messages', 'true')",
        slot,
    )
    return b"".join(bytes(r["data"]) for r in rows)


async def test_watch_records_updates_and_deletes_its_declaration(pg: asyncpg.Connection) -> None:
    """channels exactly as given, events upper-case in INSERT, UPDATE, DELETE order; a dropped
    table's row goes at the next watch/unwatch/set_capture."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY, o text); CREATE TABLE gone (id int)")
    await pg.execute("SELECT pgcast.watch('t', '{}', '{delete,insert}')")
    assert await declaration(pg, "t") == ([], ["INSERT", "DELETE"])
    await pg.execute("SELECT pgcast.watch('t', ARRAY['a', 'b:{o}'], '{UPDATE}')")
    assert await declaration(pg, "t") == (["a", "b:{o}"], ["UPDATE"])
    await pg.execute("SELECT pgcast.unwatch('t')")
    assert await declaration(pg, "t") is None
    await pg.execute("SELECT pgcast.watch('gone')")
    gone = await pg.fetchval("SELECT 'gone'::regclass::oid")
    await pg.execute("DROP TABLE gone")
    assert await pg.fetchval("SELECT count(*) FROM pgcast.watched WHERE rel = $1", gone) == 1
    await pg.execute("SELECT pgcast.set_capture('outbox')")
    assert await pg.fetchval("SELECT count(*) FROM pgcast.watched") == 0


async def test_declarations_are_recovered_from_the_generated_functions_comment(
    pg: asyncpg.Connection,
) -> None:
    """Tables watched before 006 have no row: their arguments come back from the comment
    watch() always wrote (quotes and backslashes too); a trigger without them is named."""
    channels = ["it's", "a\\b {o}", 'q"{id}', "x,y}{", "ü:{o}"]
    await pg.execute("""CREATE TABLE "it's" (id int PRIMARY KEY, o text)""")
    await pg.execute("""SELECT pgcast.watch('"it''s"', $1, '{insert,Update}')""", channels)
    await pg.execute("DELETE FROM pgcast.watched")
    await pg.execute((SQL / "006_capture.sql").read_text())  # the upgrade
    assert await declaration(pg, '"it\'s"') == (channels, ["INSERT", "UPDATE"])

    oid = await pg.fetchval("""SELECT '"it''s"'::regclass::oid""")
    await pg.execute(f"COMMENT ON FUNCTION pgcast.watch_{oid}() IS 'by hand'")
    await pg.execute("DELETE FROM pgcast.watched")
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as caught:
        await pg.execute("SELECT pgcast.set_capture('wal')")
    assert '"it\'s"' in str(caught.value)
    assert "pgcast.watch()" in (caught.value.as_dict().get("hint") or "")
    await pg.execute("SELECT pgcast.set_capture('outbox')")  # needs no declaration


async def test_set_capture_wal_disables_the_trigger_and_publishes_the_table(
    pg: asyncpg.Connection,
) -> None:
    """wal: no outbox row from a write, the table in pgcast; outbox: the reverse."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY, o text)")
    await pg.execute("ALTER TABLE t REPLICA IDENTITY FULL")
    await pg.execute("SELECT pgcast.watch('t', ARRAY['t:{o}'])")
    assert (await trigger_states(pg, "t"), await published(pg)) == (["O"], [])

    await pg.execute("SELECT pgcast.set_capture('wal')")
    assert (await mode(pg), await trigger_states(pg, "t"), await published(pg)) == (
        "wal",
        ["D"],
        ["t"],
    )
    await pg.execute("INSERT INTO t VALUES (1, 'x'); UPDATE t SET o = 'y'; DELETE FROM t")
    assert await outbox_count(pg) == 0

    await pg.execute("SELECT pgcast.set_capture('outbox')")
    assert (await mode(pg), await trigger_states(pg, "t"), await published(pg)) == (
        "outbox",
        ["O"],
        [],
    )
    await pg.execute("INSERT INTO t VALUES (1, 'x')")
    assert await outbox_count(pg) == 1


async def test_a_repeated_set_capture_alters_nothing_and_waits_for_no_writer(
    pg: asyncpg.Connection, database_url: str
) -> None:
    """At each leadership change: the state already right, no ALTER and no table lock, so
    an open writer transaction does not hold it up (a real switch would wait for it)."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await pg.execute("SELECT pgcast.watch('t', '{}', '{insert}')")
    await pg.execute("SELECT pgcast.set_capture('wal')")
    before = await pg.fetchval("SELECT xmin::text FROM pg_trigger WHERE tgname = 'pgcast_watch'")
    writer = await asyncpg.connect(database_url)
    try:
        tx = writer.transaction()
        await tx.start()
        await writer.execute("INSERT INTO t VALUES (1)")
        await pg.execute("SET lock_timeout = '500ms'")
        for _ in range(3):
            await pg.execute("SELECT pgcast.set_capture('wal')")
        assert (
            await pg.fetchval("SELECT xmin::text FROM pg_trigger WHERE tgname = 'pgcast_watch'")
            == before
        )
        assert await trigger_states(pg, "t") == ["D"]
        with pytest.raises(asyncpg.LockNotAvailableError):
            await pg.execute("SELECT pgcast.set_capture('outbox')")
        await tx.rollback()
    finally:
        await writer.close()
    await pg.execute("SELECT pgcast.set_capture('outbox')")
    await pg.execute("SELECT pgcast.set_capture('outbox')")
    assert await trigger_states(pg, "t") == ["O"]


async def test_declarations_the_wal_cannot_serve_are_all_named_and_nothing_changes(
    pg: asyncpg.Connection,
) -> None:
    """UPDATE without FULL, DELETE with a template outside the key, a table without key:
    one error naming each with its fix; the mode, triggers and publication stay as they were."""
    await pg.execute(
        "CREATE TABLE upd (id int PRIMARY KEY, o text);"
        "CREATE TABLE del (id int PRIMARY KEY, o text);"
        "CREATE TABLE nokey (id int, o text);"
        "CREATE TABLE fine (id int PRIMARY KEY, o text);"
        "SELECT pgcast.watch('upd', '{}', '{update}');"
        "SELECT pgcast.watch('del', ARRAY['d:{o}'], '{delete}');"
        "SELECT pgcast.watch('nokey', '{}', '{insert}');"
        "SELECT pgcast.watch('fine', ARRAY['f:{id}'], '{insert,delete}');"
    )
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as caught:
        await pg.execute("SELECT pgcast.set_capture('wal')")
    message = str(caught.value)
    assert "3 watched table(s)" in message
    for table in ("upd", "del", "nokey"):
        assert f"ALTER TABLE public.{table} REPLICA IDENTITY FULL" in message
    assert "fine" not in message
    assert await mode(pg) == "outbox"
    assert await published(pg) == []
    for table in ("upd", "del", "nokey", "fine"):
        assert await trigger_states(pg, table) == ["O"]

    await pg.execute(
        "ALTER TABLE upd REPLICA IDENTITY FULL; ALTER TABLE del REPLICA IDENTITY FULL;"
        "ALTER TABLE nokey REPLICA IDENTITY FULL"
    )
    await pg.execute("SELECT pgcast.set_capture('wal')")
    assert await published(pg) == ["del", "fine", "nokey", "upd"]


async def test_capture_problem(pg: asyncpg.Connection) -> None:
    """Generated columns, a replica identity index, partitions' own identities."""
    await pg.execute(
        "CREATE TABLE g (id int PRIMARY KEY, o text,"
        " up text GENERATED ALWAYS AS (upper(o)) STORED);"
        "CREATE TABLE ri (id int PRIMARY KEY, o text NOT NULL, v text);"
        "CREATE UNIQUE INDEX ri_o ON ri (id, o); ALTER TABLE ri REPLICA IDENTITY USING INDEX ri_o;"
        "CREATE TABLE p (id int PRIMARY KEY, o text) PARTITION BY RANGE (id);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);"
        "CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20);"
        "ALTER TABLE p1 REPLICA IDENTITY FULL;"
    )

    async def problem(table: str, channels: list[str], events: list[str]) -> str | None:
        return await pg.fetchval(  # type: ignore[no-any-return]
            "SELECT pgcast.capture_problem($1::regclass, $2, $3)", table, channels, events
        )

    assert await problem("g", ["g:{o}"], ["insert"]) is None
    assert "generated column(s) up" in (await problem("g", ["g:{up}"], ["insert"]) or "")
    await pg.execute("ALTER TABLE g REPLICA IDENTITY FULL")
    assert "generated" in (await problem("g", ["g:{up}"], ["delete"]) or "")
    assert await problem("ri", ["r:{o}"], ["INSERT", "DELETE"]) is None
    assert "the old v" in (await problem("ri", ["r:{v}"], ["DELETE"]) or "")
    assert "UPDATE events" in (await problem("ri", [], ["UPDATE"]) or "")
    assert await problem("p", [], ["INSERT", "DELETE"]) is None
    assert "ALTER TABLE p2 REPLICA IDENTITY FULL" in (await problem("p", [], ["UPDATE"]) or "")


async def test_watch_in_wal_mode(pg: asyncpg.Connection) -> None:
    """The trigger is created disabled and the table published; a table the WAL cannot serve
    is refused (no trigger); unwatch leaves the publication too; a partitioned table's
    clones follow."""
    await pg.execute("SELECT pgcast.set_capture('wal')")
    await pg.execute(
        "CREATE TABLE t (id int PRIMARY KEY, o text); CREATE TABLE k (o text);"
        "CREATE TABLE p (id int PRIMARY KEY) PARTITION BY RANGE (id);"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);"
    )
    await pg.execute("SELECT pgcast.watch('t', '{}', '{insert,delete}')")
    assert (await trigger_states(pg, "t"), await published(pg)) == (["D"], ["t"])
    await pg.execute("INSERT INTO t VALUES (1, 'a')")
    assert await outbox_count(pg) == 0
    with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError, match="k has no replica"):
        await pg.execute("SELECT pgcast.watch('k')")
    assert await trigger_states(pg, "k") == []
    await pg.execute("SELECT pgcast.watch('p', '{}', '{insert}')")
    assert await trigger_states(pg, "p") == ["D", "D"]
    await pg.execute("INSERT INTO p VALUES (1)")
    assert await outbox_count(pg) == 0
    await pg.execute("SELECT pgcast.unwatch('t')")
    assert await published(pg) == ["p1"]
    await pg.execute("SELECT pgcast.set_capture('outbox')")
    assert (await trigger_states(pg, "p"), await published(pg)) == (["O", "O"], [])
    await pg.execute("INSERT INTO p VALUES (2)")
    assert await outbox_count(pg) == 1


async def test_publish_in_wal_mode_is_a_transactional_logical_message(
    pg: asyncpg.Connection,
) -> None:
    """No outbox row, NULL for the id; the message decodes at commit, never after a
    rollback, at 1 MB too; watched tables' changes and outbox inserts decode alongside."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await pg.execute("SELECT pgcast.watch('t', '{}', '{insert}')")
    await pg.execute("SELECT pgcast.set_capture('wal')")
    slot = await make_slot(pg)
    async with pg.transaction():
        assert await pg.fetchval("""SELECT pgcast.publish('chan:1', '{"a": 1}')""") is None
        await pg.execute("INSERT INTO t VALUES (7)")
    async with pg.transaction():
        await pg.execute("SELECT pgcast.publish('chan:2', NULL)")
    tx = pg.transaction()
    await tx.start()
    await pg.execute("""SELECT pgcast.publish('rolled', '{"b": 2}')""")
    await tx.rollback()
    await pg.execute("SELECT pgcast.disconnect('42')")
    assert await outbox_count(pg) == 1  # the control row only
    data = await changes(pg, slot)
    assert b"pgcast\x00" in data
    assert b'chan:1\n{"a": 1}' in data
    assert b"chan:2\nnull" in data
    assert b"rolled" not in data
    assert b"\x00t\x00" in data  # the relation message of the watched table
    assert b"[control]" in data  # pgcast_outbox

    big = "x" * (1 << 20)
    await pg.execute("SELECT pgcast.publish('big', jsonb_build_object('s', $1::text))", big)
    data = await changes(pg, slot)
    assert f'big\n{{"s": "{big}"}}'.encode() in data


async def test_a_channel_with_a_newline_reaches_the_listener_whole_in_both_modes(
    pg: asyncpg.Connection,
) -> None:
    """The message is '<channel>\\n<data>' and jsonb text has no newline, so the decoder
    splits at the last one: such a channel arrives whole, and the listener refuses it as
    invalid in either mode (an outbox row's would be too)."""
    slot = await make_slot(pg)
    await pg.execute("SELECT pgcast.publish(E'a\\nb', '1')")
    assert await outbox_count(pg) == 1
    await pg.execute("SELECT pgcast.set_capture('wal')")
    await pg.execute("SELECT pgcast.publish(E'a\\nb', '2')")
    assert await outbox_count(pg) == 1
    assert b"a\nb\n2" in await changes(pg, slot)
    with pytest.raises(asyncpg.NotNullViolationError):
        await pg.execute("SELECT pgcast.publish(NULL, '1')")


async def test_a_keyless_watched_table_in_outbox_mode_is_unpublished_and_updatable(
    pg: asyncpg.Connection,
) -> None:
    """A table without replica identity in a publication of updates refuses UPDATE: in
    outbox mode no watched table is published."""
    await pg.execute("CREATE TABLE k (o text); INSERT INTO k VALUES ('a')")
    await pg.execute("SELECT pgcast.watch('k')")
    assert await published(pg) == []
    await pg.execute("UPDATE k SET o = 'b'; DELETE FROM k")
    assert await outbox_count(pg) == 2


async def test_a_role_that_owns_nothing_can_set_the_capture_once_granted(
    pg: asyncpg.Connection,
) -> None:
    """SECURITY DEFINER: the listener's role needs EXECUTE, not the tables."""
    role = "capture_" + uuid.uuid4().hex[:12]
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await pg.execute("SELECT pgcast.watch('t', '{}', '{insert}')")
    await pg.execute(f"CREATE ROLE {role}")
    try:
        await pg.execute(f"SET ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pg.execute("SELECT pgcast.set_capture('wal')")
        await pg.execute("RESET ROLE")
        await pg.execute(
            f"GRANT USAGE ON SCHEMA pgcast TO {role};"
            f"GRANT EXECUTE ON FUNCTION pgcast.set_capture(text) TO {role}"
        )
        await pg.execute(f"SET ROLE {role}")
        await pg.execute("SELECT pgcast.set_capture('wal')")
        await pg.execute("RESET ROLE")
        assert (await trigger_states(pg, "t"), await published(pg)) == (["D"], ["t"])
    finally:
        await pg.execute("RESET ROLE")
        await pg.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_the_migrations_run_again_keep_the_wal_state(pg: asyncpg.Connection) -> None:
    """Every file is idempotent: re-applied in wal mode, nothing is reset."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await pg.execute("SELECT pgcast.watch('t', '{}', '{insert}')")
    await pg.execute("SELECT pgcast.set_capture('wal')")
    for _ in range(2):
        for name in ("001_outbox.sql", "003_watch.sql", "006_capture.sql"):
            await pg.execute((SQL / name).read_text())
    assert (await mode(pg), await trigger_states(pg, "t"), await published(pg)) == (
        "wal",
        ["D"],
        ["t"],
    )
    assert await declaration(pg, "t") == ([], ["INSERT"])


async def test_publish_in_wal_mode_needs_no_privilege_on_the_outbox(
    pg: asyncpg.Connection,
) -> None:
    """The mode is readable by every role; a logical message needs no INSERT on the outbox."""
    role = "writer_" + uuid.uuid4().hex[:12]
    await pg.execute(f"CREATE ROLE {role}; GRANT USAGE ON SCHEMA pgcast TO {role}")
    try:
        await pg.execute("SELECT pgcast.set_capture('wal')")
        await pg.execute(f"SET ROLE {role}")
        assert await pg.fetchval("SELECT pgcast.publish('c', '1')") is None
        await pg.execute("RESET ROLE")
        await pg.execute("SELECT pgcast.set_capture('outbox')")
        await pg.execute(f"SET ROLE {role}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="outbox"):
            await pg.execute("SELECT pgcast.publish('c', '1')")
    finally:
        await pg.execute("RESET ROLE")
        await pg.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


async def test_update_events_of_a_table_with_a_generated_column_are_refused_in_wal_mode(
    pg: asyncpg.Connection,
) -> None:
    """pgoutput 1 never sends a generated column, and "changed" compares every column:
    the declaration is refused, not served with events that differ from the trigger's."""
    await pg.execute("""
        CREATE TABLE g (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2) STORED);
        ALTER TABLE g REPLICA IDENTITY FULL;
    """)
    problem = await pg.fetchval("SELECT pgcast.capture_problem('g', '{}', '{UPDATE}')")
    assert problem is not None
    assert "generated column(s) b" in problem
    assert await pg.fetchval("SELECT pgcast.capture_problem('g', '{}', '{INSERT,DELETE}')") is None
