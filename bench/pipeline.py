"""Pipeline benchmark: outbox -> Redis throughput, commit -> Redis latency, write-path cost.

``python -m bench.pipeline [--quick] [--clients 64] [--rounds N] [--json FILE]`` starts a
private, durable Postgres (fsync, synchronous_commit, full_page_writes on) and Redis, runs
real pgcast-listener processes, and measures:

1. drain: events/s the leader publishes from a pre-filled outbox backlog;
2. latency: commit acknowledged -> message on Redis pub/sub, p50/p99, paced at 20 and
   1,000 events/s (one event per transaction, 8 writer connections), per wake-up mode;
3. write path: pgbench TPS of a one-row INSERT at N clients, plain and with each trigger
   (pgcast in each mode with its listener draining, or alone; a classic per-row pg_notify
   trigger with one LISTENer), as ratios of the plain table's TPS; for each run the CPU
   spent per transaction by each process group and the sampled wait events of the
   pgbench backends, which say where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from bench.env import migrate
from pgcast.cancellation import raise_if_cancelled
from pgcast.keys import Layout, decode_live
from tests.servers import PgInstance, RedisInstance, free_port

SINGLE = Layout()  # the key names of one Redis

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


# Extra settings for every listener the benchmark starts (--set NAME=VALUE).
LISTENER_ENV: dict[str, str] = {}
# MODE:RATE,...: the new default at a low and a high rate, and the old default.
LATENCY_RUNS = "auto:20,auto:1000,notify:1000"


def latency_runs(spec: str) -> list[tuple[str, float, float]]:
    """(wake-up mode, events/s, seconds) from ``mode:rate,...``: 10 s at low rates, else 5 s."""
    runs = []
    for item in spec.split(","):
        mode, _, rate = item.partition(":")
        runs.append((mode, float(rate), 10.0 if float(rate) < 100 else 5.0))
    return runs


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
        migrate(pg.dsn)
        yield pg, rd
    finally:
        rd.destroy()
        pg.destroy()


@dataclass(frozen=True)
class ListenerProcess:
    proc: subprocess.Popen[bytes]
    port: int

    def metrics(self, *names: str) -> dict[str, float]:
        """Samples of /metrics whose name (with labels, as printed) starts with ``names``."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            line.split()[0]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(names)
        }


@contextlib.contextmanager
def listener(pg: PgInstance, rd: RedisInstance, **env: str) -> Iterator[ListenerProcess]:
    """A real pgcast-listener process for the duration of the block."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("PGCAST_")}
    full.update(
        DATABASE_URL=pg.dsn,
        REDIS_URL=rd.url,
        PGCAST_LISTENER_PORT=str(port),
        PGCAST_LOG_LEVEL="warning",
        PGCAST_HISTORY_SIZE="1000",
    )
    full.update(LISTENER_ENV)
    full.update(env)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from listener.cli import main; sys.exit(main())"],
        env=full,
    )
    try:
        yield ListenerProcess(proc, port)
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
        pipe.hget(SINGLE.channel_keys(channel).meta, "s")
    return sum(int(v or 0) for v in await pipe.execute())


async def poll_until(
    read: Callable[[], Awaitable[int]], done: Callable[[int], bool], every: float = 0.005
) -> int:
    """Read until ``done(value)``; the caller bounds the wait with asyncio.timeout."""
    while True:
        raise_if_cancelled()  # the caller's timeout, should redis-py swallow it
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
    pg: PgInstance, rd: RedisInstance, rate: float, seconds: float, mode: str
) -> dict[str, Any]:
    """Paced single-event transactions; latency = pub/sub arrival - commit acknowledged."""
    total, writers = int(rate * seconds), 8
    commits: dict[int, float] = {}
    arrivals: dict[int, float] = {}
    client = aioredis.Redis.from_url(rd.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(SINGLE.channel_keys("lat").live)
    setting = {"auto": "auto", "notify": "on", "poll": "off"}[mode]
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute(f"ALTER DATABASE postgres SET pgcast.notify = '{setting}'")
    try:
        with listener(pg, rd, PGCAST_NOTIFY_MODE=mode):
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
        await admin.execute("ALTER DATABASE postgres RESET pgcast.notify")
        await admin.close()
        await pubsub.aclose()
        await client.aclose()
    lat_ms = [(arrivals[i] - commits[i]) * 1000 for i in commits if i in arrivals]
    return {
        "mode": mode,
        "rate": rate,
        "events": total,
        "achieved_rate": round(total / wall),
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {}
    seconds = 3 if args.quick else args.seconds
    # Imported here: bench.pipeline_writepath uses this module's process helpers.
    from bench.pipeline_writepath import VARIANTS, bench_writepath, table

    with servers() as (pg, rd):
        if not args.skip_drain:
            log("drain throughput")
            report["drain"] = await bench_drain(pg, rd, 20_000 if args.quick else 50_000)
            log(f"drain: {report['drain']}")
        if not args.skip_latency:
            report["latency"] = []
            for mode, rate, span in latency_runs(args.latency):
                log(f"commit -> Redis latency, {mode} mode, {rate:.0f} events/s")
                result = await bench_latency(pg, rd, rate, 2.0 if args.quick else span, mode)
                report["latency"].append(result)
                log(f"latency: {result}")
        names = args.variants.split(",") if args.variants else list(VARIANTS)
        report["writepath"] = await bench_writepath(
            pg, rd, names, args.clients, seconds, args.rounds
        )
        log("write path:\n" + table(report["writepath"]))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (smoke test)")
    parser.add_argument("--clients", type=int, default=64, help="pgbench clients (64)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds per pgbench run (8)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (1)")
    parser.add_argument("--variants", help="comma-separated subset of the write-path variants")
    parser.add_argument("--skip-drain", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--latency", default=LATENCY_RUNS, help=f"MODE:EVENTS_PER_S,... ({LATENCY_RUNS})"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PGCAST_NAME=VALUE",
        help="a listener setting for every listener started (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    for item in args.set:
        name, _, value = item.partition("=")
        if not name.startswith("PGCAST_") or not value:
            parser.error(f"--set {item!r}: expected PGCAST_NAME=VALUE")
        LISTENER_ENV[name] = value
    started = time.monotonic()
    report = asyncio.run(main_async(args))
    report["total_seconds"] = round(time.monotonic() - started, 1)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
