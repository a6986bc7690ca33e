"""``make soak``: a real gateway under connection churn; resources must return to baseline.

``python -m tests.soak.soak`` starts a private redis-server and a gateway
process, publishes a steady trickle of events, and churns PGCAST_SOAK_CONNECTIONS
concurrent client slots (connect, subscribe with resume, read, disconnect; one in
ten aborted) for PGCAST_SOAK_SECONDS. Every 10 s it prints the gateway's RSS, open
file descriptors, asyncio tasks and connections. It exits non-zero unless: no gap
and no duplicate was seen, fds/tasks/connections/channels come back to their
baseline after the churn, RSS stops growing, and the gateway logged no error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis

from pgcast.cancellation import raise_if_cancelled
from pgcast.settings import EnvReader
from tests.processes import ENTRY_POINTS, Service
from tests.servers import RedisInstance, free_port
from tests.soak.churn import ChurnConfig, ChurnStats, churn
from tests.soak.harness import Events, gateway_env, http_get_async, metric
from tests.waiting import eventually

ENTRY_POINTS.setdefault("soak-gateway", "tests.soak.instrumented_gateway")
LOG_PROBLEMS = ("Traceback", " ERROR ", " CRITICAL ", "exception was never retrieved")


@dataclass(frozen=True)
class SoakConfig:
    connections: int
    seconds: float
    lifetime: float
    channels: int
    rate: float  # events per second, over all channels
    abort_ratio: float = 0.1  # disconnects that are an RST instead of a close handshake

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SoakConfig:
        r = EnvReader(os.environ if env is None else env)
        return cls(
            connections=r.integer("PGCAST_SOAK_CONNECTIONS", 10_000, minimum=1),
            seconds=r.number("PGCAST_SOAK_SECONDS", 600.0, minimum=1.0),
            lifetime=r.number("PGCAST_SOAK_LIFETIME", 20.0, minimum=0.1),
            channels=r.integer("PGCAST_SOAK_CHANNELS", 200, minimum=2),
            rate=r.number("PGCAST_SOAK_RATE", 100.0, minimum=0.0),
            abort_ratio=r.number("PGCAST_SOAK_ABORT_RATIO", 0.1, maximum=1.0),
        )


@dataclass
class Sample:
    rss_mb: float
    fds: int  # every open file descriptor
    redis_fds: int  # of which connections to Redis (the client pools)
    tasks: int
    connections: float
    subscriptions: float
    channels: float

    @property
    def other_fds(self) -> int:
        return self.fds - self.redis_fds


class SoakGateway:
    """The gateway process under test, and how to read its resource use."""

    def __init__(self, redis_url: str, connections: int) -> None:
        self.port = free_port()
        self.redis_port = urlsplit(redis_url).port or 6379
        env = gateway_env(redis_url)
        env.update(
            PGCAST_HOST="127.0.0.1",
            PGCAST_PORT=str(self.port),
            PGCAST_MAX_CONNECTIONS=str(connections * 2 + 100),
            PGCAST_LOG_LEVEL="info",
        )
        self.service = Service("soak-gateway", env)

    def start(self) -> None:
        self.service.start()
        self.service.wait_http(f"http://127.0.0.1:{self.port}/readyz", timeout=30)

    async def sample(self) -> Sample:
        rss_kb, fds, redis_fds = proc_stats(self.service.pid, self.redis_port)
        base = f"http://127.0.0.1:{self.port}"
        tasks = orjson.loads((await http_get_async(base + "/_soak/tasks"))[1])["tasks"]
        text = (await http_get_async(base + "/metrics"))[1]

        def gauge(name: str) -> float:
            return metric(text, f"pgcast_gateway_{name}") or 0.0

        return Sample(
            rss_kb / 1024,
            fds,
            redis_fds,
            tasks,
            gauge("connections"),
            gauge("subscriptions"),
            gauge("channels"),
        )


def proc_stats(pid: int, redis_port: int) -> tuple[int, int, int]:
    """(VmRSS in kB, open fds, fds that are TCP connections to ``redis_port``) of ``pid``."""
    with open(f"/proc/{pid}/status") as fh:
        rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    to_redis = 0
    with open(f"/proc/{pid}/net/tcp") as fh:
        for row in fh.readlines()[1:]:
            fields = row.split()
            if fields[9] in inodes and int(fields[2].split(":")[1], 16) == redis_port:
                to_redis += 1
    return rss_kb, len(os.listdir(f"/proc/{pid}/fd")), to_redis


async def publish_trickle(events: Events, channels: tuple[str, ...], rate: float) -> None:
    """``rate`` events per second spread over ``channels``, until cancelled."""
    if rate <= 0:
        await asyncio.Event().wait()
    tick, n = 0.05, 0
    per_tick = max(1, round(rate * tick))
    while True:
        raise_if_cancelled()  # redis-py may swallow the cancel (pgcast.cancellation)
        for _ in range(per_tick):
            await events.publish(channels[n % len(channels)], {"n": n})
            n += 1
        await asyncio.sleep(tick)  # pacing: the publish rate


def line(label: str, s: Sample, stats: ChurnStats | None = None) -> str:
    text = (
        f"{label:>8} rss={s.rss_mb:7.1f}MB fds={s.fds:6d} (redis {s.redis_fds:3d})"
        f" tasks={s.tasks:6d} conns={s.connections:6.0f} subs={s.subscriptions:6.0f}"
        f" chans={s.channels:5.0f}"
    )
    if stats is not None:
        text += (
            f" | live={stats.live} connects={stats.connects} msgs={stats.messages}"
            f" gaps={stats.gaps} dups={stats.duplicates}"
        )
    return text


async def run_soak(config: SoakConfig, redis_url: str, out: Any = sys.stdout) -> dict[str, Any]:
    """Two churn rounds of half the time each, settling after each; returns the summary."""
    gateway = SoakGateway(redis_url, config.connections)
    redis: Any = aioredis.Redis.from_url(redis_url)
    channels = tuple(f"soak:{i}" for i in range(config.channels))
    stats = ChurnStats()
    gateway.start()
    publisher = asyncio.create_task(publish_trickle(Events(redis), channels, config.rate))
    try:
        churn_config = ChurnConfig(
            "127.0.0.1",
            gateway.port,
            channels,
            config.lifetime,
            abort_ratio=config.abort_ratio,
        )
        await churn(churn_config, min(50, config.connections), 2.0, ChurnStats())  # warm-up
        baseline = await settle(gateway)
        print(line("baseline", baseline), file=out, flush=True)
        rounds, peaks = [], []
        started = time.monotonic()
        for _ in range(2):
            job = asyncio.create_task(
                churn(churn_config, config.connections, config.seconds / 2, stats)
            )
            while not job.done():
                await asyncio.wait([job], timeout=10)
                current = await gateway.sample()
                peaks.append(current.rss_mb)
                label = f"{time.monotonic() - started:.0f}s"
                print(line(label, current, stats), file=out, flush=True)
            await job
            rounds.append(await settle(gateway, baseline))
            print(line(f"after {len(rounds)}", rounds[-1]), file=out, flush=True)
    finally:
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)
        gateway.service.stop()
        await redis.aclose()
    return verdict(config, baseline, rounds, max(peaks), stats, gateway.service.log())


async def settle(gateway: SoakGateway, baseline: Sample | None = None) -> Sample:
    """Wait (bounded) until the gateway is idle, and back to ``baseline`` if given."""

    async def idle() -> bool:
        s = await gateway.sample()
        if s.connections or s.subscriptions or s.channels:
            return False
        if baseline is None:
            return True
        return s.other_fds <= baseline.other_fds and s.tasks <= baseline.tasks

    with contextlib.suppress(TimeoutError):  # the verdict reports what did not come back
        await eventually(idle, 30, "gateway idle after the churn", interval=0.2)
    return await gateway.sample()


REDIS_POOL_BOUND = 64  # Redis connections a gateway may keep after any churn


def verdict(
    config: SoakConfig,
    baseline: Sample,
    rounds: list[Sample],
    peak_rss: float,
    stats: ChurnStats,
    log: str,
) -> dict[str, Any]:
    """Leaks show as growth from one churn round to the next at the same load: fds and
    tasks must come back exactly, RSS within 5% + 5 MB (freed memory stays in the
    allocator's arenas, so RSS is compared round to round, not to the cold start)."""
    first, second = rounds
    checks = {
        "no gap": stats.gaps == 0,
        "no duplicate": stats.duplicates == 0,
        "no unexpected frame or close": not stats.unexpected,
        "no resume lost (history covers it)": stats.resumes_not_recovered == 0,
        "connections churned": stats.connects >= config.connections,
        "fds back to baseline (Redis pools aside)": all(
            r.other_fds <= baseline.other_fds for r in rounds
        ),
        f"redis connections <= {REDIS_POOL_BOUND}": max(r.redis_fds for r in rounds)
        <= REDIS_POOL_BOUND,
        "tasks back to baseline": all(r.tasks <= baseline.tasks for r in rounds),
        "rss flat from round to round": second.rss_mb <= first.rss_mb * 1.05 + 5,
        "no error in the gateway log": not any(p in log for p in LOG_PROBLEMS),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "baseline": baseline.__dict__,
        "after_round_1": first.__dict__,
        "after_round_2": second.__dict__,
        "rss_peak_mb": peak_rss,
        "stats": {k: v for k, v in stats.__dict__.items() if k != "unexpected"},
        "unexpected": stats.unexpected,
        "log_problems": [ln for ln in log.splitlines() if any(p in ln for p in LOG_PROBLEMS)][:5],
    }


async def main_async() -> int:
    config = SoakConfig.from_env()
    print(f"soak: {config}", flush=True)
    url = os.environ.get("PGCAST_SOAK_REDIS_URL")
    redis = None
    if url is None:
        redis = RedisInstance()
        redis.start()
        url = redis.url
    try:
        summary = await run_soak(config, url)
    finally:
        if redis is not None:
            redis.destroy()
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode(), flush=True)
    return 0 if summary["ok"] else 1


def main() -> int:
    return asyncio.run(main_async())


if __name__ == "__main__":
    sys.exit(main())
