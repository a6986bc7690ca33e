"""The WAL path's events (pgoutput decoded, listener.wal_events) equal the trigger path's
outbox rows, row for row, on real Postgres: the slot is read with the SQL interface."""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.pgoutput import Column, Relation, decode
from listener.wal_events import (
    WATCHED_SQL,
    Event,
    EventBuilder,
    Invalid,
    Item,
    Watch,
    load_watches,
    serving_problem,
)

Op = str | tuple[str, tuple[object, ...]]


async def start_capture(pg: asyncpg.Connection, tables: str) -> str:
    """A publication and a pgoutput slot (named after the database: slots are cluster-wide)
    created before the writes; returns the slot name."""
    slot = "s_" + str(await pg.fetchval("SELECT current_database()"))
    # the test server runs synchronous_commit=off; a slot decodes only flushed WAL
    await pg.execute("SET synchronous_commit = on")
    await pg.execute(f"CREATE PUBLICATION p FOR TABLE {tables}")
    await pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    return slot


async def wal_items(pg: asyncpg.Connection, slot: str) -> list[Item]:
    await pg.execute(
        "CREATE TABLE IF NOT EXISTS pgcast.watched"
        " (rel oid PRIMARY KEY, channels text[] NOT NULL, events text[] NOT NULL)"
    )
    builder = EventBuilder(load_watches(await pg.fetch(WATCHED_SQL)))
    rows = await pg.fetch(
        "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, 'proto_version',"
        " '1', 'publication_names', 'p', 'messages', 'true')",
        slot,
    )
    return [item for row in rows for item in builder.feed(decode(row["data"]))]


