"""sql/: pgcast.notify_trigger() fills channel templates from rows and writes the event."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

SCHEMA = """
CREATE TABLE "Article" (
    id serial PRIMARY KEY, "authorId" int, team text, title text
);
CREATE TRIGGER pgcast AFTER INSERT OR UPDATE OR DELETE ON "Article" FOR EACH ROW
EXECUTE FUNCTION pgcast.notify_trigger('articles', 'user:{authorId}', 'team:{team}/x');
"""


async def _events(pg: asyncpg.Connection) -> list[tuple[str, dict[str, object]]]:
    rows = await pg.fetch("DELETE FROM pgcast.outbox RETURNING id, channel, data::text")
    return [(r["channel"], orjson.loads(r["data"])) for r in sorted(rows, key=lambda r: r["id"])]


async def test_insert_update_delete_reach_every_templated_channel(pg: asyncpg.Connection) -> None:
    """INSERT, UPDATE and DELETE each publish to every template, with table, op and id."""
    await pg.execute(SCHEMA)
    await pg.execute("""INSERT INTO "Article" ("authorId", team, title) VALUES (7, 'red', 'a')""")
    insert = {"table": "Article", "op": "INSERT", "id": 1}
    assert await _events(pg) == [
        ("articles", insert),
        ("user:7", insert),
        ("team:red/x", insert),
    ]
    await pg.execute("""UPDATE "Article" SET title = 'b' WHERE id = 1""")
    update = {"table": "Article", "op": "UPDATE", "id": 1, "changed": ["title"]}
    assert await _events(pg) == [
        ("articles", update),
        ("user:7", update),
        ("team:red/x", update),
    ]
    await pg.execute("""DELETE FROM "Article" WHERE id = 1""")
    delete = {"table": "Article", "op": "DELETE", "id": 1}
    assert await _events(pg) == [
        ("articles", delete),
        ("user:7", delete),
        ("team:red/x", delete),
    ]


async def test_null_template_column_publishes_nothing_to_that_template(
    pg: asyncpg.Connection,
) -> None:
    """A NULL column skips its template only; the other templates still publish."""
    await pg.execute(SCHEMA)
    await pg.execute("""INSERT INTO "Article" ("authorId", team) VALUES (NULL, 'red')""")
    assert [channel for channel, _ in await _events(pg)] == ["articles", "team:red/x"]


async def test_update_moving_a_row_publishes_to_old_and_new_channel(pg: asyncpg.Connection) -> None:
    """When a template's value changes, the old channel learns the row left it."""
    await pg.execute(SCHEMA)
    await pg.execute("""INSERT INTO "Article" ("authorId", team) VALUES (1, 'red')""")
    await _events(pg)
    await pg.execute("""UPDATE "Article" SET "authorId" = 2""")
    channels = [channel for channel, _ in await _events(pg)]
    assert channels == ["articles", "user:2", "user:1", "team:red/x"]


async def test_template_values_are_data_never_sql(pg: asyncpg.Connection) -> None:
    """Column values with quotes or SQL are filled in as text, verbatim."""
    await pg.execute(SCHEMA)
    team = '\'); DROP TABLE "Article"; --{title}'
    await pg.execute("""INSERT INTO "Article" ("authorId", team) VALUES (1, $1)""", team)
    channels = [channel for channel, _ in await _events(pg)]
    assert channels[-1] == f"team:{team}/x"
    assert await pg.fetchval("""SELECT count(*) FROM "Article\"""") == 1


async def test_unknown_template_column_is_an_error(pg: asyncpg.Connection) -> None:
    """A template naming a column the table lacks fails loudly instead of never publishing."""
    await pg.execute("""
        CREATE TABLE t (id int PRIMARY KEY);
        CREATE TRIGGER pgcast AFTER INSERT ON t FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('t:{nope}');
    """)
    with pytest.raises(asyncpg.UndefinedColumnError, match="nope"):
        await pg.execute("INSERT INTO t VALUES (1)")


async def test_composite_key_no_key_and_default_channel(pg: asyncpg.Connection) -> None:
    """id is an object for a composite key, null without a key; no argument = table name."""
    await pg.execute("""
        CREATE TABLE pair (a int, b text, PRIMARY KEY (b, a));
        CREATE TABLE loose (v int);
        CREATE TRIGGER pgcast AFTER INSERT ON pair FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger();
        CREATE TRIGGER pgcast AFTER INSERT ON loose FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('loose');
        INSERT INTO pair VALUES (1, 'x');
        INSERT INTO loose VALUES (5);
    """)
    assert await _events(pg) == [
        ("pair", {"table": "pair", "op": "INSERT", "id": {"a": 1, "b": "x"}}),
        ("loose", {"table": "loose", "op": "INSERT", "id": None}),
    ]


async def test_statement_level_trigger_is_refused(pg: asyncpg.Connection) -> None:
    """notify_trigger is a row trigger: a statement-level one raises a clear error."""
    await pg.execute("""
        CREATE TABLE s (id int PRIMARY KEY);
        CREATE TRIGGER pgcast AFTER INSERT ON s FOR EACH STATEMENT
        EXECUTE FUNCTION pgcast.notify_trigger('s');
    """)
    with pytest.raises(asyncpg.RaiseError, match="FOR EACH ROW"):
        await pg.execute("INSERT INTO s VALUES (1)")


async def test_rolled_back_write_leaves_no_event(pg: asyncpg.Connection) -> None:
    """The outbox row belongs to the writing transaction: a rollback removes it."""
    await pg.execute(SCHEMA)
    tx = pg.transaction()
    await tx.start()
    await pg.execute("""INSERT INTO "Article" ("authorId") VALUES (1)""")
    await tx.rollback()
    assert await _events(pg) == []


async def test_key_cache_filled_in_a_rolled_back_transaction_is_refilled(
    pg: asyncpg.Connection,
) -> None:
    """The session's key cache reverts to '' with the transaction that filled it; the next
    write looks the key up again instead of failing."""
    await pg.execute(SCHEMA)
    tx = pg.transaction()
    await tx.start()
    await pg.execute("""INSERT INTO "Article" ("authorId") VALUES (1)""")
    await tx.rollback()
    await pg.execute("""INSERT INTO "Article" ("authorId") VALUES (2)""")
    assert [data["id"] for _, data in await _events(pg)] == [2, 2]
