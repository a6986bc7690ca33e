"""bench/cluster.py's processes: a private durable Postgres, the Redis topology, the
listener and the gateways of one part, and the log every part writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench.cluster_redis import HOST, Topology, start_cluster, start_single
from bench.env import DURABLE, SCHEMA, ingest_trigger_sql, migrate
from bench.systems import Proc, entry_point, wait_http
from tests.servers import PgInstance, free_port

PARTITIONS = 64  # PGCAST_REDIS_PARTITIONS, the default


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- pgcast's processes ---------------------------------------------------------------------
@dataclass
class Rig:
    """Postgres, the Redis topology, the listener and the gateways of one part."""

    pg: PgInstance
    redis: Topology
    secret: str
    listener: Proc | None = None
    gateways: list[tuple[Proc, int]] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return self.pg.dsn

    def pgcast_env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.redis.url,
            "PGCAST_REDIS_PARTITIONS": str(PARTITIONS),
            "PGCAST_LOG_LEVEL": "warning",
        }

    def start_listener(self) -> None:
        port = free_port()
        env = {**self.pgcast_env(), "DATABASE_URL": self.dsn, "PGCAST_LISTENER_PORT": str(port)}
        self.listener = Proc(entry_point("listener.cli"), env, piped=False)
        wait_http(f"http://{HOST}:{port}/healthz", 60, self.listener)

    def start_gateways(self, count: int) -> None:
        self.stop_gateways()
        for _ in range(count):
            port = free_port()
            env = {
                **self.pgcast_env(),
                "PGCAST_JWT_SECRET": self.secret,
                "PGCAST_HOST": HOST,
                "PGCAST_PORT": str(port),
                "PGCAST_WS_COMPRESSION": "false",
                "PGCAST_MAX_CONNECTIONS": "20000",
            }
            proc = Proc(entry_point("gateway.cli"), env, piped=False)
            self.gateways.append((proc, port))
            wait_http(f"http://{HOST}:{port}/readyz", 60, proc)

    def stop_gateways(self) -> None:
        for proc, _ in self.gateways:
            proc.stop()
        self.gateways = []

    def stop(self) -> None:
        self.stop_gateways()
        if self.listener is not None:
            self.listener.stop()
            self.listener = None


@contextlib.asynccontextmanager
async def postgres() -> Any:
    pg = PgInstance(extra_conf=dict(DURABLE)).init()
    try:
        pg.start()
        await asyncio.to_thread(migrate, pg.dsn)
        conn = await asyncpg.connect(pg.dsn)
        try:
            await conn.execute(SCHEMA)
            await conn.execute("DROP TRIGGER IF EXISTS bench_ingest ON bench_event")
            await conn.execute(ingest_trigger_sql("pgcast"))
        finally:
            await conn.close()
        yield pg
    finally:
        pg.destroy()


@contextlib.asynccontextmanager
async def rig(pg: PgInstance, topology: str, replicas: int) -> Any:
    """A fresh Redis of ``topology``, the outbox emptied, the listener running."""
    if topology == "cluster":
        redis = await asyncio.to_thread(start_cluster, replicas)
    else:
        redis = await asyncio.to_thread(start_single)
    run = Rig(pg, redis, secrets.token_hex(32))
    try:
        await reset_tables(pg.dsn)
        await asyncio.to_thread(run.start_listener)
        yield run
    finally:
        run.stop()
        await redis.close()
        redis.destroy()


async def reset_tables(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE bench_event")
        await conn.execute("DELETE FROM pgcast.outbox")
    finally:
        await conn.close()
