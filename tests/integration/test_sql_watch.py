"""sql/003: pgcast.watch() generates a per-table trigger that writes exactly the outbox rows
pgcast.notify_trigger() writes with the same templates, and fails at watch() time instead."""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration.sql_watch_support import Op, events, run_both, watch

# Every type whose text rendering differs between ::text and to_jsonb ->> (timestamptz,
# date under a non-ISO DateStyle, float8, char(n), jsonb, arrays), and some that do not.
TYPED = """
    id int PRIMARY KEY, ts timestamptz, d date, flag bool, amount numeric, ratio float8,
    uid uuid, doc jsonb, tags text[], quote text, code char(4), note text
"""
TYPED_TEMPLATES = [
    "all",
    "ts:{ts}",
    "d:{d}/{flag}",
    "n:{amount}:{ratio}",
    "u:{uid}",
    "j:{doc}",
    "a:{tags}",
    "q:{quote}/{id}",
    "c:{code}",
    "{d}{ts}",
    "brace:{open",
    "}{id}{",
]
TYPED_OPS: list[Op] = [
    """INSERT INTO {t} VALUES (1, '2024-02-29 23:59:59.5+05:30', '2024-03-01', true, 1.50,
        1e20, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": "v", "n": 1.0}', '{a,"b c",NULL}',
        'it''s "q" $$ {id}', 'ab', 'n')""",
    """INSERT INTO {t} (id, ts, d, flag, amount, ratio, doc, quote) VALUES
        (2, NULL, 'infinity', false, 'NaN', 0.1, '"s"', 'x'),
        (3, 'epoch', '1999-12-31', NULL, -0.000, 'NaN', 'null', NULL)""",
    "UPDATE {t} SET ts = ts + interval '1 day', quote = 'moved' WHERE id = 1",
    "UPDATE {t} SET note = 'only note' WHERE id = 1",
    "UPDATE {t} SET note = note",
    "UPDATE {t} SET amount = 1.5 WHERE id = 1",  # equal numerics: jsonb compares equal too
    "UPDATE {t} SET quote = 'back' WHERE id = 3",  # NULL -> value: no old channel
    "UPDATE {t} SET quote = NULL WHERE id = 2",  # value -> NULL: the old channel only
    "UPDATE {t} SET id = id + 100 WHERE id = 2",
    "DELETE FROM {t} WHERE id IN (1, 102)",
    "DELETE FROM {t}",
]


async def test_typed_columns_publish_exactly_what_notify_trigger_publishes(
    pg: asyncpg.Connection,
) -> None:
    """Insert, multi-row insert, updates (template moved, unchanged, no-op, key), deletes:
    channel and data equal row for row, under a DateStyle and TimeZone that ::text obeys."""
    await pg.execute("SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Kolkata'")
    notify, watched = await run_both(pg, TYPED, TYPED_TEMPLATES, TYPED_OPS)
    assert watched == notify
    assert all(notify), "every operation published"
    first_channels = [channel for channel, _ in notify[0]]
    assert "d:01/03/2024" not in first_channels  # jsonb's ISO date, not DateStyle's
    assert any(channel.startswith("n:1.50:100000000000000000000") for channel in first_channels)


@pytest.mark.parametrize(
    ("columns", "templates"),
    [
        ("a int, b text, v int, PRIMARY KEY (b, a)", ["pair:{b}", "v:{v}"]),
        ("a int, b text, v int", ["loose", "{b}"]),
        ("a int PRIMARY KEY, b text, v int", []),
        ("a int PRIMARY KEY, b text, v int", ["one:{b}"]),
        ("a int PRIMARY KEY, b text, v int", ["const1", "const2"]),
    ],
    ids=["composite-key", "no-key", "default-channel", "one-template", "two-constants"],
)
async def test_keys_and_channel_shapes_match_notify_trigger(
    pg: asyncpg.Connection, columns: str, templates: list[str]
) -> None:
    """Composite key (an object), no key (null), no template (the table's name)."""
    ops: list[Op] = [
        "INSERT INTO {t} VALUES (1, 'x', 1), (2, 'z', NULL)",
        "UPDATE {t} SET b = 'y', v = 2 WHERE a = 1",
        "UPDATE {t} SET a = 3 WHERE a = 2",
        "DELETE FROM {t}",
    ]
    notify, watched = await run_both(pg, columns, templates, ops)
    assert watched == notify
    assert all(notify)


