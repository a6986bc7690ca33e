"""Write-path cost in instructions: what each trigger adds to a one-row INSERT transaction.

pgbench TPS on a shared 2-core machine moves by 10-30% between identical runs; this does
not. Each variant's table takes N and then 3N one-row INSERT transactions in a single-user
``postgres --single`` backend run under callgrind; the difference over 2N is the
instructions one transaction costs, set-up and first-call compilation cancelled out.
It counts the backend's user-space work only (no kernel, no network, no pgbench, no lock
waits): the part of the write path the SQL decides. Needs valgrind (Debian: apt-get
install valgrind). Run with::

    python -m bench.instructions [--transactions 300] [--variants plain,noop,...]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
from typing import Any

import asyncpg

from bench.env import migrate
from bench.pipeline_writepath import FUNCTIONS, TRIGGERS, WAKE_UP_AND_END
from tests.servers import PgInstance, as_postgres_user, pg_binary

# Each variant's table and how its trigger is made: a TRIGGERS key, "watch", or None.
VARIANTS: dict[str, str | None] = {
    "plain": None,
    "noop_trigger": "noop",  # a PL/pgSQL trigger that does nothing
    "outbox_row_only": "outbox",  # one constant outbox row, no event data, no wake-up
    "minimal_event": "minimal",  # a constant row and the wake-up: the least for an event
    "watch": "watch",  # pgcast.watch('wp', '{wp}', '{INSERT}')
    "notify_trigger": "pgcast",  # pgcast.notify_trigger('wp')
    "classic": "classic",  # a per-row pg_notify trigger
    # Not a pgcast mode: watch's event and wake-up, written as a transactional WAL message
    # (what a listener reading a logical replication slot would consume) instead of an
    # outbox row: what such a redesign would save the writer.
    "wal_message": "wal_message",
}
WAL_MESSAGE_TRIGGER = (
    """
CREATE OR REPLACE FUNCTION wp_wal_message() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lsn pg_lsn;
BEGIN
    lsn := pg_logical_emit_message(true, 'pgcast', jsonb_build_object(
        'table', TG_TABLE_NAME, 'op', TG_OP, 'id', NEW.id)::text);
"""
    + WAKE_UP_AND_END
)


async def _prepare(dsn: str, variants: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(FUNCTIONS)
        for name in variants:
            table = f"wp_{name}"
            await conn.execute(
                f"CREATE TABLE {table} (id bigserial PRIMARY KEY, v int NOT NULL, note text)"
            )
            trigger = VARIANTS[name]
            if trigger == "watch":
                await conn.execute(f"SELECT pgcast.watch('{table}', '{{wp}}', '{{INSERT}}')")
            elif trigger == "wal_message":
                await conn.execute(WAL_MESSAGE_TRIGGER)
                await conn.execute(
                    f"CREATE TRIGGER wp_event AFTER INSERT ON {table} FOR EACH ROW "
                    "EXECUTE FUNCTION wp_wal_message()"
                )
            elif trigger is not None:
                await conn.execute(
                    f"CREATE TRIGGER wp_event AFTER INSERT ON {table} FOR EACH ROW "
                    + TRIGGERS[trigger]
                )
    finally:
        await conn.close()


def _instructions(pg: PgInstance, table: str, transactions: int) -> int:
    """Instructions a single-user backend runs for ``transactions`` one-row INSERTs."""
    postgres = pg_binary("postgres")
    assert postgres is not None
    insert = f"INSERT INTO {table} (v, note) VALUES ({{}}, 'row');\n"  # noqa: S608 (ours)
    script = "SET synchronous_commit = off;\n" + "".join(map(insert.format, range(transactions)))
    out = pg.root / f"callgrind.{table}.{transactions}"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    argv += [postgres, "--single", "-D", str(pg.datadir), "-c", "fsync=off", "postgres"]
    done = subprocess.run(
        as_postgres_user(argv), input=script, capture_output=True, text=True, timeout=600
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None or "ERROR" in done.stdout:
        raise RuntimeError(f"callgrind run failed ({done.returncode}):\n{done.stdout[-2000:]}")
    out.unlink(missing_ok=True)
    return int(found.group(1))


def measure(variants: list[str], transactions: int) -> dict[str, Any]:
    pg = PgInstance().init()
    pg.start()
    try:
        migrate(pg.dsn)
        asyncio.run(_prepare(pg.dsn, variants))
        pg.stop()  # the single-user backend needs the data directory to itself
        per_tx = {}
        for name in variants:
            few = _instructions(pg, f"wp_{name}", transactions)
            many = _instructions(pg, f"wp_{name}", 3 * transactions)
            per_tx[name] = (many - few) / (2 * transactions)
            print(f"  {name:18s} {per_tx[name] / 1000:7.1f}k instructions/transaction", flush=True)
    finally:
        pg.destroy()
    return {"transactions": transactions, "instructions_per_transaction": per_tx}


def table(report: dict[str, Any]) -> str:
    per_tx = report["instructions_per_transaction"]
    base = per_tx.get("plain")
    lines = ["| variant | k instructions / transaction | × plain | added by the trigger |"]
    lines.append("|---|---|---|---|")
    for name, value in per_tx.items():
        ratio = f"{value / base:.2f}" if base else "-"
        added = f"{(value - base) / 1000:+.1f}k" if base else "-"
        lines.append(f"| {name} | {value / 1000:.1f} | {ratio} | {added} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transactions", type=int, default=300, help="N (300)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.transactions < 1:
        parser.error("--transactions must be at least 1")
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind (Debian: apt-get install valgrind)")
        return 2
    report = measure(variants, args.transactions)
    print(table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
