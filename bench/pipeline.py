"""Pipeline benchmark: outbox -> Redis throughput, commit -> Redis latency, write-path cost.

``python -m bench.pipeline [--quick] [--json FILE]`` starts a private, durable
Postgres (fsync and synchronous_commit on) and a private Redis, runs a real
pgcast-listener process, and measures, in well under a minute:

1. drain: events/s the leader publishes from a pre-filled outbox backlog;
2. latency: commit acknowledged -> message on Redis pub/sub, p50/p99, at a
   paced 1,000 events/s (one event per transaction, 8 writer connections);
3. write path: pgbench TPS of a one-row INSERT into a small table with the
   pgcast trigger (notify mode, poll mode), as ratios of the plain table's TPS;
   with the listener draining on the same machine, and with the trigger alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from pgcast.keys import channel_keys, decode_live
from tests.servers import PgInstance, RedisInstance, free_port

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
PGBENCH_SCRIPT = "\\set v random(1, 100000)\nINSERT INTO wp (v, note) VALUES (:v, 'row');\n"
WP_TABLE = """
DROP TABLE IF EXISTS wp;
CREATE TABLE wp (id bigserial PRIMARY KEY, v int NOT NULL, note text);
"""
WP_TRIGGER = """
CREATE TRIGGER wp_pgcast AFTER INSERT OR UPDATE OR DELETE ON wp FOR EACH ROW
EXECUTE FUNCTION pgcast.notify_trigger('wp');
"""


def log(message: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


@contextlib.contextmanager
def servers() -> Iterator[tuple[PgInstance, RedisInstance]]:
    pg = PgInstance(extra_conf=dict(DURABLE)).init()
    rd = RedisInstance()
    try:
        pg.start()
        rd.start()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from listener.migrate import main; sys.exit(main())",
            ],
            env={**os.environ, "DATABASE_URL": pg.dsn},
            check=True,
            timeout=60,
        )
        yield pg, rd
    finally:
        rd.destroy()
        pg.destroy()


@contextlib.contextmanager
def listener(pg: PgInstance, rd: RedisInstance, **env: str) -> Iterator[None]:
    """A real pgcast-listener process for the duration of the block."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    full.update(
        DATABASE_URL=pg.dsn,
        REDIS_URL=rd.url,
        PGCAST_LISTENER_PORT=str(free_port()),
        PGCAST_LOG_LEVEL="warning",
        PGCAST_HISTORY_SIZE="1000",
        **env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from listener.cli import main; sys.exit(main())"],
        env=full,
    )
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def published_total(client: aioredis.Redis, channels: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for channel in channels:
        pipe.hget(channel_keys(channel).meta, "s")
    return sum(int(v or 0) for v in await pipe.execute())


async def poll_until(
    read: Callable[[], Awaitable[int]], done: Callable[[int], bool], every: float = 0.005
) -> int:
    """Read until ``done(value)``; the caller bounds the wait with asyncio.timeout."""
    while True:
        value = await read()
        if done(value):
            return value
        await asyncio.sleep(every)


async def bench_drain(pg: PgInstance, rd: RedisInstance, events: int) -> dict[str, Any]:
    """A backlog of ``events`` in the outbox, then a listener: its sustained publish rate."""
    channels = [f"drain:{i}" for i in range(10)]
    conn = await asyncpg.connect(pg.dsn)
    await conn.execute(
        "SELECT pgcast.publish('drain:' || (n % 10), jsonb_build_object('n', n, 'pad', 'x'))"
        " FROM generate_series(1, $1) AS n",
        events,
    )
    client = aioredis.Redis.from_url(rd.url)
    try:
        with listener(pg, rd, PGCAST_POLL_INTERVAL="0.2"):
            async with asyncio.timeout(60):
                await poll_until(lambda: published_total(client, channels), lambda n: n > 0)
                started = time.perf_counter()
                done = await poll_until(
                    lambda: published_total(client, channels), lambda n: n >= events
                )
                elapsed = time.perf_counter() - started
                await poll_until(
                    lambda: conn.fetchval("SELECT count(*) FROM pgcast.outbox"), lambda n: n == 0
                )
    finally:
        await client.aclose()
        await conn.close()
    return {"events": done, "seconds": round(elapsed, 3), "events_per_s": round(done / elapsed)}


async def _writer(
    dsn: str, rate: float, ids: range, start: float, commits: dict[int, float]
) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for i in ids:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await conn.execute("SELECT pgcast.publish('lat', jsonb_build_object('i', $1::int))", i)
            commits[i] = time.perf_counter()
    finally:
        await conn.close()


async def bench_latency(
    pg: PgInstance, rd: RedisInstance, rate: float, seconds: float
) -> dict[str, Any]:
    """Paced single-event transactions; latency = pub/sub arrival - commit acknowledged."""
    total, writers = int(rate * seconds), 8
    commits: dict[int, float] = {}
    arrivals: dict[int, float] = {}
    client = aioredis.Redis.from_url(rd.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(channel_keys("lat").live)
    try:
        with listener(pg, rd):
            await asyncio.sleep(1.0)  # the listener's start-up is not part of the measure
            start = time.perf_counter() + 0.1
            tasks = [
                asyncio.create_task(_writer(pg.dsn, rate, range(w, total, writers), start, commits))
                for w in range(writers)
            ]
            async with asyncio.timeout(seconds + 30):
                while len(arrivals) < total:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                    if message is not None:
                        now = time.perf_counter()
                        frame = orjson.loads(decode_live(message["data"]).frame)
                        arrivals[frame["data"]["i"]] = now
                await asyncio.gather(*tasks)
            wall = max(commits.values()) - start
    finally:
        await pubsub.aclose()
        await client.aclose()
    lat_ms = [(arrivals[i] - commits[i]) * 1000 for i in commits if i in arrivals]
    return {
        "events": total,
        "achieved_rate": round(total / wall),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2),
    }


def pgbench(pg: PgInstance, clients: int, seconds: int) -> float:
    binary = PGBENCH if os.access(PGBENCH, os.X_OK) else shutil.which("pgbench") or "pgbench"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    try:
        out = subprocess.run(
            [
                binary,
                "-n",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-f",
                script.name,
                pg.dsn,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        Path(script.name).unlink()
    match = re.search(r"tps = ([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no tps in pgbench output:\n{out}")
    return float(match.group(1))


WRITEPATH_VARIANTS = {
    # name: (trigger, pgcast.notify, listener mode or None for no listener running)
    "plain": (False, "on", None),
    "notify": (True, "on", "notify"),
    "poll": (True, "off", "poll"),
    "notify_trigger_only": (True, "on", None),
    "poll_trigger_only": (True, "off", None),
}


async def bench_writepath(
    pg: PgInstance, rd: RedisInstance, clients: int, seconds: int
) -> dict[str, Any]:
    """pgbench TPS of each variant; the ratios are against the plain table."""
    conn = await asyncpg.connect(pg.dsn)
    dbname = await conn.fetchval("SELECT current_database()")
    results: dict[str, Any] = {"clients": clients, "seconds_each": seconds}
    try:
        for variant, (trigger, notify, mode) in WRITEPATH_VARIANTS.items():
            await conn.execute(WP_TABLE)
            await conn.execute("DELETE FROM pgcast.outbox")
            await conn.execute("CHECKPOINT")
            if trigger:
                await conn.execute(WP_TRIGGER)
            await conn.execute(f"ALTER DATABASE \"{dbname}\" SET pgcast.notify = '{notify}'")
            running = (
                listener(pg, rd, PGCAST_NOTIFY_MODE=mode) if mode else contextlib.nullcontext()
            )
            with running:
                await asyncio.sleep(0.5)
                tps = await asyncio.to_thread(pgbench, pg, clients, seconds)
            results[f"{variant}_tps"] = round(tps)
            log(f"write path {variant}: {tps:.0f} TPS")
        await conn.execute(f'ALTER DATABASE "{dbname}" RESET pgcast.notify')
    finally:
        await conn.close()
    for variant in WRITEPATH_VARIANTS:
        if variant != "plain":
            results[f"{variant}_ratio"] = round(results[f"{variant}_tps"] / results["plain_tps"], 3)
    return results


async def main_async(quick: bool) -> dict[str, Any]:
    report: dict[str, Any] = {}
    with servers() as (pg, rd):
        log("drain throughput")
        report["drain"] = await bench_drain(pg, rd, 20_000 if quick else 50_000)
        log(f"drain: {report['drain']}")
        log("commit -> Redis latency at 1,000 events/s")
        report["latency"] = await bench_latency(pg, rd, 1000.0, 3.0 if quick else 10.0)
        log(f"latency: {report['latency']}")
        report["writepath"] = await bench_writepath(pg, rd, 8, 2 if quick else 5)
        log(f"write path: {report['writepath']}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    started = time.monotonic()
    report = asyncio.run(main_async(args.quick))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