async def test_partitioned_table_matches_notify_trigger(pg: asyncpg.Connection) -> None:
    """On a partitioned table the trigger reaches every partition, named as notify_trigger
    names it (TG_TABLE_NAME is the partition's)."""
    await pg.execute("""
        CREATE TABLE pn (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
        CREATE TABLE pn_low PARTITION OF pn FOR VALUES FROM (0) TO (10);
        CREATE TABLE pw (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
        CREATE TABLE pw_low PARTITION OF pw FOR VALUES FROM (0) TO (10);
        CREATE TRIGGER pgcast AFTER INSERT OR UPDATE OR DELETE ON pn FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('p:{v}');
        SELECT pgcast.watch('pw', ARRAY['p:{v}']);
    """)
    await pg.execute("INSERT INTO pn VALUES (1, 'a'); UPDATE pn SET v = 'b'")
    notify = await events(pg)
    await pg.execute("INSERT INTO pw VALUES (1, 'a'); UPDATE pw SET v = 'b'")
    watched = await events(pg)
    assert [(c, d.replace("pw_low", "pn_low")) for c, d in watched] == notify
    assert '"table": "pw_low"' in watched[0][1]


async def test_keyless_partitioned_parent_with_keyed_partitions_is_refused(
    pg: asyncpg.Connection,
) -> None:
    """The generated code knows one key, the parent's: where only the partitions have one,
    watch() refuses instead of publishing "id": null; all keyless is fine (null either way)."""
    await pg.execute("""
        CREATE TABLE kp (id int NOT NULL, v text) PARTITION BY RANGE (id);
        CREATE TABLE kp_low PARTITION OF kp FOR VALUES FROM (0) TO (10);
        CREATE TABLE kp_high PARTITION OF kp FOR VALUES FROM (10) TO (20);
        ALTER TABLE kp_high ADD PRIMARY KEY (id);
        CREATE TABLE nk (id int NOT NULL) PARTITION BY RANGE (id);
        CREATE TABLE nk_low PARTITION OF nk FOR VALUES FROM (0) TO (10);
    """)
    with pytest.raises(asyncpg.FeatureNotSupportedError, match="no primary key but a partition"):
        await watch(pg, "kp", ["kp"], "{INSERT}")
    await watch(pg, "nk", ["nk"], "{INSERT}")
    await pg.execute("INSERT INTO nk VALUES (1)")
    assert await events(pg) == [("nk", '{"id": null, "op": "INSERT", "table": "nk_low"}')]


async def test_hot_path_is_one_insert_the_wakeup_and_return(pg: asyncpg.Connection) -> None:
    """INSERT only, one constant channel, single-column key: no branch, no condition."""
    await pg.execute("CREATE TABLE wp (id bigserial PRIMARY KEY, v int)")
    name = await watch(pg, "wp", ["wp"], "{INSERT}")
    body = await pg.fetchval("SELECT prosrc FROM pg_proc WHERE oid = $1::regprocedure", name)
    statements = [line.strip() for line in body.strip().splitlines()]
    assert statements == [
        "BEGIN",
        "INSERT INTO pgcast.outbox (channel, data)",
        "VALUES ('wp'::text, jsonb_build_object("
        "'table', TG_TABLE_NAME, 'op', TG_OP, 'id', NEW.id));",
        "IF pgcast.wake_needed() THEN",
        "PERFORM pg_notify('pgcast', '');",
        "END IF;",
        "RETURN NULL;",
        "END",
    ]
    await pg.execute("INSERT INTO wp (v) VALUES (1)")
    assert await events(pg) == [("wp", '{"id": 1, "op": "INSERT", "table": "wp"}')]


async def test_trigger_and_function_are_named_and_described(pg: asyncpg.Connection) -> None:
    """One trigger pgcast_watch with the events asked for; the function's comment names
    the table and the channels."""
    await pg.execute('CREATE TABLE "My Table" (id int PRIMARY KEY, v text)')
    name = await watch(pg, '"My Table"', ["a", "v:{v}"], "{delete,INSERT}")
    oid = await pg.fetchval("""SELECT '"My Table"'::regclass::oid""")
    assert name == f"pgcast.watch_{oid}()"
    comment = await pg.fetchval("SELECT obj_description($1::regprocedure)", name)
    assert '"My Table"' in comment
    assert "v:{v}" in comment
    definition = await pg.fetchval(
        """SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = '"My Table"'::regclass"""
    )
    assert "pgcast_watch AFTER INSERT OR DELETE" in definition
    assert "FOR EACH ROW" in definition
    await pg.execute("""INSERT INTO "My Table" VALUES (1, 'x'); UPDATE "My Table" SET v = 'y'""")
    assert [c for c, _ in await events(pg)] == ["a", "v:x"]


async def test_rolled_back_write_leaves_no_event(pg: asyncpg.Connection) -> None:
    """The outbox row belongs to the writing transaction: a rollback removes it."""
    await pg.execute("CREATE TABLE r (id int PRIMARY KEY); SELECT pgcast.watch('r')")
    tx = pg.transaction()
    await tx.start()
    await pg.execute("INSERT INTO r VALUES (1)")
    assert await pg.fetchval("SELECT count(*) FROM pgcast.outbox") == 1
    await tx.rollback()
    assert await events(pg) == []


