"""Helpers of the pgcast.watch tests: run the same operations under notify_trigger and watch."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

Outbox = list[tuple[str, str]]
Op = str | tuple[str, Sequence[object]]  # SQL with {t} for the table, and its arguments


async def events(pg: asyncpg.Connection) -> Outbox:
    rows = await pg.fetch("DELETE FROM pgcast.outbox RETURNING id, channel, data::text")
    return [(r["channel"], r["data"]) for r in sorted(rows, key=lambda r: r["id"])]


def array_sql(items: list[str]) -> str:
    quoted = ", ".join("'" + item.replace("'", "''") + "'" for item in items)
    return f"ARRAY[{quoted}]::text[]"


async def watch(pg: asyncpg.Connection, table: str, templates: list[str], events: str) -> str:
    sql = f"SELECT pgcast.watch('{table.replace(chr(39), chr(39) * 2)}', "
    return str(await pg.fetchval(sql + f"{array_sql(templates)}, '{events}')"))


async def run_both(
    pg: asyncpg.Connection, columns: str, templates: list[str], ops: list[Op], table: str = "t"
) -> tuple[list[Outbox], list[Outbox]]:
    """The same table in two schemas (so TG_TABLE_NAME is equal), one per trigger; the
    outbox after each operation (SQL with {t} for the table, and its arguments), for
    notify_trigger and for watch."""
    await pg.execute(f"""
        CREATE SCHEMA n; CREATE SCHEMA w;
        CREATE TABLE n.{table} ({columns}); CREATE TABLE w.{table} ({columns});
        CREATE TRIGGER pgcast AFTER INSERT OR UPDATE OR DELETE ON n.{table} FOR EACH ROW
        EXECUTE FUNCTION pgcast.notify_trigger({", ".join(quote(t) for t in templates)});
    """)
    results: list[list[Outbox]] = []
    try:
        await watch(pg, f"w.{table}", templates, "{INSERT,UPDATE,DELETE}")
        for schema in ("n", "w"):
            per_op = []
            for op in ops:
                sql, args = (op, ()) if isinstance(op, str) else op
                await pg.execute(sql.replace("{t}", f"{schema}.{table}"), *args)
                per_op.append(await events(pg))
            results.append(per_op)
    finally:
        await pg.execute("DROP SCHEMA n CASCADE; DROP SCHEMA w CASCADE")
    return results[0], results[1]


def quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
