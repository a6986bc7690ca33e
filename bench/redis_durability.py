"""What the Redis durability work costs the drain, and where gateways should subscribe.

``python -m bench.redis_durability [--quick] [--json FILE]`` measures, on one private
durable Postgres with real pgcast-listener processes (bench/pipeline.py's machinery),
the leader's drain rate (events/s from a pre-filled outbox backlog until the outbox is
empty) for ``baseline`` (the code before the per-channel watermark, commit aea1c78),
``watermark`` (today's code, one Redis) and ``watermark+wait1`` (a primary + one replica,
PGCAST_REDIS_MIN_REPLICAS=1), on one channel and on 2,000 channels; rounds interleaved,
medians reported. Each run gets a fresh database (a clone of one migrated template) and
a flushed Redis. Then bench/replica_subscribe.py: the primary's CPU per PUBLISH with 200
subscribers on it or on its replica.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench.env import migrate
from bench.pipeline import DURABLE, ListenerProcess, listener, poll_until, published_total
from bench.replica_subscribe import bench_subscribe, subscribe_table
from pgcast.keys import Layout
from tests.servers import PgInstance, RedisInstance, free_port_below

SINGLE = Layout()  # the key names of one Redis

BASELINE_COMMIT = "aea1c78"
TEMPLATE_DB = "drain_template"
ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("one", "many")
# The backlog: event n = 1..$1 on "feed" (shape one) or on "user:<n % 2000>" (many).
FILL = (
    "SELECT pgcast.publish(CASE $2::text WHEN 'one' THEN 'feed' ELSE 'user:' || (n % 2000) END,"
    " jsonb_build_object('n', n, 'pad', 'x')) FROM generate_series(1, $1) AS n"
)


def channel_of(shape: str, n: int) -> str:
    """Event n's channel, as FILL names it."""
    return "feed" if shape == "one" else f"user:{n % 2000}"


@dataclass(frozen=True)
class Variant:
    name: str
    old_code: bool  # the listener from the baseline commit's tree
    min_replicas: int  # PGCAST_REDIS_MIN_REPLICAS, and whether it publishes to the primary


VARIANTS = (
    Variant("baseline", True, 0),
    Variant("watermark", False, 0),
    Variant("watermark+wait1", False, 1),
)