async def test_wakeup_only_when_something_was_published(pg: asyncpg.Connection) -> None:
    """The writer's try-lock of the wake-up key (pgcast.wake_needed) happens once a row
    reached the outbox, and not when every template's value was NULL."""
    await pg.execute(
        "CREATE TABLE wk (id int PRIMARY KEY, v text); SELECT pgcast.watch('wk', ARRAY['v:{v}'])"
    )
    held = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
              AND classid = 1885824887 AND objid = 1"""
    async with pg.transaction():
        await pg.execute("INSERT INTO wk VALUES (1, NULL)")
        assert await pg.fetchval(held) == 0
        await pg.execute("INSERT INTO wk VALUES (2, 'x')")
        assert await pg.fetchval(held) == 1
    assert [c for c, _ in await events(pg)] == ["v:x"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ("pgcast.watch('t', ARRAY['t:{nope}'])", asyncpg.UndefinedColumnError, '"nope"'),
        (
            "pgcast.watch('t', ARRAY['ok', 'x:{id}/{}'])",
            asyncpg.UndefinedColumnError,
            'no column ""',
        ),
        (
            "pgcast.watch('t', '{}', '{INSERT,TRUNCATE}')",
            asyncpg.InvalidParameterValueError,
            "TRUNCATE",
        ),
        ("pgcast.watch('t', '{}', '{}')", asyncpg.InvalidParameterValueError, "events"),
        ("pgcast.watch('t', '{}', '{INSERT,NULL}')", asyncpg.InvalidParameterValueError, "events"),
        ("pgcast.watch('v')", asyncpg.WrongObjectTypeError, "not a table"),
        ("pgcast.watch('s')", asyncpg.WrongObjectTypeError, "not a table"),
        ("pgcast.watch('pgcast.outbox')", asyncpg.InvalidParameterValueError, "outbox"),
        ("pgcast.watch('t', ARRAY['a', NULL])", asyncpg.NullValueNotAllowedError, "NULL"),
        ("pgcast.watch('t', ARRAY['a', ''])", asyncpg.InvalidParameterValueError, "empty"),
        ("pgcast.watch('t', NULL)", asyncpg.NullValueNotAllowedError, "NULL"),
    ],
)
async def test_mistakes_fail_at_watch_time_and_keep_the_old_trigger(
    pg: asyncpg.Connection, call: str, error: type[Exception], message: str
) -> None:
    """Each mistake raises its own error code; the trigger watched before stays in place."""
    await pg.execute("""
        CREATE TABLE t (id int PRIMARY KEY); CREATE VIEW v AS SELECT 1 AS id;
        CREATE SEQUENCE s; SELECT pgcast.watch('t', '{before}');
    """)
    with pytest.raises(error, match=message):
        await pg.execute(f"SELECT {call}")
    await pg.execute("INSERT INTO t VALUES (1)")
    assert [c for c, _ in await events(pg)] == ["before"]


async def test_rewatch_replaces_trigger_and_function(pg: asyncpg.Connection) -> None:
    """watch() again: the same function name, still one trigger, the new events and channels."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    first = await watch(pg, "t", ["a"], "{INSERT}")
    second = await watch(pg, "t", ["b:{v}"], "{UPDATE}")
    assert first == second
    assert await pg.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass") == 1
    assert await pg.fetchval("SELECT count(*) FROM pg_proc WHERE proname ~ '^watch_[0-9]+$'") == 1
    await pg.execute("INSERT INTO t VALUES (1, 'x'); UPDATE t SET v = 'y'")
    assert [c for c, _ in await events(pg)] == ["b:y", "b:x"]


async def test_unwatch_drops_trigger_and_function_and_tolerates_absence(
    pg: asyncpg.Connection,
) -> None:
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY); SELECT pgcast.watch('t')")
    await pg.execute("SELECT pgcast.unwatch('t'); SELECT pgcast.unwatch('t')")
    assert await pg.fetchval("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass") == 0
    assert await pg.fetchval("SELECT count(*) FROM pg_proc WHERE proname ~ '^watch_[0-9]+$'") == 0
    await pg.execute("INSERT INTO t VALUES (1)")
    assert await events(pg) == []