async def outbox(pg: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await pg.fetch("SELECT channel, data::text FROM pgcast.outbox ORDER BY id")
    return [(r["channel"], r["data"]) for r in rows]


def as_pairs(items: list[Item]) -> list[tuple[str, str]]:
    assert not [i for i in items if isinstance(i, Invalid)]
    return [(i.channel, i.data.decode()) for i in items if isinstance(i, Event)]


async def compare(
    pg: asyncpg.Connection,
    columns: str,
    templates: list[str],
    ops: Sequence[Op],
    zone: str = "Asia/Kolkata",
    create: str = "CREATE TABLE t ({}); ALTER TABLE t REPLICA IDENTITY FULL",
) -> list[tuple[str, str]]:
    """Watch table t (REPLICA IDENTITY FULL), run ops, and check both paths agree."""
    await pg.execute(f"SET TimeZone = '{zone}'")  # writer and walsender alike
    await pg.execute(create.format(columns))
    await pg.execute("SELECT pgcast.watch('t', $1::text[])", templates)
    slot = await start_capture(pg, "t")
    for op in ops:
        sql, args = (op, ()) if isinstance(op, str) else op
        await pg.execute(sql, *args)
    items = await wal_items_for(pg, slot, templates)
    expected = await outbox(pg)
    assert as_pairs(items) == expected
    return expected


async def wal_items_for(pg: asyncpg.Connection, slot: str, templates: list[str]) -> list[Item]:
    await pg.execute(
        "CREATE TABLE IF NOT EXISTS pgcast.watched"
        " (rel oid PRIMARY KEY, channels text[] NOT NULL, events text[] NOT NULL)"
    )
    await pg.execute(
        "INSERT INTO pgcast.watched VALUES ('t'::regclass, $1, '{INSERT,UPDATE,DELETE}')"
        " ON CONFLICT DO NOTHING",
        templates,
    )
    return await wal_items(pg, slot)


TYPES = """id int PRIMARY KEY, s text, v varchar(10), c char(4), u uuid, b bool, i2 int2,
    i8 int8, n numeric, f4 float4, f8 float8, o oid, j json, jb jsonb, d date, ts timestamp,
    tz timestamptz, tm time, ttz timetz, by bytea, iv interval, ai int[], at text[],
    an numeric[], aj jsonb[], atz timestamptz[], af float8[], m money, "Odd col" text"""

TYPE_ROWS = [
    "INSERT INTO t (id) VALUES (1)",
    """INSERT INTO t VALUES (2, E'q"\\\\\\b\\f\\n\\r\\t\\x01\\x1f\\x7f é ☃ 😀', 'x', 'ab',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true, -2, 9223372036854775807, 1.50,
        1.5e-7, 1e+20, 4294967295, '{"b": 1, "a": [1e2, 1.0, -0, "x"], "b": {"é": null},
         "aa": true}', '{"k": 1.0, "kk": "\\u00e9"}', '0044-03-15 BC', '2024-01-02 03:04:05.123',
        '2024-01-02 03:04:05.123456+00', '12:34:56.5', '12:00+05:30', '\\x00ff', '1 day 02:00',
        '{{1,NULL},{3,4}}', ARRAY['a b', 'NULL', '', 'x"y', 'back\\sl', NULL, 'é,}'],
        '{1.0,NaN,-Infinity}', ARRAY['{"b": 2, "a": 1}', 'null']::jsonb[],
        '{"2024-01-02 03:04:05+00",infinity}', '{1e+20,-0,NaN,0.1}', 12.5, 'odd')""",
    """INSERT INTO t (id, n, f4, f8, d, ts, tz, j) VALUES (3, 'NaN', 'NaN', '-Infinity',
        'infinity', '-infinity', 'infinity', '[]'), (4, 'Infinity', '-0', '-0', '2024-02-29',
        '0044-03-15 10:00 BC', '1800-01-01 00:00+00', '"s"'),
        (5, -0.000, 3.4028235e38, 1.7976931348623157e308, '10000-01-01',
         '10000-01-01 00:00', '2024-06-01 12:00-03', '{"a":{"b":[{"c":1E-3}]}}')""",
    'UPDATE t SET n = 1.500, j = \'{"a": [100, 1, 0, "x"], "aa": true, "b": {}}\' WHERE id = 2',
    "UPDATE t SET s = 'new', f8 = -f8, tz = tz + interval '1 hour', \"Odd col\" = NULL",
    "UPDATE t SET ai = '{{1,NULL},{3,4}}', an = '{1.00,NaN,-Infinity}', b = NOT b",
    "DELETE FROM t WHERE id IN (1, 3)",
]


async def test_column_types_render_as_to_jsonb(pg: asyncpg.Connection) -> None:
    """Every supported type's text output becomes to_jsonb's value; jsonb equality for "changed"."""
    rows = await compare(pg, TYPES, ["all", "s:{s}", "f:{f8}/{tz}", "j:{j}"], TYPE_ROWS)
    assert len(rows) > 20


async def test_templates_old_channels_and_null_values(pg: asyncpg.Connection) -> None:
    """Constant and templated channels, NULL values skipped, the old channel on UPDATE."""
    rows = await compare(
        pg,
        "id int PRIMARY KEY, org int, owner text, tag text",
        ["const", "org:{org}", "u:{owner}/{tag}", "{tag}{", "x{org}y{owner}"],
        [
            "INSERT INTO t VALUES (1, 7, 'ann', 'a'), (2, NULL, NULL, 'b'), (3, 8, 'bo', NULL)",
            "UPDATE t SET org = 9 WHERE id = 1",
            "UPDATE t SET owner = NULL WHERE id = 1",
            "UPDATE t SET tag = tag",
            "UPDATE t SET owner = 'cy', tag = 'c' WHERE id = 3",
            "DELETE FROM t",
        ],
    )
    assert [c for c, d in rows if '"UPDATE"' in d][:3] == ["const", "org:9", "org:7"]


async def test_table_name_channel_composite_and_changed_keys(pg: asyncpg.Connection) -> None:
    """No templates: the table's name; a composite key; an UPDATE that changes the key."""
    await compare(
        pg,
        'a int, "B" text, v int, "Zeta" int, _u int, PRIMARY KEY (a, "B")',
        [],
        [
            "INSERT INTO t VALUES (1, 'x', 1, 2, 3), (2, 'y', NULL, NULL, NULL)",
            "UPDATE t SET a = a + 10, v = 5",
            "UPDATE t SET \"B\" = 'z' WHERE a = 11",
            "DELETE FROM t WHERE a = 12",
        ],
    )


async def test_no_primary_key_gives_null_id(pg: asyncpg.Connection) -> None:
    """A table without a primary key: "id" is null."""
    await compare(
        pg,
        "x int, y text",
        ["c:{y}"],
        ["INSERT INTO t VALUES (1, 'a')", "UPDATE t SET y = 'b'", "DELETE FROM t"],
    )


async def test_unchanged_toast_and_transactions(pg: asyncpg.Connection) -> None:
    """An unchanged TOASTed value comes from the old row; several changes in one
    transaction keep their order; a rolled-back transaction never appears."""
    big = "".join(f"{i:x}é" for i in range(60_000))  # > 2 kB and badly compressible
    await compare(
        pg,
        "id int PRIMARY KEY, big text, n int",
        ["n:{n}", "b:{big}"],
        [
            ("INSERT INTO t VALUES (1, $1, 1)", (big,)),
            "UPDATE t SET n = 2",
            "BEGIN; UPDATE t SET n = 3; INSERT INTO t VALUES (2, 'small', 5); "
            "DELETE FROM t WHERE id = 2; COMMIT",
            "BEGIN; INSERT INTO t VALUES (9, 'gone', 9); ROLLBACK",
            "UPDATE t SET big = big || 'x'",
        ],
    )


async def test_messages_and_outbox_rows(pg: asyncpg.Connection) -> None:
    """pgcast logical messages and pgcast.outbox inserts become events in commit order;
    bad contents come back as Invalid, other prefixes are ignored."""
    slot = await start_capture(pg, "pgcast.outbox")
    huge = json.dumps({"k": "x" * 1_000_000})
    await pg.execute("""BEGIN;
        SELECT pg_logical_emit_message(true, 'pgcast', 'chan' || E'\\n' || '{"a": 1}');
        INSERT INTO pgcast.outbox (channel, data) VALUES ('[control]', '{"x": [1, 2]}');
        SELECT pg_logical_emit_message(true, 'other', 'ignored');
        SELECT pg_logical_emit_message(true, 'pgcast', 'no newline');
        SELECT pg_logical_emit_message(true, 'pgcast', '\\x6368ff0a7b7d'::bytea);
        COMMIT""")
    await pg.execute("SELECT pg_logical_emit_message(true, 'pgcast', 'big' || E'\\n' || $1)", huge)
    await pg.execute("BEGIN; SELECT pg_logical_emit_message(true, 'pgcast', E'r\\n{}'); ROLLBACK")
    items = await wal_items(pg, slot)
    ids = await pg.fetch("SELECT id FROM pgcast.outbox")
    assert [type(i) for i in items] == [Event, Event, Invalid, Invalid, Event]
    first, control, no_newline, bad_utf8, large = items
    assert first == Event("chan", b'{"a": 1}')
    assert control == Event("[control]", b'{"x": [1, 2]}', ids[0]["id"])
    assert no_newline == Invalid(
        "pgcast message without a newline after the channel", b"no newline"
    )
    assert bad_utf8 == Invalid("pgcast message is not UTF-8", b"ch\xff\n{}")
    assert large == Event("big", huge.encode())


TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
NUMBERS = st.decimals(allow_nan=False, places=3, min_value=-(10**9), max_value=10**9)
FLOATS = st.floats(width=64)
JSONS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(TEXT, NUMBERS, FLOATS, JSONS), min_size=1, max_size=8))
async def test_generated_values_match(
    pg: asyncpg.Connection, rows: list[tuple[object, ...]]
) -> None:
    """Random text, numeric, float8 and json values give the same events on both paths."""
    await pg.execute(
        "DROP PUBLICATION IF EXISTS p; DROP TABLE IF EXISTS t; DELETE FROM pgcast.outbox"
    )
    await pg.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE database = current_database()"
    )
    ops: list[Op] = [
        ("INSERT INTO t VALUES ($1, $2, $3::text::numeric, $4::text::float8, $5::json)",
         (n, s, str(d), repr(f), json.dumps(j)))
        for n, (s, d, f, j) in enumerate(rows)
    ]  # fmt: skip
    ops += ["UPDATE t SET n = n * 1.0, f = -f, j = j::jsonb::json", "DELETE FROM t"]
    await compare(pg, "id int PRIMARY KEY, s text, n numeric, f float8, j json", ["{s}"], ops)


