"""Security review, SQL: injection through trigger templates, column values, identifiers, and
relayed NOTIFY channel names from configuration; hostile channels never wedge the listener.

Templates read columns through ``to_jsonb(row) ->> 'col'`` (never spliced into SQL)
and relayed channels are LISTENed as quoted identifiers: every attempt below must
end as plain text in a channel name, or as an error, with the victim table intact.
"""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from pgcast.keys import Layout
from tests.soak.harness import Listener, RedisClient, metric
from tests.waiting import eventually

SINGLE = Layout()  # the key names of one Redis (and Sentinel)

VICTIM = "CREATE TABLE victim (id int PRIMARY KEY); INSERT INTO victim VALUES (1);"
HOSTILE_VALUES = [
    "x'); DROP TABLE victim; --",
    'x"; DROP TABLE victim; --',
    "{id}",  # a value is never expanded again as a template
    "$1 %s %(x)s \\x00 \\\\",
    "};{",
    "ü👍",
]


async def outbox_channels(pg: asyncpg.Connection) -> list[str]:
    rows = await pg.fetch("DELETE FROM pgcast.outbox RETURNING id, channel")
    return [r["channel"] for r in sorted(rows, key=lambda r: r["id"])]


async def victim_intact(pg: asyncpg.Connection) -> bool:
    return bool(await pg.fetchval("SELECT count(*) = 1 FROM victim"))


async def test_column_values_land_verbatim_in_channel_names(pg: asyncpg.Connection) -> None:
    """SQL, quotes, braces and placeholders in a column value become plain channel text."""
    await pg.execute(VICTIM)
    await pg.execute(
        """CREATE TABLE room (id serial PRIMARY KEY, name text);
        CREATE TRIGGER t AFTER INSERT ON room FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('room:{name}', '{name}:{id}')"""
    )
    for value in HOSTILE_VALUES:
        row_id = await pg.fetchval("INSERT INTO room (name) VALUES ($1) RETURNING id", value)
        assert await outbox_channels(pg) == [f"room:{value}", f"{value}:{row_id}"]
    assert await victim_intact(pg)


@pytest.mark.parametrize(
    "template",
    [
        'x:{id"); DROP TABLE victim; --}',
        "x:{id}'); DROP TABLE victim; --",
        "x:{id) || (SELECT 1}",
        "x:{}",
    ],
)
async def test_templates_cannot_inject_sql(pg: asyncpg.Connection, template: str) -> None:
    """A template naming a column that does not exist fails the write; a literal tail stays text."""
    await pg.execute(VICTIM)
    await pg.execute("CREATE TABLE t (id int PRIMARY KEY)")
    await pg.execute(
        "CREATE TRIGGER t AFTER INSERT ON t FOR EACH ROW "
        f"EXECUTE FUNCTION pgcast.notify_trigger({quote(template)})"
    )
    try:
        await pg.execute("INSERT INTO t VALUES (1)")
    except asyncpg.UndefinedColumnError:
        assert await outbox_channels(pg) == []
    else:
        assert await outbox_channels(pg) == [template.replace("{id}", "1")]
    assert await victim_intact(pg)


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


async def test_hostile_identifiers_work_as_plain_names(pg: asyncpg.Connection) -> None:
    """Tables and columns named with quotes, spaces, braces and semicolons are just names."""
    await pg.execute(VICTIM)
    await pg.execute(
        """CREATE TABLE "we""ird; DROP TABLE victim; --" (
            "a b" int PRIMARY KEY, "x{y" text, "drop table victim" text);
        CREATE TRIGGER t AFTER INSERT ON "we""ird; DROP TABLE victim; --" FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('w:{a b}', 'v:{x{y}', 'd:{drop table victim}')"""
    )
    await pg.execute("""INSERT INTO "we""ird; DROP TABLE victim; --" VALUES (5, 'y', 'z')""")
    rows = await pg.fetch("SELECT channel, data::text FROM pgcast.outbox ORDER BY id")
    assert [r["channel"] for r in rows] == ["w:5", "v:y", "d:z"]
    data = orjson.loads(rows[0]["data"])
    assert data == {"table": 'we"ird; DROP TABLE victim; --', "op": "INSERT", "id": 5}
    assert await victim_intact(pg)


@pytest.mark.slow
async def test_invalid_channels_from_rows_are_dropped_without_wedging_the_drain(
    database_url: str, redis_url: str, redis_client: RedisClient, pg: asyncpg.Connection
) -> None:
    """Rows whose channel is a glob, has controls or is 10 KB are counted and skipped; the
    valid rows around them are published; log lines cannot be forged through a name."""
    await pg.execute(
        """CREATE TABLE item (id serial PRIMARY KEY, owner text);
        CREATE TRIGGER t AFTER INSERT ON item FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger('item:{owner}')"""
    )
    listener = Listener(database_url, redis_url).start()
    try:
        owners = ["before", "*", "a\nFORGED LOG LINE", "a\x85b", "x" * 10240, "after"]
        for owner in owners:
            await pg.execute("INSERT INTO item (owner) VALUES ($1)", owner)

        async def published(channel: str) -> bool:
            return bool(await redis_client.xlen(SINGLE.channel_keys(channel).history))

        await eventually(lambda: published("item:after"), 15, "the row after the bad ones")
        assert await published("item:before")
        text = await listener.metrics()
        assert metric(text, "pgcast_listener_events_total", result="invalid") == 4
        keys = {k async for k in redis_client.scan_iter(match="pgcast:{*}:hist")}
        assert keys == {
            SINGLE.channel_keys(f"item:{o}").history.encode() for o in ("before", "after")
        }
        assert "\nFORGED LOG LINE" not in listener.log()
        # The listener deletes published rows on its next fetch, after the Redis write.
        outbox_sql = "SELECT count(*) = 0 FROM pgcast.outbox"
        await eventually(lambda: pg.fetchval(outbox_sql), 15, "the outbox emptied")
    finally:
        listener.stop()


@pytest.mark.slow
async def test_relayed_notify_channels_are_quoted_identifiers(
    database_url: str, redis_url: str, redis_client: RedisClient, pg: asyncpg.Connection
) -> None:
    """PGCAST_RELAY_CHANNELS with SQL in a name: LISTENed verbatim, relayed, nothing executed."""
    await pg.execute(VICTIM)
    hostile = 'a"; DROP TABLE victim; --'
    listener = Listener(database_url, redis_url, PGCAST_RELAY_CHANNELS=f"{hostile},Orders").start()
    try:
        await eventually(lambda: _is_leader(listener), 15, "listener leads")
        for channel in (hostile, "Orders"):
            key = SINGLE.channel_keys(channel).history

            async def relayed(key: str = key, channel: str = channel) -> bool:
                await pg.execute("SELECT pg_notify($1, $2)", channel, '{"k": 1}')
                return bool(await redis_client.xlen(key))

            await eventually(relayed, 15, f"NOTIFY on {channel!r} relayed", interval=0.2)
        assert await victim_intact(pg)
        assert "Traceback" not in listener.log()
    finally:
        listener.stop()


async def _is_leader(listener: Listener) -> bool:
    return await listener.role() == "leader"