async def test_function_from_an_older_oid_is_replaced(pg: asyncpg.Connection) -> None:
    """After a dump and restore the table has a new oid: watch() and unwatch() drop the
    function the trigger called, not only the one named after the current oid."""
    await pg.execute("""
        CREATE TABLE t (id int PRIMARY KEY);
        CREATE FUNCTION pgcast.watch_1() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RETURN NULL; END $$;
        CREATE TRIGGER pgcast_watch AFTER INSERT ON t FOR EACH ROW
        EXECUTE FUNCTION pgcast.watch_1();
    """)
    await watch(pg, "t", ["t"], "{INSERT}")
    assert await pg.fetchval("SELECT to_regprocedure('pgcast.watch_1()')") is None
    await pg.execute("SELECT pgcast.unwatch('t')")
    assert await pg.fetchval("SELECT count(*) FROM pg_proc WHERE proname ~ '^watch_[0-9]+$'") == 0


async def test_dropped_tables_functions_go_with_the_next_watch_or_unwatch(
    pg: asyncpg.Connection,
) -> None:
    """DROP TABLE drops the trigger but not the generated function: the next watch() or
    unwatch() drops every pgcast.watch_<oid>() no trigger calls, and nothing else."""
    await pg.execute("""
        CREATE TABLE gone1 (id int PRIMARY KEY); CREATE TABLE gone2 (id int PRIMARY KEY);
        CREATE TABLE kept (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY);
        SELECT pgcast.watch('gone1'); SELECT pgcast.watch('gone2'); SELECT pgcast.watch('kept');
        CREATE FUNCTION pgcast.watch_helper() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RETURN NULL; END $$;
    """)
    generated = "SELECT count(*) FROM pg_proc WHERE proname ~ '^watch_[0-9]+$'"
    await pg.execute("DROP TABLE gone1")
    assert await pg.fetchval(generated) == 3  # left behind by DROP TABLE
    await watch(pg, "other", ["other"], "{INSERT}")
    assert await pg.fetchval(generated) == 3  # gone2, kept, other
    await pg.execute("DROP TABLE gone2; SELECT pgcast.unwatch('other')")
    assert await pg.fetchval(generated) == 1  # kept
    assert await pg.fetchval("SELECT to_regprocedure('pgcast.watch_helper()')") is not None
    await pg.execute("INSERT INTO kept VALUES (1)")
    assert [c for c, _ in await events(pg)] == ["kept"]


HOSTILE_TABLE = 'we"ird $$ t'
HOSTILE_COLUMN = "c\"o'l $$ ü👍"


async def test_hostile_identifiers_and_templates(pg: asyncpg.Connection) -> None:
    """Quotes, spaces, $$ and unicode in table, column and template text are quoted, never
    spliced: the result equals notify_trigger's, and a victim table survives."""
    col = '"' + HOSTILE_COLUMN.replace('"', '""') + '"'
    table = '"' + HOSTILE_TABLE.replace('"', '""') + '"'
    templates = [
        "$$ '); DROP TABLE victim; -- {" + HOSTILE_COLUMN + "}",
        "x:{id}'); DROP TABLE victim; --",
        "$body$ %s %I \\ {id} ''",
    ]
    await pg.execute("CREATE TABLE victim (id int); INSERT INTO victim VALUES (1)")
    ops: list[Op] = [
        """INSERT INTO {t} (id, {c}) VALUES (1, $$v'"{id}$$)""".replace("{c}", col),
        "UPDATE {t} SET {c} = 'w'".replace("{c}", col),
        "DELETE FROM {t}",
    ]
    notify, watched = await run_both(pg, f"id int PRIMARY KEY, {col} text", templates, ops, table)
    assert watched == notify
    assert notify[0][0][0] == "$$ '); DROP TABLE victim; -- v'\"{id}"
    assert await pg.fetchval("SELECT count(*) FROM victim") == 1


async def test_schema_change_fails_loudly_until_watch_runs_again(pg: asyncpg.Connection) -> None:
    """The generated code names its columns: a renamed template or key column fails the write
    with Postgres' error naming the column; running watch() again fixes it."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY, owner int)")
    await watch(pg, "t", ["u:{owner}"], "{INSERT,UPDATE,DELETE}")
    await pg.execute("ALTER TABLE t RENAME owner TO author")
    with pytest.raises(asyncpg.UndefinedColumnError, match='record "new" has no field "owner"'):
        await pg.execute("INSERT INTO t VALUES (1, 7)")
    await watch(pg, "t", ["u:{author}"], "{INSERT,UPDATE,DELETE}")
    await pg.execute("INSERT INTO t VALUES (1, 7)")
    assert [c for c, _ in await events(pg)] == ["u:7"]

    await pg.execute("ALTER TABLE t RENAME id TO key")
    with pytest.raises(asyncpg.UndefinedColumnError, match='record "new" has no field "id"'):
        await pg.execute("INSERT INTO t VALUES (2, 7)")
    await watch(pg, "t", ["u:{author}"], "{INSERT,UPDATE,DELETE}")
    await pg.execute("INSERT INTO t VALUES (2, 7)")
    assert await events(pg) == [("u:7", '{"id": 2, "op": "INSERT", "table": "t"}')]