def log(message: str) -> None:
    print(f"[redis_durability {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def baseline_tree(given: Path | None) -> Iterator[Path]:
    """The baseline's listener/ and pgcast/: ``given`` (a checkout), else exported to a temp dir."""
    if given is not None:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix="pgcast-baseline-"))
    try:
        archive = subprocess.run(
            ["git", "archive", BASELINE_COMMIT, "listener", "pgcast"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Rig:
    """One durable Postgres, a lone Redis, and a primary with one replica."""

    pg: PgInstance
    single: RedisInstance
    primary: RedisInstance
    replica: RedisInstance
    old_tree: Path

    def dsn(self, database: str) -> str:
        return self.pg.dsn.rsplit("/", 1)[0] + "/" + database


@contextlib.asynccontextmanager
async def rig(old_tree: Path) -> AsyncIterator[Rig]:
    pg = PgInstance(extra_conf=dict(DURABLE)).init()
    single = RedisInstance(port=free_port_below())
    # Full syncs at once (the default waits 5 s for more replicas).
    primary = RedisInstance(port=free_port_below(), extra_args=("--repl-diskless-sync-delay", "0"))
    replica = RedisInstance(
        port=free_port_below(), extra_args=("--replicaof", "127.0.0.1", str(primary.port))
    )
    try:
        pg.start()
        for server in (single, primary, replica):
            server.start()
        run = Rig(pg, single, primary, replica, old_tree)
        admin = await asyncpg.connect(pg.dsn)
        try:
            await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await admin.close()
        # Today's migrations: the baseline's are the same files less 004_watermark.sql,
        # a table its listener never touches.
        migrate(run.dsn(TEMPLATE_DB))
        await wait_replica_synced(primary)
        yield run
    finally:
        for server in (replica, primary, single):
            server.destroy()
        pg.destroy()


async def wait_replica_synced(primary: RedisInstance) -> None:
    """WAIT until the replica acknowledges everything the primary has written."""
    client = aioredis.Redis.from_url(primary.url)
    try:
        async with asyncio.timeout(30):
            while await client.wait(1, 1000) < 1:
                pass
    finally:
        await client.aclose()


def listener_env(run: Rig, variant: Variant, dsn: str) -> dict[str, str]:
    env = {"DATABASE_URL": dsn, "PGCAST_POLL_INTERVAL": "0.2"}
    if variant.old_code:
        # -c puts the working directory first on sys.path; PYTHONSAFEPATH stops that, so
        # the baseline's tree on PYTHONPATH wins over today's (editable) install.
        env.update(PYTHONPATH=str(run.old_tree), PYTHONSAFEPATH="1")
    else:
        env["PGCAST_REDIS_MIN_REPLICAS"] = str(variant.min_replicas)
    return env


def alive(proc: ListenerProcess) -> None:
    if proc.proc.poll() is not None:
        raise RuntimeError(f"the listener exited {proc.proc.returncode} during the drain")


async def drain_once(
    run: Rig, variant: Variant, shape: str, events: int, tag: str
) -> dict[str, Any]:
    """A fresh database with ``events`` queued, a flushed Redis, a listener: its drain rate."""
    database = f"drain_{tag}"
    admin = await asyncpg.connect(run.pg.dsn)
    await admin.execute(f"CREATE DATABASE {database} TEMPLATE {TEMPLATE_DB}")
    rd = run.primary if variant.min_replicas else run.single
    client = aioredis.Redis.from_url(rd.url)
    conn = await asyncpg.connect(run.dsn(database))
    try:
        await conn.execute(FILL, events, shape)
        await client.flushall()
        if variant.min_replicas:
            await wait_replica_synced(rd)
        # The first batch holds the first events: one of their channels is written first.
        first = sorted({SINGLE.channel_keys(channel_of(shape, n)).meta for n in range(1, 17)})
        with listener(run.pg, rd, **listener_env(run, variant, run.dsn(database))) as proc:
            async with asyncio.timeout(300):
                await poll_until(lambda: _exists(client, proc, first), lambda n: n > 0)
                started = time.perf_counter()
                await poll_until(lambda: _queued(conn, proc), lambda n: n == 0, every=0.01)
                elapsed = time.perf_counter() - started
        channels = sorted({channel_of(shape, n) for n in range(1, min(events, 2000) + 1)})
        published = await published_total(client, channels)
        watermarks = await conn.fetchval("SELECT count(*) FROM pgcast.watermark")
    finally:
        await conn.close()
        await client.aclose()
        await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
        await admin.close()
    if published != events:
        raise RuntimeError(f"{variant.name}/{shape}: {published} of {events} events in Redis")
    return {
        "variant": variant.name,
        "shape": shape,
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "watermark_rows": watermarks,
    }


async def _exists(client: aioredis.Redis, proc: ListenerProcess, keys: list[str]) -> int:
    alive(proc)
    found: int = await client.exists(*keys)
    return found


async def _queued(conn: asyncpg.Connection, proc: ListenerProcess) -> int:
    alive(proc)
    return 1 if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgcast.outbox)") else 0


async def bench_drain(
    run: Rig, variants: list[Variant], shapes: list[str], events: int, rounds: int
) -> dict[str, Any]:
    """Every (variant, shape) once per round, the variants' order rotated each round."""
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for shape in shapes:
            for variant in order:
                tag = f"{r}_{shape}_{VARIANTS.index(variant)}"
                result = await drain_once(run, variant, shape, events, tag)
                log(f"round {r + 1}/{rounds}: {result}")
                runs.append(result)
    summary: dict[str, dict[str, Any]] = {}
    for shape in shapes:
        rates = {
            v.name: [
                x["events_per_s"] for x in runs if x["shape"] == shape and x["variant"] == v.name
            ]
            for v in variants
        }
        base = statistics.median(rates["baseline"]) if "baseline" in rates else None
        summary[shape] = {
            name: {
                "events_per_s": round(statistics.median(values)),
                "runs": values,
                "ratio": round(statistics.median(values) / base, 3) if base else None,
            }
            for name, values in rates.items()
        }
    return {"events": events, "rounds": rounds, "summary": summary, "runs": runs}


def table(report: dict[str, Any]) -> str:
    lines = [
        "| variant | shape | events/s (median) | ratio to baseline | runs |",
        "|---|---|---|---|---|",
    ]
    for shape, by_variant in report["drain"]["summary"].items():
        for name, row in by_variant.items():
            runs = ", ".join(str(v) for v in row["runs"])
            lines.append(f"| {name} | {shape} | {row['events_per_s']} | {row['ratio']} | {runs} |")
    if "subscribe" in report:
        lines += ["", *subscribe_table(report["subscribe"])]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    events = args.events or (3_000 if args.quick else 20_000)
    report: dict[str, Any] = {"baseline_commit": BASELINE_COMMIT}
    with baseline_tree(args.baseline_tree) as old_tree:
        async with rig(old_tree) as run:
            report["drain"] = await bench_drain(
                run, args.variants, args.shapes, events, args.rounds
            )
            if not args.skip_subscribe:
                messages = 2_000 if args.quick else 10_000
                report["subscribe"] = await bench_subscribe(
                    run.primary, run.replica, args.subscribers, messages, args.rounds, log
                )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 events (smoke test)")
    parser.add_argument("--events", type=int, help="outbox backlog per run (20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument(
        "--variants", default=",".join(v.name for v in VARIANTS), help="comma-separated subset"
    )
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help="one (all on feed), many (2,000 channels)"
    )
    parser.add_argument("--subscribers", type=int, default=200, help="pub/sub subscribers (200)")
    parser.add_argument("--skip-subscribe", action="store_true")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help=f"a checkout of {BASELINE_COMMIT} (default: exported from git to a temp dir)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    by_name = {v.name: v for v in VARIANTS}
    if not set(args.variants.split(",")) <= set(by_name):
        parser.error(f"--variants: a comma-separated subset of {', '.join(by_name)}")
    if not set(args.shapes.split(",")) <= set(SHAPES):
        parser.error(f"--shapes: a comma-separated subset of {', '.join(SHAPES)}")
    args.variants = [by_name[name] for name in args.variants.split(",")]
    args.shapes = args.shapes.split(",")
    started = time.monotonic()
    report = asyncio.run(main_async(args))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(table(report))
    if args.json:
        args.json.write_text(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