async def test_partitions_and_another_zone(pg: asyncpg.Connection) -> None:
    """A partitioned table's changes arrive per partition ("table" names it, as the
    trigger's TG_TABLE_NAME); a zone with a half-hour offset."""
    create = """CREATE TABLE t ({}) PARTITION BY RANGE (id);
        CREATE TABLE t_low PARTITION OF t FOR VALUES FROM (0) TO (10);
        CREATE TABLE t_high PARTITION OF t FOR VALUES FROM (10) TO (100);
        ALTER TABLE t_low REPLICA IDENTITY FULL; ALTER TABLE t_high REPLICA IDENTITY FULL"""
    rows = await compare(
        pg,
        "id int PRIMARY KEY, at timestamptz",
        ["p:{at}"],
        [
            "INSERT INTO t VALUES (1, '2024-03-10 12:00+00'), (11, '1900-01-01 00:00+00')",
            "UPDATE t SET at = at + interval '1 minute'",
            "DELETE FROM t",
        ],
        zone="America/St_Johns",
        create=create,
    )
    assert rows[0] == ("p:2024-03-10T09:30:00-02:30", rows[0][1])


async def test_declarations_needing_full_identity(pg: asyncpg.Connection) -> None:
    """With DEFAULT identity, UPDATE and non-key DELETE declarations are refused by
    serving_problem and their changes come back Invalid; INSERT and key-only DELETE work."""
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY, g int, s text)")
    await pg.execute("SELECT pgcast.watch('t', ARRAY['c:{id}'])")
    slot = await start_capture(pg, "t")
    await pg.execute("INSERT INTO t VALUES (1, 2, 'a'); UPDATE t SET s = 'b'; DELETE FROM t")
    items = await wal_items(pg, slot)
    builder = EventBuilder(load_watches(await pg.fetch(WATCHED_SQL)))
    expected = await outbox(pg)
    assert [type(i) for i in items] == [Event, Invalid, Event]
    assert isinstance(items[1], Invalid)
    assert "REPLICA IDENTITY FULL" in items[1].reason
    assert [(items[0].channel, items[0].data.decode())] == expected[:1]  # type: ignore[union-attr]
    assert [(items[2].channel, items[2].data.decode())] == expected[2:]  # type: ignore[union-attr]
    relation = Relation(1, "public", "t", "d", (Column(1, "id", 23, -1), Column(0, "g", 23, -1)))
    watch = Watch(("c:{g}",), frozenset({"INSERT"}), ("id",), ("g", "id"))
    assert serving_problem(relation, watch) is None
    assert "outside the replica identity" in str(
        serving_problem(relation, Watch(("c:{g}",), frozenset({"DELETE"}), ("id",), ("g", "id")))
    )
    assert "not published" in str(
        serving_problem(relation, Watch(("c:{gen}",), frozenset({"INSERT"}), ("id",), ()))
    )
    assert builder.problem(12345) is None
