"""Write-path cost: pgbench TPS of a one-row INSERT at 64 clients, durable commits.

Variants on the same table, one after another on the same private Postgres
(fsync, synchronous_commit, full_page_writes on):

- ``plain``: no trigger;
- ``pgcast-notify``: ``pgcast.notify_trigger('wp')``, listener in notify mode;
- ``pgcast-poll``: the same trigger, ``pgcast.notify = off``, listener polling;
- ``classic``: a per-row ``pg_notify('wp', row json)`` trigger with one LISTENer.

The pgcast variants run with the real listener draining the outbox to Redis.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from bench.contenders import Pgcast
from bench.env import BenchEnv

PGBENCH_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
SCRIPT = "\\set v random(1, 100000)\nINSERT INTO wp (v, note) VALUES (:v, 'pgbench row');\n"
SETUP = """
CREATE TABLE IF NOT EXISTS wp (id bigserial PRIMARY KEY, v int NOT NULL, note text);
CREATE OR REPLACE FUNCTION wp_classic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('wp', json_build_object('id', NEW.id, 'v', NEW.v)::text);
RETURN NULL; END $$;
DROP TRIGGER IF EXISTS wp_event ON wp;
TRUNCATE wp;
DELETE FROM pgcast.outbox;
"""
TRIGGERS = {
    "plain": None,
    "pgcast-notify": "pgcast.notify_trigger('wp')",
    "pgcast-poll": "pgcast.notify_trigger('wp')",
    "classic": "wp_classic()",
}


def pgbench_binary() -> str:
    for directory in PGBENCH_DIRS:
        candidate = Path(directory) / "pgbench"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("pgbench")
    if found is None:
        raise FileNotFoundError("pgbench not found (Debian: postgresql-contrib / postgresql-15)")
    return found


def pgbench(env: BenchEnv, clients: int, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(SCRIPT)
    argv = [pgbench_binary(), "-n", "-T", str(int(seconds)), "-c", str(clients), "-j", "2"]
    argv += ["-f", fh.name, "-h", "127.0.0.1", "-p", str(env.pg.port), "-U", "postgres"]
    done = subprocess.run(
        [*argv, "postgres"], capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    Path(fh.name).unlink()
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", done.stdout)
    if tps is None:
        raise RuntimeError(f"no tps in pgbench output:\n{done.stdout}\n{done.stderr}")
    return {"tps": float(tps.group(1)), "latency_ms": float(latency.group(1)) if latency else -1}


async def prepare(env: BenchEnv, variant: str) -> None:
    conn = await asyncpg.connect(env.dsn)
    try:
        await conn.execute(SETUP)
        mode = "off" if variant == "pgcast-poll" else "on"
        await conn.execute(f"ALTER DATABASE postgres SET pgcast.notify = '{mode}'")
        trigger = TRIGGERS[variant]
        if trigger is not None:
            await conn.execute(
                "CREATE TRIGGER wp_event AFTER INSERT ON wp FOR EACH ROW "
                f"EXECUTE FUNCTION {trigger}"
            )
    finally:
        await conn.close()


async def outbox_backlog(env: BenchEnv) -> int:
    conn = await asyncpg.connect(env.dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pgcast.outbox"))
    finally:
        await conn.close()


async def run_variant(env: BenchEnv, variant: str, clients: int, seconds: float) -> dict[str, Any]:
    await prepare(env, variant)
    system = Pgcast(env)
    listener_conn = None
    try:
        if variant.startswith("pgcast"):
            mode = "poll" if variant == "pgcast-poll" else "notify"
            system.feeders.append(system.listener(PGCAST_NOTIFY_MODE=mode))
        elif variant == "classic":
            listener_conn = await asyncpg.connect(env.dsn)
            received = [0]
            await listener_conn.add_listener(
                "wp", lambda *_: received.__setitem__(0, received[0] + 1)
            )
        result: dict[str, Any] = await asyncio.to_thread(pgbench, env, clients, seconds)
        if variant.startswith("pgcast"):
            result["outbox_backlog_at_end"] = await outbox_backlog(env)
    finally:
        system.stop()
        if listener_conn is not None:
            await listener_conn.close()
    return {"variant": variant, "clients": clients, **result}


async def run_writepath(env: BenchEnv, *, clients: int, seconds: float) -> dict[str, Any]:
    rows = [await run_variant(env, v, clients, seconds) for v in TRIGGERS]
    conn = await asyncpg.connect(env.dsn)
    try:
        await conn.execute("ALTER DATABASE postgres RESET pgcast.notify")
    finally:
        await conn.close()
    plain = rows[0]["tps"]
    for row in rows:
        row["ratio_vs_plain"] = round(row["tps"] / plain, 3) if plain else None
    return {"clients": clients, "seconds": seconds, "variants": rows}
